"""Hostile and broken files: nothing runs code, nothing phones home, one error line each."""

import json
import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from agevision.cli import app
from agevision.errors import AgevisionError
from tests.conftest import VIDEOS

runner = CliRunner()


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_crafted_imagenet_file_cannot_run_code(tmp_path):
    from agevision.training.train import imagenet_features

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"features.0.weight": _Payload(str(marker))}, protocol=2))
    with pytest.raises(AgevisionError, match="cannot be read safely|not a weights file"):
        imagenet_features(evil)
    assert not marker.exists()
    named = tmp_path / "mobilenet_v2-b0353104.pth"  # torchvision's name, not its bytes
    named.write_bytes(evil.read_bytes())
    with pytest.raises(AgevisionError, match="is not torchvision's"):
        imagenet_features(named)
    assert not marker.exists()
    r = runner.invoke(app, ["train", "--imagenet", str(evil), "--limit", "20", "--epochs", "1",
                            "--out", str(tmp_path / "w"), "--checkpoint", str(tmp_path / "c.pt"),
                            "--cache-dir", str(tmp_path / "cache")])
    assert r.exit_code == 1 and "error:" in r.output and "Traceback" not in r.output
    assert not marker.exists() and not (tmp_path / "w").exists()


def test_a_crafted_checkpoint_cannot_run_code(tmp_path, utkface):
    from rich.console import Console

    from agevision.training.train import TrainConfig, train

    marker = tmp_path / "pwned"
    ckpt = tmp_path / "ckpt.pt"
    ckpt.write_bytes(pickle.dumps({"config_key": _Payload(str(marker))}, protocol=2))
    cfg = TrainConfig(data_dir=utkface, out_dir=tmp_path / "w", checkpoint=ckpt, cache_dir=tmp_path / "cache",
                      limit=24, epochs=1, batch_size=8, input_size=64, device="cpu", ema_decay=0.0)
    with pytest.raises(AgevisionError, match="checkpoint"):
        train(cfg, Console(quiet=True))
    assert not marker.exists()


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
def test_face_detection_makes_no_network_connection(tmp_path):
    script = ("import numpy as np\nfrom agevision.detect import FaceDetector\n"
              "for kind in ('short', 'full'):\n"
              "    with FaceDetector(kind) as d:\n"
              "        d.detect(np.zeros((240, 320, 3), np.uint8))\n")
    log = tmp_path / "strace.txt"
    r = subprocess.run(["strace", "-f", "-e", "trace=connect", "-o", str(log), sys.executable, "-c", script],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    calls = [line for line in log.read_text().splitlines() if "connect(" in line]
    remote = [c for c in calls if "AF_INET" in c and "127.0.0.1" not in c and "::1" not in c]
    assert not remote, remote


def test_same_output_twice_is_refused(tmp_path):
    clip = VIDEOS / "LivePortrait__driving_d0.mp4"
    x = tmp_path / "x.mp4"
    r = runner.invoke(app, ["video", str(clip), "--out", str(x), "--json", str(x)])
    assert r.exit_code == 1 and "--json must end in .jsonl" in r.output and not x.exists()
    j = tmp_path / "r.jsonl"
    j.write_text("keep me")
    alias = tmp_path / "r.csv"
    alias.symlink_to(j)  # the records and the summary would be one file
    r = runner.invoke(app, ["video", str(clip), "--json", str(j), "--summary", str(alias)])
    assert r.exit_code == 1 and "same file" in r.output and j.read_text() == "keep me"
    link = tmp_path / "link.mp4"
    link.symlink_to(clip)
    r = runner.invoke(app, ["video", str(clip), "--out", str(link)])
    assert r.exit_code == 1 and "same file" in r.output and link.is_symlink()


def test_a_planted_link_beside_the_output_is_never_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "records.jsonl"
    for name in (".records.partial.jsonl", ".records.jsonl.partial"):  # the old fixed temporary names
        (tmp_path / name).symlink_to(victim)
    r = runner.invoke(app, ["video", str(VIDEOS / "LivePortrait__driving_d0.mp4"), "--json", str(out)])
    assert r.exit_code == 0, r.output
    assert victim.read_text() == "precious"
    assert json.loads(out.read_text().splitlines()[-1])["type"] == "end"


def test_records_with_bad_values_are_one_error_naming_the_line(tmp_path):
    header = {"type": "video", "video": "x.mp4", "width": 10, "height": 10, "fps": 25, "frame_count": 2}
    good = {"type": "face", "frame": 0, "time": 0.0, "track_id": 0, "box": [0, 0, 5, 5], "age": 30.0,
            "age_low": 25.0, "age_high": 35.0, "p_female": 0.2, "gender": "M", "detected": True}
    for field, value, says in (("age", "old", "not a finite number"), ("p_female", 7, "outside"),
                               ("frame", -3, "outside"), ("frame", 1.5, "whole number"),
                               ("box", [0, 0, "x", 5], "finite number"), ("track_id", 10**30, "outside"),
                               ("time", float("nan"), "finite"), ("gender", "X", "not F, M or ?")):
        path = tmp_path / f"bad-{field}.jsonl"
        text = json.dumps({**good, field: value}) if value == value else json.dumps(good).replace(
            '"time": 0.0', '"time": NaN')
        path.write_text(json.dumps(header) + "\n" + json.dumps(good) + "\n" + text + "\n")
        r = runner.invoke(app, ["report", str(path), "--out", str(tmp_path / "r.html")])
        assert r.exit_code == 1, (field, r.output)
        assert "line 3" in r.output and says in r.output and "Traceback" not in r.output, (field, r.output)
    assert not (tmp_path / "r.html").exists()


def test_a_huge_line_is_not_read_into_memory(tmp_path):
    path = tmp_path / "huge.jsonl"
    with open(path, "w") as f:
        f.write('{"type": "video", "video": "x.mp4"}\n')
        f.write('{"type": "face", "pad": "' + "x" * (2 << 20) + '"}\n')
    r = runner.invoke(app, ["report", str(path), "--out", str(tmp_path / "r.html")])
    assert r.exit_code == 1 and "longer than" in r.output


def test_a_decompression_bomb_is_refused_before_decoding(tmp_path):
    import zlib

    def png(width, height):
        import struct

        def chunk(kind, data):
            return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

        raw = zlib.compress(b"\x00" * (width + 1) * 64, 9)  # only a few rows: the size is what counts
        return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                + chunk(b"IDAT", raw) + chunk(b"IEND", b""))

    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png(60000, 60000))
    r = runner.invoke(app, ["image", str(bomb)])
    assert r.exit_code == 1 and "pixels" in r.output and "Traceback" not in r.output


