"""How good a face is to read age and gender from: frontal, large and sharp.

Used to weight a track's per-frame estimates in the smoother and to pick each person's
best thumbnail. Geometry comes from the detector's keypoints; sharpness from the pixels.
"""

from __future__ import annotations

import cv2
import numpy as np

from agevision.faces import LEFT_EYE, NOSE_TIP, RIGHT_EYE, Faces

FULL_SIZE = 96.0  # box width (pixels) from which a face counts as fully large
FULL_SHARPNESS = 150.0  # Laplacian variance (on a 64 px grey crop) from which a face counts as sharp


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


def sharpness(frame_bgr: np.ndarray, faces: Faces) -> np.ndarray:
    """(N,) in [0, 1]: variance of the Laplacian of each face box (grey, 64x64), scaled."""
    out = np.zeros(len(faces), np.float32)
    h, w = frame_bgr.shape[:2]
    for i, (x0, y0, x1, y1) in enumerate(faces.boxes):
        xa, ya, xb, yb = max(int(x0), 0), max(int(y0), 0), min(int(x1), w), min(int(y1), h)
        if xb - xa < 4 or yb - ya < 4:
            continue
        grey = cv2.cvtColor(cv2.resize(frame_bgr[ya:yb, xa:xb], (64, 64), interpolation=cv2.INTER_AREA),
                            cv2.COLOR_BGR2GRAY)
        out[i] = min(float(cv2.Laplacian(grey, cv2.CV_32F).var()) / FULL_SHARPNESS, 1.0)
    return out


def face_quality(frame_bgr: np.ndarray, faces: Faces) -> np.ndarray:
    """(N,) quality in [0, 1] of each face of one BGR frame: frontalness x size x sharpness.

    Faces partly outside the frame count as smaller by the share of their box that is cut.
    """
    if len(faces) == 0:
        return np.zeros(0, np.float32)
    h, w = frame_bgr.shape[:2]
    b = faces.boxes
    area = np.maximum((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]), 1e-6)
    inside = (np.clip(b[:, 2], 0, w) - np.clip(b[:, 0], 0, w)) * (np.clip(b[:, 3], 0, h) - np.clip(b[:, 1], 0, h))
    size = np.clip(faces.widths / FULL_SIZE, 0, 1) * np.clip(inside / area, 0, 1)
    sharp = 0.25 + 0.75 * sharpness(frame_bgr, faces)
    return (frontalness(faces) * size * sharp).astype(np.float32)
