"""How fast does agevision start, and how much of a short clip's time is start-up?

    python scripts/bench_start.py [--clip ../shared/data/videos/LivePortrait__driving_d14.mp4] [--backend auto]
        [--repeat 3]

In one run, each as a new process the way a user runs it:
- a missing file (`agevision image /nonexistent.jpg`): time to the error line;
- time to first frame: `agevision image` on one photo, `agevision video --out` on a
  one-frame cut of the clip, and `agevision webcam --source` on that cut (under Xvfb,
  when it is installed): each run ends right after its first frame, so its wall time is
  the time to the first frame plus a clean exit. Cold: with an empty model cache (the
  traced PyTorch model is rebuilt); warm: run again;
- the bar: decoding and re-encoding the whole clip at the writer's own settings, against
  `agevision video CLIP --out`, start-up included, as a ratio: `--repeat` pairs, alternated,
  and their median.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import UTKFACE, VIDEOS, run_script  # noqa: E402

AGEVISION = [sys.executable, "-m", "agevision"]


def wall(cmd: list[str], env: dict, cwd: Path) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, timeout=600)
    return time.perf_counter() - t


def one_frame(clip: Path, target: Path) -> None:
    from agevision.sinks import VideoWriter
    from agevision.sources import VideoSource

    with VideoSource(clip) as src:
        writer = VideoWriter(target, src.width, src.height, src.fps)
        writer.write(next(iter(src)))
        writer.close()


def floor_seconds(clip: Path, target: Path) -> float:
    from agevision.sinks import VideoWriter
    from agevision.sources import VideoSource

    t = time.perf_counter()
    with VideoSource(clip) as src:
        writer = VideoWriter(target, src.width, src.height, src.fps, audio_from=clip)
        for frame in src:
            writer.write(frame)
        writer.close()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clip", type=Path, default=VIDEOS / "LivePortrait__driving_d14.mp4")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--repeat", type=int, default=3, help="pairs of (decode+encode, agevision video) runs")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cut = tmp / "first.mp4"
        one_frame(args.clip, cut)
        photo = sorted(UTKFACE.glob("3*_*.jpg"))[0]
        backend = ["--backend", args.backend]
        runs = {"image (one photo)": AGEVISION + ["image", str(photo), *backend],
                "video --out (one frame)": AGEVISION + ["video", str(cut), "--out", "o.mp4", *backend]}
        xvfb = shutil.which("Xvfb")
        display = None
        if xvfb:
            display = subprocess.Popen([xvfb, ":97", "-screen", "0", "1280x800x24"], stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)
            time.sleep(1.0)
            runs["webcam --source (one frame)"] = AGEVISION + ["webcam", "--source", str(cut), *backend]
        env = {**os.environ, "AGEVISION_CACHE": str(tmp / "cache"), "DISPLAY": ":97"}
        try:
            error = wall(AGEVISION + ["image", "/nonexistent.jpg"], env, tmp)
            rows = []
            for name, cmd in runs.items():
                shutil.rmtree(tmp / "cache", ignore_errors=True)
                cold = wall(cmd, env, tmp)
                warm = min(wall(cmd, env, tmp) for _ in range(2))
                rows.append((name, cold, warm))
            pairs = []  # alternated, so that a busy moment of the machine hits both alike
            for _ in range(args.repeat):
                pairs.append((floor_seconds(args.clip, tmp / "floor.mp4"),
                              wall(AGEVISION + ["video", str(args.clip), "--out", "full.mp4", *backend], env, tmp)))
        finally:
            if display is not None:
                display.terminate()
    print(f"missing file, time to the error line: {error:.2f} s")
    print(f"{'time to first frame':30s} {'cold s':>7s} {'warm s':>7s}   (backend {args.backend})")
    for name, cold, warm in rows:
        print(f"{name:30s} {cold:7.2f} {warm:7.2f}")
    for floor, full in pairs:
        print(f"{args.clip.name}: decode+encode {floor:.2f} s, agevision video --out {full:.2f} s (start-up "
              f"included): ratio {floor / full:.2f}")
    ratios = sorted(floor / full for floor, full in pairs)
    print(f"ratio over {len(pairs)} alternated pairs: median {ratios[len(ratios) // 2]:.2f}, "
          f"range {ratios[0]:.2f}-{ratios[-1]:.2f}")


if __name__ == "__main__":
    run_script(main)
