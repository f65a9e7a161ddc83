"""Per-person summaries, the people CSV and the HTML report (rendered in headless Chromium)."""

import csv
import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from typer.testing import CliRunner

import agevision
from agevision.cli import app
from agevision.errors import AgevisionError
from agevision.people import summarize
from agevision.records import read_records
from agevision.report import gender_split
from tests.conftest import VIDEOS

runner = CliRunner()
HEADER = {"type": "video", "video": "clip.mp4", "width": 640, "height": 360, "fps": 10.0, "frame_count": 30}


def _face(frame, tid, age=30.0, p_female=0.2, quality=0.5, box=(10, 10, 60, 60)):
    return {"type": "face", "frame": frame, "time": frame / 10, "track_id": tid, "box": list(box), "score": 0.9,
            "quality": quality, "age": age, "age_low": age - 5, "age_high": age + 5, "p_female": p_female,
            "gender": "F" if p_female >= 0.5 else "M", "raw_age": age, "raw_p_female": p_female}


def _records():
    recs = [HEADER]
    for n in range(30):
        recs.append(_face(n, 0, age=30 + n * 0.1, quality=0.9 if n == 12 else 0.5))  # whole clip
        if 5 <= n < 20:
            recs.append(_face(n, 1, age=60, p_female=0.9, box=(200, 10, 260, 70)))  # 1.5 s
        if n == 25:
            recs.append(_face(n, 2, age=8))  # one frame: a false detection
    return [*recs, {"type": "end", "frames": 30, "interrupted": False}]


def test_summary_keeps_real_tracks_and_their_final_estimates():
    s = summarize(_records(), min_seconds=0.5)
    assert [p.track_id for p in s.people] == [0, 1] and s.short_tracks == 1
    first, second = s.people
    assert (first.first_seen, first.last_seen, first.frames) == (0.0, 2.9, 30)
    assert first.age == pytest.approx(32.9) and first.gender == "M" and first.best_frame == 12
    assert (second.age, second.gender, second.p_female) == (60, "F", 0.9)
    assert s.on_screen.tolist() == [1] * 5 + [2] * 15 + [1] * 10
    table = s.table()
    assert len({len(v) for v in table.values()}) == 1 and table["track_id"] == [0, 1]
    g = gender_split(s)
    assert g["expected_female"] == pytest.approx(1.1) and g["labelled_female"] == 1
    assert agevision.summarize is summarize  # the notebook API


def test_summary_of_raw_records_averages_the_track():
    recs = _records()
    recs[0] = {**HEADER, "smoothed": False}
    first = summarize(recs).people[0]
    assert first.age == pytest.approx(np.average([30 + n * 0.1 for n in range(30)],
                                                 weights=[0.9 if n == 12 else 0.5 for n in range(30)]), abs=1e-3)
    assert first.gender == "M" and first.p_female == pytest.approx(0.2)


def test_summary_counts_frames_between_detections_but_takes_estimates_from_detections():
    recs = [{**HEADER, "smoothed": False, "detect_every": 3}]
    for n in range(30):  # detected on every 3rd frame; in between the last estimate is carried
        age = 20.0 + (n - n % 3)
        recs.append({**_face(n - n % 3, 0, age=age, quality=0.99 if n == 13 else 0.5), "frame": n,
                     "time": n / 10, "detected": n % 3 == 0})
    recs.append({"type": "end", "frames": 30, "interrupted": False})
    person = summarize(recs).people[0]
    assert person.frames == 30 and person.last_seen == 2.9
    assert person.age == pytest.approx(np.mean([20.0 + n for n in range(0, 30, 3)]), abs=1e-3)
    assert person.best_frame % 3 == 0  # a carried box is a prediction: never the thumbnail


def test_summary_gender_follows_the_final_probability():
    recs = _records()
    last = max(i for i, r in enumerate(recs) if r.get("track_id") == 0)
    recs[last] = {**recs[last], "p_female": 0.4, "gender": "F"}  # the label held by the smoother's hysteresis
    first = summarize(recs).people[0]
    assert (first.gender, first.p_female) == ("M", 0.4)


def test_summary_of_a_video_with_nobody():
    s = summarize([HEADER, {"type": "end", "frames": 30, "interrupted": False}])
    assert s.people == [] and s.frame_count == 30 and not s.on_screen.any()


def test_summary_of_hours_of_records_keeps_no_records_in_memory():
    import tracemalloc

    def records():  # 20 minutes at 30 fps with three people on screen: 108,000 face records
        yield {**HEADER, "fps": 30.0, "frame_count": 36_000}
        for n in range(36_000):
            for tid in range(3):
                yield {**_face(n, tid, age=20 + 10 * tid), "time": n / 30}
        yield {"type": "end", "frames": 36_000, "interrupted": False}

    tracemalloc.start()
    s = summarize(records())
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert [p.frames for p in s.people] == [36_000] * 3 and s.on_screen.max() == 3
    assert peak < 4e6, peak  # the frames seen, 4 bytes each, and the on-screen counts; not the records


def test_records_files_bad_and_cut(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text("")
    with pytest.raises(AgevisionError, match="empty"):
        read_records(path)
    lines = [json.dumps(r) for r in _records()]
    path.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:20])  # cut in the middle of the last line
    with pytest.warns(UserWarning, match="cut short"):
        recs = read_records(path)
    assert summarize(recs).interrupted  # no end record: the report says the run stopped early
    path.write_text(lines[0] + "\nnot json\n" + lines[1])
    with pytest.raises(AgevisionError, match="line 2 is not a JSON record"):
        read_records(path)
    with pytest.raises(AgevisionError, match="different videos"):
        summarize([*_records(), {**HEADER, "video": "other.mp4"}])
    with pytest.raises(AgevisionError, match="no video header"):
        summarize(_records()[1:])
    with pytest.raises(AgevisionError, match="no such records file"):
        read_records(tmp_path / "missing.jsonl")


