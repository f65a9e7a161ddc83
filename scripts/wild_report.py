"""How the model does in the wild and on UTKFace, side by side: the dev-set table every model,
crop or label change is judged by.

Usage: python scripts/wild_report.py [--weights DIR [--weights DIR2 ...]] [--clips SUBSTRING ...]
                                     [--no-video] [--no-utkface] [--flip card|on|off] [--ensemble card|off]
                                     [--frame-noise SIGMA] [--age-point median|mean] [--json OUT.json]
       python scripts/wild_report.py --show OUT.json | --compare A.json B.json ...

Wild part: every labelled person of `scripts/data/wild_dev.json` (the 22 shared clips;
labels and how each was decided are in that file), run through the pipeline as
`agevision video` runs it (full-range detector, tiles, detect every 3rd frame, smoothing);
with --frame-noise, with sensor noise added to every frame first (a webcam in dim light).
Per person: readings (detected frames with an estimate), the share of raw readings with the
right gender, the median raw P(female), the share of frames whose shown label is right /
wrong / '?', the median shown age against the documented age where there is one (error 0
inside the documented range), the share of frames whose shown 80% age interval meets the
documented range, and anchors missed (labelled faces not found). People without a documented
age have an apparent age range (what a person looking at the face would say, shown in
brackets): how many read inside it, younger or older, and by how far outside it.

With --weights given more than once, faces are read by the mean of those weights' readings
(`decode.mean_prediction`, as `agevision train --teacher A --teacher B` teaches it): a would-be
teacher measured before it is distilled.

--show prints a saved --json file's tables again; --compare prints several saved files side by
side: the totals, then each person's median shown age and median raw P(female), one column a run.

UTKFace part: the validation split of the model card's seed, whole and in hard slices (each
with age MAE, bias and how often the 80% interval holds the true age):
turned away (by keypoints), dark (darkest tenth of crops), and the same faces made small
(a 24-pixel face), blurred, JPEG-compressed, dimmed or noisy (sensor noise); the worst ethnicity x gender group;
and selective accuracy (gender accuracy on the faces labelled, and the share labelled).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

import cv2
import numpy as np
from common import SHARED, VIDEOS, run_script

from agevision.model import decode
from agevision.model.decode import AGE_POINTS
from agevision.model.estimator import Estimator

REPO = Path(__file__).resolve().parent.parent
LABELS = REPO / "scripts" / "data" / "wild_dev.json"


def _decide(p_female: np.ndarray, readable: np.ndarray | None = None) -> np.ndarray:
    """'F', 'M' or '?' per face, by the product's own rule."""
    from agevision.labels import gender_labels

    return gender_labels(p_female, readable)


def run_clip(estimator, path: Path, frame_noise: float = 0.0) -> list[dict]:
    """Per frame: detected?, track ids, boxes, raw age / P(female), shown age / P(female) / label.

    frame_noise: Gaussian noise of this sigma (grey levels, each channel apart, the same draws
    run to run) added to every decoded frame before the pipeline sees it, as a webcam in dim
    light gives it; 0: none."""
    from agevision.defaults import DETECT_EVERY, TILE_SIZE
    from agevision.pipeline import FrameProcessor
    from agevision.sources import VideoSource

    frames = []
    rng = np.random.default_rng(0)
    with VideoSource(path) as src, FrameProcessor(estimator, detector="full", detect_every=DETECT_EVERY,
                                                  tile_size=TILE_SIZE) as proc:
        for frame in src:
            if frame_noise:
                noise = rng.standard_normal(frame.shape, np.float32) * frame_noise
                frame = np.clip(frame + noise, 0, 255).astype(np.uint8)
            r = proc.process(frame)
            frames.append({"detected": r.detected, "ids": r.faces.track_ids, "boxes": r.faces.boxes,
                           "raw_age": r.raw.age, "raw_pf": r.raw.p_female, "age": r.faces.age,
                           "age_low": r.faces.age_low, "age_high": r.faces.age_high,
                           "shown": _shown(r.faces)})
    return frames


def _shown(faces) -> np.ndarray:
    """The gender label drawn for each face: 'F', 'M', '?' (not sure or unreadable) or '' (no estimate)."""
    from agevision.render import face_gender

    return np.array([face_gender(faces, i) for i in range(len(faces))], dtype=object)


def _inside(boxes: np.ndarray, x: float, y: float) -> int | None:
    """Index of the smallest box containing (x, y), or None."""
    hit = np.flatnonzero((boxes[:, 0] <= x) & (x <= boxes[:, 2]) & (boxes[:, 1] <= y) & (y <= boxes[:, 3]))
    if len(hit) == 0:
        return None
    return int(hit[np.argmin(boxes[hit, 2] - boxes[hit, 0])])


