"""Raw vs smoothed estimates per talking-head clip: the temporal smoother's effect.

Usage: python scripts/smoothing_report.py [CLIP ...] [--decay 0.998 ...] [--detector full] [--detect-every N]
(default clips: the one-person clips in ../shared). Each clip goes once through detection,
tracking and the model; the raw per-frame estimates are then replayed through a Smoother
per --decay value (the shipped default first), so settings are compared on the same frames.
For each clip's longest track: standard deviation of the raw and the smoothed age after the
first second, and gender flips (frames where the shown label changes), raw vs smoothed,
over the frames with a new estimate (every --detect-every-th; the default is agevision video's).

Then a tracker swap: the first 4 s of the oldest-looking clip's person followed, in the
same track, by the youngest-looking clip's person, and the seconds after the swap until
the track shows the new person's age (within 3 years of what their own clip shows).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
from common import one_person_clips, run_script

from agevision.defaults import DETECT_EVERY, TILE_SIZE
from agevision.faces import Faces
from agevision.model.estimator import Estimator
from agevision.pipeline import FrameProcessor
from agevision.smooth import Smoother
from agevision.sources import VideoSource


def raw_frames(estimator: Estimator, path: Path, detector: str, detect_every: int) -> tuple[list, float]:
    """Per frame: the tracked faces with raw (unsmoothed) estimates (NaN on frames between
    detections). Returns (frames, fps)."""
    frames = []
    with VideoSource(path) as src, FrameProcessor(estimator, detector=detector, smooth=False,
                                                  detect_every=detect_every, tile_size=TILE_SIZE) as proc:
        for frame in src:
            result = proc.process(frame)
            frames.append((result.raw, result.ended))
        return frames, float(src.fps)


def _copy(faces: Faces) -> Faces:
    """A copy the smoother may change without touching the recorded raw faces."""
    return faces.subset(np.arange(len(faces)))


def _side(label: str) -> float:
    """1 for F, 0 for M, NaN for '?' (not sure: no side taken)."""
    return {"F": 1.0, "M": 0.0}.get(str(label), float("nan"))


def _flips(sides: np.ndarray) -> int:
    """Changes between F and M along a track, '?' frames between them skipped."""
    taken = sides[~np.isnan(sides)]
    return int((np.diff(taken) != 0).sum())


def replay(frames: list, fps: float, smoother: Smoother | None) -> dict:
    """Smooth recorded frames; figures for the longest track (see module doc)."""
    rows: dict[int, list] = {}
    for n, (faces, ended) in enumerate(frames):
        raw = faces
        if smoother is not None:
            faces = smoother.update(_copy(faces), ended, n)
        for i, tid in enumerate(faces.track_ids):
            if not np.isnan(faces.age[i]):
                sides = _side(raw.gender[i]), _side(faces.gender[i])
                rows.setdefault(int(tid), []).append((n, raw.age[i], faces.age[i], *sides))
    if not rows:
        return {"frames": 0}
    track = np.array(max(rows.values(), key=len), dtype=np.float64)
    after = track[track[:, 0] >= round(fps)]
    flips = [_flips(track[:, k]) for k in (3, 4)]
    nan = float("nan")
    return {"tracks": len(rows), "frames": len(track),
            "raw_std": float(after[:, 1].std()) if len(after) else nan,
            "smooth_std": float(after[:, 2].std()) if len(after) else nan,
            "mean_age": float(after[:, 2].mean()) if len(after) else nan,
            "raw_flips": flips[0], "smooth_flips": flips[1]}


def one_track(frames: list) -> list:
    """The frames with only their first face each, all in track 0 (none ever ends)."""
    out = []
    for faces, _ in frames:
        one = faces.subset(np.arange(min(len(faces), 1)))
        one.track_ids = np.zeros(len(one), np.int64)
        out.append((one, []))
    return out


def swap_seconds(first: list, second: list, fps: float, make: Callable[[], Smoother]) -> float:
    """Seconds after a track's first 4 s of `first` turn into `second` until it shows the
    second person's age (within 3 years of `second` alone; see module doc); inf if never."""
    head = one_track(first)[: round(4 * fps)]
    target = replay(one_track(second), fps, make())["mean_age"]
    smoother = make()
    for n, (faces, ended) in enumerate(head + one_track(second)):
        faces = smoother.update(_copy(faces), ended, n)
        if n >= len(head) and len(faces) and abs(float(faces.age[0]) - target) < 3:
            return (n - len(head)) / fps
    return float("inf")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("clips", nargs="*", type=Path)
    ap.add_argument("--decay", nargs="+", type=float, default=[Smoother(np.arange(2)).decay])
    ap.add_argument("--detector", default="full")
    ap.add_argument("--detect-every", type=int, default=DETECT_EVERY, help="as in agevision video")
    ap.add_argument("--weights", type=Path, default=None, help="weights folder (default: the shipped weights/)")
    args = ap.parse_args()
    clips = args.clips or one_person_clips()
    est = Estimator(args.weights)
    head = "".join(f"{f'std d={d}':>13}{'flips':>6}" for d in args.decay)
    print(f"{'clip':<46}{'tracks':>7}{'frames':>7}{'age':>6}{'raw std':>9}{'flips':>6}{head}")
    worst = {d: [] for d in args.decay}
    seen: dict[str, tuple[list, float, float]] = {}  # clip -> frames, fps, mean smoothed age
    for clip in clips:
        frames, fps = raw_frames(est, clip, args.detector, args.detect_every)
        base = replay(frames, fps, None)
        if not base["frames"]:
            print(f"{clip.name:<46} no face")
            continue
        line = f"{clip.name:<46}{base['tracks']:>7}{base['frames']:>7}"
        cols = ""
        for d in args.decay:
            r = replay(frames, fps, Smoother(est.age_bins, decay=d, age_temperature=est.card.age_temperature))
            cols += f"{r['smooth_std']:>13.2f}{r['smooth_flips']:>6}"
            worst[d].append((r["smooth_std"], r["smooth_flips"]))
            age = r["mean_age"]
        seen[clip.name] = frames, fps, age
        print(f"{line}{age:>6.1f}{base['raw_std']:>9.2f}{base['raw_flips']:>6}{cols}", flush=True)
    for d, rs in worst.items():
        ok = sum(1 for s, f in rs if s <= 1.5 and f == 0)
        print(f"decay {d}: {ok}/{len(rs)} clips with smoothed std <= 1.5 and no gender flip; "
              f"worst std {max(s for s, _ in rs):.2f}")
    if len(seen) >= 2:
        old, young = max(seen, key=lambda c: seen[c][2]), min(seen, key=lambda c: seen[c][2])
        for d in args.decay:
            secs = swap_seconds(seen[old][0], seen[young][0], seen[old][1],
                                lambda d=d: Smoother(est.age_bins, decay=d, age_temperature=est.card.age_temperature))
            print(f"decay {d}: tracker swap {old} ({seen[old][2]:.0f}) -> {young} ({seen[young][2]:.0f}): "
                  f"the track shows the new age after {secs:.1f} s")


if __name__ == "__main__":
    run_script(main)
