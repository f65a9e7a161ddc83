"""The live pipeline's stages on real clips, the video/image commands end to end, bad input."""

import json

import av
import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from agevision.cli import app
from agevision.faces import Faces, iou
from agevision.model.estimator import Estimator
from agevision.pipeline import FrameProcessor, detect_ahead, run_live
from agevision.render import Renderer
from agevision.smooth import Smoother
from agevision.sources import VideoSource
from agevision.track import Tracker
from tests.conftest import VIDEOS

TALKING = VIDEOS / "LivePortrait__driving_d0.mp4"  # 512x512, 78 frames, one face, no audio
WITH_AUDIO = VIDEOS / "face_recognition__short_hamilton_clip.mp4"  # 640x360, 275 frames, audio
runner = CliRunner()


@pytest.fixture(scope="module")
def estimator():
    return Estimator(device="cpu")


def _frames(path, n):
    with VideoSource(path) as src:
        out = []
        for frame in src:
            out.append(frame)
            if len(out) == n:
                break
    return out


def test_detector_tracker_and_estimator_on_a_talking_head(estimator):
    with FrameProcessor(estimator, detector="short") as proc:
        ids = set()
        for n, frame in enumerate(_frames(TALKING, 40)):
            result = proc.process(frame)
            faces = result.faces
            assert len(faces) == 1
            ids.add(int(faces.track_ids[0]))
            assert 0 < result.raw.age[0] < 100
            if n == 0:  # a new track shows its label from its second reading on (smooth.Smoother)
                assert np.isnan(faces.age[0]) and faces.gender[0] == "?"
            else:
                assert 0 < faces.age[0] < 100 and 0 <= faces.p_female[0] <= 1
    assert ids == {0}


def test_faces_followed_between_detections_stay_on_the_face(estimator):
    frames = _frames(TALKING, 30)
    with FrameProcessor(estimator, detector="full") as every, FrameProcessor(estimator, detector="full",
                                                                            detect_every=3) as third:
        for n, frame in enumerate(frames):
            truth = every.process(frame).faces
            result = third.process(frame)
            faces, raw = result.faces, result.raw
            assert result.detected == (n % 3 == 0)
            assert len(faces) == 1 and int(faces.track_ids[0]) == 0
            assert iou(faces.boxes, truth.boxes)[0, 0] > 0.85
            if result.detected:
                assert np.allclose(faces.boxes, truth.boxes)
            else:  # labels carried over (from the second reading on), no new raw estimate
                assert np.isnan(raw.age[0]) and np.isnan(faces.age[0]) == (n < 3)


def test_detections_made_ahead_on_a_thread_give_the_same_results(estimator):
    frames = _frames(TALKING, 24) + _frames(VIDEOS / "LivePortrait__driving_d12.mp4", 8)  # with a shot cut
    with FrameProcessor(estimator, detector="full", detect_every=3) as plain, \
            FrameProcessor(estimator, detector="full", detect_every=3) as ahead:
        made = 0
        for frame, (same, found) in zip(frames, detect_ahead(ahead, frames), strict=True):
            assert same is frame
            assert (found is not None) == ahead.scheduled(ahead.frames_done)
            made += found is not None
            a, b = plain.process(frame), ahead.process(frame, found)
            assert a.detected == b.detected
            assert np.array_equal(a.faces.boxes, b.faces.boxes)
            assert np.array_equal(a.faces.track_ids, b.faces.track_ids)
            assert np.allclose(a.faces.age, b.faces.age, equal_nan=True)
        assert made == len(range(0, len(frames), 3))


def test_detect_ahead_raises_the_sources_error_in_order_and_stops_when_left(estimator):
    frames = _frames(TALKING, 5)

    def failing():
        yield from frames[:3]
        raise RuntimeError("decoder broke")

    with FrameProcessor(estimator, detector="full", detect_every=2) as proc:
        seen = []
        with pytest.raises(RuntimeError, match="decoder broke"):
            for frame, _found in detect_ahead(proc, failing()):
                seen.append(frame)
        assert len(seen) == 3
        pulled = []

        def endless():
            while True:
                pulled.append(1)
                yield frames[0]

        gen = detect_ahead(proc, endless(), depth=2)
        next(gen)
        gen.close()  # joins the thread: nothing is pulled after this
        n = len(pulled)
        assert n <= 5
        proc.process(frames[0])  # the detector is free again
        assert len(pulled) == n


