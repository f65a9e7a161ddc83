"""`agevision report`: one self-contained HTML page about the people in a video.

In: a `people.Summary` (thumbnails attached where available). Out: an HTML file with every
image embedded (base64 PNG/JPEG), so the page opens offline and can be mailed as one file:
the people table with thumbnails, an age histogram split by gender, the gender split with
its uncertainty and the number of people on screen over time.
"""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path

import numpy as np

from agevision.people import Summary, people_rows

FEMALE, MALE, UNKNOWN = "#e0609a", "#3c8ce0", "#9a9a9a"
AGE_BIN = 5  # years per histogram bar


def gender_split(summary: Summary) -> dict:
    """Expected number of women and men among the people, with a 95% interval.

    Each person counts as female with their P(female); the count of women is then a sum of
    independent Bernoulli draws, with variance sum p(1-p). Also the count by shown label.
    """
    p = [q.p_female for q in summary.people if q.p_female is not None]
    expected, half = expected_women(p)
    labels = [q.gender for q in summary.people]
    return {"people": len(summary.people), "with_estimate": len(p), "expected_female": expected,
            "expected_male": len(p) - expected, "interval_half": half,
            "labelled_female": labels.count("F"), "labelled_male": labels.count("M"),
            "labelled_unsure": labels.count("?")}


def expected_women(p_female) -> tuple[float, float]:
    """(expected number of women, half-width of its 95% interval) among people with these
    P(female): a sum of independent Bernoulli draws, variance sum p(1-p)."""
    p = np.asarray(list(p_female), np.float64)
    return float(p.sum()), 1.96 * math.sqrt(float((p * (1 - p)).sum()))


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def _figures(summary: Summary) -> dict[str, str]:
    """Base64 PNGs: 'ages', 'gender', 'on_screen'."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs = {}
    edges = np.arange(0, 100 + AGE_BIN, AGE_BIN)
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    bottom = np.zeros(len(edges) - 1)
    for label, color, name in (("F", FEMALE, "female"), ("M", MALE, "male")):
        ages = [min(p.age, 99.9) for p in summary.people if p.gender == label and p.age is not None]
        counts, _ = np.histogram(ages, bins=edges)
        ax.bar(edges[:-1], counts, width=AGE_BIN, bottom=bottom, align="edge", color=color, edgecolor="white",
               label=f"{name} ({len(ages)})")
        bottom += counts
    ax.set_xlabel("estimated age (years)")
    ax.set_ylabel("people")
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.legend(frameon=False)
    ax.set_title("Age by gender")
    figs["ages"] = _png(fig)
    plt.close(fig)

    g = gender_split(summary)
    fig, ax = plt.subplots(figsize=(6.4, 2.2))
    values = np.array([g["expected_female"], g["expected_male"]])
    n = g["with_estimate"]
    err = [np.minimum(g["interval_half"], values), np.minimum(g["interval_half"], n - values)]  # within 0..n
    ax.barh(["female", "male"], values, xerr=err, color=[FEMALE, MALE], capsize=6)
    ax.set_xlabel("expected number of people (95% interval)")
    ax.set_xlim(0, max(g["with_estimate"], 1) * 1.05)
    ax.set_title("Gender split")
    figs["gender"] = _png(fig)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.4, 2.6))
    t = np.arange(len(summary.on_screen)) / summary.fps
    ax.step(t, summary.on_screen, where="post", color="#444")
    ax.fill_between(t, summary.on_screen, step="post", alpha=0.2, color="#444")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("people on screen")
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.set_ylim(0, max(int(summary.on_screen.max(initial=0)), 1) + 0.5)
    ax.set_title("People on screen over time")
    figs["on_screen"] = _png(fig)
    plt.close(fig)
    return figs


def _thumb(img: np.ndarray | None) -> str:
    if img is None:
        return '<span class="none">no image</span>'
    import cv2

    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 88])
    if not ok:
        return '<span class="none">no image</span>'
    return f'<img class="thumb" alt="face" src="data:image/jpeg;base64,{base64.b64encode(buf).decode()}">'


STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:60em;color:#222;padding:0 1em}
h1{font-size:1.5em} h2{font-size:1.15em;margin-top:2em}
table{border-collapse:collapse;width:100%} th,td{padding:.35em .6em;border-bottom:1px solid #ddd;text-align:right}
th{background:#f4f4f4} td.l,th.l{text-align:left} img.thumb{height:72px;border-radius:4px}
.F{color:#c0306e;font-weight:600} .M{color:#1f6fc0;font-weight:600} .none{color:#999} .U{color:#777;font-weight:600}
.note{color:#555} figure{margin:1em 0} figure img{max-width:100%}
"""


