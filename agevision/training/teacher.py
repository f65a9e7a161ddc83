"""Gender targets from a teacher: what agevision with other weights reads for each face.

`agevision train --teacher DIR` mixes each training face's gender label with the P(female)
that the weights in DIR give it (their temperatures and their second gender network
included, as `Estimator.predict` reads them), so that one network learns what the ensemble
knows (dlib's network was trained on face sets other than UTKFace). The teacher reads the
clean crops once, before training; the student reads them augmented.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def teacher_p_female(weights_dir: Path, crops_rgb: np.ndarray, device: str | None = None
                     ) -> tuple[np.ndarray, str | None]:
    """((N,) float32 P(female) of (N, S, S, 3) uint8 RGB crops read with the weights in
    `weights_dir`, those weights' tensors_sha256); AgevisionError if they cannot be loaded
    or take another crop size (`Estimator.predict`)."""
    from agevision.model.estimator import Estimator

    est = Estimator(weights_dir, device=device, flip=False)
    return est.predict_many(crops_rgb).p_female.astype(np.float32), est.card.tensors_sha256


def gender_targets(labels: np.ndarray, teacher: np.ndarray | None, weight: float) -> np.ndarray:
    """(N,) float32 gender targets: (1 - weight) x label (1 = female) + weight x the
    teacher's P(female); the labels alone when there is no teacher."""
    labels = np.asarray(labels, np.float32)
    if teacher is None or weight == 0:
        return labels
    return ((1 - weight) * labels + weight * np.asarray(teacher, np.float32)).astype(np.float32)