def test_a_shot_cut_between_detections_is_detected_and_starts_new_tracks(estimator):
    cut = VIDEOS / "LivePortrait__driving_d12.mp4"  # another man, his face higher and smaller
    frames = _frames(TALKING, 4) + _frames(cut, 3)
    with FrameProcessor(estimator, detector="full") as every, FrameProcessor(estimator, detector="full",
                                                                            detect_every=3) as third:
        cuts = {"every": [], "third": []}
        for n, frame in enumerate(frames):
            truth, result = every.process(frame), third.process(frame)
            faces = result.faces
            assert iou(faces.boxes, truth.faces.boxes)[0, 0] > 0.85, n  # never the old face's box
            assert result.detected == (n % 3 == 0 or n == 4)
            assert int(faces.track_ids[0]) == (0 if n < 4 else 1)
            cuts["every"] += [n] * truth.cut
            cuts["third"] += [n] * result.cut
            if n == 4:
                assert result.ended == [0]  # the first man's track ends at the cut
        assert cuts == {"every": [4], "third": [4]}


def _faces(box, age_peak, p_female, score=0.9):
    probs = np.zeros((1, 101), np.float32)
    probs[0, age_peak] = 1.0
    f = Faces(boxes=np.array([box], np.float32), keypoints=np.zeros((1, 6, 2), np.float32),
              scores=np.array([score], np.float32))
    f.age, f.age_probs = np.array([age_peak], np.float32), probs * 0.9 + 0.1 / 101
    f.p_female = np.array([p_female], np.float32)
    return f


def test_smoother_steadies_a_track_and_new_people_start_fresh():
    tracker, smoother = Tracker(max_missed=2), Smoother(np.arange(101))
    shown = []
    for k in range(30):
        f, ended = tracker.update(_faces([100, 100, 200, 200], 30 + (5 if k % 2 else -5), 0.6 if k % 2 else 0.45))
        f = smoother.update(f, ended)
        shown.append((f.age[0], str(f.gender[0])))
    ages = [a for a, _ in shown[10:]]
    assert np.std(ages) < 2.0  # raw estimates jump by 10 years every frame
    assert len({g for _, g in shown}) == 1  # no gender flip
    # a different person somewhere else gets a new id and its own estimate
    for _ in range(4):
        _, ended = tracker.update(Faces())
        smoother.update(Faces(), ended)
    for _ in range(2):  # shown from its second reading on
        f, ended = tracker.update(_faces([400, 100, 500, 200], 70, 0.95))
        f = smoother.update(f, ended)
    assert f.track_ids[0] != 0 and abs(f.age[0] - 70) < 3 and f.gender[0] == "F"


def test_renderer_draws_labels_and_hud():
    frame = np.zeros((360, 640, 3), np.uint8)
    f = _faces([100, 100, 200, 200], 31, 0.9)
    f.age_low, f.age_high, f.gender = np.array([27.0]), np.array([35.0]), np.array(["F"])
    out = Renderer().draw(frame.copy(), f, fps=29.5)
    assert (out != frame).any(axis=2)[95:205, 95:205].sum() > 300  # the box
    assert (out != frame).any(axis=2)[:40, :200].sum() > 100  # the HUD
    assert not (Renderer(show_faces=False, show_hud=False).draw(frame.copy(), f) != frame).any()


def test_labels_of_faces_side_by_side_do_not_cover_each_other():
    from agevision.render import _label_origin, _text_rect

    taken = []
    boxes = [(100, 100, 160, 160), (140, 110, 200, 170), (120, 60, 180, 120)]  # a crowd: overlapping boxes
    rects = [_text_rect("F 56 ±39", _label_origin("F 56 ±39", b, 0.5, taken), 0.5) for b in boxes]
    for i, a in enumerate(rects):
        for b in rects[i + 1:]:
            assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3])


