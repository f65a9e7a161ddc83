"""How well boxes follow faces between detections (`--detect-every N`).

Usage: python scripts/follow_accuracy.py [CLIP ...] [--detect-every 2 3 4]
(default clips: every clip in ../shared). Each clip runs through the pipeline twice side by
side: detecting on every frame, and detecting on every N-th frame with faces followed by
optical flow in between. For the in-between frames, each followed box is compared with the
best-overlapping box detected on that frame: mean IoU, the 10th percentile, and the share
of followed boxes with no detected face over IoU 0.5 (face lost, or the detector missed it
on that frame).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from common import VIDEOS, run_script

from agevision.defaults import DETECT_EVERY, TILE_SIZE
from agevision.faces import iou
from agevision.model.estimator import Estimator
from agevision.pipeline import FrameProcessor, share_cpu
from agevision.sources import VideoSource


def follow_ious(estimator: Estimator, clip: Path, every: int) -> np.ndarray:
    """IoU of each followed box with the best box detected on the same frame."""
    out = []
    with (VideoSource(clip) as src, FrameProcessor(estimator, tile_size=TILE_SIZE) as truth,
          FrameProcessor(estimator, detect_every=every, tile_size=TILE_SIZE) as followed):
        for frame in src:
            detected = truth.process(frame).faces
            result = followed.process(frame)
            faces = result.faces
            if not result.detected and len(faces):
                best = iou(faces.boxes, detected.boxes).max(axis=1) if len(detected) else np.zeros(len(faces))
                out.extend(best.tolist())
    return np.array(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("clips", nargs="*", type=Path)
    ap.add_argument("--detect-every", type=int, nargs="+", default=[DETECT_EVERY])
    args = ap.parse_args()
    clips = args.clips or sorted(VIDEOS.glob("*.mp4"))
    est = Estimator()
    share_cpu(est)
    print(f"{'clip':<46}" + "".join(f"{f'N={n} IoU':>10}{'p10':>6}{'lost':>7}" for n in args.detect_every))
    totals: dict[int, list] = {n: [] for n in args.detect_every}
    for clip in clips:
        line = f"{clip.name[:45]:<46}"
        for n in args.detect_every:
            ious = follow_ious(est, clip, n)
            totals[n].append(ious)
            line += (f"{ious.mean():>10.3f}{np.percentile(ious, 10):>6.2f}{(ious < 0.5).mean():>7.1%}"
                     if len(ious) else f"{'-':>10}{'-':>6}{'-':>7}")
        print(line, flush=True)
    for n, parts in totals.items():
        ious = np.concatenate(parts) if parts else np.zeros(0)
        if len(ious):
            print(f"detect every {n}: {len(ious)} followed boxes, mean IoU {ious.mean():.3f}, "
                  f"10th percentile {np.percentile(ious, 10):.2f}, {(ious < 0.5).mean():.1%} under 0.5")


if __name__ == "__main__":
    run_script(main)
