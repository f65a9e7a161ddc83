"""From network outputs to readings: age distribution, expected age, 80% interval, P(female).

Numpy only, so that the tracker, smoother, records and reports work without torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

INTERVAL = 0.8  # the age interval holds the true age for about this share of faces
AGE_POINTS = ("median", "mean")
# The age a reading shows (see summarize_distribution). The median reads UTKFace validation
# closer (shipped weights: MAE 4.81 -> 4.77, ages 0-12 1.76 -> 1.66) but adults in the wild
# younger (dev set, documented ages: MAE 6.1 -> 6.6, bias -0.3 -> -1.4; still frames 6.6 ->
# 7.0), so the mean stays: `python scripts/wild_report.py --age-point median`.
AGE_POINT = "mean"


@dataclass
class Prediction:
    """Predictions for N crops (numpy, float32).

    age: expected age in years. age_low, age_high: the central 80% interval of the age
    distribution. p_female: probability of female. age_probs: (N, K) age distribution.
    """

    age: np.ndarray
    age_low: np.ndarray
    age_high: np.ndarray
    p_female: np.ndarray
    age_probs: np.ndarray

    def as_tuple(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(age, age_low, age_high, p_female), the order `training.metrics.summary` takes."""
        return self.age, self.age_low, self.age_high, self.p_female

    @staticmethod
    def concatenate(parts: list[Prediction]) -> Prediction:
        """One Prediction of the rows of `parts`, in order."""
        return Prediction(*(np.concatenate([getattr(p, f) for p in parts]) for f in
                            ("age", "age_low", "age_high", "p_female", "age_probs")))


def mean_prediction(parts: list[Prediction], age_bins: np.ndarray) -> Prediction:
    """The reading of an ensemble: the mean of `parts`' age distributions (summarised again as
    `summarize_distribution` does) and of their P(female), for the same N crops read by
    several weights (each with its own temperatures). parts: at least one, alike in N and K."""
    probs = np.mean([p.age_probs.astype(np.float64) for p in parts], axis=0)
    probs /= np.clip(probs.sum(axis=1, keepdims=True), 1e-12, None)
    age, low, high = summarize_distribution(probs, np.asarray(age_bins, np.float64))
    p_female = np.mean([p.p_female.astype(np.float64) for p in parts], axis=0)
    f32 = np.float32
    return Prediction(age.astype(f32), low.astype(f32), high.astype(f32), p_female.astype(f32), probs.astype(f32))


def summarize_distribution(age_probs: np.ndarray, age_bins: np.ndarray, point: str | None = None
                           ) -> tuple[np.ndarray, ...]:
    """(age, low, high) of (N, K) age distributions; low/high bound the central 80%. age is
    the distribution's median (point "median") or its mean ("mean"); default: AGE_POINT.

    Quantiles (the median and the interval ends) are interpolated within bins, so they are
    not whole years.
    """
    point = point or AGE_POINT
    if point not in AGE_POINTS:
        raise ValueError(f"age point must be one of {AGE_POINTS}, not {point!r}")
    cdf = np.cumsum(age_probs, axis=1)
    tail = (1 - INTERVAL) / 2

    def quantile(q: float) -> np.ndarray:
        idx = np.clip((cdf < q).sum(axis=1), 0, len(age_bins) - 1)
        prev = np.where(idx > 0, cdf[np.arange(len(cdf)), np.maximum(idx - 1, 0)], 0.0)
        mass = age_probs[np.arange(len(cdf)), idx]
        frac = np.clip((q - prev) / np.maximum(mass, 1e-9), 0, 1)
        return age_bins[idx] - 0.5 + frac

    age = np.maximum(quantile(0.5), 0) if point == "median" else age_probs @ age_bins
    return age, np.maximum(quantile(tail), 0), quantile(1 - tail)


def decode(
    age_logits: np.ndarray, gender_logit: np.ndarray, age_temperature: float = 1.0,
    gender_temperature: float = 1.0, age_bins: np.ndarray | None = None,
) -> Prediction:
    """Turn raw network outputs into a Prediction, dividing logits by the temperatures.

    age_logits: (N, K); gender_logit: (N,); age_bins: (K,) ages of the bins (default 0..K-1).
    """
    bins = np.arange(age_logits.shape[1], dtype=np.float64) if age_bins is None else age_bins
    z = age_logits.astype(np.float64) / age_temperature
    z = np.exp(z - z.max(axis=1, keepdims=True))
    probs = z / z.sum(axis=1, keepdims=True)
    age, low, high = summarize_distribution(probs, bins)
    p_female = 1 / (1 + np.exp(-gender_logit.astype(np.float64) / gender_temperature))
    f32 = np.float32
    return Prediction(age.astype(f32), low.astype(f32), high.astype(f32), p_female.astype(f32), probs.astype(f32))