def person_rows(frames: list[dict], person: dict) -> tuple[list[tuple[int, int]], int, int]:
    """The (frame, row) pairs that are this person, anchors missed, anchors in all."""
    if person["anchors"] == "largest":
        pairs = [(f, int(np.argmax(fr["boxes"][:, 2] - fr["boxes"][:, 0]))) for f, fr in enumerate(frames)
                 if len(fr["boxes"])]
        return pairs, sum(1 for fr in frames if fr["detected"] and not len(fr["boxes"])), \
            sum(1 for fr in frames if fr["detected"])
    tracks, missed = set(), 0
    for f, x, y in person["anchors"]:
        row = _inside(frames[f]["boxes"], x, y) if f < len(frames) else None
        if row is None:
            missed += 1
        else:
            tracks.add(int(frames[f]["ids"][row]))
    pairs = [(f, r) for f, fr in enumerate(frames) for r, t in enumerate(fr["ids"]) if int(t) in tracks]
    return pairs, missed, len(person["anchors"])


def person_figures(frames: list[dict], person: dict) -> dict:
    """The per-person row of the wild table (see module doc)."""
    pairs, missed, anchors = person_rows(frames, person)
    truth = person["gender"]
    raw = [(frames[f]["raw_pf"][r], frames[f]["raw_age"][r]) for f, r in pairs
           if frames[f]["detected"] and not np.isnan(frames[f]["raw_pf"][r])]
    shown = [frames[f]["shown"][r] for f, r in pairs if frames[f]["shown"][r]]
    ages = [frames[f]["age"][r] for f, r in pairs if not np.isnan(frames[f]["age"][r])]
    out = {"id": person["id"], "gender": truth, "readings": len(raw), "missed": missed, "anchors": anchors,
           "raw_right": float(np.mean([(p >= 0.5) == (truth == "F") for p, _ in raw])) if raw else float("nan"),
           "raw_pf": float(np.median([p for p, _ in raw])) if raw else float("nan"),
           "shown_right": float(np.mean([s == truth for s in shown])) if shown else float("nan"),
           "shown_wrong": float(np.mean([s not in (truth, "?") for s in shown])) if shown else float("nan"),
           "shown_unsure": float(np.mean([s == "?" for s in shown])) if shown else float("nan"),
           "age": float(np.median(ages)) if ages else float("nan"), "true_age": None, "age_error": None}
    band = person.get("age_range") or person.get("apparent_age")
    if band and ages:
        lo, hi = band
        held = float(np.mean([frames[f]["age_low"][r] <= hi and frames[f]["age_high"][r] >= lo for f, r in pairs
                              if not np.isnan(frames[f]["age"][r])]))
        if "age_range" in person:
            out["true_age"] = f"{lo}" if lo == hi else f"{lo}-{hi}"
            out["age_error"] = out["age"] - float(np.clip(out["age"], lo, hi))
            out["interval_holds"] = held
        else:
            out["apparent_interval_holds"] = held
    return out


def wild(estimator, clip_filter: list[str], frame_noise: float = 0.0) -> list[dict]:
    """Rows for every labelled person of the clips whose names contain one of `clip_filter`
    (frame_noise: see `run_clip`)."""
    labels = json.loads(LABELS.read_text())
    rows = []
    for entry in labels["clips"]:
        if clip_filter and not any(c in entry["clip"] for c in clip_filter):
            continue
        frames = run_clip(estimator, VIDEOS / entry["clip"], frame_noise)
        for person in entry["people"]:
            rows.append({"clip": entry["clip"], **person_figures(frames, person)})
        for f, x, y in entry.get("unreadable", []):
            row = _inside(frames[f]["boxes"], x, y)
            rows.append({"clip": entry["clip"], "id": f"unreadable face, frame {f}", "gender": "?",
                         "unreadable_shown": "not found" if row is None else (frames[f]["shown"][row] or "none")})
        print(f"  {entry['clip']}: done", file=sys.stderr)
    return rows


STILL_EVERY = 20  # one-person clips: a still every this many frames (from frame 10)