def test_live_loop_with_injected_keys(estimator, tmp_path):
    keys = iter([ord("o"), ord("h"), ord(" "), ord(" "), ord("s"), -1, ord("q")])
    shown = []
    with FrameProcessor(estimator, detector="short") as proc:
        result = run_live(proc, VideoSource(TALKING), shown.append, lambda: next(keys), snapshot_dir=tmp_path)
        assert not proc.renderer.show_faces and not proc.renderer.show_hud
    assert result["quit"] and result["frames"] == 7
    assert len(result["snapshots"]) == 1 and cv2.imread(str(result["snapshots"][0])) is not None


def test_video_command_end_to_end(tmp_path):
    out, records = tmp_path / "out.mp4", tmp_path / "faces.jsonl"
    r = runner.invoke(app, ["video", str(WITH_AUDIO), "--out", str(out), "--json", str(records)])
    assert r.exit_code == 0, r.output
    src, dst = av.open(str(WITH_AUDIO)), av.open(str(out))
    sv, dv = src.streams.video[0], dst.streams.video[0]
    assert (dv.codec_context.name, dv.width, dv.height) == ("h264", sv.width, sv.height)
    assert sum(1 for _ in dst.decode(video=0)) == sum(1 for _ in src.decode(video=0))
    assert float(dv.average_rate) == pytest.approx(float(sv.average_rate), rel=1e-3)
    assert dst.streams.audio and dst.streams.audio[0].codec_context.name == "aac"
    lines = [json.loads(x) for x in records.read_text().splitlines()]
    assert lines[0]["type"] == "video" and lines[0]["frame_count"] == 275 and lines[-1]["type"] == "end"
    faces = lines[1:-1]
    assert len(faces) > 275 and {r["type"] for r in faces} == {"face"}  # 1-2 faces in most frames
    boxes = int(r.output.split(" face boxes")[0].split()[-1])  # "275 frames, N face boxes, ..."
    assert len(faces) == boxes  # a record per face per frame
    assert {"frame", "time", "track_id", "box", "quality", "age", "raw_age", "age_low", "age_high",
            "p_female", "detected"} <= set(faces[0])
    # faces are detected and estimated on every 3rd frame (the default) and followed between,
    # except at the clip's shot cuts (frames 20, 82, 211) and where a followed face is lost
    detected = {r["frame"] for r in faces if r["detected"]}
    extra = detected - set(range(0, 275, 3))
    assert len(detected) > 80 and {82, 211} <= extra and len(extra) <= 5, extra
    assert all(r["raw_age"] is None for r in faces if not r["detected"])
    assert all(r["raw_age"] is not None for r in faces if r["detected"] and r["age"] is not None)
    first = {}  # each track's first record: its reading kept, no label shown yet
    for r in faces:
        first.setdefault(r["track_id"], r)
    read_first = [r for r in first.values() if r["readable"]]
    assert read_first and all(r["age"] is None and r["gender"] == "?" and r["raw_age"] is not None
                              for r in read_first)
    assert not list(tmp_path.glob(".*partial*"))


