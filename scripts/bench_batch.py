"""How fast does `agevision batch` go, and what would a big run cost?

    python scripts/bench_batch.py [--videos 8] [--workers 1 2] [--ray] [--project 10000 --machines 10]

Runs `agevision batch` (in this process, as the command does) over the first N one-person
shared clips, once per engine setting: the local engine with each --workers count, and
with --ray a Ray instance started on 127.0.0.1 with as many workers as cores. Prints for
each: wall seconds, videos per minute, frames per second, and the fixed cost (start-up,
scheduling) estimated as wall time minus the summed per-video seconds over the workers.
Then the projection: N videos of this mean length on K machines like this one cost
(measured seconds per video x N / (K x videos at once)) + the measured fixed cost.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import one_person_clips, run_script  # noqa: E402


def run(clips: list[Path], engine: str, workers: int | None) -> dict:
    from agevision.batch import BatchOptions, run_batch

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        result = run_batch(clips, Path(tmp) / "out", BatchOptions(), engine=engine, workers=workers)
        wall = time.perf_counter() - t0
    lines = result.lines
    busy = sum(line["seconds"] for line in lines)
    parallel = workers or 1
    frames = sum(line["frames"] for line in lines)
    return {"engine": engine, "workers": parallel, "wall_s": round(wall, 1), "videos": len(lines),
            "failed": result.failed, "videos_per_min": round(60 * len(lines) / wall, 1),
            "fps": round(frames / wall, 1), "per_video_s": round(busy / len(lines), 2),
            "fixed_s": round(max(wall - busy / parallel, 0.0), 1), "frames": frames}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=8)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--ray", action="store_true", help="also on a local Ray instance")
    ap.add_argument("--project", type=int, default=10000, help="videos in the projected run")
    ap.add_argument("--machines", type=int, default=10, help="machines in the projected run")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    import os

    clips = one_person_clips()[:args.videos]
    rows = [run(clips, "local", w) for w in args.workers]
    if args.ray:
        rows.append(run(clips, "ray", os.cpu_count() or 2))
    print(f"{len(clips)} clips, {rows[0]['frames']} frames in all, {os.cpu_count()} cores")
    print(f"{'engine':8s} {'workers':>7s} {'wall s':>7s} {'videos/min':>10s} {'FPS':>6s} {'s/video':>8s} "
          f"{'fixed s':>8s} {'failed':>6s}")
    for r in rows:
        print(f"{r['engine']:8s} {r['workers']:7d} {r['wall_s']:7.1f} {r['videos_per_min']:10.1f} {r['fps']:6.1f} "
              f"{r['per_video_s']:8.2f} {r['fixed_s']:8.1f} {r['failed']:6d}")
    best = max(rows, key=lambda r: r["videos_per_min"])
    per_machine = best["videos_per_min"] / 60  # videos a second on one machine, fixed cost included
    at_once = best["workers"]
    cost = best["per_video_s"] * args.project / (args.machines * at_once) + best["fixed_s"]
    print(f"projection ({best['engine']}, {at_once} workers a machine): {args.project} videos like these on "
          f"{args.machines} machines: about {cost / 60:.1f} min ({best['per_video_s']:.2f} s a video x "
          f"{args.project} / ({args.machines} x {at_once}) + {best['fixed_s']:.0f} s fixed); "
          f"at the measured rate, {args.project / (per_machine * args.machines) / 60:.1f} min")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    run_script(main)
