"""Face crops aligned on the eyes: the one crop path for training, evaluation and runtime.

A crop is a similarity transform of the frame: rotation from the line through the two eye
keypoints (so the eyes end up level), scale from the detector box width (steadier than the
eye distance when the head turns), and a margin around the face that the weights' card
gives (`card.CropGeometry`). Pixels outside the frame are filled by replicating the border,
so faces cut by the frame edge still give a full-size crop (training may mirror the picture
there instead: `FILLS`).
"""

from __future__ import annotations

import cv2
import numpy as np

from agevision.faces import LEFT_EYE, RIGHT_EYE, Faces
from agevision.model.card import CropGeometry, Denoise
from agevision.model.denoise import blur_sigma, noise_level

# The crop `agevision train` makes now: the detector box fills the crop's width. A UTKFace
# picture (the only faces the model learns from) is about its face's detector box: in the
# old, wide crop (`CropGeometry()`, box 62% of the width) the picture covered the central
# 68 of 112 pixels (median over 392 pictures; 5th-95th percentile of its edges 19-26 px
# from the left and top, 84-94 px from the right and bottom), and the other 63% of the
# crop was the picture's edge smeared outwards, where a frame shows hair, ears and
# background the model had never seen. In this crop the picture fills it but for a few
# pixels at some edges, and the face gets all 112 pixels instead of 68.
TIGHT = CropGeometry(box_fraction=1.0, center=(0.5, 0.47))

# How a crop is filled where it reaches past the picture: its edge pixels smeared outwards
# (runtime, and every crop by default), or the picture mirrored at its edge, which carries
# on its hair, skin and background with their texture instead of streaks (for training on
# pictures smaller than their crop; see `TrainConfig.mirror_fill`).
FILLS = {"replicate": cv2.BORDER_REPLICATE, "mirror": cv2.BORDER_REFLECT_101}

# Face geometry relative to a tight UTKFace image (box x0,y0,x1,y1 and 6 keypoints, as
# fractions of width/height): medians of full-range detections on every 40th UTKFace image
# (471 faces). Used for ready-cropped faces and when no image of a set gave a detection.
DEFAULT_BOX = np.array([0.0, -0.02, 0.98, 0.95], np.float32)
DEFAULT_KEYPOINTS = np.array(
    [[0.30, 0.30], [0.68, 0.30], [0.50, 0.53], [0.50, 0.71], [0.10, 0.38], [0.88, 0.37]], np.float32
)


def geometry_to_faces(geom: np.ndarray, w: int, h: int) -> Faces:
    """Faces record (one face) from 16 relative numbers (box, keypoints) on a w x h image."""
    scale = np.array([w, h], np.float32)
    box = (geom[:4].reshape(2, 2) * scale).reshape(1, 4)
    kps = (geom[4:].reshape(6, 2) * scale).reshape(1, 6, 2)
    return Faces(boxes=box.astype(np.float32), keypoints=kps.astype(np.float32), scores=np.ones(1, np.float32))


def crop_transforms(faces: Faces, size: int, geometry: CropGeometry = CropGeometry()) -> np.ndarray:
    """Affine transforms mapping each face of `faces` onto a `size`x`size` crop, the face
    placed as `geometry` says (a weights card's `crop`).

    Returns (N, 2, 3) float64 matrices for cv2.warpAffine.
    """
    mats = np.zeros((len(faces), 2, 3), np.float64)
    for i in range(len(faces)):
        x0, y0, x1, y1 = faces.boxes[i].astype(np.float64)
        eye_r = faces.keypoints[i, RIGHT_EYE].astype(np.float64)
        eye_l = faces.keypoints[i, LEFT_EYE].astype(np.float64)
        dx, dy = eye_l - eye_r
        angle = np.arctan2(dy, dx) if (dx or dy) else 0.0
        width = max(x1 - x0, 1.0)
        scale = geometry.box_fraction * size / width
        cos, sin = scale * np.cos(-angle), scale * np.sin(-angle)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        tx = geometry.center[0] * size - (cos * cx - sin * cy)
        ty = geometry.center[1] * size - (sin * cx + cos * cy)
        mats[i] = ((cos, -sin, tx), (sin, cos, ty))
    return mats