def stills(estimator, clip_filter: list[str]) -> list[dict]:
    """Every labelled face in still frames of the clips, read as `agevision image` reads a
    photo (`detect.StillFaceFinder`, quality, one reading, no smoothing): one-person clips
    every STILL_EVERY-th frame (their largest face), the other clips at their anchors (the
    face holding the anchor point). One row per face: clip, person, frame, true gender,
    found, shown gender ('F', 'M', '?' or '' when not found), P(female), age, and the age
    error against the documented range (0 inside it) where there is one."""
    from agevision.defaults import TILE_SIZE
    from agevision.detect import StillFaceFinder
    from agevision.quality import assess
    from agevision.sources import VideoSource

    labels = json.loads(LABELS.read_text())
    out = []
    with StillFaceFinder("full", tile_size=TILE_SIZE) as finder:
        for entry in labels["clips"]:
            if clip_filter and not any(c in entry["clip"] for c in clip_filter):
                continue
            wanted: dict[int, list[tuple[dict, tuple[float, float] | None]]] = {}
            for person in entry["people"]:
                points = [(f, (x, y)) for f, x, y in person["anchors"]] if person["anchors"] != "largest" else None
                for f, point in points or [(f, None) for f in range(10, 100_000, STILL_EVERY)]:
                    wanted.setdefault(f, []).append((person, point))
            with VideoSource(VIDEOS / entry["clip"]) as src:
                for f, frame in enumerate(src):
                    if f not in wanted:
                        continue
                    faces = finder.find(frame)
                    faces.quality, faces.readable = assess(frame, faces)
                    faces = estimator.estimate(frame, faces)
                    for person, point in wanted[f]:
                        if point is None:
                            row = int(np.argmax(faces.boxes[:, 2] - faces.boxes[:, 0])) if len(faces) else None
                        else:
                            row = _inside(faces.boxes, *point)
                        rec = {"clip": entry["clip"], "id": person["id"], "frame": f, "gender": person["gender"],
                               "found": row is not None, "shown": "", "p_female": float("nan"), "age": float("nan"),
                               "age_error": None}
                        if row is not None:
                            rec.update(shown=str(faces.gender[row]), p_female=float(faces.p_female[row]),
                                       age=float(faces.age[row]))
                            if "age_range" in person and not np.isnan(rec["age"]):
                                lo, hi = person["age_range"]
                                rec["age_error"] = rec["age"] - float(np.clip(rec["age"], lo, hi))
                        out.append(rec)
            print(f"  {entry['clip']}: stills done", file=sys.stderr)
    return out


def stills_totals(rows: list[dict]) -> dict:
    """Over all still faces, women and men apart: faces, found, shown right / wrong / '?'
    as shares of all faces (a face not found counts as not right), and the accuracy on the
    faces labelled F or M; documented age MAE and bias over the faces with an age."""
    out = {}
    for name, sel in (("all", rows), ("women", [r for r in rows if r["gender"] == "F"]),
                      ("men", [r for r in rows if r["gender"] == "M"])):
        n = max(len(sel), 1)
        shown = [r for r in sel if r["shown"] in ("F", "M")]
        out[name] = {"n": len(sel), "found": sum(r["found"] for r in sel) / n,
                     "right": sum(r["shown"] == r["gender"] for r in sel) / n,
                     "wrong": sum(r["shown"] in ("F", "M") and r["shown"] != r["gender"] for r in sel) / n,
                     "unsure": sum(r["shown"] == "?" for r in sel) / n,
                     "acc_labelled": (sum(r["shown"] == r["gender"] for r in shown) / len(shown)) if shown
                     else float("nan")}
    aged = [r["age_error"] for r in rows if r["age_error"] is not None]
    out["age_mae"] = float(np.mean(np.abs(aged))) if aged else float("nan")
    out["age_bias"] = float(np.mean(aged)) if aged else float("nan")
    out["aged"] = len(aged)
    out["apparent"] = apparent_totals(rows)
    return out


def with_apparent(rows: list[dict]) -> list[dict]:
    """`rows` (people or still faces, from this run or a saved --json) with the apparent age
    range of the labels file added where the person has one: 'apparent' (lo, hi) and
    'apparent_error' (the read age's distance outside the range, signed; 0 inside it; None
    when nothing was read)."""
    labels = json.loads(LABELS.read_text())
    bands = {(c["clip"], p["id"]): p["apparent_age"] for c in labels["clips"] for p in c["people"]
             if "apparent_age" in p}
    out = []
    for r in rows:
        band = bands.get((r.get("clip"), r.get("id")))
        r = dict(r, apparent=None, apparent_error=None)
        if band is not None:
            r["apparent"] = tuple(band)
            age = r.get("age")
            if age is not None and not np.isnan(age):
                r["apparent_error"] = float(age - np.clip(age, *band))
        out.append(r)
    return out


