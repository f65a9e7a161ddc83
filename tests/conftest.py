"""Shared fixtures: paths into ../shared (real UTKFace faces and video clips)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("AGEVISION_SHARED", REPO.parent / "shared"))
UTKFACE = SHARED / "data" / "utkface" / "UTKFace"
DUPLICATES = SHARED / "data" / "utkface" / "duplicate_groups.txt"
VIDEOS = SHARED / "data" / "videos"
IMAGENET = SHARED / "pretrained" / "mobilenet_v2-b0353104.pth"


@pytest.fixture(scope="session")
def utkface() -> Path:
    assert UTKFACE.is_dir(), f"tests need the shared UTKFace folder at {UTKFACE}"
    return UTKFACE


def pick(folder: Path, prefix: str, n: int = 1) -> list[Path]:
    """The first n files in `folder` whose names start with `prefix` (sorted, deterministic)."""
    found = sorted(p for p in folder.iterdir() if p.name.startswith(prefix))
    assert len(found) >= n, f"need {n} files starting with {prefix} in {folder}"
    return found[:n]
