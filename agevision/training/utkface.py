"""UTKFace: labels from file names, and a reproducible split that respects duplicates.

File names look like `{age}_{gender}_{race}_{datetime}.jpg.chip.jpg` (gender 0 male,
1 female; race 0 White, 1 Black, 2 Asian, 3 Indian, 4 Others). Some names lack the race
field and one has a space before `.jpg`; both are read, race -1 meaning unknown.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path

from agevision.errors import AgevisionError

RACES = ("White", "Black", "Asian", "Indian", "Others")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_NAME = re.compile(r"^(\d{1,3})_([01])_(?:([0-4])_)?")


@dataclass(frozen=True)
class Sample:
    """One labelled UTKFace image: path, age in years, gender (0 male, 1 female), race (-1 unknown)."""

    path: Path
    age: int
    gender: int
    race: int


def parse_name(name: str) -> tuple[int, int, int] | None:
    """Labels (age, gender, race) from a UTKFace file name, or None if it is not one.

    `race` is -1 when the name has no race field.
    """
    m = _NAME.match(name)
    if not m or not name.lower().endswith(IMAGE_SUFFIXES):
        return None
    age, gender, race = int(m.group(1)), int(m.group(2)), m.group(3)
    if not 0 <= age <= 130:
        return None
    return age, gender, int(race) if race is not None else -1


def load_folder(folder: Path) -> list[Sample]:
    """All images in `folder` named in the UTKFace scheme, sorted by file name.

    Raises AgevisionError if the folder is missing or holds no UTKFace-named image.
    Files with other names are ignored.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise AgevisionError(f"no such folder: {folder}")
    samples = []
    for path in sorted(folder.iterdir()):
        labels = parse_name(path.name) if path.is_file() else None
        if labels is not None:
            samples.append(Sample(path, *labels))
    if not samples:
        raise AgevisionError(
            f"no UTKFace images in {folder}: expected names like 25_1_2_20170116174525125.jpg.chip.jpg"
        )
    return samples


def read_duplicate_groups(path: Path | None) -> list[list[str]]:
    """Groups of byte-identical file names, one tab-separated group per line ('#' comments)."""
    if path is None or not Path(path).is_file():
        return []
    groups = []
    for line in Path(path).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            groups.append([n for n in line.split("\t") if n])
    return groups


def split(
    samples: list[Sample],
    duplicate_groups: list[list[str]],
    seed: int = 0,
    fractions: dict[str, float] | None = None,
) -> dict[str, list[Sample]]:
    """Split samples reproducibly into named parts, stratified by 5-year age band.

    Every group of duplicates (by file name) lands in one part. `fractions` maps part names
    to fractions of the data; the remainder goes to "train". Default: val 0.15, calib 0.05.
    Returns {"train": [...], "val": [...], "calib": [...]} (each sorted by file name).
    """
    fractions = fractions or {"val": 0.15, "calib": 0.05}
    by_name = {s.path.name: s for s in samples}
    group_of: dict[str, int] = {}
    units: list[list[Sample]] = []
    for group in duplicate_groups:
        members = [by_name[n] for n in group if n in by_name and n not in group_of]
        if members:
            for s in members:
                group_of[s.path.name] = len(units)
            units.append(members)
    for s in samples:
        if s.path.name not in group_of:
            group_of[s.path.name] = len(units)
            units.append([s])
    strata: dict[int, list[list[Sample]]] = {}
    for unit in units:
        strata.setdefault(min(unit[0].age // 5, 20), []).append(unit)
    rng = random.Random(seed)
    parts: dict[str, list[Sample]] = {"train": [], **{k: [] for k in fractions}}
    for band in sorted(strata):
        band_units = sorted(strata[band], key=lambda u: u[0].path.name)
        rng.shuffle(band_units)
        start = 0
        for name, frac in fractions.items():
            count = round(frac * len(band_units))
            for unit in band_units[start : start + count]:
                parts[name].extend(unit)
            start += count
        for unit in band_units[start:]:
            parts["train"].extend(unit)
    return {k: sorted(v, key=lambda s: s.path.name) for k, v in parts.items()}
