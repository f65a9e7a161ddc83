"""Targets from teachers: what agevision with other weights reads for each training face.

`agevision train --teacher DIR [--teacher DIR2 ...]` mixes each training face's gender label
with the P(female) that the weights in those folders give it (their temperatures and their
second gender network included, as `Estimator.predict` reads them; the mean over the
folders), so that one network learns what the ensemble knows (dlib's network was trained
on face sets other than UTKFace; two trainings of agevision err on different faces). With
`--teacher-age-weight W`, the teachers' mean age distribution (their age temperature
applied) is mixed into the age target the same way. The teachers read the clean crops
once, before training; the student reads them augmented.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class Reading:
    """The teachers' mean reading of N crops: p_female (N,) float32, age_probs (N, K)
    float32 (rows sum to 1), and each teacher's tensors_sha256 joined by commas (the key
    that says which teachers a run had)."""

    p_female: np.ndarray
    age_probs: np.ndarray
    sha256: str


def read(weights_dirs: tuple[Path, ...] | list[Path], crops_rgb: np.ndarray, device: str | None = None) -> Reading:
    """The mean `Reading` of (N, S, S, 3) uint8 RGB crops by the weights in each of
    `weights_dirs` (at least one); AgevisionError if one cannot be loaded, takes another
    crop size (`Estimator.predict`) or has other age bins than the first."""
    from agevision.errors import AgevisionError
    from agevision.model.decode import mean_prediction
    from agevision.model.estimator import Estimator

    preds, shas, bins = [], [], None
    for d in weights_dirs:
        est = Estimator(d, device=device, flip=False)
        bins = est.age_bins if bins is None else bins
        preds.append(est.predict_many(crops_rgb))
        if preds[-1].age_probs.shape != preds[0].age_probs.shape:
            raise AgevisionError(f"--teacher {d}: its age bins differ from the first teacher's")
        shas.append(est.card.tensors_sha256 or "")
    mean = mean_prediction(preds, bins)
    return Reading(mean.p_female, mean.age_probs, ",".join(shas))


def gender_targets(labels: np.ndarray, teacher: np.ndarray | None, weight: float) -> np.ndarray:
    """(N,) float32 gender targets: (1 - weight) x label (1 = female) + weight x the
    teacher's P(female); the labels alone when there is no teacher."""
    labels = np.asarray(labels, np.float32)
    if teacher is None or weight == 0:
        return labels
    return ((1 - weight) * labels + weight * np.asarray(teacher, np.float32)).astype(np.float32)
