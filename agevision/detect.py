"""MediaPipe BlazeFace face detection: the only module that imports mediapipe.

Two models ship in `weights/` (Apache-2.0, from the mediapipe 0.10.21 wheel):
- "short": face_detection_short_range.tflite, for faces filling a good part of the frame
  (webcam at arm's length); it misses faces smaller than about a fifth of the frame.
- "full":  face_detection_full_range_sparse.tflite, for people further away (video).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from agevision.errors import AgevisionError
from agevision.faces import Faces, iou

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
MODEL_FILES = {
    "short": "face_detection_short_range.tflite",
    "full": "face_detection_full_range_sparse.tflite",
}
# The two models draw boxes of slightly different size around the same face (eye distance
# over box width: 0.42 short, 0.39 full, medians on UTKFace). Boxes are scaled about their
# centre to the full-range convention so that crops do not depend on the model.
BOX_SCALE = {"short": 1.07, "full": 1.0}


@contextmanager
def _quiet_stderr():
    """Silence native log lines (TFLite, glog) written to file descriptor 2."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def suppress_overlaps(boxes: np.ndarray, scores: np.ndarray, max_overlap: float) -> np.ndarray:
    """Indices of the boxes to keep, best score first: each box overlapping a better one by
    more than `max_overlap` (IoU) is dropped."""
    keep: list[int] = []
    for i in np.argsort(-scores):
        if not keep or iou(boxes[i : i + 1], boxes[keep]).max() <= max_overlap:
            keep.append(int(i))
    return np.array(keep, np.int64)


def model_path(kind: str) -> Path:
    """Path of the shipped BlazeFace model `kind` ("short" or "full").

    Raises AgevisionError for an unknown kind or a missing file.
    """
    if kind not in MODEL_FILES:
        raise AgevisionError(f"unknown detector {kind!r}: choose one of {', '.join(MODEL_FILES)}")
    path = WEIGHTS_DIR / MODEL_FILES[kind]
    if not path.is_file():
        raise AgevisionError(f"face detector model missing: {path} (reinstall agevision)")
    return path


class FaceDetector:
    """BlazeFace detector; use as a context manager or call close().

    kind: "short" or "full" (see module docstring).
    min_score: detections below this confidence are dropped.
    max_overlap: of two boxes overlapping more than this (IoU), the less confident is
    dropped: MediaPipe's own suppression lets some double detections of one face through.
    """

    def __init__(self, kind: str = "full", min_score: float = 0.5, max_overlap: float = 0.3) -> None:
        from mediapipe.tasks.python import BaseOptions, vision

        self.kind, self.max_overlap = kind, max_overlap
        options = vision.FaceDetectorOptions(
            base_options=BaseOptions(model_asset_path=str(model_path(kind))),
            running_mode=vision.RunningMode.IMAGE,
            min_detection_confidence=min_score,
            min_suppression_threshold=0.3,
        )
        with _quiet_stderr():
            self._detector = vision.FaceDetector.create_from_options(options)
        self._first_call = True

    def detect(self, frame_bgr: np.ndarray) -> Faces:
        """Find faces in one BGR uint8 frame (H, W, 3).

        Returns a Faces record with boxes and keypoints in pixels of that frame,
        sorted by score (best first). Raises AgevisionError after close().
        """
        import mediapipe as mp

        if self._detector is None:
            raise AgevisionError("face detector used after close()")
        rgb = np.ascontiguousarray(frame_bgr[:, :, ::-1])
        image = mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb)
        if self._first_call:  # the native side logs its set-up on the first call
            with _quiet_stderr():
                result = self._detector.detect(image)
            self._first_call = False
        else:
            result = self._detector.detect(image)
        h, w = frame_bgr.shape[:2]
        n = len(result.detections)
        boxes = np.zeros((n, 4), np.float32)
        keypoints = np.zeros((n, 6, 2), np.float32)
        scores = np.zeros(n, np.float32)
        for i, det in enumerate(result.detections):
            bb = det.bounding_box
            boxes[i] = (bb.origin_x, bb.origin_y, bb.origin_x + bb.width, bb.origin_y + bb.height)
            kps = det.keypoints[:6]
            keypoints[i, : len(kps)] = [(k.x * w, k.y * h) for k in kps]
            scores[i] = det.categories[0].score if det.categories else 0.0
        if BOX_SCALE[self.kind] != 1.0:
            centre = (boxes[:, :2] + boxes[:, 2:]) / 2
            half = (boxes[:, 2:] - boxes[:, :2]) / 2 * BOX_SCALE[self.kind]
            boxes = np.concatenate([centre - half, centre + half], axis=1)
        keep = suppress_overlaps(boxes, scores, self.max_overlap)
        return Faces(boxes=boxes[keep], keypoints=keypoints[keep], scores=scores[keep])

    def close(self) -> None:
        """Release the native detector; safe to call twice."""
        if self._detector is not None:
            with _quiet_stderr():
                self._detector.close()
            self._detector = None

    def __enter__(self) -> FaceDetector:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
