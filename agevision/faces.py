"""The `Faces` record: every face found in one frame, as parallel numpy arrays.

One `Faces` value flows through all stages of the pipeline: the detector fills the
geometry, the tracker the ids, the estimator the age and gender fields, the smoother the
per-track estimates. Row i of every array describes the same face.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from agevision.labels import gender_labels

# MediaPipe BlazeFace keypoint order (the subject's right eye is on the image's left).
RIGHT_EYE, LEFT_EYE, NOSE_TIP, MOUTH, RIGHT_EAR, LEFT_EAR = range(6)


def _empty(shape: tuple[int, ...], dtype=np.float32) -> np.ndarray:
    return np.zeros(shape, dtype=dtype)


@dataclass
class Faces:
    """Faces of one frame.

    boxes:      (N, 4) float32, x0, y0, x1, y1 in pixels of the frame.
    keypoints:  (N, 6, 2) float32, BlazeFace keypoints in pixels (see RIGHT_EYE...).
    scores:     (N,) float32 detection confidence in [0, 1].
    track_ids:  (N,) int64, -1 until a tracker assigns ids.
    age:        (N,) float32 expected age in years (NaN until estimated).
    age_low, age_high: (N,) float32 bounds of the 80% age interval.
    p_female:   (N,) float32 probability that the face is female.
    gender:     (N,) str, the gender label shown: "F", "M" or "?" (not sure, or not read);
                from P(female) by `labels.gender_labels` unless a smoother holds a track's
                label steady.
    age_probs:  (N, K) float32 age distribution over the model's bins, or None.
    quality:    (N,) float32 in [0, 1], how frontal, large and sharp the face is (NaN until
                measured; see agevision.quality).
    readable:   (N,) bool, whether the face can be read at all (not too dark, small, blurred
                or turned away; see `quality.readable`); unreadable faces get no estimate.

    Raises ValueError on creation if the arrays do not all have N rows.
    """

    boxes: np.ndarray = field(default_factory=lambda: _empty((0, 4)))
    keypoints: np.ndarray = field(default_factory=lambda: _empty((0, 6, 2)))
    scores: np.ndarray = field(default_factory=lambda: _empty((0,)))
    track_ids: np.ndarray | None = None
    age: np.ndarray | None = None
    age_low: np.ndarray | None = None
    age_high: np.ndarray | None = None
    p_female: np.ndarray | None = None
    gender: np.ndarray | None = None
    age_probs: np.ndarray | None = None
    quality: np.ndarray | None = None
    readable: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.boxes)
        if self.track_ids is None:
            self.track_ids = np.full(n, -1, dtype=np.int64)
        for name in ("age", "age_low", "age_high", "p_female", "quality"):
            if getattr(self, name) is None:
                setattr(self, name, np.full(n, np.nan, dtype=np.float32))
        if self.gender is None:
            self.gender = gender_labels(self.p_female)
        if self.readable is None:
            self.readable = np.ones(n, dtype=bool)
        for name in ("keypoints", "scores", "track_ids", "age", "age_low", "age_high", "p_female", "gender",
                     "age_probs", "quality", "readable"):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise ValueError(f"Faces: {name} has {len(value)} rows for {n} boxes")

    def __len__(self) -> int:
        return len(self.boxes)

    def copy(self) -> Faces:
        """A copy whose arrays can be changed without touching these."""
        return self.subset(np.arange(len(self)))

    def subset(self, index: np.ndarray) -> Faces:
        """Return the faces selected by a boolean mask or integer index array."""
        return replace(
            self,
            boxes=self.boxes[index],
            keypoints=self.keypoints[index],
            scores=self.scores[index],
            track_ids=self.track_ids[index],
            age=self.age[index],
            age_low=self.age_low[index],
            age_high=self.age_high[index],
            p_female=self.p_female[index],
            gender=self.gender[index],
            age_probs=None if self.age_probs is None else self.age_probs[index],
            quality=self.quality[index],
            readable=self.readable[index],
        )

    @property
    def widths(self) -> np.ndarray:
        """(N,) box widths in pixels."""
        return self.boxes[:, 2] - self.boxes[:, 0]


def intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Area matrix (len(a), len(b)) of the overlap of each x0,y0,x1,y1 box of a with each of b."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), np.float32)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    return np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)


def areas(boxes: np.ndarray) -> np.ndarray:
    """(N,) areas of x0,y0,x1,y1 boxes."""
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix (len(a), len(b)) of x0,y0,x1,y1 boxes."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), np.float32)
    inter = intersection(a, b)
    return inter / np.maximum(areas(a)[:, None] + areas(b)[None, :] - inter, 1e-6)