def apparent_totals(rows: list[dict]) -> dict:
    """Over the rows read that have an apparent age range (see `with_apparent`): how many,
    inside it, read younger, read older, the mean distance outside it, and (people rows of
    this version's runs) the mean share of frames whose shown interval meets it."""
    errs = [r["apparent_error"] for r in rows if r.get("apparent_error") is not None]
    held = [r["apparent_interval_holds"] for r in rows if r.get("apparent_interval_holds") is not None]
    return {"n": len(errs), "inside": sum(e == 0 for e in errs), "young": sum(e < 0 for e in errs),
            "old": sum(e > 0 for e in errs), "mean_outside": float(np.mean(np.abs(errs))) if errs else float("nan"),
            "interval_holds": float(np.mean(held)) if held else None}


def wild_totals(rows: list[dict]) -> dict:
    """People right / wrong / '?' by their most shown label, women and men apart; age MAE and bias."""
    people = [r for r in rows if r["gender"] in ("F", "M")]

    def verdict(r: dict) -> str:
        if np.isnan(r["shown_right"]):
            return "missed"
        best = max(("right", r["shown_right"]), ("wrong", r["shown_wrong"]), ("?", r["shown_unsure"]),
                   key=lambda kv: kv[1])
        return best[0]

    out = {}
    for name, sel in (("all", people), ("women", [r for r in people if r["gender"] == "F"]),
                      ("men", [r for r in people if r["gender"] == "M"])):
        v = [verdict(r) for r in sel]
        out[name] = {k: v.count(k) for k in ("right", "wrong", "?", "missed")} | {"n": len(sel)}
    aged = [r["age_error"] for r in people if r.get("age_error") is not None]
    out["age_mae"] = float(np.mean(np.abs(aged))) if aged else float("nan")
    out["age_bias"] = float(np.mean(aged)) if aged else float("nan")
    out["aged"] = len(aged)
    held = [r["interval_holds"] for r in people if r.get("interval_holds") is not None]
    out["interval_holds"] = float(np.mean(held)) if held else float("nan")
    out["apparent"] = apparent_totals(people)
    out["frames_shown_wrong"] = float(np.nanmean([r["shown_wrong"] for r in people]))
    out["raw_right"] = float(np.nanmean([r["raw_right"] for r in people]))
    return out


def utkface(estimator) -> dict:
    """UTKFace validation figures, whole and by slice (see module doc)."""
    from agevision.faces import Faces
    from agevision.quality import frontalness
    from agevision.training import metrics
    from agevision.training.crops import cached_crops, cached_geometry
    from agevision.training.utkface import RACES, load_folder, read_duplicate_groups, split

    folder = SHARED / "data/utkface/UTKFace"
    samples = load_folder(folder)
    seed = split_seed(estimator)
    val = split(samples, read_duplicate_groups(SHARED / "data/utkface/duplicate_groups.txt"), seed=seed)["val"]
    paths = [s.path for s in val]
    crops = cached_crops(paths, estimator.input_size, REPO / ".cache", crop=estimator.card.crop).crops
    geoms = cached_geometry(paths, REPO / ".cache")
    kps = np.stack([g[4:].reshape(6, 2) if isinstance(g, np.ndarray) else np.zeros((6, 2)) for g in geoms])
    found = np.array([isinstance(g, np.ndarray) for g in geoms])
    front = frontalness(Faces(boxes=np.zeros((len(kps), 4), np.float32), keypoints=kps.astype(np.float32),
                              scores=np.ones(len(kps), np.float32)))
    ages = np.array([s.age for s in val], np.float64)
    genders = np.array([s.gender for s in val])
    races = np.array([s.race for s in val])
    luminance = crops.mean(axis=(1, 2, 3))

    def predict(c: np.ndarray):
        return estimator.predict_many(c)

    base = predict(crops)
    slices = {"all": (base, np.ones(len(val), bool)),
              "turned (frontal < 0.6)": (base, found & (front < 0.6)),
              "dark (darkest 10%)": (base, luminance <= np.quantile(luminance, 0.1)),
              "ages 0-12": (base, ages <= 12)}
    small = functools.partial(_small, box_fraction=estimator.card.crop.box_fraction)
    for name, change in (("small (24 px face)", small), ("blurred (sigma 2)", _blur),
                         ("JPEG quality 20", _jpeg), ("dim (gamma 1.6, 40%)", _dim),
                         ("noisy (sigma 6)", _noisy)):
        slices[name] = (predict(np.stack([change(c) for c in crops])), np.ones(len(val), bool))
    slices["H.264 CRF 30 (video)"] = (predict(_h264(crops, 30)), np.ones(len(val), bool))
    slices["H.264, ages 30-60"] = (slices["H.264 CRF 30 (video)"][0], (ages >= 30) & (ages <= 60))
    table = {}
    for name, (pred, mask) in slices.items():
        m = metrics.summary(ages[mask], genders[mask], pred.age[mask], pred.age_low[mask], pred.age_high[mask],
                            pred.p_female[mask])
        m["age_bias"] = float((pred.age[mask] - ages[mask]).mean())
        women, men = mask & (genders == 1), mask & (genders == 0)
        m["women"] = float((pred.p_female[women] >= 0.5).mean())
        m["men"] = float((pred.p_female[men] < 0.5).mean())
        labels = _decide(pred.p_female[mask])
        shown = labels != "?"
        m["labelled"] = float(shown.mean())
        m["selective_acc"] = float(((labels == "F") == (genders[mask] == 1))[shown].mean()) if shown.any() else 0.0
        table[name] = m
    table["faces found (image command)"] = _stills_found(paths[::4])  # a quarter: detection does not change
    groups = {}
    for r, race in enumerate(RACES):
        for g, gname in ((0, "men"), (1, "women")):
            mask = (races == r) & (genders == g)
            if mask.sum() >= 20:
                right = (base.p_female[mask] >= 0.5) == (g == 1)
                groups[f"{race} {gname}"] = {"n": int(mask.sum()), "gender_accuracy": float(right.mean()),
                                             "age_mae": float(np.abs(base.age[mask] - ages[mask]).mean())}
    worst = min(groups.items(), key=lambda kv: kv[1]["gender_accuracy"])
    return {"slices": table, "worst_group": {"group": worst[0], **worst[1]},
            "worst_age_group": dict(zip(("group", "figures"), max(groups.items(), key=lambda kv: kv[1]["age_mae"]),
                                        strict=True))}