def test_corrupted_weights_are_caught_by_their_checksum(tmp_path):
    from agevision.model import weights

    src_t, src_c = weights.paths()
    t, c = tmp_path / src_t.name, tmp_path / src_c.name
    shutil.copy(src_c, c)
    data = bytearray(src_t.read_bytes())
    data[-1000] ^= 0x10  # one bit flipped in the tensor data
    t.write_bytes(bytes(data))
    with pytest.raises(AgevisionError, match="checksum"):
        weights.load(tmp_path)
    shutil.copy(src_t, t)
    for field, value in (("input_size", "abc"), ("mean", [0.5, 0.5]), ("age_bins", []), ("std", [0, 1, 1])):
        card = json.loads(src_c.read_text())
        card[field] = value
        c.write_text(json.dumps(card))
        with pytest.raises(AgevisionError, match=field):
            weights.load(tmp_path)


def test_the_detector_models_run_are_the_ones_shipped_in_weights():
    import hashlib
    from pathlib import Path

    import mediapipe

    from agevision.detect import MODEL_FILES, model_path

    modules = Path(mediapipe.__file__).parent / "modules" / "face_detection"
    for kind, name in MODEL_FILES.items():
        ours, theirs = model_path(kind).read_bytes(), (modules / name).read_bytes()
        assert hashlib.sha256(ours).digest() == hashlib.sha256(theirs).digest(), name


def test_report_takes_thumbnails_only_from_the_records_own_video(tmp_path, monkeypatch):
    import csv

    clip = VIDEOS / "LivePortrait__driving_d0.mp4"
    runs = tmp_path / "runs"
    runs.mkdir()
    records = runs / "r.jsonl"
    r = runner.invoke(app, ["video", str(clip), "--json", str(records)])
    assert r.exit_code == 0, r.output
    header = json.loads(records.read_text().splitlines()[0])
    assert not header["video"].startswith("/")  # relative to the records' folder
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the video is found from the records file, not the working folder
    r = runner.invoke(app, ["report", str(records), "--out", "page.html", "--csv", "people.csv"])
    assert r.exit_code == 0, r.output
    assert all(row["thumbnail"] for row in csv.DictReader(open("people.csv")))
    # records that name another readable video of a different size: nothing of it is embedded
    lines = records.read_text().splitlines()
    other = json.loads(lines[0]) | {"video": str(VIDEOS / "facenet-pytorch__video.mp4")}
    forged = tmp_path / "forged.jsonl"
    forged.write_text("\n".join([json.dumps(other), *lines[1:]]) + "\n")
    r = runner.invoke(app, ["report", str(forged), "--out", "forged.html", "--csv", "forged.csv"])
    assert r.exit_code == 0 and "not the video these records were made from" in r.output
    assert not any(row["thumbnail"] for row in csv.DictReader(open("forged.csv")))


