import shutil
from pathlib import Path

import pytest

from agevision.defaults import DUPLICATES_FILE as DUPLICATES
from agevision.errors import AgevisionError
from agevision.training.utkface import load_folder, parse_name, read_duplicate_groups, split
from tests.conftest import pick

QUIRKY = ["39_1_20170116174525125.jpg.chip.jpg", "24_0_1_20170116220224657 .jpg.chip.jpg"]


def test_parse_names_including_quirks():
    assert parse_name("25_1_2_20170116174525125.jpg.chip.jpg") == (25, 1, 2)
    assert parse_name(QUIRKY[0]) == (39, 1, -1)
    assert parse_name(QUIRKY[1]) == (24, 0, 1)
    assert parse_name("notes.txt") is None
    assert parse_name("face.jpg") is None
    assert parse_name("25_3_0_x.jpg") is None  # gender must be 0 or 1


def test_loader_reads_quirky_real_files(tmp_path: Path, utkface: Path):
    for name in QUIRKY + [pick(utkface, "1_0_0_")[0].name]:
        shutil.copy(utkface / name, tmp_path / name)
    (tmp_path / "README.txt").write_text("not a face")
    samples = load_folder(tmp_path)
    assert sorted((s.age, s.gender, s.race) for s in samples) == [(1, 0, 0), (24, 0, 1), (39, 1, -1)]


def test_loader_errors(tmp_path: Path):
    with pytest.raises(AgevisionError, match="no such folder"):
        load_folder(tmp_path / "missing")
    (tmp_path / "cat.jpg").write_bytes(b"x")
    with pytest.raises(AgevisionError, match="no UTKFace images"):
        load_folder(tmp_path)


def test_split_keeps_duplicates_together_and_is_reproducible(utkface: Path):
    samples = load_folder(utkface)
    groups = read_duplicate_groups(DUPLICATES)
    assert len(groups) > 200
    parts = split(samples, groups, seed=0)
    assert sum(len(v) for v in parts.values()) == len(samples)
    side = {s.path.name: name for name, part in parts.items() for s in part}
    for group in groups:
        assert len({side[n] for n in group if n in side}) == 1, group
    again = split(samples, groups, seed=0)
    assert [s.path.name for s in again["val"]] == [s.path.name for s in parts["val"]]
    other = split(samples, groups, seed=1)
    assert [s.path.name for s in other["val"]] != [s.path.name for s in parts["val"]]
    # stratified: each 5-year band is represented in val in about its share
    n_val = len(parts["val"])
    assert 0.13 < n_val / len(samples) < 0.17
    kids_all = sum(s.age <= 12 for s in samples) / len(samples)
    kids_val = sum(s.age <= 12 for s in parts["val"]) / n_val
    assert abs(kids_all - kids_val) < 0.01