def _stills_found(paths: list[Path]) -> dict:
    """Share of the photos in which `agevision image` finds a face: with the video detector
    alone (full-range, tiles) and with the still-photo search (`detect.StillFaceFinder`).
    UTKFace photos are tight face crops, the hardest case for the detector."""
    from agevision.defaults import TILE_SIZE
    from agevision.detect import FaceDetector, StillFaceFinder

    plain = found = 0
    with FaceDetector("full", tile_size=TILE_SIZE) as det, StillFaceFinder("full", tile_size=TILE_SIZE) as still:
        for p in paths:
            image = cv2.imread(str(p))
            plain += len(det.detect(image)) > 0
            found += len(still.find(image)) > 0
    return {"n": len(paths), "plain": plain / len(paths), "found": found / len(paths)}


def _h264(crops: np.ndarray, crf: int) -> np.ndarray:
    """(N, S, S, 3) RGB uint8 crops through libx264 at `crf`, as the frames of one clip."""
    import tempfile

    import av

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "faces.mp4"
        with av.open(str(out), "w") as container:
            stream = container.add_stream("libx264", rate=25)
            stream.width = stream.height = crops.shape[1]
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": str(crf), "preset": "veryfast"}
            for image in crops:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")))
            container.mux(stream.encode())
        with av.open(str(out)) as container:
            return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def _small(c: np.ndarray, box_fraction: float) -> np.ndarray:
    """The crop as a face 24 px wide (its box `box_fraction` of the crop's width) enlarged into it."""
    size = c.shape[0]
    s = max(int(round(size * 24 / (box_fraction * size))), 8)
    return cv2.resize(cv2.resize(c, (s, s), interpolation=cv2.INTER_AREA), (size, size),
                      interpolation=cv2.INTER_LINEAR)


def _blur(c: np.ndarray) -> np.ndarray:
    return cv2.GaussianBlur(c, (0, 0), 2.0)


def _jpeg(c: np.ndarray) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", c[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 20])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1].copy()


def _noisy(c: np.ndarray) -> np.ndarray:
    """Sensor noise as a webcam gives it in dim light: Gaussian, sigma 6 grey levels (the same
    draw for the same crop, run to run)."""
    rng = np.random.default_rng(int(c[::7, ::7].sum()))
    return np.clip(c + rng.normal(0, 6, c.shape), 0, 255).astype(np.uint8)


def _dim(c: np.ndarray) -> np.ndarray:
    return np.clip(((c / 255.0) ** 1.6) * 0.4 * 255, 0, 255).astype(np.uint8)


def _band(band) -> str:
    return "" if band is None else f"({band[0]}-{band[1]})"


def _error(r: dict) -> str:
    """The table's error cell: against the documented age, else (in brackets) the apparent range."""
    if r["age_error"] is not None:
        return f"{r['age_error']:+.1f}"
    return "" if r.get("apparent_error") is None else f"({r['apparent_error']:+.1f})"


