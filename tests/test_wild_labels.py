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
