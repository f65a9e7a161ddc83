"""Benchmark the Estimator: milliseconds for one face and for a batch of 8, plus weights size.

Usage: python scripts/bench_estimator.py [--device cpu|cuda] [--repeats 50]
Median of `repeats` timed calls after warm-up, on real aligned UTKFace crops.
"""

from __future__ import annotations

import argparse
import statistics
import time

import cv2
import numpy as np
import torch
from common import UTKFACE

from agevision.align import DEFAULT_BOX, DEFAULT_KEYPOINTS, align_crops, geometry_to_faces
from agevision.model import weights
from agevision.model.estimator import Estimator


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default=None)
    ap.add_argument("--repeats", type=int, default=50)
    args = ap.parse_args()
    est = Estimator(device=args.device)
    files = sorted(UTKFACE.glob("3*_*.jpg"))[:8]
    geom = np.concatenate([DEFAULT_BOX, DEFAULT_KEYPOINTS.ravel()])
    crops = []
    for f in files:
        img = cv2.imread(str(f))
        crops.append(align_crops(img, geometry_to_faces(geom, img.shape[1], img.shape[0]), est.input_size)[0])
    crops = np.stack(crops)
    print(f"device {est.device}, torch threads {torch.get_num_threads()}, input {est.input_size}px")
    for n in (1, 8):
        batch = crops[:n]
        for _ in range(10):
            est.predict(batch)
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            est.predict(batch)
            times.append((time.perf_counter() - t) * 1000)
        print(f"batch {n}: median {statistics.median(times):.2f} ms, p90 {np.percentile(times, 90):.2f} ms "
              f"({statistics.median(times) / n:.2f} ms per face)")
    size = weights.paths()[0].stat().st_size / 1e6
    print(f"weights file: {size:.1f} MB")


if __name__ == "__main__":
    main()