def _held(r: dict) -> str:
    """The table's interval cell: meets the documented age, else (in brackets) the apparent range."""
    if r.get("interval_holds") is not None:
        return f"{r['interval_holds']:.0%}"
    return "" if r.get("apparent_interval_holds") is None else f"({r['apparent_interval_holds']:.0%})"


def _apparent_line(a: dict, what: str) -> str:
    line = (f"apparent age range ({a['n']} {what} without a documented age): {a['inside']} read inside it, "
            f"{a['young']} younger, {a['old']} older; mean distance outside it {a['mean_outside']:.1f} years")
    if a.get("interval_holds") is not None:
        line += f"; shown 80% interval meets it in {a['interval_holds']:.0%} of frames (mean over people)"
    return line


def print_report(rows: list[dict], totals: dict | None, utk: dict | None, still: dict | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=160)
    if still:
        for k in ("all", "women", "men"):
            v = still[k]
            console.print(f"stills, {k} ({v['n']} faces): found {v['found']:.1%}, right {v['right']:.1%}, "
                          f"wrong {v['wrong']:.1%}, '?' {v['unsure']:.1%}; right of those labelled "
                          f"{v['acc_labelled']:.1%}")
        console.print(f"stills, documented age ({still['aged']} faces): MAE {still['age_mae']:.1f}, "
                      f"mean signed error {still['age_bias']:+.1f}")
        if "apparent" in still:
            console.print(f"stills, {_apparent_line(still['apparent'], 'faces')}")
    if rows:
        t = Table(title="wild dev set: people in the shared clips (as agevision video shows them)")
        for col in ("clip", "person", "true", "readings", "raw right", "raw P(F)", "shown right", "wrong", "?",
                    "age", "true age", "error", "in int.", "missed"):
            t.add_column(col, justify="left" if col in ("clip", "person") else "right")
        for r in rows:
            if r["gender"] == "?":
                t.add_row(r["clip"][:24], r["id"][:30], "?", "", "", "", f"shown: {r['unreadable_shown']}", "", "", "",
                          "", "", "", "")
                continue
            t.add_row(r["clip"][:24], r["id"][:30], r["gender"], str(r["readings"]), f"{r['raw_right']:.0%}",
                      f"{r['raw_pf']:.2f}", f"{r['shown_right']:.0%}", f"{r['shown_wrong']:.0%}",
                      f"{r['shown_unsure']:.0%}", f"{r['age']:.1f}", r["true_age"] or _band(r.get("apparent")),
                      _error(r), _held(r),
                      f"{r['missed']}/{r['anchors']}")
        console.print(t)
        for k in ("all", "women", "men"):
            v = totals[k]
            console.print(f"{k}: {v['right']}/{v['n']} right, {v['wrong']} wrong, {v['?']} '?', {v['missed']} missed")
        console.print(f"age (documented, {totals['aged']} people): MAE {totals['age_mae']:.1f}, "
                      f"mean signed error {totals['age_bias']:+.1f}, shown 80% interval meets the documented age in "
                      f"{totals.get('interval_holds', float('nan')):.0%} of frames (mean over people); "
                      f"frames shown wrong (mean over people) "
                      f"{totals['frames_shown_wrong']:.1%}; raw readings right {totals['raw_right']:.1%}")
        console.print(_apparent_line(totals["apparent"], "people"))
    if utk:
        t = Table(title="UTKFace validation, whole and in hard slices")
        for col in ("slice", "n", "age MAE", "bias", "80% int.", "gender", "women", "men", "ECE", "labelled",
                    "acc. labelled"):
            t.add_column(col, justify="left" if col == "slice" else "right")
        for name, m in utk["slices"].items():
            if "plain" in m:
                continue
            t.add_row(name, str(m["n"]), f"{m['age_mae']:.2f}", f"{m.get('age_bias', float('nan')):+.2f}",
                      f"{m['interval_coverage']:.1%}",
                      f"{m['gender_accuracy']:.1%}", f"{m['women']:.1%}",
                      f"{m['men']:.1%}", f"{m['gender_ece']:.3f}", f"{m['labelled']:.1%}", f"{m['selective_acc']:.1%}")
        console.print(t)
        found = utk["slices"].get("faces found (image command)")
        if found:
            console.print(f"faces found in {found['n']} UTKFace photos by `agevision image`: {found['found']:.1%} "
                          f"(the video detector alone: {found['plain']:.1%})")
        w = utk["worst_group"]
        console.print(f"worst ethnicity x gender group by gender: {w['group']} ({w['n']}): "
                      f"{w['gender_accuracy']:.1%}, age MAE {w['age_mae']:.2f}")
        a = utk["worst_age_group"]
        console.print(f"worst by age MAE: {a['group']}: {a['figures']['age_mae']:.2f}")


