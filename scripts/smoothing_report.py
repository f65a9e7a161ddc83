"""Raw vs smoothed estimates per talking-head clip: the temporal smoother's effect.

Usage: python scripts/smoothing_report.py [CLIP ...]   (default: the one-person clips in ../shared)
For each clip's longest track: standard deviation of the raw and the smoothed age after the
first second, and gender flips (frames where the label changes) raw vs smoothed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from agevision.model.estimator import Estimator
from agevision.pipeline import FrameProcessor
from agevision.sources import VideoSource

VIDEOS = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "videos"
ONE_PERSON = ("LivePortrait__driving", "SadTalker", "video-retalking")


def measure(estimator: Estimator, path: Path) -> dict:
    rows: dict[int, list] = {}
    with VideoSource(path) as src, FrameProcessor(estimator, detector="full") as proc:
        skip = int(round(float(src.fps)))
        for n, frame in enumerate(src):
            faces, raw = proc.process(frame)
            for i, tid in enumerate(faces.track_ids):
                if not np.isnan(faces.age[i]):
                    rows.setdefault(int(tid), []).append((n, raw.age[i], faces.age[i], raw.female[i], faces.female[i]))
    if not rows:
        return {"clip": path.name, "frames": 0}
    track = np.array(max(rows.values(), key=len), dtype=np.float64)
    after = track[track[:, 0] >= skip]
    flips = [int((np.diff(track[:, k]) != 0).sum()) for k in (3, 4)]
    return {"clip": path.name, "tracks": len(rows), "frames": len(track),
            "raw_std": float(after[:, 1].std()) if len(after) else float("nan"),
            "smooth_std": float(after[:, 2].std()) if len(after) else float("nan"),
            "mean_age": float(after[:, 2].mean()) if len(after) else float("nan"),
            "raw_flips": flips[0], "smooth_flips": flips[1]}


def main() -> None:
    clips = [Path(a) for a in sys.argv[1:]] or sorted(p for p in VIDEOS.glob("*.mp4") if p.name.startswith(ONE_PERSON))
    est = Estimator()
    print(f"{'clip':<46}{'tracks':>7}{'frames':>7}{'raw std':>9}{'smooth std':>11}{'age':>6}{'raw flips':>10}"
          f"{'smooth flips':>13}")
    for clip in clips:
        r = measure(est, clip)
        if not r["frames"]:
            print(f"{r['clip']:<46} no face")
            continue
        print(f"{r['clip']:<46}{r['tracks']:>7}{r['frames']:>7}{r['raw_std']:>9.2f}{r['smooth_std']:>11.2f}"
              f"{r['mean_age']:>6.1f}{r['raw_flips']:>10}{r['smooth_flips']:>13}", flush=True)


if __name__ == "__main__":
    main()
