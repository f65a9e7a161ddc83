"""Honest labels: '?' when the model is not sure, and for faces that cannot be read."""

import json

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from agevision.cli import app
from agevision.detect import FaceDetector
from agevision.faces import Faces
from agevision.labels import UNSURE_BAND, gender_labels, held_label
from agevision.quality import assess
from agevision.render import face_label
from agevision.sources import VideoSource
from tests.conftest import VIDEOS

runner = CliRunner()
TALKING = VIDEOS / "LivePortrait__driving_d0.mp4"


def test_gender_is_unsure_inside_the_band_and_without_a_reading():
    p = np.array([0.0, 0.5 - UNSURE_BAND, 0.45, 0.5, 0.55, 0.5 + UNSURE_BAND, 1.0, np.nan])
    assert list(gender_labels(p)) == ["M", "M", "?", "?", "?", "F", "F", "?"]
    assert list(gender_labels(np.array([0.9, 0.1]), readable=np.array([False, True]))) == ["?", "M"]


def test_a_shown_label_holds_at_the_edge_of_the_band_but_not_inside_it():
    assert held_label(0.58, None) == "?"
    assert held_label(0.58, "F") == "F"  # within the hold: no flicker F ? F ?
    assert held_label(0.52, "F") == "?"
    assert held_label(0.42, "M") == "M" and held_label(0.48, "M") == "?"
    assert held_label(0.2, "F") == "M"


def test_faces_refuse_arrays_of_different_lengths():
    with pytest.raises(ValueError, match="scores has 1 rows for 2 boxes"):
        Faces(boxes=np.zeros((2, 4), np.float32), keypoints=np.zeros((2, 6, 2), np.float32),
              scores=np.zeros(1, np.float32))


def _frame():
    with VideoSource(TALKING) as src:
        return next(iter(src))


def test_a_face_in_the_dark_is_boxed_but_not_read():
    frame = _frame()
    with FaceDetector("full") as det:
        faces = det.detect(frame)
        assert len(faces) == 1
        quality, readable = assess(frame, faces, min_face=24)
        assert readable.all() and quality[0] > 0.3
        night = (frame * 0.06).astype(np.uint8)  # the face is still found, but near black
        dark = det.detect(cv2.convertScaleAbs(night, alpha=1.0))
    if len(dark) == 0:
        dark = faces.subset(np.array([0]))
    _, readable = assess(night, dark, min_face=24)
    assert not readable.any()
    _, small = assess(frame, faces, min_face=10_000)
    assert not small.any()


def test_unreadable_faces_show_a_question_mark_everywhere(tmp_path):
    frame = _frame()
    dark = tmp_path / "dark.png"
    cv2.imwrite(str(dark), (frame * 0.08).astype(np.uint8))  # still found, near black
    bright = tmp_path / "bright.png"
    cv2.imwrite(str(bright), frame)
    records = tmp_path / "faces.jsonl"
    r = runner.invoke(app, ["image", str(bright), str(dark), "--min-face", "0", "--json", str(records),
                            "--detector", "full"])
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in records.read_text().splitlines()]
    by_file = {row["source"]: row for row in rows}
    assert by_file[str(bright)]["gender"] == "M" and by_file[str(bright)]["readable"]
    row = by_file[str(dark)]  # found in the dark: boxed, not read
    assert row["gender"] == "?" and row["age"] is None and row["readable"] is False
    assert f"{dark}: face 1: ?" in " ".join(r.output.split())


def test_the_label_says_what_is_known():
    f = Faces(boxes=np.array([[0, 0, 50, 50]] * 3, np.float32), keypoints=np.zeros((3, 6, 2), np.float32),
              scores=np.ones(3, np.float32), age=np.array([30, 30, np.nan], np.float32),
              age_low=np.array([26, 26, np.nan], np.float32), age_high=np.array([34, 34, np.nan], np.float32),
              p_female=np.array([0.9, 0.52, np.nan], np.float32))
    assert [face_label(f, i) for i in range(3)] == ["F 30 \u00b14", "? 30 \u00b14", "?"]


def test_the_plus_minus_sign_is_drawn_not_question_marks():
    from agevision.render import _text

    def drawn(text):
        canvas = np.zeros((40, 200, 3), np.uint8)
        _text(canvas, text, (2, 30), 0.8, (255, 255, 255))
        return canvas

    plus_minus, question = drawn("F 30 \u00b14"), drawn("F 30 ?4")
    assert (plus_minus != question).any()  # OpenCV's fonts draw a ± as "??"
    assert (plus_minus != drawn("F 30 +4")).any()  # the bar under the plus
