"""Calibration temperatures fitted on held-out faces.

The gender temperature minimises the negative log-likelihood of the true gender; the age
temperature makes the central 80% interval of the age distribution hold the true age for
80% of the faces.
"""

from __future__ import annotations

import numpy as np

from agevision.model.decode import INTERVAL, decode

GRID = np.round(np.exp(np.linspace(np.log(0.3), np.log(4.0), 80)), 4)


def fit(
    age_logits: np.ndarray, gender_logit: np.ndarray, ages: np.ndarray, genders: np.ndarray
) -> tuple[float, float]:
    """(age_temperature, gender_temperature) for raw logits of labelled faces.

    Returns (1.0, 1.0) when there are no faces to fit on.
    """
    if len(ages) == 0:
        return 1.0, 1.0
    return fit_age(age_logits, ages), fit_gender(gender_logit, genders)


def fit_gender(gender_logit: np.ndarray, genders: np.ndarray) -> float:
    """The gender temperature (from GRID) with the least negative log-likelihood of the true
    genders (1 = female) of faces with these raw logits."""
    z = gender_logit.astype(np.float64)
    y = genders.astype(np.float64)

    def nll(t: float) -> float:
        s = z / t
        return float(np.mean(np.logaddexp(0, s) - y * s))

    return float(min(GRID, key=nll))


def fit_age(age_logits: np.ndarray, ages: np.ndarray) -> float:
    """The age temperature (from GRID) whose central 80% intervals hold the true `ages` of
    faces with these raw age logits most nearly 80% of the time (1.0 for no faces)."""
    if len(ages) == 0:
        return 1.0
    none = np.zeros(len(ages))

    def coverage_gap(t: float) -> float:
        p = decode(age_logits, none, t, 1.0)
        return abs(float(((ages >= p.age_low) & (ages <= p.age_high)).mean()) - INTERVAL)

    return float(min(GRID, key=coverage_gap))
