"""How good a face is to read age and gender from: frontal, large and sharp; and whether it
can be read at all.

`face_quality` weights a track's per-frame estimates in the smoother and picks each
person's best thumbnail. `readable` says which faces are not worth a reading (too small,
dark, flat, blurred or turned away): they are boxed with "?" and not estimated. Geometry
comes from the detector's keypoints; sharpness, brightness and contrast from the pixels.
"""

from __future__ import annotations

import cv2
import numpy as np

from agevision.faces import LEFT_EYE, NOSE_TIP, RIGHT_EYE, Faces

FULL_SIZE = 96.0  # box width (pixels) from which a face counts as fully large
FULL_SHARPNESS = 150.0  # Laplacian variance (on a 64 px grey crop) from which a face counts as sharp
# Below these a face is not read (see `readable`). On the shared clips, the near-black
# audience faces of the stage clip have a mean grey level of 8-14 and a spread of 4-5, and
# no face a person can read is under 24 and 15; a face in full profile has its eyes
# closer than 0.12 of the box width (frontal faces 0.37-0.45, three-quarter views 0.2-0.3).
MIN_BRIGHTNESS = 20.0  # mean grey level of the face box, 0-255
MIN_CONTRAST = 8.0  # standard deviation of the grey levels of the face box
MIN_SHARPNESS = 0.02  # `sharpness` score: a face more blurred than this is not read
MIN_EYE_SPAN = 0.12  # eye distance over box width: less is a face in profile


def frontalness(faces: Faces) -> np.ndarray:
    """(N,) in [0, 1]: 1 for a face looking at the camera, towards 0 for a profile.

    The nose tip's sideways offset from the midpoint of the eyes, over the eye distance,
    grows as the head turns (yaw).
    """
    if len(faces) == 0:
        return np.zeros(0, np.float32)
    eye_r, eye_l, nose = faces.keypoints[:, RIGHT_EYE], faces.keypoints[:, LEFT_EYE], faces.keypoints[:, NOSE_TIP]
    axis = eye_l - eye_r
    dist = np.maximum(np.linalg.norm(axis, axis=1), 1e-6)
    offset = np.abs(((nose - (eye_r + eye_l) / 2) * axis).sum(axis=1)) / dist**2
    return np.clip(1.0 - 2.0 * offset, 0.0, 1.0).astype(np.float32)


def pixel_measures(frame_bgr: np.ndarray, faces: Faces) -> np.ndarray:
    """(N, 3) float32 per face box of a BGR frame (grey, 64x64): sharpness in [0, 1] (variance
    of the Laplacian, scaled), mean grey level and its standard deviation (0-255). Boxes
    with under 4 pixels inside the frame give zeros."""
    out = np.zeros((len(faces), 3), np.float32)
    h, w = frame_bgr.shape[:2]
    for i, (x0, y0, x1, y1) in enumerate(faces.boxes):
        xa, ya, xb, yb = max(int(x0), 0), max(int(y0), 0), min(int(x1), w), min(int(y1), h)
        if xb - xa < 4 or yb - ya < 4:
            continue
        grey = cv2.cvtColor(cv2.resize(frame_bgr[ya:yb, xa:xb], (64, 64), interpolation=cv2.INTER_AREA),
                            cv2.COLOR_BGR2GRAY)
        mean, std = cv2.meanStdDev(grey)
        out[i] = (min(float(cv2.Laplacian(grey, cv2.CV_32F).var()) / FULL_SHARPNESS, 1.0), mean[0, 0], std[0, 0])
    return out


def sharpness(frame_bgr: np.ndarray, faces: Faces) -> np.ndarray:
    """(N,) in [0, 1]: variance of the Laplacian of each face box (grey, 64x64), scaled."""
    return pixel_measures(frame_bgr, faces)[:, 0]


def eye_span(faces: Faces) -> np.ndarray:
    """(N,) distance between the eye keypoints over the box width (about 0.4 frontal, towards
    0 in profile)."""
    span = np.linalg.norm(faces.keypoints[:, LEFT_EYE] - faces.keypoints[:, RIGHT_EYE], axis=1)
    return (span / np.maximum(faces.widths, 1e-6)).astype(np.float32)


def assess(frame_bgr: np.ndarray, faces: Faces, min_face: float = 0) -> tuple[np.ndarray, np.ndarray]:
    """(quality, readable) of each face of one BGR frame: see `face_quality` and `readable`."""
    measures = pixel_measures(frame_bgr, faces)
    return _quality(frame_bgr, faces, measures[:, 0]), readable(faces, measures, min_face)


def readable(faces: Faces, measures: np.ndarray, min_face: float = 0) -> np.ndarray:
    """(N,) bool: whether a face is worth a reading of age and gender. Not: narrower than
    `min_face` pixels, darker or flatter than MIN_BRIGHTNESS / MIN_CONTRAST, more blurred
    than MIN_SHARPNESS, or in profile (MIN_EYE_SPAN). measures: from `pixel_measures`."""
    if len(faces) == 0:
        return np.zeros(0, bool)
    sharp, mean, std = measures[:, 0], measures[:, 1], measures[:, 2]
    return ((faces.widths >= min_face) & (mean >= MIN_BRIGHTNESS) & (std >= MIN_CONTRAST)
            & (sharp >= MIN_SHARPNESS) & (eye_span(faces) >= MIN_EYE_SPAN))


def face_quality(frame_bgr: np.ndarray, faces: Faces) -> np.ndarray:
    """(N,) quality in [0, 1] of each face of one BGR frame: frontalness x size x sharpness.

    Faces partly outside the frame count as smaller by the share of their box that is cut.
    """
    return _quality(frame_bgr, faces, sharpness(frame_bgr, faces))


def _quality(frame_bgr: np.ndarray, faces: Faces, sharp: np.ndarray) -> np.ndarray:
    if len(faces) == 0:
        return np.zeros(0, np.float32)
    h, w = frame_bgr.shape[:2]
    b = faces.boxes
    area = np.maximum((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]), 1e-6)
    inside = (np.clip(b[:, 2], 0, w) - np.clip(b[:, 0], 0, w)) * (np.clip(b[:, 3], 0, h) - np.clip(b[:, 1], 0, h))
    size = np.clip(faces.widths / FULL_SIZE, 0, 1) * np.clip(inside / area, 0, 1)
    return (frontalness(faces) * size * (0.25 + 0.75 * sharp)).astype(np.float32)
