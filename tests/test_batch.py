"""`agevision batch`: many videos, resumable, failures isolated, local and on Ray."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest
from typer.testing import CliRunner

from agevision.batch import BatchOptions, collect_videos, output_names, run_batch
from agevision.cli import app
from agevision.errors import AgevisionError
from tests.conftest import VIDEOS

runner = CliRunner()
D0 = VIDEOS / "LivePortrait__driving_d0.mp4"  # 78 frames, one man
AOC_1 = VIDEOS / "SadTalker__WDA_AlexandriaOcasioCortez_000.mp4"  # 200 frames
AOC_2 = VIDEOS / "video-retalking__face_3.mp4"  # 125 frames, the same woman


def _faces(path):
    """The face records and end record of a records file (the header names the video as seen from its folder)."""
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    return lines[1:]


def test_inputs_are_files_folders_globs_and_lists(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for p in ("a/one.mp4", "a/b/two.MOV", "a/b/notes.txt.bak", "three.mkv"):
        (tmp_path / p).write_bytes(b"x")
    listing = tmp_path / "list.txt"
    listing.write_text("# the videos\nthree.mkv\n\na/one.mp4\nmissing.mp4\n")
    found = collect_videos([tmp_path / "a", listing, tmp_path / "*.mkv"])
    assert [p.relative_to(tmp_path).as_posix() for p in found] == ["a/b/two.MOV", "a/one.mp4", "three.mkv",
                                                                   "missing.mp4"]  # each once; missing kept
    with pytest.raises(AgevisionError, match="no such video"):
        collect_videos([tmp_path / "nothing-*.mp4"])
    assert output_names([tmp_path / "x" / "clip.mp4", tmp_path / "y" / "clip.mp4", tmp_path / "Clip.mov"]) == \
        ["clip", "clip-2", "Clip-3"]


def test_batch_gives_the_records_of_agevision_video_and_survives_a_bad_file(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(D0.read_bytes()[:3000])  # a cut file: no decodable video
    out = tmp_path / "out"
    r = runner.invoke(app, ["batch", str(D0), str(AOC_2), str(bad), "--out", str(out), "--video"])
    assert r.exit_code == 1, r.output  # something failed: the status says so
    lines = [json.loads(x) for x in (out / "batch.jsonl").read_text().splitlines()]
    assert [(x["name"], x["state"]) for x in lines] == [("LivePortrait__driving_d0", "done"),
                                                        ("video-retalking__face_3", "done"), ("broken", "failed")]
    assert lines[2]["error"] and lines[0]["frames"] == 78 and lines[0]["people"] == 1
    assert not (out / "broken").exists()  # nothing that looks like a result
    single = tmp_path / "single.jsonl"
    r = runner.invoke(app, ["video", str(D0), "--json", str(single)])
    assert r.exit_code == 0, r.output
    assert _faces(out / "LivePortrait__driving_d0" / "records.jsonl") == _faces(single)
    for name in ("LivePortrait__driving_d0", "video-retalking__face_3"):
        assert {p.name for p in (out / name).iterdir()} == {"records.jsonl", "people.csv", "people_thumbs",
                                                            "annotated.mp4", "done.json"}
    page = (out / "report.html").read_text()
    assert "data-state='failed'" in page and "2 done" in page and "http" not in page


def test_a_rerun_skips_work_done_and_retries_what_failed(tmp_path):
    out = tmp_path / "out"
    missing = tmp_path / "later.mp4"
    listing = tmp_path / "videos.txt"
    listing.write_text(f"{D0}\nlater.mp4\n")
    r = runner.invoke(app, ["batch", str(listing), "--out", str(out)])
    assert r.exit_code == 1
    assert "no such video file" in json.loads((out / "batch.jsonl").read_text().splitlines()[1])["error"]
    done = out / "LivePortrait__driving_d0" / "done.json"
    stamp = done.stat().st_mtime_ns
    shutil.copy(AOC_2, missing)  # the missing file turns up
    r = runner.invoke(app, ["batch", str(listing), "--out", str(out)])
    assert r.exit_code == 0, r.output
    lines = [json.loads(x) for x in (out / "batch.jsonl").read_text().splitlines()]
    assert [x["state"] for x in lines] == ["skipped", "done"] and done.stat().st_mtime_ns == stamp


def test_a_killed_batch_resumes_and_never_leaves_a_result_that_looks_complete(tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "agevision", "batch", str(D0), str(AOC_1), "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    first = out / "LivePortrait__driving_d0" / "done.json"
    second = out / "SadTalker__WDA_AlexandriaOcasioCortez_000"
    deadline = time.time() + 240
    while not (first.exists() and second.is_dir()) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    time.sleep(0.2)  # into the second video (its folder is made first; its 200 frames take far longer)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert first.exists() and not (second / "done.json").exists()
    assert not (second / "records.jsonl").exists() and not (second / "people.csv").exists()  # only temporary names
    second.mkdir(exist_ok=True)
    (second / ".people.csv.k1ll3d.partial").write_text("a")  # as a kill leaves them, whenever it comes
    r = runner.invoke(app, ["batch", str(D0), str(AOC_1), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert not list(second.glob(".*.partial"))  # the killed run's temporary files are gone
    lines = [json.loads(x) for x in (out / "batch.jsonl").read_text().splitlines()]
    assert [x["state"] for x in lines] == ["skipped", "done"] and lines[1]["frames"] == 200


def test_link_people_finds_one_woman_in_two_videos(tmp_path):
    out = tmp_path / "out"
    r = runner.invoke(app, ["batch", str(AOC_1), str(D0), str(AOC_2), "--out", str(out), "--link-people"])
    assert r.exit_code == 0, r.output
    rows = [x.split(",") for x in (out / "people.csv").read_text().splitlines()[1:]]
    by_video = {row[2]: row[0] for row in rows}
    assert by_video["SadTalker__WDA_AlexandriaOcasioCortez_000"] == by_video["video-retalking__face_3"] != \
        by_video["LivePortrait__driving_d0"]
    assert "2 distinct" in (out / "report.html").read_text()


def test_without_link_people_no_identity_vectors_are_kept(tmp_path):
    out = tmp_path / "out"
    r = runner.invoke(app, ["batch", str(D0), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert not list(out.rglob("*.npz")) and not (out / "people.csv").exists()


def test_ray_engine_without_ray_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    r = runner.invoke(app, ["batch", str(D0), "--out", "x", "--engine", "ray"])
    assert r.exit_code == 1 and "pip install 'agevision[ray]'" in r.output


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ray_engine_on_a_local_cluster_gives_the_local_records(tmp_path, monkeypatch):
    pytest.importorskip("ray", reason="Ray is an optional extra (pip install 'agevision[ray]')")
    ray_bin = shutil.which("ray", path=os.path.dirname(sys.executable)) or shutil.which("ray")
    port = _free_port()
    home = tmp_path / "home"  # Ray keeps an auth token in ~/.ray: the cluster and the driver share this one
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "HOME": str(home)}
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must stay under 107 bytes
    start = subprocess.run([ray_bin, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
                            "--num-cpus=2", "--num-gpus=0", "--include-dashboard=false", "--disable-usage-stats",
                            f"--temp-dir={temp}"], env=env, capture_output=True, text=True, timeout=180)
    assert start.returncode == 0, start.stderr[-2000:]
    try:
        bad = tmp_path / "broken.mp4"
        bad.write_bytes(b"not a video at all")
        r = runner.invoke(app, ["batch", str(D0), str(AOC_2), str(bad), "--out", str(tmp_path / "ray-out"),
                                "--engine", "ray", "--address", f"127.0.0.1:{port}"])
        assert r.exit_code == 1, r.output
        counts = []  # the progress bar's frame counts come while a video runs, not only when it ends
        run_batch([AOC_1], tmp_path / "ray-progress", BatchOptions(), engine="ray", address=f"127.0.0.1:{port}",
                  on_frames=lambda done, total: counts.append((done, total)))
        assert counts[-1] == (200, 200) and any(0 < done < 200 for done, _ in counts), counts
    finally:
        subprocess.run([ray_bin, "stop", "--force"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(temp, ignore_errors=True)
    r = runner.invoke(app, ["batch", str(D0), str(AOC_2), "--out", str(tmp_path / "local-out")])
    assert r.exit_code == 0, r.output
    ray_lines = [json.loads(x) for x in (tmp_path / "ray-out" / "batch.jsonl").read_text().splitlines()]
    assert [x["state"] for x in ray_lines] == ["done", "done", "failed"]
    for name in ("LivePortrait__driving_d0", "video-retalking__face_3"):
        assert _faces(tmp_path / "ray-out" / name / "records.jsonl") == \
            _faces(tmp_path / "local-out" / name / "records.jsonl")


def test_a_pool_worker_runs_its_model_on_one_thread_without_torch():
    probe = ("import os, sys; os.cpu_count = lambda: 8; "  # a bigger machine: the default would be 4 threads
             "from agevision import batch; batch._init_worker(); "
             "est = batch._worker_estimator(batch.BatchOptions(device='cpu')); "
             "print(est.backend, est.runner.threads, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["onnx", "1", "False"]


def test_the_frames_bar_ends_full_when_a_video_fails_midway(tmp_path, monkeypatch):
    """A video that failed after its frames were counted (its worker died) still counts as over."""
    from agevision import batch

    def dies(video, folder, opts, progress=None, estimator=None):
        progress(10, 78)
        return batch.failed_line(video, folder, "the worker process died")

    monkeypatch.setattr(batch, "process_video", dies)
    monkeypatch.setattr(batch, "_worker_estimator", lambda opts, one_thread=None: None)
    monkeypatch.setattr("agevision.pipeline.share_cpu", lambda estimator: 1)
    counts = []
    result = run_batch([D0], tmp_path / "out", BatchOptions(), workers=1,
                       on_frames=lambda done, total: counts.append((done, total)))
    assert result.failed == 1 and counts[0] == (10, 78) and counts[-1] == (78, 78)
