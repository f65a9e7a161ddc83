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
