"""Benchmark the Estimator per backend: start-up, one face and a batch of 8.

Usage: python scripts/bench_estimator.py [--weights DIR] [--device cpu|cuda] [--backends onnx torch] [--threads 1]
                                         [--repeats 50]
For each backend, in one run: the seconds a fresh process takes to import the package and
make an Estimator (cold start: the first ever, cache emptied; warm: the second), then the
median and 90th percentile of `repeats` timed predictions after warm-up on real aligned
UTKFace crops, with the same number of model threads for all; each backend also without
the card's second gender network (`model.gender_ensemble`), and what the card's `denoise`
rule costs (`model.denoise`): the same clean crops without the rule (it measures every crop),
and the crops with noise of sigma 6 (it blurs every crop). Also the weights' size.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
from common import UTKFACE, run_script

from agevision.align import DEFAULT_BOX, DEFAULT_KEYPOINTS, align_crops, geometry_to_faces
from agevision.model import weights
from agevision.model.estimator import Estimator
from agevision.model.onnx_backend import checked_export

START = ("import time; t = time.perf_counter(); from agevision.model.estimator import Estimator; "
         "e = Estimator({weights!r}, device={device!r}, backend={backend!r}); "
         "print(e.backend, time.perf_counter() - t)")


def start_seconds(backend: str, device: str | None, cache: str, weights_dir: str | None) -> tuple[str, float]:
    """(backend that ran, seconds) for a fresh process to make an Estimator."""
    env = {**os.environ, "AGEVISION_CACHE": cache}
    code = START.format(weights=weights_dir, device=device, backend=backend)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    return out[-2], float(out[-1])


def timed(est: Estimator, batch: np.ndarray, repeats: int) -> list[float]:
    for _ in range(10):
        est.predict(batch)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        est.predict(batch)
        times.append((time.perf_counter() - t) * 1000)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", type=Path, default=None, help="weights folder (default: the shipped ones)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--backends", nargs="+", default=["onnx", "torch"])
    ap.add_argument("--threads", type=int, default=1, help="model threads for every backend")
    ap.add_argument("--repeats", type=int, default=50)
    args = ap.parse_args()
    files = sorted(UTKFACE.glob("3*_*.jpg"))[:8]
    geom = np.concatenate([DEFAULT_BOX, DEFAULT_KEYPOINTS.ravel()])
    card = weights.load_card(args.weights)
    size = card.input_size
    if "onnx" in args.backends:
        checked_export(args.weights, card)  # an AgevisionError saying why not, before any timing
    where = None if args.weights is None else str(args.weights.resolve())
    crops = []
    for f in files:
        img = cv2.imread(str(f))
        crops.append(align_crops(img, geometry_to_faces(geom, img.shape[1], img.shape[0]), size)[0])
    crops = np.stack(crops)
    rows, solo, rules = [], [], []
    for backend in args.backends:
        with tempfile.TemporaryDirectory() as cache:
            ran, cold = start_seconds(backend, args.device, cache, where)
            _, warm = start_seconds(backend, args.device, cache, where)
        est = Estimator(args.weights, device=args.device, backend=backend)
        threads = est.set_threads(args.threads)
        one, eight = timed(est, crops[:1], args.repeats), timed(est, crops, args.repeats)
        rows.append((ran, est.device, threads, cold, warm, one, eight))
        if est.card.denoise is not None:
            noisy = np.clip(crops + np.random.default_rng(0).normal(0, 6, crops.shape), 0, 255).astype(np.uint8)
            blurred = timed(est, noisy[:1], args.repeats), timed(est, noisy, args.repeats)
            est.card = replace(est.card, denoise=None)
            plain = timed(est, crops[:1], args.repeats), timed(est, crops, args.repeats)
            rules.append((ran, blurred, plain))
        if est.ensemble is not None:  # the same backend without the second gender network
            alone = Estimator(args.weights, device=args.device, backend=backend, ensemble=False)
            alone.set_threads(args.threads)
            solo.append((ran, timed(alone, crops[:1], args.repeats), timed(alone, crops, args.repeats)))
    print(f"input {size}px, {len(crops)} UTKFace crops, {args.repeats} timed calls each")
    print(f"{'backend':8s} {'device':6s} {'threads':>7s} {'cold start s':>12s} {'warm start s':>12s} "
          f"{'1 face ms (p90)':>16s} {'batch 8 ms (p90)':>17s} {'ms/face':>8s}")
    for ran, device, threads, cold, warm, one, eight in rows:
        print(f"{ran:8s} {str(device):6s} {threads:7d} {cold:12.2f} {warm:12.2f} "
              f"{statistics.median(one):8.2f} ({np.percentile(one, 90):5.2f}) "
              f"{statistics.median(eight):9.2f} ({np.percentile(eight, 90):5.2f}) {statistics.median(eight) / 8:8.2f}")
    if len(rows) == 2:
        a, b = rows
        print(f"{a[0]} / {b[0]}: 1 face x{statistics.median(a[5]) / statistics.median(b[5]):.2f}, batch 8 "
              f"x{statistics.median(a[6]) / statistics.median(b[6]):.2f}, warm start x{a[4] / b[4]:.2f}")
    for ran, one, eight in solo:
        print(f"{ran} without the second gender network: 1 face {statistics.median(one):.2f} ms, batch 8 "
              f"{statistics.median(eight):.2f} ms")
    for ran, (one, eight), (one_off, eight_off) in rules:
        print(f"{ran} with every crop noisy (all blurred): 1 face {statistics.median(one):.2f} ms, batch 8 "
              f"{statistics.median(eight):.2f} ms; clean crops without the denoise rule: 1 face "
              f"{statistics.median(one_off):.2f} ms, batch 8 {statistics.median(eight_off):.2f} ms")
    print(f"weights file: {weights.paths(args.weights)[0].stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    run_script(main)