def test_a_video_stored_on_its_side_comes_out_upright(tmp_path):
    # as a phone records portrait video: the picture stored turned, with a display rotation
    frames = _frames(WITH_AUDIO, 20)  # 640x360, a face in every frame
    clip, out, records = tmp_path / "phone.mp4", tmp_path / "out.mp4", tmp_path / "faces.jsonl"
    with av.open(str(clip), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 360, 640, "yuv420p"
        stream.set_display_rotation(90)  # shown turned 90 degrees counterclockwise
        for frame in frames:
            turned = np.ascontiguousarray(cv2.rotate(frame, cv2.ROTATE_90_CLOCKWISE))
            container.mux(stream.encode(av.VideoFrame.from_ndarray(turned, format="bgr24")))
        container.mux(stream.encode())
    r = runner.invoke(app, ["video", str(clip), "--out", str(out), "--json", str(records)])
    assert r.exit_code == 0, r.output
    header = json.loads(records.read_text().splitlines()[0])
    assert (header["width"], header["height"]) == (640, 360)
    with av.open(str(out)) as container:
        shown = [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]
    assert len(shown) == 20 and shown[0].shape == (360, 640, 3)
    upright = np.abs(shown[10].astype(int) - frames[10]).mean()
    upside_down = np.abs(shown[10].astype(int) - cv2.rotate(frames[10], cv2.ROTATE_180)).mean()
    assert upright < 10 and upside_down > 3 * upright, (upright, upside_down)


@pytest.mark.parametrize("setup, message", [
    (lambda d: d / "missing.mp4", "no such video file"),
    (lambda d: (d / "notes.mp4").write_text("hello") and d / "notes.mp4", "not a readable video"),
])
def test_video_bad_input_is_one_clear_line(tmp_path, setup, message):
    r = runner.invoke(app, ["video", str(setup(tmp_path)), "--out", str(tmp_path / "o.mp4")])
    assert r.exit_code == 1 and message in r.output and "Traceback" not in r.output
    assert not (tmp_path / "o.mp4").exists()


def test_video_unwritable_output(tmp_path):
    r = runner.invoke(app, ["video", str(TALKING), "--out", str(tmp_path / "no" / "such" / "o.mp4")])
    assert r.exit_code == 1 and "does not exist" in r.output


def test_image_command_bad_and_odd_images(tmp_path):
    frame = _frames(TALKING, 1)[0]
    gray, bgra = tmp_path / "gray.png", tmp_path / "bgra.png"
    cv2.imwrite(str(gray), cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(bgra), cv2.cvtColor(frame, cv2.COLOR_BGR2BGRA))
    edge = tmp_path / "edge.png"  # the face cut by the frame edge
    cv2.imwrite(str(edge), frame[:, 200:])
    r = runner.invoke(app, ["image", str(gray), str(bgra), str(edge), "--out", str(tmp_path / "ann")])
    assert r.exit_code == 0, r.output
    assert r.output.count("face 1:") == 3
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((300, 300, 3), 90, np.uint8))
    r = runner.invoke(app, ["image", str(blank)])
    assert r.exit_code == 1 and "no face found" in r.output
    r = runner.invoke(app, ["image", str(tmp_path / "nope.jpg")])
    assert r.exit_code == 1 and "no such image" in r.output