def load_saved(path: Path) -> tuple[list[dict], dict | None, dict | None, dict | None]:
    """A saved --json file -> (people rows, their totals, UTKFace figures, stills totals), the
    totals recomputed with today's labels file; AgevisionError when it is not such a file."""
    from agevision.errors import AgevisionError

    try:
        if not path.is_file() or path.stat().st_size > 100_000_000:
            raise ValueError("not a regular file of at most 100 MB")
        saved = json.loads(path.read_text())
        saved["people"], saved["utkface"]
        rows = with_apparent(saved["people"] or [])
        still_rows = with_apparent(saved.get("stills") or [])
        return (rows, wild_totals(rows) if rows else None, saved["utkface"],
                stills_totals(still_rows) if still_rows else saved.get("stills_totals"))
    except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError, AttributeError) as e:
        raise AgevisionError(f"{path} is not a saved wild_report --json file ({type(e).__name__}: {e})") from e


def comparison_rows(runs: dict[str, tuple]) -> tuple[list[tuple[str, list[str]]], list[tuple[str, list[str]]]]:
    """Saved runs ({name: `load_saved` output}) side by side -> (totals rows, people rows), each
    row (what, [one cell per run]); a figure a run lacks is '-'. Totals: people right / wrong /
    '?' / missed, women, documented age MAE and bias, apparent ages read inside their range,
    stills right / wrong, stills documented age, stills apparent inside, UTKFace MAE / gender,
    ages 0-12 MAE. People: median shown age and median raw P(female), by clip and person."""
    def cell(fn, run) -> str:
        try:
            return fn(*run)
        except (TypeError, KeyError):
            return "-"

    def verdicts(t: dict) -> str:
        return f"{t['right']} / {t['wrong']} / {t['?']} / {t['missed']}"

    totals = [
        ("people right / wrong / ? / missed", lambda r, t, u, s: verdicts(t["all"])),
        ("women right / wrong / ? / missed", lambda r, t, u, s: verdicts(t["women"])),
        ("documented age MAE, bias", lambda r, t, u, s: f"{t['age_mae']:.1f}, {t['age_bias']:+.1f} ({t['aged']})"),
        ("apparent age inside", lambda r, t, u, s: f"{t['apparent']['inside']} of {t['apparent']['n']}"),
        ("stills right / wrong", lambda r, t, u, s: f"{s['all']['right']:.1%} / {s['all']['wrong']:.1%}"),
        ("stills women right / wrong", lambda r, t, u, s: f"{s['women']['right']:.1%} / {s['women']['wrong']:.1%}"),
        ("stills documented age", lambda r, t, u, s: f"{s['age_mae']:.1f}, {s['age_bias']:+.1f} ({s['aged']})"),
        ("stills apparent inside", lambda r, t, u, s: f"{s['apparent']['inside']} of {s['apparent']['n']}"),
        ("UTKFace MAE / gender", lambda r, t, u, s: f"{u['slices']['all']['age_mae']:.2f} / "
                                                    f"{u['slices']['all']['gender_accuracy']:.1%}"),
        ("UTKFace ages 0-12 MAE", lambda r, t, u, s: f"{u['slices']['ages 0-12']['age_mae']:.2f}"),
    ]
    total_rows = [(what, [cell(fn, run) for run in runs.values()]) for what, fn in totals]
    people: dict[tuple[str, str], tuple[str, list[str]]] = {}  # (clip, id) -> (row label, cells)
    for i, (rows, *_) in enumerate(runs.values()):
        for r in rows:
            if r["gender"] not in ("F", "M"):
                continue
            truth = r.get("true_age") or _band(r.get("apparent"))
            _, cells = people.setdefault((r["clip"], r["id"]),
                                         (f"{r['id'][:28]} ({r['gender']}, {truth})", ["-"] * len(runs)))
            age, pf = r.get("age"), r.get("raw_pf")
            cells[i] = ("-" if age is None or np.isnan(age) else f"{age:.1f}") + " · " + \
                ("-" if pf is None or np.isnan(pf) else f"{pf:.2f}")
    return total_rows, list(people.values())


