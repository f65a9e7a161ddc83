"""End-to-end speed of `agevision video` on a clip, against decode+encode alone (the floor).

Usage: python scripts/bench_pipeline.py CLIP [--detector full|short] [--device cpu|cuda]
                                           [--detect-every 1 2 3] [--threads N]
Prints, from one run: FPS of decoding and re-encoding the clip with nothing else done,
then for each --detect-every value the FPS of the full pipeline writing an annotated
video, its ratio to the first figure, and per-stage milliseconds per frame.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from agevision.defaults import TILE_SIZE
from agevision.model.estimator import Estimator
from agevision.pipeline import FrameProcessor, run_video, share_cpu
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
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: agevision's choice)")
    args = ap.parse_args()
    est = Estimator(device=args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    else:
        share_cpu(est)
    with tempfile.TemporaryDirectory() as tmp:
        base, frames = floor_fps(args.clip, Path(tmp) / "floor.mp4")
        print(f"clip {args.clip.name}: {frames} frames, device {est.device}, detector {args.detector}, "
              f"tile size {args.tile_size}, torch threads {torch.get_num_threads()}")
        print(f"decode+encode only: {base:.1f} FPS")
        for every in args.detect_every:
            with VideoSource(args.clip) as src, FrameProcessor(est, detector=args.detector, detect_every=every,
                                                               tile_size=args.tile_size) as proc:
                sink = VideoSink(Path(tmp) / "full.mp4", src.width, src.height, src.fps, audio_from=args.clip)
                result = run_video(proc, src, float(src.fps), [sink])
                t = time.perf_counter()
                sink.finish(result.end_record())
                seconds = result.seconds + time.perf_counter() - t
            fps = result.frames / seconds
            print(f"agevision video, detect every {every}: {fps:.1f} FPS  "
                  f"({result.faces / max(result.frames, 1):.1f} faces/frame), ratio {fps / base:.2f}")
            stages = result.times.ms_per_frame()
            print("  per frame (ms, on the main thread; decode and encode run on their own threads): "
                  + ", ".join(f"{k} {v:.1f}" for k, v in stages.items()))

if __name__ == "__main__":
    main()