def _jpeg_with_orientation(image_bgr, orientation: int) -> bytes:
    """A JPEG of `image_bgr` with an EXIF orientation tag (as a phone camera writes)."""
    entry = (0x0112).to_bytes(2, "little") + (3).to_bytes(2, "little") + (1).to_bytes(4, "little")
    entry += orientation.to_bytes(2, "little") + b"\0\0"
    tiff = b"II*\0" + (8).to_bytes(4, "little") + (1).to_bytes(2, "little") + entry + (0).to_bytes(4, "little")
    payload = b"Exif\0\0" + tiff
    jpeg = cv2.imencode(".jpg", image_bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
    return jpeg[:2] + b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload + jpeg[2:]


def test_a_phone_photo_is_read_upright(tmp_path):
    from agevision.images import read_bgr

    frame = _frames(WITH_AUDIO, 1)[0]  # 640x360
    stored = cv2.rotate(frame, cv2.ROTATE_90_COUNTERCLOCKWISE)  # orientation 6: shown turned clockwise
    path = tmp_path / "phone.jpg"
    path.write_bytes(_jpeg_with_orientation(stored, 6))
    image = read_bgr(path)
    assert image.shape == frame.shape and np.abs(image.astype(int) - frame).mean() < 4


def test_evaluate_bad_folders(tmp_path):
    r = runner.invoke(app, ["evaluate", str(tmp_path / "missing")])
    assert r.exit_code == 1 and "no such folder" in r.output
    (tmp_path / "x.jpg").write_bytes(b"x")
    r = runner.invoke(app, ["evaluate", str(tmp_path)])
    assert r.exit_code == 1 and "no UTKFace images" in r.output
    assert len(r.output.splitlines()) == 1, r.output  # the error alone, no empty line of an unused bar


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM", "SIGHUP"])
def test_a_signal_mid_video_leaves_a_playable_video_and_closed_records(tmp_path, signame):
    import signal
    import subprocess
    import sys
    import time

    out, records = tmp_path / "partial.mp4", tmp_path / "partial.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "agevision.cli", "video", str(VIDEOS / "LivePortrait__driving_d6.mp4"),
         "--out", str(out), "--json", str(records)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 120
    while time.time() < deadline and not any(p.stat().st_size > 20000 for p in tmp_path.glob(".*mp4*partial*")):
        time.sleep(0.2)  # wait until frames are being encoded
    proc.send_signal(getattr(signal, signame))
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, output
    assert "Traceback" not in output and "stopped early" in output
    frames = sum(1 for _ in av.open(str(out)).decode(video=0))
    assert 0 < frames < 1008
    lines = [json.loads(x) for x in records.read_text().splitlines()]
    assert lines[-1] == {"type": "end", "frames": lines[-1]["frames"], "interrupted": True}
    assert lines[-1]["frames"] >= frames - 10  # the encoder lags the records by its queue
    assert not list(tmp_path.glob(".*partial*"))


def test_records_are_the_same_whichever_outputs_are_asked_for(estimator, tmp_path):
    # the sinks only pass results on: the CLI's records are the frame loop's own
    from agevision.records import face_records, with_persons

    clip = VIDEOS / "LivePortrait__driving_d12.mp4"
    r = runner.invoke(app, ["video", str(clip), "--json", str(tmp_path / "a.jsonl")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["video", str(clip), "--json", str(tmp_path / "b.jsonl"), "--out", str(tmp_path / "b.mp4"),
                            "--summary", str(tmp_path / "b.csv")])
    assert r.exit_code == 0, r.output
    a, b = (tmp_path / "a.jsonl").read_text(), (tmp_path / "b.jsonl").read_text()
    assert a == b
    direct = []
    with VideoSource(clip) as src, FrameProcessor(estimator, detect_every=3, tile_size=768, identify=True) as proc:
        for n, frame in enumerate(src):
            res = proc.process(frame)
            direct += face_records(res.faces, n, n / float(src.fps), res.raw, detected=res.detected)
        direct = [with_persons(rec, proc.people()) for rec in direct]
    assert [json.loads(x) for x in a.splitlines()[1:-1]] == json.loads(json.dumps(direct))


def test_webcam_without_a_camera_is_one_clear_line():
    r = runner.invoke(app, ["webcam", "--camera", "7"])
    assert r.exit_code == 1 and "no camera at index 7" in r.output and "Traceback" not in r.output


def test_no_display_is_one_clear_line_not_a_qt_abort(tmp_path):
    # OpenCV's Qt aborts the process without an X display; agevision must say so first
    r = runner.invoke(app, ["webcam", "--source", str(TALKING)], env={"DISPLAY": None})
    assert r.exit_code == 1 and "cannot open a window: no display" in r.output
    out = tmp_path / "out.mp4"
    r = runner.invoke(app, ["video", str(TALKING), "--out", str(out), "--show"], env={"DISPLAY": ":93"})
    assert r.exit_code == 1 and "no X display answers at DISPLAY=:93" in r.output and not out.exists()


def test_live_loop_in_a_real_window_under_xvfb(tmp_path):
    import os
    import shutil
    import subprocess
    import sys
    import time

    xvfb = shutil.which("Xvfb")
    assert xvfb, "Xvfb is needed for this test (.ci/run installs it: apt-get install xvfb)"
    display = ":57"
    server = subprocess.Popen([xvfb, display, "-screen", "0", "1024x768x24"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)
        env = dict(os.environ, DISPLAY=display)
        r = subprocess.run([sys.executable, "-m", "agevision.cli", "webcam", "--source", str(TALKING)],
                           env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "Traceback" not in r.stderr
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_a_file_played_live_keeps_its_own_frame_rate(monkeypatch):
    """`webcam --source FILE` plays at the file's rate (a fake clock: no timing in tests)."""
    import agevision.pipeline as pl

    clock = [0.0]
    monkeypatch.setattr(pl.time, "perf_counter", lambda: clock[0])
    monkeypatch.setattr(pl.time, "sleep", lambda s: clock.__setitem__(0, clock[0] + s))
    shown_at = []
    for k, _ in enumerate(pl.paced(range(6), 10.0)):
        shown_at.append(round(clock[0], 3))
        if k == 2:
            clock[0] += 0.35  # a slow frame: the next ones come at once, then at the rate again
    assert shown_at == [0.0, 0.1, 0.2, 0.55, 0.65, 0.75]
    assert list(pl.paced(range(3), 0)) == [0, 1, 2]  # no rate known: as they come