def print_comparison(runs: dict[str, tuple]) -> None:
    """Print `comparison_rows` of saved runs as two tables, one column per run."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(160, 34 + 18 * len(runs)))
    total_rows, person_rows = comparison_rows(runs)
    for title, rows in (("totals", total_rows), ("people: median shown age · median raw P(female)", person_rows)):
        t = Table(title=title)
        t.add_column("")
        for name in runs:
            t.add_column(Path(name).stem, justify="right")
        for what, cells in rows:
            t.add_row(what, *cells)
        console.print(t)


def split_seed(estimator) -> int:
    """The seed of the UTKFace split the estimator's weights were trained on (their card's)."""
    return int(estimator.card.extra.get("training_data", {}).get("split_seed", 0))


class MeanOf:
    """Several Estimators as one: `predict` is the mean of their readings
    (`decode.mean_prediction`); the rest (card, crop size, `estimate`) is the first one's,
    whose crops all of them read (same input size and crop placement, else AgevisionError)."""

    def __init__(self, estimators: list) -> None:
        from agevision.errors import AgevisionError

        first = estimators[0]
        if any((e.input_size, e.card.crop, e.card.denoise) != (first.input_size, first.card.crop, first.card.denoise)
               for e in estimators):
            raise AgevisionError("--weights: every folder must read crops of the same size and placement")
        self.estimators, self.card, self.device = estimators, first.card, first.device
        self.input_size, self.age_bins = first.input_size, first.age_bins

    def set_threads(self, n: int) -> int:
        return min(e.set_threads(n) for e in self.estimators)

    def predict(self, crops_rgb: np.ndarray):
        from agevision.model.decode import mean_prediction

        preds = [e.predict(crops_rgb) for e in self.estimators]
        return mean_prediction(preds, self.age_bins) if len(crops_rgb) else preds[0]

    # batching and frame reading as one Estimator does them, around this `predict`
    predict_many = Estimator.predict_many
    estimate = Estimator.estimate

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, action="append", default=None,
                        help="weights folder (default: the shipped ones); repeat it to read with the mean of "
                        "several (an ensemble)")
    parser.add_argument("--clips", nargs="*", default=[], help="only clips whose names contain one of these")
    parser.add_argument("--no-video", action="store_true", help="skip the clips")
    parser.add_argument("--no-utkface", action="store_true", help="skip the UTKFace slices")
    parser.add_argument("--frame-noise", type=float, default=0.0, metavar="SIGMA",
                        help="add sensor noise of this sigma (grey levels) to every frame of the clips (default 0)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--show", type=Path, default=None, help="print the tables of a --json file and stop")
    parser.add_argument("--compare", type=Path, nargs="+", default=None, metavar="JSON",
                        help="print saved --json files side by side (totals, then each person's age and P(F)) "
                        "and stop")
    parser.add_argument("--flip", choices=("card", "on", "off"), default="card",
                        help="read each crop mirrored too and average (default: as the model card says)")
    parser.add_argument("--ensemble", choices=("card", "off"), default="card",
                        help="off: leave out the card's second gender network (model.gender_ensemble)")
    parser.add_argument("--age-point", choices=AGE_POINTS, default=None,
                        help="the age a reading shows: the median or the mean of its distribution (default: "
                        "agevision's, decode.AGE_POINT)")
    args = parser.parse_args()
    if args.age_point:
        decode.AGE_POINT = args.age_point
    if args.show:
        rows, totals, utk, still = load_saved(args.show)
        print_report(rows, totals, utk, still)
        return
    if args.compare:
        print_comparison({str(path): load_saved(path) for path in args.compare})
        return
    if not VIDEOS.is_dir():
        sys.exit(f"error: the shared clips are not at {VIDEOS}")
    from agevision.pipeline import share_cpu

    folders = args.weights or [None]
    estimators = [Estimator(w, "cpu", flip={"card": None, "on": True, "off": False}[args.flip],
                            ensemble=args.ensemble == "card") for w in folders]
    estimator = estimators[0] if len(estimators) == 1 else MeanOf(estimators)
    if len(estimators) > 1 and not args.no_utkface and len({split_seed(e) for e in estimators}) > 1:
        sys.exit("error: these weights were trained on different UTKFace splits (one's validation faces are "
                 "another's training faces): pass --no-utkface")
    share_cpu(estimator)
    rows = [] if args.no_video else with_apparent(wild(estimator, args.clips, args.frame_noise))
    totals = wild_totals(rows) if rows else None
    still_rows = [] if args.no_video or args.frame_noise else with_apparent(stills(estimator, args.clips))
    still = stills_totals(still_rows) if still_rows else None
    utk = None if args.no_utkface else utkface(estimator)
    print_report(rows, totals, utk, still)
    if args.json:
        named = ", ".join(str(w or "shipped") for w in folders)
        args.json.write_text(json.dumps({"weights": named, "age_point": decode.AGE_POINT, "people": rows,
                                         "totals": totals, "stills": still_rows, "stills_totals": still,
                                         "utkface": utk},
                                        indent=1, default=float))


if __name__ == "__main__":
    run_script(main)
