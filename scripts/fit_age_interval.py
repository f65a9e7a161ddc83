"""Refit the age temperature of existing weights so that the 80% age interval holds for faces
as the wild shows them, not only for UTKFace's, and write it into the card.

Usage: python scripts/fit_age_interval.py [--weights DIR] [--dry-run]

The calibration part of the card's UTKFace split, as it is and in 2 augmented copies (the
training's augmentation, fixed seed: `train.calibration_copies`), read by the model; the age
temperature whose 80% intervals hold the true age for 80% of those faces
(`calibration.fit_age`), the rule `agevision train` uses for the weights it makes. Weights
made before that rule had theirs fitted on the calibration faces as they are only. The gender
side is left alone: its final temperature (the second network's, `fit_gender_ensemble.py`) is
fitted on the same faces already. Prints, at the card's temperature and at the new one, age
MAE, signed error, interval coverage and median width on the calibration faces as they are,
augmented, and on the validation part.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import calibration_faces, refit_arguments, run_script  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def figures(age_logits: np.ndarray, ages: np.ndarray, temperature: float, bins: np.ndarray) -> str:
    """'MAE .., bias .., 80% interval holds ..%, median width ..' of the faces at `temperature`."""
    from agevision.model.decode import decode

    p = decode(age_logits, np.zeros(len(ages)), temperature, 1.0, bins)
    held = ((ages >= p.age_low) & (ages <= p.age_high)).mean()
    err = p.age - ages
    return (f"MAE {np.abs(err).mean():.2f}, bias {err.mean():+.2f}, interval holds {held:.1%}, "
            f"median width {np.median(p.age_high - p.age_low):.1f} years")


def main() -> None:
    args = refit_arguments(__doc__)
    from agevision.model import weights
    from agevision.model.estimator import Estimator
    from agevision.training import calibration
    from agevision.training.crops import cached_crops
    from agevision.training.train import card_metrics

    est = Estimator(args.weights, "cpu", ensemble=False)
    card = est.card
    bins = np.asarray(card.age_bins, np.float64)
    parts, reps = calibration_faces(card, REPO / ".cache")

    def both_logits(crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        parts = [est.logits(crops[i : i + 256]) for i in range(0, len(crops), 256)]
        return np.concatenate([a for a, _ in parts]), np.concatenate([g for _, g in parts])

    calib = parts["calib"]
    logits = both_logits(np.concatenate(reps))[0]
    ages = np.tile(np.array([s.age for s in calib], np.float64), len(reps))
    new_t = calibration.fit_age(logits, ages)
    n = len(calib)
    print(f"{len(ages)} calibration faces ({n} as they are, {len(reps) - 1} augmented copies): age temperature "
          f"{card.age_temperature} -> {new_t}")
    val = parts["val"]
    vcrops = cached_crops([s.path for s in val], card.input_size, REPO / ".cache", crop=card.crop).crops
    vlogits, vgender = both_logits(vcrops)
    vages = np.array([s.age for s in val], np.float64)
    for name, z, truth in (("calibration faces as they are", logits[:n], ages[:n]),
                           ("calibration faces augmented", logits[n:], ages[n:]),
                           ("validation faces", vlogits, vages)):
        for label, t in (("now", card.age_temperature), ("refitted", new_t)):
            print(f"{name:30s} {label:9s} T {t:.4f}: {figures(z, truth, t, bins)}")
    if not args.dry_run:
        was = card.extra.get("age_temperature_fit", {}).get("was", card.age_temperature)  # before any refit
        fit = {"on": "calibration faces, as they are and augmented", "faces": int(len(ages)), "was": was}
        new = replace(card, age_temperature=new_t)
        measured = card_metrics(new, vlogits, vgender, est.prepare(vcrops), vages, np.array([s.gender for s in val]))
        extra = {**card.extra, "age_temperature_fit": fit,
                 "validation_metrics": {**card.extra.get("validation_metrics", {}), **measured}}
        new = replace(new, extra=extra)
        print(f"written: {weights.write_card(new, args.weights)}")


if __name__ == "__main__":
    run_script(main)
