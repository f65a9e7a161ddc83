"""Evaluation metrics on numpy arrays of predictions and labels."""

from __future__ import annotations

import numpy as np

AGE_BUCKETS = ((0, 12), (13, 20), (21, 40), (41, 60), (61, 200))


def bucket_name(lo: int, hi: int) -> str:
    """'0-12', ..., '61+' for an inclusive age range."""
    return f"{lo}+" if hi >= 200 else f"{lo}-{hi}"


def gender_ece(p_female: np.ndarray, genders: np.ndarray, n_bins: int = 10) -> float:
    """Expected calibration error of the predicted gender's confidence (10 equal-width bins)."""
    if len(p_female) == 0:
        return float("nan")
    pred = (p_female >= 0.5).astype(int)
    conf = np.where(pred == 1, p_female, 1 - p_female)
    correct = (pred == genders).astype(float)
    edges = np.linspace(0.5, 1.0, n_bins + 1)
    idx = np.clip(np.digitize(conf, edges) - 1, 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        m = idx == b
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(ece)


def reliability(p_female: np.ndarray, genders: np.ndarray, n_bins: int = 10) -> tuple[np.ndarray, ...]:
    """(mean predicted P(female), observed female share, count) per probability bin."""
    edges = np.linspace(0, 1, n_bins + 1)
    idx = np.clip(np.digitize(p_female, edges) - 1, 0, n_bins - 1)
    pred, obs, count = np.full(n_bins, np.nan), np.full(n_bins, np.nan), np.zeros(n_bins, int)
    for b in range(n_bins):
        m = idx == b
        count[b] = m.sum()
        if m.any():
            pred[b], obs[b] = p_female[m].mean(), genders[m].mean()
    return pred, obs, count


def summary(
    ages: np.ndarray, genders: np.ndarray, age_pred: np.ndarray, low: np.ndarray, high: np.ndarray,
    p_female: np.ndarray,
) -> dict[str, float]:
    """Headline metrics: n, age MAE, CS@5, gender accuracy, gender ECE, 80%-interval coverage."""
    err = np.abs(age_pred - ages)
    return {
        "n": int(len(ages)),
        "age_mae": float(err.mean()) if len(err) else float("nan"),
        "cs5": float((err <= 5).mean()) if len(err) else float("nan"),
        "gender_accuracy": float(((p_female >= 0.5) == (genders == 1)).mean()) if len(err) else float("nan"),
        "gender_ece": gender_ece(p_female, genders),
        "interval_coverage": float(((ages >= low) & (ages <= high)).mean()) if len(err) else float("nan"),
    }


def by_group(
    groups: dict[str, np.ndarray], ages: np.ndarray, genders: np.ndarray, age_pred: np.ndarray,
    low: np.ndarray, high: np.ndarray, p_female: np.ndarray,
) -> dict[str, dict[str, float]]:
    """`summary` for each named boolean mask in `groups` (empty groups are left out)."""
    out = {}
    for name, mask in groups.items():
        if mask.any():
            out[name] = summary(ages[mask], genders[mask], age_pred[mask], low[mask], high[mask], p_female[mask])
    return out


def age_bucket_masks(ages: np.ndarray) -> dict[str, np.ndarray]:
    """Boolean masks for the age buckets 0-12, 13-20, 21-40, 41-60, 61+."""
    return {bucket_name(lo, hi): (ages >= lo) & (ages <= hi) for lo, hi in AGE_BUCKETS}
