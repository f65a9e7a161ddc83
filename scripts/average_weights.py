"""Average the weights of training runs, calibrate and measure them (see agevision.training.average).

Usage: python scripts/average_weights.py DIR DIR [...] --shares 0.5 0.5 --out runs/weights-avg
The calibration uses the same split, seed and augmentation as `agevision train`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common import DUPLICATES, IMAGENET_PTH, UTKFACE, run_script
from rich.console import Console

from agevision.training.average import average_weights
from agevision.training.train import TrainConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument("--shares", nargs="+", type=float, default=None, help="one per folder (default: equal)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    shares = args.shares or [1.0] * len(args.folders)
    cfg = TrainConfig(data_dir=UTKFACE, out_dir=args.out, duplicates=DUPLICATES, imagenet=IMAGENET_PTH)
    card = average_weights(args.folders, shares, cfg, Console(stderr=True))
    m = card["validation_metrics"]
    print(f"averaged {len(args.folders)} runs -> {args.out}: val MAE {m['age_mae']:.2f}, gender "
          f"{m['gender_accuracy']:.1%}, ECE {m['gender_ece']:.3f}, coverage {m['interval_coverage']:.1%}")


if __name__ == "__main__":
    run_script(main)