def align_crops(frame_bgr: np.ndarray, faces: Faces, size: int, denoise: Denoise | None = None,
                geometry: CropGeometry = CropGeometry(), fill: str = "replicate") -> np.ndarray:
    """Cut one aligned crop per face out of a BGR uint8 frame.

    frame_bgr: (H, W, 3) uint8 BGR. faces: boxes and keypoints in pixels of that frame.
    geometry: where the face sits in the crop (the weights card's `crop`). fill: a key of
    `FILLS`, how the crop is filled past the frame's edge.
    denoise: a card's rule (`model.denoise`): a face smaller than its crop (enlarged into it)
    whose part of the frame is noisier than the rule allows is blurred there first, at the
    frame's scale, since enlarging spreads the noise over neighbouring crop pixels, where
    the crop's own measure no longer sees it. None: no blur.
    Returns (N, size, size, 3) uint8 RGB crops (N may be 0).
    """
    border = FILLS[fill]
    crops = np.empty((len(faces), size, size, 3), np.uint8)
    for i, mat in enumerate(crop_transforms(faces, size, geometry)):
        if denoise is not None and _scale(mat) > 1.0:
            source, mat = _denoised_source(frame_bgr, mat, size, denoise)
        else:
            source, mat = _shrunk_source(frame_bgr, mat, size)
        crop = cv2.warpAffine(source, mat, (size, size), flags=cv2.INTER_LINEAR, borderMode=border)
        crops[i] = crop[:, :, ::-1]
    return crops


def _scale(mat: np.ndarray) -> float:
    """Crop pixels per frame pixel of a crop transform."""
    return float(np.sqrt(abs(np.linalg.det(mat[:, :2]))))


def _footprint(mat: np.ndarray, size: int, w: int, h: int, margin: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1): the part of a w x h frame that a crop by `mat` sees, plus `margin`
    pixels, clipped to the frame (never empty)."""
    corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], np.float64)
    footprint = corners @ cv2.invertAffineTransform(mat).T
    x0, y0 = np.clip(np.floor(footprint.min(axis=0)).astype(int) - margin, 0, [w - 1, h - 1])
    x1, y1 = np.clip(np.ceil(footprint.max(axis=0)).astype(int) + margin + 1, [x0 + 1, y0 + 1], [w, h])
    return int(x0), int(y0), int(x1), int(y1)


def _denoised_source(frame: np.ndarray, mat: np.ndarray, size: int, rule: Denoise) -> tuple[np.ndarray, np.ndarray]:
    """The part of `frame` that a crop by `mat` sees, blurred as `rule` says for its noise
    level (`denoise.blur_sigma`), and the matrix mapping it onto the crop; (frame, mat)
    unchanged when that part is clean or under 8 pixels a side."""
    h, w = frame.shape[:2]
    x0, y0, x1, y1 = _footprint(mat, size, w, h, margin=4)
    roi = frame[y0:y1, x0:x1]
    if min(roi.shape[:2]) < 8:
        return frame, mat
    sigma = blur_sigma(noise_level(roi), rule)
    if sigma == 0:
        return frame, mat
    shifted = mat.copy()
    shifted[:, 2] += mat[:, :2] @ np.array([x0, y0], np.float64)
    return cv2.GaussianBlur(roi, (0, 0), sigma), shifted


def _shrunk_source(frame: np.ndarray, mat: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The part of `frame` that a crop by `mat` sees, area-shrunk to the crop's scale.

    Returns (source image, matrix mapping it onto the crop). For a crop at scale >= 0.8 of
    the frame, returns (frame, mat) unchanged.
    """
    scale = _scale(mat)
    if scale >= 0.8:
        return frame, mat
    h, w = frame.shape[:2]
    x0, y0, x1, y1 = _footprint(mat, size, w, h, margin=1)
    roi = frame[y0:y1, x0:x1]
    out_w, out_h = max(round((x1 - x0) * scale), 1), max(round((y1 - y0) * scale), 1)
    small = cv2.resize(roi, (out_w, out_h), interpolation=cv2.INTER_AREA)
    fx, fy = out_w / (x1 - x0), out_h / (y1 - y0)
    # pixel q of `small` covers frame point p = (q + 0.5) / f - 0.5 + (x0, y0); crop = A @ p + t
    a = mat[:, :2] / np.array([fx, fy])
    t = mat[:, 2] + mat[:, :2] @ (np.array([x0, y0], np.float64) + 0.5 / np.array([fx, fy]) - 0.5)
    return small, np.hstack([a, t[:, None]])
