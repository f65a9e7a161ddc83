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