def render_html(summary: Summary, title: str = "") -> str:
    """The report page for `summary` as one HTML string (images embedded)."""
    e = html.escape
    video = Path(summary.video).name
    head = (f"<h1>People in {e(video)}</h1><p class='note'>{summary.frame_count} frames, "
            f"{summary.duration:.1f} s at {summary.fps:.2f} fps; {len(summary.people)} "
            f"{'person' if len(summary.people) == 1 else 'people'}"
            + (" (tracks of one face grouped by identity)" if summary.header.get("identities") else
               f" tracked for at least {summary.min_seconds:g} s")
            + f"; {summary.short_tracks} shorter track{'s' if summary.short_tracks != 1 else ''} left out as likely "
            "false detections"
            + (f"; {summary.unreadable} unreadable face{'s' if summary.unreadable != 1 else ''} (too dark, small, "
               "blurred or turned away to tell) counted apart" if summary.unreadable else "") + ".</p>")
    if summary.interrupted:
        head += ("<p class='note'><b>The run stopped before the end of the video</b>: this covers the frames "
                 "processed.</p>")
    if not summary.people:
        body = ("<p id='nobody'><b>Nobody was found in this video</b> (no face seen long enough, and often "
                "enough readable, to be a person).</p>")
    else:
        g = gender_split(summary)
        rows = []
        for row, person in zip(people_rows(summary), summary.people, strict=True):
            age = ("&ndash;" if row["age"] == "" else
                   f"{row['age']:.0f} ({row['age_low']:.0f}&ndash;{row['age_high']:.0f})")
            gender = ("?" if row["p_female"] == "" else
                      f"<span class='{'U' if row['gender'] == '?' else row['gender']}'>{row['gender']}</span> "
                      f"(P(F) {row['p_female']:.2f})")
            rows.append(f"<tr data-track='{row['track_id']}' data-age='{row['age']}' data-gender='{row['gender']}'>"
                        f"<td>{row['person']}</td><td class='l'>{_thumb(person.thumbnail)}</td>"
                        f"<td>{row['first_seen_s']:.1f}</td><td>{row['last_seen_s']:.1f}</td><td>{row['frames']}</td>"
                        f"<td>{age}</td><td class='l'>{gender}</td></tr>")
        table = ("<table id='people'><tr><th>#</th><th class='l'>best face</th><th>first seen (s)</th>"
                 "<th>last seen (s)</th><th>frames</th><th>age (80% interval)</th><th class='l'>gender</th></tr>"
                 + "".join(rows) + "</table>")
        figs = _figures(summary)
        split = (f"<p id='split'>Expected women: {g['expected_female']:.1f} &plusmn; {g['interval_half']:.1f}, "
                 f"men: {g['expected_male']:.1f} &plusmn; {g['interval_half']:.1f} (95% interval, from each "
                 f"person's P(female)); by label: {g['labelled_female']} F, {g['labelled_male']} M, "
                 f"{g['labelled_unsure']} not sure (?).</p>")
        body = (f"<h2>People</h2>{table}<h2>Age</h2><figure><img alt='age histogram by gender' "
                f"src='data:image/png;base64,{figs['ages']}'></figure><h2>Gender</h2>{split}<figure>"
                f"<img alt='gender split' src='data:image/png;base64,{figs['gender']}'></figure>"
                f"<h2>On screen</h2><figure><img alt='people on screen over time' "
                f"src='data:image/png;base64,{figs['on_screen']}'></figure>")
    foot = ("<p class='note'>Ages and genders are estimates by agevision's model from the faces' appearance, "
            "with the uncertainty shown; they are not facts about the people.</p>")
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>agevision report: {e(title or video)}"
            f"</title><style>{STYLE}</style></head><body>{head}{body}{foot}</body></html>\n")


def write_report(summary: Summary, target: Path, title: str = "") -> None:
    """Write the report page to `target`; AgevisionError if it cannot be written."""
    from agevision.files import write_atomic

    write_atomic(Path(target), render_html(summary, title))
