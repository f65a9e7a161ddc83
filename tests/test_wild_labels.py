"""The wild dev set's label file and the report's apparent-age rule (scripts/wild_report.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
LABELS = SCRIPTS / "data" / "wild_dev.json"


@pytest.fixture(scope="module")
def report():
    sys.path.insert(0, str(SCRIPTS))
    try:
        import wild_report
        yield wild_report
    finally:
        sys.path.remove(str(SCRIPTS))


def test_every_labelled_person_has_one_age_measure_and_sane_ranges():
    labels = json.loads(LABELS.read_text())
    people = [p for c in labels["clips"] for p in c["people"]]
    assert len(people) == 34
    for p in people:
        assert p["gender"] in ("F", "M")
        assert ("age_range" in p) != ("apparent_age" in p), p["id"]
        lo, hi = p.get("age_range") or p["apparent_age"]
        assert 0 <= lo <= hi <= 100, p["id"]
        assert p.get("age_basis") or p.get("apparent_basis"), p["id"]


def test_apparent_error_is_the_distance_outside_the_range(report):
    rows = [{"clip": "LivePortrait__source_s18.mp4", "id": "s18 woman, small in frame", "age": 14.5},
            {"clip": "LivePortrait__source_s18.mp4", "id": "s18 woman, small in frame", "age": 25.0},
            {"clip": "facenet-pytorch__video.mp4", "id": "street: elderly woman, white hair", "age": 90.0},
            {"clip": "facenet-pytorch__video.mp4", "id": "street: woman with scarf", "age": float("nan")},
            {"clip": "SadTalker__WDA_KatieHill_000.mp4", "id": "Katie Hill", "age": 22.1}]
    out = report.with_apparent(rows)
    assert [r["apparent_error"] for r in out] == [pytest.approx(-3.5), 0.0, pytest.approx(5.0), None, None]
    assert out[0]["apparent"] == (18, 32) and out[4]["apparent"] is None
    assert "apparent" not in rows[0]  # the rows given are left as they were
    assert report.apparent_totals(out) == {"n": 3, "inside": 1, "young": 1, "old": 1,
                                           "mean_outside": pytest.approx((3.5 + 0 + 5.0) / 3), "interval_holds": None}


def test_several_weights_read_as_the_mean_of_their_readings(report):
    import numpy as np

    from agevision.errors import AgevisionError
    from agevision.model.decode import mean_prediction
    from agevision.model.estimator import Estimator

    plain, flipped = Estimator(None, "cpu", flip=False), Estimator(None, "cpu", flip=True)
    both = report.MeanOf([plain, flipped])
    crops = np.random.default_rng(0).integers(0, 255, (3, plain.input_size, plain.input_size, 3), dtype=np.uint8)
    want = mean_prediction([plain.predict(crops), flipped.predict(crops)], plain.age_bins)
    got = both.predict_many(crops, batch=2)
    assert np.allclose(got.age, want.age, atol=1e-4) and np.allclose(got.p_female, want.p_female, atol=1e-6)
    assert len(both.predict(crops[:0]).age) == 0
    other = Estimator(None, "cpu")
    other.input_size = plain.input_size + 16  # weights that read another crop size cannot be averaged
    with pytest.raises(AgevisionError, match="same size"):
        report.MeanOf([plain, other])


def _saved_run(path: Path, katie_age: float, katie_pf: float, with_obama: bool) -> Path:
    """A minimal saved wild_report --json file: Katie Hill (documented 31-32), maybe Barack
    Obama (47), one still face, UTKFace figures."""
    def person(clip, pid, gender, age, pf, true_age, error):
        return {"clip": clip, "id": pid, "gender": gender, "readings": 10, "missed": 0, "anchors": 1,
                "raw_right": 1.0, "raw_pf": pf, "shown_right": 1.0, "shown_wrong": 0.0, "shown_unsure": 0.0,
                "age": age, "true_age": true_age, "age_error": error, "interval_holds": 1.0}

    people = [person("SadTalker__WDA_KatieHill_000.mp4", "Katie Hill", "F", katie_age, katie_pf, "31-32",
                     katie_age - 31)]
    if with_obama:
        people.append(person("face_recognition__short_hamilton_clip.mp4", "Barack Obama", "M", 44.1, 0.04, "47", -2.9))
    stills = [{"clip": "SadTalker__WDA_KatieHill_000.mp4", "id": "Katie Hill", "gender": "F", "found": True,
               "shown": "F", "age": katie_age, "age_error": katie_age - 31}]
    utk = {"slices": {"all": {"age_mae": 4.81, "gender_accuracy": 0.939}, "ages 0-12": {"age_mae": 1.76}}}
    path.write_text(json.dumps({"people": people, "stills": stills, "utkface": utk}))
    return path


def test_compare_puts_saved_runs_side_by_side(report, tmp_path):
    from agevision.errors import AgevisionError

    a = report.load_saved(_saved_run(tmp_path / "a.json", 22.1, 0.99, with_obama=True))
    b = report.load_saved(_saved_run(tmp_path / "b.json", 30.0, 0.5, with_obama=False))
    totals, people = report.comparison_rows({"a": a, "b": b})
    totals = dict(totals)
    assert totals["people right / wrong / ? / missed"] == ["2 / 0 / 0 / 0", "1 / 0 / 0 / 0"]
    assert totals["documented age MAE, bias"] == ["5.9, -5.9 (2)", "1.0, -1.0 (1)"]
    assert totals["stills documented age"] == ["8.9, -8.9 (1)", "1.0, -1.0 (1)"]
    assert totals["UTKFace MAE / gender"] == ["4.81 / 93.9%"] * 2
    assert dict(people) == {"Katie Hill (F, 31-32)": ["22.1 · 0.99", "30.0 · 0.50"],
                            "Barack Obama (M, 47)": ["44.1 · 0.04", "-"]}
    no_utk = json.loads((tmp_path / "b.json").read_text()) | {"utkface": None}
    (tmp_path / "c.json").write_text(json.dumps(no_utk))
    totals, _ = report.comparison_rows({"c": report.load_saved(tmp_path / "c.json")})
    assert dict(totals)["UTKFace MAE / gender"] == ["-"]  # a run without the UTKFace part
    (tmp_path / "junk.json").write_text("[1, 2]")
    with pytest.raises(AgevisionError, match="not a saved wild_report"):
        report.load_saved(tmp_path / "junk.json")
