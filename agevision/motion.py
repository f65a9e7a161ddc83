"""Following faces between detections with optical flow.

Detection is the costliest stage, so the pipeline may detect on every n-th frame only
(`FrameProcessor(detect_every=n)`). On the frames in between, `FaceFlow` measures how each
face moved since the previous frame: Lucas-Kanade optical flow of a 4x4 grid of points
inside the face box, on a small grayscale patch around the face, and the median shift of
the points that were followed. Only patches are converted and compared, so the cost does
not grow with the frame size.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from agevision.faces import Faces

PATCH_WIDTH = 96  # faces are compared at most this wide, in pixels
# Median Lucas-Kanade error (mean absolute grey difference around a point) beyond which a
# face is lost. On the shared clips, faces followed through head shakes, blur and crowds
# stay under 23; the Hamilton clip's shot cuts give 44-49 (and a face covered by a passing
# head 35).
MAX_ERROR = 30.0
_MARGIN = 0.3  # patch = face box grown by this fraction of its size on each side
_LK = {"winSize": (15, 15), "maxLevel": 2,
       "criteria": (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 0.03)}


@dataclass
class _Patch:
    rect: tuple[int, int, int, int]  # x0, y0, x1, y1 in the frame
    scale: float  # patch pixels per frame pixel
    gray: np.ndarray
    points: np.ndarray  # (16, 2) float32 grid inside the face box, in patch pixels


def _patch(frame: np.ndarray, box: np.ndarray, rect=None, scale=None) -> _Patch | None:
    """The grey patch of `frame` around face `box` (x0, y0, x1, y1) and its point grid; with
    `rect` and `scale` given, the same region and scale as an earlier patch. None if the
    region is under 8 pixels a side (off the frame)."""
    h, w = frame.shape[:2]
    x0, y0, x1, y1 = (float(v) for v in box)
    bw, bh = x1 - x0, y1 - y0
    if rect is None:
        rect = (int(max(x0 - _MARGIN * bw, 0)), int(max(y0 - _MARGIN * bh, 0)),
                int(min(x1 + _MARGIN * bw, w)), int(min(y1 + _MARGIN * bh, h)))
        scale = min(PATCH_WIDTH / max(bw, 1.0), 1.0)
    rx0, ry0, rx1, ry1 = rect
    if rx1 - rx0 < 8 or ry1 - ry0 < 8:
        return None
    gray = _gray(frame[ry0:ry1, rx0:rx1], scale)
    gx, gy = np.meshgrid(np.linspace(x0 + 0.2 * bw, x1 - 0.2 * bw, 4), np.linspace(y0 + 0.2 * bh, y1 - 0.2 * bh, 4))
    points = ((np.stack([gx.ravel(), gy.ravel()], 1) - [rx0, ry0]) * scale).astype(np.float32)
    return _Patch(rect, scale, gray, points)


def _gray(roi: np.ndarray, scale: float) -> np.ndarray:
    if scale < 1.0:  # shrink first: converting the small patch is cheaper
        roi = cv2.resize(roi, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
    return cv2.cvtColor(roi, cv2.COLOR_BGR2GRAY)


class FaceFlow:
    """Remembers the faces of one frame and finds them again in later frames.

    remember(frame, faces) on a detection frame; follow(frame, faces) on each frame after
    it, with the same faces, gives their boxes moved by the flow measured from the
    remembered frame (not frame to frame, so errors do not add up).
    """

    def __init__(self) -> None:
        self._patches: list[_Patch | None] = []

    def remember(self, frame_bgr: np.ndarray, faces: Faces) -> None:
        """Keep a small grayscale patch around each face of `frame_bgr` (BGR uint8)."""
        self._patches = [_patch(frame_bgr, faces.boxes[i]) for i in range(len(faces))]

    def follow(self, frame_bgr: np.ndarray, faces: Faces) -> tuple[np.ndarray, np.ndarray]:
        """Where the remembered `faces` are in `frame_bgr`.

        Returns (boxes, lost). boxes (N, 4): each face's box moved by the median optical flow
        since it was remembered; NaN where it could not be followed (too few points tracked,
        its patch off the frame, or `faces` is not what was remembered). lost (N,) bool: the
        face's points were not found again (too few tracked, or their median error over
        MAX_ERROR): something passed in front of it, it moved too fast, or the shot changed.
        """
        out = np.full((len(faces), 4), np.nan, np.float32)
        lost = np.zeros(len(faces), bool)
        if len(faces) != len(self._patches):
            return out, lost
        for i, old in enumerate(self._patches):
            if old is None:
                continue
            new = _patch(frame_bgr, faces.boxes[i], old.rect, old.scale)
            if new is None or new.gray.shape != old.gray.shape:
                continue
            moved, status, error = cv2.calcOpticalFlowPyrLK(old.gray, new.gray, old.points, None, **_LK)
            ok = status.ravel() == 1
            if ok.sum() < 4 or np.median(error.ravel()[ok]) > MAX_ERROR:
                lost[i] = True
                continue
            dx, dy = np.median(moved[ok] - old.points[ok], axis=0) / old.scale
            out[i] = faces.boxes[i] + np.array([dx, dy, dx, dy], np.float32)
        return out, lost
