"""`agevision evaluate`: metrics of the shipped (or given) model on a UTKFace-named folder.

Faces go through the same crop path as training and the live pipeline. Images with no
detected face are kept (fallback crop) and counted; unreadable images are counted and
skipped.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agevision.errors import AgevisionError
from agevision.model.decode import Prediction
from agevision.model.estimator import Estimator
from agevision.training import metrics
from agevision.training.crops import cached_crops
from agevision.training.utkface import RACES, load_folder, read_duplicate_groups, split


@dataclass
class Evaluation:
    """Everything `evaluate` measured: labels, predictions and the metric tables."""

    names: list[str]
    ages: np.ndarray
    genders: np.ndarray
    races: np.ndarray
    found: np.ndarray
    pred: Prediction
    overall: dict
    groups: dict[str, dict[str, dict]]
    unreadable: int


def evaluate(data_dir: Path, weights_dir: Path | None = None, cache_dir: Path = Path(".cache"),
             device: str | None = None, part: str | None = None, duplicates: Path | None = None,
             progress=None) -> Evaluation:
    """Predict every UTKFace-named image in `data_dir` and measure the predictions.

    part: if given ("train", "val" or "calib"), only that part of the training split, made
    with the seed stored in the model card. Raises AgevisionError for a missing folder, a
    folder without UTKFace names, or a folder where no image can be read.
    """
    samples = load_folder(data_dir)
    estimator = Estimator(weights_dir, device)
    if part is not None:
        seed = int(estimator.card.extra.get("training_data", {}).get("split_seed", 0))
        parts = split(samples, read_duplicate_groups(duplicates), seed=seed)
        if part not in parts:
            raise AgevisionError(f"unknown split part {part!r}: choose one of {', '.join(parts)}")
        samples = parts[part]
    crop_set = cached_crops([s.path for s in samples], estimator.input_size, cache_dir, progress=progress,
                            crop=estimator.card.crop)
    kept = [s for s, ok in zip(samples, crop_set.readable, strict=True) if ok]
    pred = estimator.predict_many(crop_set.crops)
    ages = np.array([s.age for s in kept], np.float64)
    genders = np.array([s.gender for s in kept], np.int64)
    races = np.array([s.race for s in kept], np.int64)
    args = (ages, genders, *pred.as_tuple())
    groups = {
        "age": metrics.by_group(metrics.age_bucket_masks(ages), *args),
        "race": metrics.by_group({name: races == i for i, name in enumerate(RACES)} | {"unknown": races == -1}, *args),
        "gender": metrics.by_group({"male": genders == 0, "female": genders == 1}, *args),
        "face found": metrics.by_group({"yes": crop_set.found, "no (fallback crop)": ~crop_set.found}, *args),
    }
    return Evaluation([s.path.name for s in kept], ages, genders, races, crop_set.found, pred,
                      metrics.summary(*args), groups, len(samples) - len(kept))


def print_tables(ev: Evaluation, console) -> None:
    """Print the overall metrics and the per-group tables with rich."""
    from rich.table import Table

    table = Table(title=f"agevision evaluation: {ev.overall['n']} faces "
                        f"({int((~ev.found).sum())} without a detected face, {ev.unreadable} unreadable)")
    for col in ("group", "n", "age MAE", "CS@5", "gender acc", "gender ECE", "80% interval cov."):
        table.add_column(col, justify="left" if col == "group" else "right")

    def row(name: str, m: dict) -> None:
        table.add_row(name, str(m["n"]), f"{m['age_mae']:.2f}", f"{m['cs5']:.1%}", f"{m['gender_accuracy']:.1%}",
                      f"{m['gender_ece']:.3f}", f"{m['interval_coverage']:.1%}")

    row("all", ev.overall)
    for kind, rows in ev.groups.items():
        table.add_section()
        for name, m in rows.items():
            row(f"{kind}: {name}", m)
    console.print(table)


def write_predictions(ev: Evaluation, path: Path) -> None:
    """CSV with file, true age, predicted age, 80% interval, P(female), true gender, face found."""
    import io

    from agevision.files import write_atomic

    text = io.StringIO()
    w = csv.writer(text)
    w.writerow(["file", "true_age", "pred_age", "age_low", "age_high", "p_female", "true_gender", "face_found"])
    p = ev.pred
    for i, name in enumerate(ev.names):
        w.writerow([name, int(ev.ages[i]), f"{p.age[i]:.2f}", f"{p.age_low[i]:.2f}", f"{p.age_high[i]:.2f}",
                    f"{p.p_female[i]:.4f}", "F" if ev.genders[i] else "M", int(ev.found[i])])
    write_atomic(path, text.getvalue())


def write_report(ev: Evaluation, folder: Path) -> list[Path]:
    """Plots into `folder`: predicted vs true age, error by age bucket, gender confusion, calibration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    p = ev.pred

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(ev.ages, p.age, s=3, alpha=0.3)
    ax.plot([0, 100], [0, 100], "k--", lw=1)
    ax.set(xlabel="true age", ylabel="predicted age", title=f"age: MAE {ev.overall['age_mae']:.2f}")
    out.append(folder / "age_scatter.png")

    fig2, ax2 = plt.subplots(figsize=(6, 4))
    names = list(ev.groups["age"])
    ax2.bar(names, [ev.groups["age"][n]["age_mae"] for n in names])
    ax2.set(xlabel="age bucket", ylabel="age MAE (years)", title="age error by age bucket")

    fig3, ax3 = plt.subplots(figsize=(4, 4))
    pred_f = (p.p_female >= 0.5).astype(int)
    cm = np.array([[np.sum((ev.genders == t) & (pred_f == q)) for q in (0, 1)] for t in (0, 1)])
    ax3.imshow(cm, cmap="Blues")
    for (i, j), v in np.ndenumerate(cm):
        ax3.text(j, i, str(v), ha="center", va="center")
    ax3.set(xticks=[0, 1], yticks=[0, 1], xticklabels=["M", "F"], yticklabels=["M", "F"],
            xlabel="predicted", ylabel="true", title=f"gender: {ev.overall['gender_accuracy']:.1%}")

    fig4, ax4 = plt.subplots(figsize=(4.5, 4.5))
    mean_p, observed, count = metrics.reliability(p.p_female, ev.genders)
    ok = count > 0
    ax4.plot([0, 1], [0, 1], "k--", lw=1)
    ax4.plot(mean_p[ok], observed[ok], "o-")
    ax4.set(xlabel="predicted P(female)", ylabel="observed share female",
            title=f"gender calibration: ECE {ev.overall['gender_ece']:.3f}")
    out += [folder / "error_by_age.png", folder / "gender_confusion.png", folder / "gender_calibration.png"]
    for f, path in zip((fig, fig2, fig3, fig4), out, strict=True):
        f.tight_layout()
        f.savefig(path, dpi=110)
        plt.close(f)
    return out