def test_report_bad_input_is_one_clear_line(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    r = runner.invoke(app, ["report", str(tmp_path / "empty.jsonl"), "--out", str(tmp_path / "r.html")])
    assert r.exit_code == 1 and "empty" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "r.html").exists()


def _chromium():
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    assert exe, "headless Chromium is needed for this test (.ci/run installs it: apt-get install chromium)"
    return exe


PROBE = ("<script>window.addEventListener('load',()=>{const i=[...document.images];document.body.setAttribute("
         "'data-images',i.filter(x=>x.complete&&x.naturalWidth>0).length+'/'+i.length)})</script></body>")


def _render(html_path, tmp_path):
    """The DOM of the page after load, from headless Chromium, with a probe counting loaded images."""
    probe = tmp_path / "probe.html"
    probe.write_text(html_path.read_text().replace("</body>", PROBE))
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


def test_video_summary_and_report_end_to_end(tmp_path):
    clip = VIDEOS / "face_recognition__short_hamilton_clip.mp4"  # 640x360, 275 frames, 1-2 people
    records, people = tmp_path / "r.jsonl", tmp_path / "people.csv"
    r = runner.invoke(app, ["video", str(clip), "--json", str(records), "--summary", str(people)])
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(people.open()))
    lines = [json.loads(x) for x in records.read_text().splitlines()]
    assert lines[0]["type"] == "video" and lines[-1] == {"type": "end", "frames": 275, "interrupted": False}
    times: dict[int, list[float]] = {}
    readings: dict[int, int] = {}
    person: dict[int, int | None] = {}
    for rec in lines[1:-1]:
        times.setdefault(rec["track_id"], []).append(rec["time"])
        readings[rec["track_id"]] = readings.get(rec["track_id"], 0) + (rec["detected"] and rec["raw_age"] is not None)
        person[rec["track_id"]] = rec["person"]
    # a row per person (tracks grouped by identity) with 3 readable frames, by first sighting; a track
    # without a person (never a face the identity model found) counts as unreadable if seen for
    # --min-track (0.5 s), else as short. The stage clip cuts between the singer, the pianist and the
    # audience: the singer is one person over two shots; the near-black audience faces are unreadable
    groups: dict[int, list[int]] = {}
    for tid, pid in person.items():
        if pid is not None:
            groups.setdefault(pid, []).append(tid)
    first = {pid: min(times[t][0] for t in tids) for pid, tids in groups.items()}
    kept = sorted((first[pid], pid) for pid, tids in groups.items() if sum(readings[t] for t in tids) >= 3)
    assert [int(row["person"]) for row in rows] == [pid for _, pid in kept]
    assert [sorted(int(t) for t in row["tracks"].split()) for row in rows] == \
        [sorted(groups[pid]) for _, pid in kept]
    assert len(rows) >= 4 and any(len(row["tracks"].split()) > 1 for row in rows)
    unnamed_long = [t for t, pid in person.items() if pid is None and times[t][-1] - times[t][0] + 1 / 29.97 >= 0.5]
    n_unreadable = len(groups) - len(kept) + len(unnamed_long)
    assert n_unreadable >= 1 and f"{n_unreadable} unreadable face" in " ".join(r.output.split())
    for row in rows:
        assert (tmp_path / row["thumbnail"]).is_file()
        assert 0 < float(row["age_low"]) <= float(row["age"]) <= float(row["age_high"]) < 100
        assert row["gender"] in ("F", "M", "?") and 0 <= float(row["p_female"]) <= 1
        assert (row["gender"] == "?") == (abs(float(row["p_female"]) - 0.5) < 0.1)

    page = tmp_path / "report.html"
    r = runner.invoke(app, ["report", str(records), "--out", str(page), "--csv", str(tmp_path / "again.csv")])
    assert r.exit_code == 0, r.output
    again = list(csv.DictReader((tmp_path / "again.csv").open()))  # thumbnails cut from the video this time
    assert [{**r, "thumbnail": ""} for r in again] == [{**r, "thumbnail": ""} for r in rows]
    assert all((tmp_path / r["thumbnail"]).is_file() for r in again)
    assert not re.search(r"(src|href)=['\"](https?:|file:|/)", page.read_text())  # self-contained
    dom = _render(page, tmp_path)
    shown = re.findall(r"<tr data-track=\"(\d+)\" data-age=\"([\d.]+)\" data-gender=\"([FM?])\"", dom)
    assert shown == [(row["track_id"], row["age"], row["gender"]) for row in rows]
    n_images = len(rows) + 3  # a thumbnail per person and three figures
    assert f'data-images="{n_images}/{n_images}"' in dom


def test_report_of_a_video_with_nobody(tmp_path):
    import av

    clip = tmp_path / "empty.mp4"
    with av.open(str(clip), "w") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        for _ in range(10):
            frame = av.VideoFrame.from_ndarray(np.full((120, 160, 3), 80, np.uint8), format="bgr24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    records, page = tmp_path / "r.jsonl", tmp_path / "report.html"
    r = runner.invoke(app, ["video", str(clip), "--json", str(records), "--summary", str(tmp_path / "p.csv")])
    assert r.exit_code == 0, r.output
    assert len((tmp_path / "p.csv").read_text().splitlines()) == 1  # the header row only
    r = runner.invoke(app, ["report", str(records), "--out", str(page)])
    assert r.exit_code == 0, r.output
    assert "Nobody was found in this video" in _render(page, tmp_path)
