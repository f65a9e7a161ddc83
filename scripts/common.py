"""What the scripts share: the data folders and the clip lists."""

from __future__ import annotations

from agevision.defaults import DUPLICATES_FILE, IMAGENET_FILE, SHARED_DIR, UTKFACE_DIR, VIDEOS_DIR

SHARED = SHARED_DIR
VIDEOS = VIDEOS_DIR
UTKFACE = UTKFACE_DIR
DUPLICATES = DUPLICATES_FILE
IMAGENET_PTH = IMAGENET_FILE
ONE_PERSON = ("LivePortrait__driving", "SadTalker", "video-retalking")  # talking-head clips, one face each


def one_person_clips() -> list:
    """The one-person talking-head clips in the shared videos folder, sorted."""
    return sorted(p for p in VIDEOS.glob("*.mp4") if p.name.startswith(ONE_PERSON))


def refit_arguments(doc: str):
    """The arguments of a script that refits part of a weights folder's card: --weights, --dry-run."""
    import argparse
    from pathlib import Path

    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--weights", type=Path, default=None, help="weights folder (default: the shipped weights/)")
    ap.add_argument("--dry-run", action="store_true", help="print the fit, write nothing")
    return ap.parse_args()


def calibration_faces(card, cache_dir):
    """What a card's calibration is fitted on, as `agevision train` draws it.

    Returns (parts, copies): the UTKFace split of the card's seed ({"train", "val", "calib"}:
    samples), and the calibration part's crops as they are and in the training's augmented
    copies (`train.calibration_copies`), a list of (N, S, S, 3) uint8 arrays in that order."""
    from dataclasses import replace

    from agevision.training.crops import cached_crops
    from agevision.training.train import TrainConfig, calibration_copies
    from agevision.training.utkface import load_folder, read_duplicate_groups, split

    seed = int(card.extra.get("training_data", {}).get("split_seed", 0))
    parts = split(load_folder(UTKFACE), read_duplicate_groups(DUPLICATES), seed=seed)
    crops = cached_crops([s.path for s in parts["calib"]], card.input_size, cache_dir, crop=card.crop).crops
    return parts, calibration_copies(crops, replace(TrainConfig(data_dir=UTKFACE), seed=seed))


def run_script(main) -> None:
    """Call a script's `main()`; an AgevisionError (a folder that is not weights, a missing or
    unreadable file) ends the script with one `error:` line and exit status 1, not a traceback."""
    import sys

    from agevision.errors import AgevisionError

    try:
        main()
    except AgevisionError as e:
        sys.exit(f"error: {e}")