@pytest.mark.parametrize("args, says", [
    (["video", "x.mp4", "--device", "bogus"], "'bogus' is not cpu, cuda or cuda:N"),
    (["webcam", "--camera", "-1"], "--camera"),
    (["image", "x.jpg", "--min-face", "-5"], "--min-face"),
    (["video", "x.mp4", "--detector", "tiny"], "'tiny' is not one of 'short', 'full'"),
    (["video", "x.mp4", "--nope"], "No such option"),
    (["image"], "Missing argument"),
    (["train", "--crop", "huge"], "'huge' is not 'tight', 'wide' or a box fraction"),
])
def test_bad_options_are_one_error_line_before_any_work(args, says):
    r = subprocess.run([sys.executable, "-m", "agevision.cli", *args], capture_output=True, text=True, timeout=120)
    lines = [line for line in (r.stdout + r.stderr).splitlines() if line.strip()]
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:") and says in lines[0], lines


def test_every_command_takes_h_and_no_option_is_a_double_negative():
    for command in ("train", "evaluate", "video", "image", "webcam", "report"):
        r = subprocess.run([sys.executable, "-m", "agevision.cli", command, "-h"], capture_output=True, text=True,
                           timeout=120, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})
        assert r.returncode == 0 and "Usage:" in r.stdout, (command, r.stderr)
        assert "--no-no-" not in r.stdout


def test_image_reads_folders_and_globs_and_keeps_same_named_inputs_apart(tmp_path, utkface):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    face = sorted(utkface.glob("30_1_0_*"))[0]
    shutil.copy(face, a / "face.jpg")
    shutil.copy(sorted(utkface.glob("40_0_0_*"))[0], b / "face.jpg")
    out = tmp_path / "annotated"
    r = runner.invoke(app, ["image", str(a), str(tmp_path / "b" / "*.jpg"), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == ["face-2.png", "face.png"]  # neither overwrote the other


def test_image_out_named_like_a_picture_is_that_picture(tmp_path, utkface):
    import cv2

    face = sorted(utkface.glob("30_1_0_*"))[0]
    r = runner.invoke(app, ["image", str(face), "--out", str(tmp_path / "annotated.jpg")])
    assert r.exit_code == 0, r.output
    copy = cv2.imread(str(tmp_path / "annotated.jpg"))
    assert (tmp_path / "annotated.jpg").read_bytes()[:2] == b"\xff\xd8" and copy.shape == cv2.imread(str(face)).shape
    other = sorted(utkface.glob("40_0_0_*"))[0]
    r = runner.invoke(app, ["image", str(face), str(other), "--out", str(tmp_path / "two.png")])
    assert r.exit_code == 1 and "give a folder" in r.output and not (tmp_path / "two.png").exists()
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((200, 200, 3), 128, np.uint8))
    r = runner.invoke(app, ["image", str(blank), "--out", str(tmp_path / "none.png")])
    assert r.exit_code == 1 and not (tmp_path / "none.png").exists()


def test_a_failed_image_run_leaves_nothing_behind(tmp_path):
    blank = tmp_path / "blank.png"
    import cv2

    cv2.imwrite(str(blank), np.full((200, 200, 3), 128, np.uint8))
    out, records = tmp_path / "out", tmp_path / "faces.jsonl"
    r = runner.invoke(app, ["image", str(blank), "--out", str(out), "--json", str(records)])
    assert r.exit_code == 1 and "no face found" in r.output
    assert not out.exists() and not records.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["blank.png"]


def test_no_native_log_lines_reach_the_user(tmp_path, utkface):
    face = sorted(utkface.glob("30_1_0_*"))[0]
    r = subprocess.run([sys.executable, "-m", "agevision.cli", "image", str(face)], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    text = r.stdout + r.stderr
    assert "face 1:" in text
    for noise in ("INFO:", "XNNPACK", "W0000", "I0000", "InitGoogle", "inference_runner"):
        assert noise not in text, text


@pytest.mark.parametrize("args, says", [
    (["train", "--out", "/proc/agevision-w"], "cannot write --out /proc/agevision-w"),
    (["train", "--checkpoint", "/proc/x/c.pt"], "cannot write --checkpoint"),
    (["evaluate", "UTKFACE", "--predictions", "/proc/p.csv"], "cannot write /proc/p.csv"),
    (["evaluate", "UTKFACE", "--report", "/etc/hostname"], "it is a file, not a folder"),
    (["evaluate", "UTKFACE", "--cache-dir", "/proc/cache"], "cannot write --cache-dir"),
    (["image", "x.jpg", "--out", "/proc/out"], "cannot write --out /proc/out"),
    (["image", "x.jpg", "--json", "/proc/faces.jsonl"], "cannot write /proc/faces.jsonl"),
    (["video", "CLIP", "--summary", "/proc/people.csv"], "cannot write /proc/people.csv"),
])
def test_unwritable_outputs_are_refused_before_the_work_starts(args, says, utkface):
    args = [str(utkface) if a == "UTKFACE" else str(VIDEOS / "LivePortrait__driving_d0.mp4") if a == "CLIP" else a
            for a in args]
    r = runner.invoke(app, args)
    assert r.exit_code == 1 and says in r.output and "Traceback" not in r.output, r.output
    assert "UTKFace:" not in r.output  # refused before any data was read


def test_one_missing_photo_is_one_error_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "agevision.cli", "image", str(tmp_path / "missing.jpg")],
                       capture_output=True, text=True, timeout=300)
    lines = [line for line in (r.stdout + r.stderr).splitlines() if line.strip()]
    assert r.returncode == 1 and lines == [f"error: no such image: {tmp_path / 'missing.jpg'}"], lines


