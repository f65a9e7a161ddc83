"""Shared fixtures: paths into ../shared (real UTKFace faces and video clips)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agevision.defaults import SHARED_DIR as SHARED
from agevision.defaults import UTKFACE_DIR as UTKFACE
from agevision.defaults import VIDEOS_DIR as VIDEOS

REPO = Path(__file__).resolve().parent.parent


NEEDS_NO_SHARED = {"test_gender_is_unsure_inside_the_band_and_without_a_reading",
                   "test_a_shown_label_holds_at_the_edge_of_the_band_but_not_inside_it",
                   "test_faces_refuse_arrays_of_different_lengths", "test_the_label_says_what_is_known",
                   "test_bad_options_are_one_error_line_before_any_work", "test_balanced_draws_weigh_every_group_alike",
                   "test_every_command_takes_h_and_no_option_is_a_double_negative"}


def pytest_collection_modifyitems(config, items):
    """Without ../shared (UTKFace, the clips, ImageNet weights) the tests that read it are
    skipped with the reason, instead of failing the run."""
    if SHARED.is_dir() and UTKFACE.is_dir() and VIDEOS.is_dir():
        return
    skip = pytest.mark.skip(reason=f"needs the shared data at {SHARED} (set AGEVISION_SHARED to its folder)")
    for item in items:
        if item.originalname not in NEEDS_NO_SHARED:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def utkface() -> Path:
    return UTKFACE


def pick(folder: Path, prefix: str, n: int = 1) -> list[Path]:
    """The first n files in `folder` whose names start with `prefix` (sorted, deterministic)."""
    found = sorted(p for p in folder.iterdir() if p.name.startswith(prefix))
    assert len(found) >= n, f"need {n} files starting with {prefix} in {folder}"
    return found[:n]


def face_crops(paths: list[Path], card):
    """(N, S, S, 3) uint8 RGB crops of UTKFace photos, framed as the photos are (`images.crop_face`),
    at the size and placing of a weights `card` (`ModelCard`)."""
    import cv2
    import numpy as np

    from agevision.align import align_crops
    from agevision.images import crop_face

    crops = []
    for p in paths:
        img = cv2.imread(str(p))
        crops.append(align_crops(img, crop_face(img), card.input_size, geometry=card.crop)[0])
    return np.stack(crops)
