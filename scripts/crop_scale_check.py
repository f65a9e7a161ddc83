"""How the crop's resampling changes the model's reading of large video faces.

Usage: python scripts/crop_scale_check.py [CLIP ...] [--step 3]
(default clips: the one-person clips in ../shared). On every --step-th frame the largest
face is cropped twice: with a plain bilinear warp (what agevision did before it shrank
large faces with area averaging first) and with `align.align_crops` (area-shrunk). Prints
per clip the crop scale, and for each crop the mean and standard deviation of the raw
predicted age and the mean P(female).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from agevision import align
from agevision.detect import FaceDetector
from agevision.model.estimator import Estimator
from agevision.sources import VideoSource

VIDEOS = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "videos"
ONE_PERSON = ("LivePortrait__driving", "SadTalker", "video-retalking")


def plain_crop(frame_bgr: np.ndarray, mat: np.ndarray, size: int) -> np.ndarray:
    """A bilinear warp of the whole frame, no anti-aliasing: (size, size, 3) RGB."""
    crop = cv2.warpAffine(frame_bgr, mat, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return crop[:, :, ::-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("clips", nargs="*", type=Path)
    ap.add_argument("--step", type=int, default=3)
    ap.add_argument("--weights", type=Path, default=None, help="weights folder (default: the shipped weights/)")
    args = ap.parse_args()
    clips = args.clips or sorted(p for p in VIDEOS.glob("*.mp4") if p.name.startswith(ONE_PERSON))
    est = Estimator(args.weights)
    size = est.input_size
    cols = ("plain: age", "sd", "pF", "shrunk: age", "sd", "pF")
    print(f"{'clip':<46}{'faces':>6}{'scale':>6}" + "".join(f"{c:>12}" for c in cols))
    with FaceDetector("full") as det:
        for clip in clips:
            rows = []
            with VideoSource(clip) as src:
                for n, frame in enumerate(src):
                    if n % args.step:
                        continue
                    faces = det.detect(frame)
                    if len(faces) == 0:
                        continue
                    face = faces.subset(np.array([int(np.argmax(faces.widths))]))
                    mat = align.crop_transforms(face, size)[0]
                    crops = np.stack([plain_crop(frame, mat, size), align.align_crops(frame, face, size)[0]])
                    pred = est.predict(crops)
                    scale = float(np.sqrt(abs(np.linalg.det(mat[:, :2]))))
                    rows.append((scale, *pred.age, *pred.p_female))
            if not rows:
                print(f"{clip.name:<46} no face")
                continue
            r = np.array(rows)
            figures = (r[:, 1].mean(), r[:, 1].std(), r[:, 3].mean(), r[:, 2].mean(), r[:, 2].std(), r[:, 4].mean())
            print(f"{clip.name[:45]:<46}{len(r):>6}{r[:, 0].mean():>6.2f}" + "".join(f"{v:>12.2f}" for v in figures),
                  flush=True)


if __name__ == "__main__":
    main()
