"""How the model reads faces degraded as video degrades them: UTKFace validation faces
as they are, through H.264 (libx264 at two CRFs), smoothed (bilateral filter, as camera
denoising and beauty filters do) and at half resolution.

Usage: python scripts/compression_check.py [--weights DIR ...]
(default: the shipped weights/). For each weights folder and each degradation: age MAE,
mean signed error (bias: negative reads young) overall and for ages 30-60, and gender
accuracy. The crops are the training split's validation part, made by the live crop path.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import av
import cv2
import numpy as np
import torch

from agevision.model import weights
from agevision.model.decode import decode
from agevision.training.crops import cached_crops
from agevision.training.train import TrainConfig, _Data, predict_logits
from agevision.training.utkface import load_folder, read_duplicate_groups, split

SHARED = Path(__file__).resolve().parent.parent.parent / "shared"


def h264(crops: np.ndarray, crf: int) -> np.ndarray:
    """(N, S, S, 3) RGB uint8 crops through libx264 at `crf`, as frames of one clip."""
    out = Path("/tmp") / f"agevision-compression-{crf}.mp4"
    with av.open(str(out), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width = stream.height = crops.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryfast"}
        for image in crops:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")))
        container.mux(stream.encode())
    with av.open(str(out)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    out.unlink()
    return np.stack(frames)


def degradations(crops: np.ndarray) -> dict[str, np.ndarray]:
    """The validation crops as they are and degraded four ways (see module doc)."""
    s = crops.shape[1]
    return {
        "as they are": crops,
        "H.264 CRF 23": h264(crops, 23),
        "H.264 CRF 30": h264(crops, 30),
        "smoothed": np.stack([cv2.bilateralFilter(c, 7, 30, 5) for c in crops]),
        "half resolution": np.stack([cv2.resize(cv2.resize(c, (s // 2, s // 2), interpolation=cv2.INTER_AREA),
                                                (s, s)) for c in crops]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", type=Path, nargs="+", default=[weights.DEFAULT_DIR])
    args = ap.parse_args()
    torch.set_num_threads(2)
    cfg = TrainConfig(data_dir=SHARED / "data/utkface/UTKFace", duplicates=SHARED / "data/utkface/duplicate_groups.txt")
    samples = load_folder(cfg.data_dir)
    val_samples = split(samples, read_duplicate_groups(cfg.duplicates), seed=cfg.seed)["val"]
    crop_set = cached_crops([s.path for s in val_samples], cfg.input_size, cfg.cache_dir, cfg.detector)
    readable = [s for s, ok in zip(val_samples, crop_set.readable, strict=True) if ok]
    val = _Data(readable, {s.path.name: c for s, c in zip(readable, crop_set.crops, strict=True)})
    middle = (val.ages >= 30) & (val.ages <= 60)
    sets = degradations(val.crops)
    print(f"{len(val.names)} validation faces, {int(middle.sum())} aged 30-60")
    print(f"{'weights':<22}{'faces':<17}{'MAE':>6}{'bias':>7}{'bias 30-60':>12}{'gender':>8}")
    for folder in args.weights:
        model, card = weights.load(folder)
        for name, crops in sets.items():
            a, g = predict_logits(model, crops, torch.device("cpu"))
            age, *_, p_female = decode(a, g, card["age_temperature"], card["gender_temperature"]).as_tuple()
            err = age - val.ages
            gender = float(((p_female >= 0.5) == (val.genders == 1)).mean())
            print(f"{str(folder):<22}{name:<17}{np.abs(err).mean():>6.2f}{err.mean():>+7.2f}"
                  f"{err[middle].mean():>+12.2f}{gender:>8.1%}", flush=True)


if __name__ == "__main__":
    main()
