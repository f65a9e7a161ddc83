"""What a batch found, over all its videos: the people linked across videos, and the report.

`link_people(out_dir, lines)` reads each finished video's people.csv and vectors.npz and
gives every person one id over all videos (`identity.group_tracks` on the people's
vectors; two people of one video are never joined), written to `out_dir/people.csv`.
`write_batch_report(out_dir, lines)` writes `out_dir/report.html`: people per video, the
gender split and ages over everyone, the failures. Both read only the batch's own files.
"""

from __future__ import annotations

import csv
import html
import io
from pathlib import Path

import numpy as np

from agevision.files import write_atomic

AGE_BANDS = ((0, 13), (13, 20), (20, 30), (30, 45), (45, 60), (60, 200))
LINKED = "people.csv"


def _finished(lines: list[dict]) -> list[dict]:
    return [line for line in lines if line["state"] in ("done", "skipped")]


def video_people(out_dir: Path, line: dict) -> list[dict]:
    """The rows of one finished video's people.csv (empty if it cannot be read)."""
    try:
        with open(out_dir / line["name"] / "people.csv", encoding="utf-8", newline="") as f:
            return list(csv.DictReader(f))
    except (OSError, csv.Error, UnicodeDecodeError):
        return []


def link_people(out_dir: Path, lines: list[dict]) -> int:
    """One person id over all finished videos; writes out_dir/people.csv (global person,
    video, name, the video's own person id, age, gender, P(female)). Returns the number of
    distinct people."""
    from agevision.identity import group_tracks, unit

    vectors, seen, rows = {}, {}, []
    for v, line in enumerate(_finished(lines)):
        people = video_people(out_dir, line)
        try:
            with np.load(out_dir / line["name"] / "vectors.npz", allow_pickle=False) as saved:
                person, vec = saved["person"], saved["vector"]
        except (OSError, KeyError, ValueError):
            continue
        for row in people:
            pid = int(row["person"])
            mine = vec[person == pid]
            if len(mine) == 0:
                continue
            key = len(rows)
            vectors[key] = unit(mine.mean(0))
            seen[key] = {v}
            rows.append({"video": line["video"], "name": line["name"], "person": pid, "age": row["age"],
                         "gender": row["gender"], "p_female": row["p_female"]})
    groups = group_tracks(vectors, seen)
    for key, row in enumerate(rows):
        row["global_person"] = groups[key]
    rows.sort(key=lambda r: (r["global_person"], r["name"], r["person"]))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=("global_person", "video", "name", "person", "age", "gender", "p_female"))
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(out_dir / LINKED, text.getvalue())
    return len(set(groups.values()))


def totals(out_dir: Path, lines: list[dict]) -> dict:
    """Everyone in the finished videos: people, expected women with a 95% interval (each
    person female with their P(female)), labels shown, counts by age band and gender, and
    distinct people when linked."""
    p, labels, bands = [], {"F": 0, "M": 0, "?": 0}, {b: {"F": 0, "M": 0, "?": 0} for b in AGE_BANDS}
    n = 0
    for line in _finished(lines):
        for row in video_people(out_dir, line):
            n += 1
            g = row.get("gender") if row.get("gender") in ("F", "M") else "?"
            labels[g] += 1
            if row.get("p_female"):
                p.append(float(row["p_female"]))
            if row.get("age"):
                age = float(row["age"])
                band = next(b for b in AGE_BANDS if b[0] <= age < b[1])
                bands[band][g] += 1
    from agevision.report import expected_women

    expected, half = expected_women(p)
    out = {"people": n, "expected_female": expected, "interval_half": half, "labels": labels,
           "bands": bands, "distinct": None}
    linked = out_dir / LINKED
    if linked.is_file():
        with open(linked, encoding="utf-8", newline="") as f:
            out["distinct"] = len({r["global_person"] for r in csv.DictReader(f)})
    return out


def render_batch_html(out_dir: Path, lines: list[dict]) -> str:
    """The batch report as one self-contained HTML page (no external assets)."""
    e = html.escape
    t = totals(out_dir, lines)
    states = {s: sum(line["state"] == s for line in lines) for s in ("done", "skipped", "failed")}
    head = (f"<h1>agevision batch: {len(lines)} video{'s' if len(lines) != 1 else ''}</h1>"
            f"<p class='note'>{states['done']} done, {states['skipped']} skipped (done before), "
            f"{states['failed']} failed; {t['people']} people in all"
            + (f", {t['distinct']} distinct (linked across videos by face identity)" if t["distinct"] is not None
               else "") + ".</p>")
    split = (f"<p id='split'>Women: {t['expected_female']:.1f} ± {t['interval_half']:.1f} expected (95%), "
             f"from each person's P(female); labels shown: {t['labels']['F']} F, {t['labels']['M']} M, "
             f"{t['labels']['?']} ?.</p>")
    band_rows = "".join(f"<tr><td>{lo}&ndash;{hi - 1 if hi < 200 else ''}</td><td>{c['F']}</td><td>{c['M']}</td>"
                        f"<td>{c['?']}</td></tr>" for (lo, hi), c in t["bands"].items())
    ages = (f"<table id='ages'><tr><th>age</th><th>F</th><th>M</th><th>?</th></tr>{band_rows}</table>")
    rows = []
    for line in lines:
        link = f"<a href='{e(line['name'])}/people.csv'>{e(line['name'])}</a>" if line["state"] != "failed" \
            else e(line["name"])
        rows.append(f"<tr class='{e(line['state'])}' data-state='{e(line['state'])}'><td class='l'>{link}</td>"
                    f"<td>{e(line['state'])}</td><td>{line['frames']}</td><td>{line['people']}</td>"
                    f"<td>{line['seconds']:.1f}</td><td class='l'>{e(line.get('error') or '')}</td></tr>")
    table = ("<table id='videos'><tr><th class='l'>video</th><th>state</th><th>frames</th><th>people</th>"
             "<th>seconds</th><th class='l'>error</th></tr>" + "".join(rows) + "</table>")
    style = ("body{font-family:sans-serif;margin:2em;max-width:60em} table{border-collapse:collapse;margin:1em 0}"
             "td,th{padding:.25em .6em;border-bottom:1px solid #ddd;text-align:right} .l{text-align:left}"
             ".failed td{color:#b00} .note{color:#555}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>agevision batch</title><style>{style}</style>"
            f"</head><body>{head}{split}<h2>Ages</h2>{ages}<h2>Videos</h2>{table}</body></html>")


def write_batch_report(out_dir: Path, lines: list[dict]) -> Path:
    """out_dir/report.html (see `render_batch_html`), written through a temporary file."""
    return write_atomic(Path(out_dir) / "report.html", render_batch_html(Path(out_dir), lines))