def test_a_full_disk_is_one_error_line_and_leaves_nothing(tmp_path):
    """Outputs on a file system that fills up mid-run (a 16 KB tmpfs): one error, no file left."""
    full = tmp_path / "full"
    full.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(full)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root): " + mounted.stderr.decode(errors="replace")[:200])
    try:
        clip = VIDEOS / "LivePortrait__driving_d0.mp4"
        for args in (["--out", str(full / "o.mp4")], ["--json", str(full / "r.jsonl")],
                     ["--summary", str(full / "p.csv")]):
            if args[0] == "--summary":  # thumbnails and CSV: fill the disk first, leave a few bytes
                (full / "filler").write_bytes(b"\0" * (12 << 10))
            r = subprocess.run([sys.executable, "-m", "agevision", "video", str(clip), *args], capture_output=True,
                               text=True, timeout=300)
            lines = r.stderr.strip().splitlines()
            assert r.returncode == 1 and lines[-1].startswith("error:"), r.stderr[-2000:]
            assert "No space left on device" in lines[-1] and "Traceback" not in r.stderr
            (full / "filler").unlink(missing_ok=True)
            assert list(full.iterdir()) == [], list(full.iterdir())  # no partial output, no temporary file
    finally:
        subprocess.run(["umount", str(full)], capture_output=True)


def test_a_file_that_is_not_a_video_is_one_error_line_and_no_bar(tmp_path):
    """The progress bar starts once the video is open: a bad file shows its error line alone."""
    notes = tmp_path / "notes.mp4"
    notes.write_text("hello")
    r = subprocess.run([sys.executable, "-m", "agevision", "video", str(notes), "--out", str(tmp_path / "o.mp4")],
                       capture_output=True, text=True, timeout=300)
    lines = (r.stdout + r.stderr).splitlines()
    assert r.returncode == 1 and len(lines) == 1, lines  # not even an empty line before it
    assert lines[0].startswith(f"error: {notes} is not a readable video"), lines
    assert list(tmp_path.iterdir()) == [notes]


def test_a_weights_folder_that_is_not_one_gives_one_clear_error(tmp_path):
    import os

    from agevision.model import weights

    a_file = tmp_path / "file"
    a_file.write_text("x")
    fifo, folder, device, huge = (tmp_path / n for n in ("fifo", "folder", "device", "huge"))
    for d in (fifo, folder, device, huge):
        d.mkdir()
    os.mkfifo(fifo / "agegender.json")  # reading it would wait for ever
    (folder / "agegender.json").mkdir()
    (device / "agegender.json").symlink_to("/dev/zero")  # reading it would never end
    (huge / "agegender.json").write_text(" " * 2_000_000 + "{}")
    for d, says in ((a_file, "is not a weights folder"), (fifo, "not a plain file"), (folder, "not a plain file"),
                    (device, "not a plain file"), (huge, "over 1 MB")):
        with pytest.raises(AgevisionError, match=says):
            weights.load_card(d)
    r = CliRunner().invoke(app, ["train", "--teacher", str(a_file), "--out", str(tmp_path / "w")])
    assert r.exit_code == 1 and "is not a weights folder" in r.output and "Traceback" not in r.output
