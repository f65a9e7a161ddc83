"""Fit the second gender network's weight and temperature for existing weights, and write them
into the card (`gender_ensemble`; see agevision.model.gender_ensemble).

Usage: python scripts/fit_gender_ensemble.py [--weights DIR] [--dry-run]

The calibration part of the card's UTKFace split, as it is and in 2 augmented copies (the
training's augmentation, fixed seed), read by the model alone (its own temperatures kept)
and by dlib's network; weight and temperature by maximum likelihood (`training.ensemble.fit`).
Prints the fit and the gender accuracy of the model alone and of the ensemble on those faces
and on the validation part. `agevision train` does the same for the weights it makes.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import calibration_faces, refit_arguments, run_script  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    args = refit_arguments(__doc__)
    from agevision.model import weights
    from agevision.model.estimator import Estimator
    from agevision.model.gender_ensemble import combine
    from agevision.training import ensemble
    from agevision.training.crops import cached_crops

    est = Estimator(args.weights, "cpu", ensemble=False)
    card = est.card
    parts, reps = calibration_faces(card, REPO / ".cache")

    def model_z(crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(calibrated gender logit, read age) of the model alone (`predict_many` reads the
        crops after `est.prepare`; the second network is given them so below)."""
        pred = est.predict_many(crops)
        p = np.clip(pred.p_female.astype(np.float64), 1e-7, 1 - 1e-7)
        return np.log(p / (1 - p)), pred.age

    calib = parts["calib"]
    crops = np.concatenate(reps)
    genders = np.tile([s.gender for s in calib], len(reps))
    (zm, ages), zs = model_z(crops), ensemble.second_logits(est.prepare(crops), card.input_size, card.crop)
    new = ensemble.attach(card, zm, zs, genders, ages)
    spec = new.gender_ensemble
    print(f"{len(genders)} calibration faces ({len(calib)} as they are, {len(reps) - 1} augmented copies), "
          f"fitted on those read as {spec.min_age:g} or older: weight {spec.weight}, temperature "
          f"{spec.temperature}; {new.extra['gender_ensemble_fit']}")

    def accuracy(name: str, zm: np.ndarray, zs: np.ndarray, genders: np.ndarray, ages: np.ndarray,
                 rule=spec) -> None:
        both = combine(rule, zm, zs, ages)
        f = genders == 1
        for label, z in (("alone", zm), ("ensemble", both)):
            print(f"{name:32s} {label:9s} {((z > 0) == f).mean():.1%} (women {(z[f] > 0).mean():.1%}, "
                  f"men {(z[~f] <= 0).mean():.1%})")

    n = len(calib)
    accuracy("calibration faces as they are", zm[:n], zs[:n], genders[:n], ages[:n])
    accuracy("calibration faces augmented", zm[n:], zs[n:], genders[n:], ages[n:])
    val = parts["val"]
    vcrops = cached_crops([s.path for s in val], card.input_size, REPO / ".cache", crop=card.crop).crops
    vz, vage = model_z(vcrops)
    vs = ensemble.second_logits(est.prepare(vcrops), card.input_size, card.crop)
    vg, vtrue = np.array([s.gender for s in val]), np.array([s.age for s in val])
    accuracy("validation faces", vz, vs, vg, vage)
    kids = vtrue <= 12
    accuracy("validation faces aged 0-12", vz[kids], vs[kids], vg[kids], vage[kids])
    accuracy("validation 0-12, used at every age", vz[kids], vs[kids], vg[kids], vage[kids], replace(spec, min_age=0.0))
    if not args.dry_run:
        print(f"written: {weights.write_card(new, args.weights)}")


if __name__ == "__main__":
    run_script(main)
