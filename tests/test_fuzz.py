"""Fuzz: mutated records, photos and videos through `report`, `image` and `video`. Each run
ends in exit 0 or one clear error (exit 1), never a traceback or a signal; bounded in time."""

import json
import random

import av
import cv2
import numpy as np
from typer.testing import CliRunner

from agevision.cli import app
from tests.conftest import VIDEOS

runner = CliRunner()
VALUES = [None, True, -1, 0, 1e308, -1e308, 2**70, "x", "", [], {}, [1, 2], {"a": 1}, 1.5, "NaN", 0.5]


def _ok(result) -> bool:
    """Exit 0, or 1 with an error line; never an exception escaping the command."""
    return isinstance(result.exception, SystemExit | type(None)) and result.exit_code in (0, 1) \
        and "Traceback" not in result.output


def _records() -> list[str]:
    header = {"type": "video", "video": "missing.mp4", "width": 64, "height": 64, "fps": 25, "frame_count": 30,
              "smoothed": True}
    lines = [json.dumps(header)]
    for f in range(30):
        lines.append(json.dumps({"type": "face", "frame": f, "time": f / 25, "track_id": f // 15,
                                 "box": [10, 10, 40, 40], "score": 0.9, "quality": 0.5, "age": 30.0 + f,
                                 "age_low": 25.0, "age_high": 40.0, "p_female": 0.3, "gender": "M",
                                 "readable": True, "detected": True}))
    lines.append(json.dumps({"type": "end", "frames": 30, "interrupted": False}))
    return lines


def test_mutated_records_through_report(tmp_path):
    rng = random.Random(0)
    base = _records()
    for k in range(150):
        lines = list(base)
        kind = k % 5
        i = rng.randrange(len(lines))
        if kind == 0:  # a field of a record set to an odd value
            rec = json.loads(lines[i])
            rec[rng.choice(list(rec))] = rng.choice(VALUES)
            lines[i] = json.dumps(rec)
        elif kind == 1:  # bytes flipped
            raw = bytearray(lines[i].encode())
            for _ in range(3):
                raw[rng.randrange(len(raw))] = rng.randrange(256)
            lines[i] = raw.decode("latin-1")
        elif kind == 2:  # cut short
            lines = lines[: rng.randrange(1, len(lines))]
            lines[-1] = lines[-1][: rng.randrange(len(lines[-1]) + 1)]
        elif kind == 3:  # lines shuffled or repeated
            lines.insert(rng.randrange(len(lines)), lines[i])
        else:  # a field removed
            rec = json.loads(lines[i])
            rec.pop(rng.choice(list(rec)))
            lines[i] = json.dumps(rec)
        path = tmp_path / f"r{k}.jsonl"
        path.write_text("\n".join(lines) + "\n", encoding="latin-1")
        r = runner.invoke(app, ["report", str(path), "--out", str(tmp_path / f"r{k}.html")])
        assert _ok(r), (k, lines[i][:200], r.output, r.exception)


def test_mutated_photos_through_image(tmp_path, utkface):
    rng = random.Random(1)
    photo = sorted(utkface.glob("30_1_0_*"))[0].read_bytes()
    ok, png = cv2.imencode(".png", cv2.imread(str(sorted(utkface.glob("40_0_0_*"))[0])))
    files = []
    for k in range(60):
        data = bytearray(photo if k % 2 else png.tobytes())
        if k % 3 == 0:
            data = data[: rng.randrange(10, len(data))]
        else:
            for _ in range(rng.randrange(1, 30)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        path = tmp_path / f"p{k}{'.jpg' if k % 2 else '.png'}"
        path.write_bytes(bytes(data))
        files.append(str(path))
    r = runner.invoke(app, ["image", *files, "--json", str(tmp_path / "faces.jsonl")])
    assert _ok(r), (r.output[-2000:], r.exception)


def _small_clip(path):
    frames = []
    with av.open(str(VIDEOS / "LivePortrait__driving_d0.mp4")) as src:
        for frame in src.decode(video=0):
            frames.append(cv2.resize(frame.to_ndarray(format="bgr24"), (160, 160)))
            if len(frames) == 20:
                break
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width = stream.height = 160
        stream.pix_fmt = "yuv420p"
        for f in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="bgr24")))
        out.mux(stream.encode())


def test_mutated_videos_through_video(tmp_path):
    rng = random.Random(2)
    clip = tmp_path / "clip.mp4"
    _small_clip(clip)
    data = clip.read_bytes()
    for k in range(8):
        mutated = bytearray(data)
        if k % 2 == 0:
            mutated = mutated[: rng.randrange(100, len(mutated))]
        else:
            start = 0 if k % 4 == 1 else len(mutated) // 2  # the header, or the picture data
            for _ in range(40):
                mutated[start + rng.randrange(len(mutated) - start)] = rng.randrange(256)
        path = tmp_path / f"v{k}.mp4"
        path.write_bytes(bytes(mutated))
        out = tmp_path / f"v{k}.jsonl"
        r = runner.invoke(app, ["video", str(path), "--json", str(out), "--out", str(tmp_path / f"o{k}.mp4")])
        assert _ok(r), (k, r.output, r.exception)
        if r.exit_code == 0:
            assert json.loads(out.read_text().splitlines()[-1])["type"] == "end"
        assert not list(tmp_path.glob(".*partial*"))


def test_a_video_whose_codec_is_unknown_is_one_error_line(tmp_path):
    """A stream that names a codec FFmpeg lacks has no codec context (PyAV gives None): one
    error line, no output file (the fuzz test above met it in a mutated header)."""
    clip = tmp_path / "clip.mp4"
    _small_clip(clip)
    path, out = tmp_path / "unknown.mp4", tmp_path / "o.mp4"
    path.write_bytes(clip.read_bytes().replace(b"avc1", b"zzzz"))
    r = runner.invoke(app, ["video", str(path), "--out", str(out)])
    assert r.exit_code == 1 and "codec is unknown" in r.output and "Traceback" not in r.output, r.output
    assert not out.exists()
