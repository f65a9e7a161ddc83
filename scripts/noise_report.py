"""Sensor noise on UTKFace validation faces: the noise level crops measure, and how the model
reads noisy faces with each blur, with the card's rule (`model.denoise`) and without any.

Usage: python scripts/noise_report.py [--weights DIR] [--every N]

Noise is Gaussian, on each RGB channel apart, added to the 112 px crops: "white" as is (a
face shrunk into the crop, as most webcam faces are), "correlated" blurred at 0.7 px first
and rescaled to the same sigma (a small face enlarged into the crop). For each: the noise
level's 1st / 50th / 99th percentile (`denoise.noise_levels`; also of the JPEG and H.264
slices of `wild_report.py`, with no noise) and the share above the
card's threshold; age MAE, mean signed error, 80% interval and gender as read with no blur,
with each fixed blur, and with the card's rule. The figures behind the card's `denoise` rule.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DUPLICATES, UTKFACE, run_script  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SIGMAS = (3, 6, 10, 15)
BLURS = (0.6, 0.8, 1.0, 1.3)


def noisy(crops: np.ndarray, sigma: float, correlated: bool, seed: int) -> np.ndarray:
    """The crops with Gaussian noise of `sigma` grey levels (see module doc), uint8."""
    noise = np.random.default_rng(seed).normal(0, sigma, crops.shape).astype(np.float32)
    if correlated:
        noise = np.stack([cv2.GaussianBlur(x, (0, 0), 0.7) for x in noise])
        noise *= sigma / noise.std()
    return np.clip(crops + noise, 0, 255).astype(np.uint8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", type=Path, default=None, help="weights folder (default: the shipped weights/)")
    ap.add_argument("--every", type=int, default=1, help="use every Nth validation face (default: all)")
    args = ap.parse_args()
    from agevision.model.denoise import noise_levels
    from agevision.model.estimator import Estimator
    from agevision.training.crops import cached_crops
    from agevision.training.utkface import load_folder, read_duplicate_groups, split

    est = Estimator(args.weights, "cpu")
    rule = est.card.denoise
    seed = int(est.card.extra.get("training_data", {}).get("split_seed", 0))
    val = split(load_folder(UTKFACE), read_duplicate_groups(DUPLICATES), seed=seed)["val"][:: args.every]
    crops = cached_crops([s.path for s in val], est.input_size, REPO / ".cache", crop=est.card.crop).crops
    ages = np.array([s.age for s in val], np.float64)
    women = np.array([s.gender for s in val]) == 1
    card = est.card

    def read(name: str, c: np.ndarray, with_rule: bool) -> None:
        est.card = card if with_rule else replace(card, denoise=None)  # what Estimator.prepare follows
        p = est.predict_many(c)
        est.card = card
        err = p.age - ages
        held = ((ages >= p.age_low) & (ages <= p.age_high)).mean()
        print(f"  {name:15s} MAE {np.abs(err).mean():5.2f}  bias {err.mean():+6.2f}  80% interval {held:6.1%}  "
              f"gender {((p.p_female >= 0.5) == women).mean():6.1%}", flush=True)

    print(f"{len(val)} validation faces; the card's rule: {rule}")
    from wild_report import _h264, _jpeg  # the report's own compressed slices

    for name, c in (("JPEG quality 20", np.stack([_jpeg(x) for x in crops])), ("H.264 CRF 30", _h264(crops, 30))):
        q = np.quantile(noise_levels(c), [0.01, 0.5, 0.99])
        print(f"{name}: level {q[0]:.2f} / {q[1]:.2f} / {q[2]:.2f} (no noise added)")
    for kind in ("white", "correlated"):
        for i, sigma in enumerate((0, *SIGMAS)):
            if kind == "correlated" and sigma == 0:
                continue
            c = noisy(crops, sigma, kind == "correlated", seed=i) if sigma else crops
            level = noise_levels(c)
            above = (level > rule.above).mean() if rule else 0.0
            q = np.quantile(level, [0.01, 0.5, 0.99])
            print(f"{kind} noise, sigma {sigma}: level {q[0]:.2f} / {q[1]:.2f} / {q[2]:.2f}, above the rule's "
                  f"threshold {above:.1%}")
            read("no blur", c, False)
            for b in BLURS if sigma else ():
                read(f"blur {b} px", np.stack([cv2.GaussianBlur(x, (0, 0), b) for x in c]), False)
            if rule is not None:
                read("the card's rule", c, True)


if __name__ == "__main__":
    run_script(main)
