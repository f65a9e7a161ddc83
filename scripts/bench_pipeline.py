"""End-to-end speed of `agevision video` on a clip, against decode+encode alone (the floor).

Usage: python scripts/bench_pipeline.py CLIP [--detector full|short] [--device cpu|cuda]
                                           [--detect-every 1 2 3] [--threads N] [--summary] [--loop]
Prints, from one run: FPS of decoding and re-encoding the clip with nothing else done,
then for each --detect-every value the FPS of the full pipeline writing an annotated
video, its ratio to the first figure, and per-stage milliseconds per frame. --summary:
each pipeline run is also made as `agevision video --out --summary` (face identities kept,
people grouped, the CSV and thumbnails written), alternating with the plain runs, and the
wall-time cost of the summary is printed as a ratio. --loop: the frame loop alone as well
(frames decoded into memory first, nothing encoded), with the detections made on the loop's
own thread and made ahead on another (`pipeline.detect_ahead`, what `run_video` does):
what detecting ahead gains when cores are free.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from agevision.defaults import TILE_SIZE
from agevision.model.estimator import Estimator
from agevision.pipeline import FrameProcessor, detect_ahead, run_video, share_cpu
from agevision.sinks import VideoSink, VideoWriter
from agevision.sources import VideoSource


def floor_fps(clip: Path, out: Path) -> tuple[float, int]:
    """Decode and re-encode every frame, nothing else. Returns (FPS, frames)."""
    with VideoSource(clip) as src:
        writer = VideoWriter(out, src.width, src.height, src.fps, audio_from=clip)
        t = time.perf_counter()
        n = 0
        for frame in src:
            writer.write(frame)
            n += 1
        writer.close()
        return n / (time.perf_counter() - t), n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("clip", type=Path)
    ap.add_argument("--detector", default="full")
    ap.add_argument("--device", default=None)
    ap.add_argument("--detect-every", type=int, nargs="+", default=[1],
                    help="detect on every n-th frame (several values: one pipeline run each)")
    ap.add_argument("--tile-size", type=int, default=TILE_SIZE, help="as in agevision video")
    ap.add_argument("--threads", type=int, default=None, help="model CPU threads (default: agevision's choice)")
    ap.add_argument("--backend", default="auto", help="auto, onnx or torch")
    ap.add_argument("--summary", action="store_true", help="also time each run with --summary (identities)")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each kind; the fastest is reported")
    ap.add_argument("--loop", action="store_true", help="also the frame loop alone, detecting on it and ahead")
    args = ap.parse_args()
    est = Estimator(device=args.device, backend=args.backend)
    threads = est.set_threads(args.threads) if args.threads else share_cpu(est)
    with tempfile.TemporaryDirectory() as tmp:
        base, frames = floor_fps(args.clip, Path(tmp) / "floor.mp4")
        print(f"clip {args.clip.name}: {frames} frames, device {est.device}, detector {args.detector}, "
              f"tile size {args.tile_size}, backend {est.backend}, model threads {threads}")
        print(f"decode+encode only: {base:.1f} FPS")
        for every in args.detect_every:
            plain = [pipeline_run(args, est, every, Path(tmp), False) for _ in range(args.repeat)]
            best = min(plain, key=lambda r: r[0])
            report(f"agevision video --out, detect every {every}", best, base)
            if args.summary:
                people = [pipeline_run(args, est, every, Path(tmp), True) for _ in range(args.repeat)]
                with_people = min(people, key=lambda r: r[0])
                report(f"agevision video --out --summary, detect every {every}", with_people, base)
                print(f"  summary cost: wall time x{with_people[0] / best[0]:.3f} (fastest of {args.repeat} each; "
                      f"{with_people[2]} people, {with_people[3]} embeddings)")
            if args.loop:
                loop_alone(args, est, every)


def loop_alone(args, est, every: int) -> None:
    """FPS of the frame loop on frames held in memory: detecting on the loop's thread, then
    ahead on another; alternated, the fastest of --repeat each."""
    with VideoSource(args.clip) as src:
        frames = list(src)
    best = {"on the loop's thread": 0.0, "ahead (detect_ahead)": 0.0}
    for _ in range(args.repeat):
        for mode in best:
            with FrameProcessor(est, detector=args.detector, detect_every=every, tile_size=args.tile_size) as proc:
                t = time.perf_counter()
                if mode.startswith("ahead"):
                    for frame, found in detect_ahead(proc, frames):
                        proc.process(frame, found)
                else:
                    for frame in frames:
                        proc.process(frame)
                best[mode] = max(best[mode], len(frames) / (time.perf_counter() - t))
    print(f"  frame loop alone (in memory, no encode), detect every {every}: "
          + ", ".join(f"detecting {k} {v:.1f} FPS" for k, v in best.items()))


def pipeline_run(args, est, every: int, tmp: Path, summary: bool) -> tuple[float, object, int, int]:
    """One run writing an annotated video (and with `summary`, the people CSV as
    `agevision video --summary` does). Returns (seconds, VideoResult, people, embeddings)."""
    from agevision.records import video_header
    from agevision.sinks import PeopleSink

    with VideoSource(args.clip) as src, FrameProcessor(est, detector=args.detector, detect_every=every,
                                                       tile_size=args.tile_size, identify=summary) as proc:
        t0 = time.perf_counter()
        sinks = [VideoSink(tmp / "full.mp4", src.width, src.height, src.fps, audio_from=args.clip)]
        if summary:
            header = video_header(args.clip, src.width, src.height, src.fps, src.frame_count, identities=True)
            sinks.append(PeopleSink(tmp / "people.csv", header, 0.5))
        result = run_video(proc, src, float(src.fps), sinks)
        persons = proc.people()
        for sink in sinks:
            sink.finish(result.end_record(), persons)
        seconds = time.perf_counter() - t0
        people = len(sinks[1].summary.people) if summary else 0
        return seconds, result, people, proc.identities.embeddings if summary else 0


def report(what: str, run: tuple, base: float) -> None:
    seconds, result = run[0], run[1]
    fps = result.frames / seconds
    print(f"{what}: {fps:.1f} FPS  ({result.faces / max(result.frames, 1):.1f} faces/frame), ratio {fps / base:.2f}")
    stages = result.times.ms_per_frame()
    print("  per frame (ms, on the main thread; decode and encode run on their own threads): "
          + ", ".join(f"{k} {v:.1f}" for k, v in stages.items()))


if __name__ == "__main__":
    main()
