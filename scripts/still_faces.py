"""What the still-photo search finds beyond BlazeFace's own faces (`agevision image`).

Usage: python scripts/still_faces.py [--frames 3]

Frames of every shared clip (`--frames` evenly spaced ones each, the stage clip's frame 250
too) and a quarter of UTKFace's validation photos, through `detect.StillFaceFinder` with and
without `rescue` (YuNet's proposals confirmed by BlazeFace): the faces each adds per clip
(boxes printed, to be looked at), the UTKFace photos found and those with more than one
face, and the milliseconds a photo of each, measured in the same run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DUPLICATES, UTKFACE, VIDEOS, run_script  # noqa: E402


def clip_frames(per_clip: int) -> list[tuple[str, int, np.ndarray]]:
    """(clip name, frame index, BGR frame): `per_clip` evenly spaced frames of every shared clip."""
    from agevision.sources import VideoSource

    out = []
    for clip in sorted(VIDEOS.glob("*.mp4")):
        with VideoSource(clip) as src:
            n = src.frame_count or 0
            wanted = {n * (i + 1) // (per_clip + 1) for i in range(per_clip)}
            if clip.name == "face_recognition__short_hamilton_clip.mp4":
                wanted.add(250)  # the older woman beside the Obamas, missed by BlazeFace
            for index, frame in enumerate(src):
                if index in wanted:
                    out.append((clip.name, index, frame))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=3, help="frames a clip")
    args = ap.parse_args()
    from agevision.defaults import TILE_SIZE
    from agevision.detect import StillFaceFinder
    from agevision.training.utkface import load_folder, read_duplicate_groups, split

    frames = clip_frames(args.frames)
    val = split(load_folder(UTKFACE), read_duplicate_groups(DUPLICATES), seed=0)["val"]
    photos = [cv2.imread(str(s.path)) for s in val[::4]]
    seconds = {False: 0.0, True: 0.0}
    with StillFaceFinder("full", tile_size=TILE_SIZE, rescue=False) as plain, \
            StillFaceFinder("full", tile_size=TILE_SIZE) as still:
        finders = {False: plain, True: still}

        def find(rescue: bool, image: np.ndarray):
            t = time.perf_counter()
            faces = finders[rescue].find(image)
            seconds[rescue] += time.perf_counter() - t
            return faces

        added = 0
        for name, index, frame in frames:
            before, after = find(False, frame), find(True, frame)
            new = [b for b in after.boxes if not any(np.allclose(b, o) for o in before.boxes)]
            if new:
                added += len(new)
                boxes = ", ".join(str([int(v) for v in b]) for b in new)
                print(f"{name} frame {index}: {len(before)} -> {len(after)} faces; added {boxes}")
        print(f"{len(frames)} clip frames: {added} faces added")
        for rescue in (False, True):
            counts = [len(find(rescue, p)) for p in photos]
            print(f"UTKFace photos ({len(photos)}), rescue {'on' if rescue else 'off'}: found "
                  f"{np.mean([c > 0 for c in counts]):.1%}, more than one face {sum(c > 1 for c in counts)}")
    n = len(frames) + len(photos)
    print(f"ms a photo (clip frames and UTKFace photos): rescue off {seconds[False] / n * 1e3:.0f}, "
          f"on {seconds[True] / n * 1e3:.0f}")


if __name__ == "__main__":
    run_script(main)
