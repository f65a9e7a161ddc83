"""One home for the defaults the commands, scripts and tests share; imports nothing heavy.

Data folders: the material in `../shared` (UTKFace, video clips, ImageNet weights), found
through AGEVISION_SHARED, else beside the checkout this package runs from, else
`../shared` from the working folder. Command defaults: what `agevision video`, `webcam`
and `image` do unless told otherwise (the stage classes' own defaults are the plain
behaviour: every frame, the whole frame).
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
# the shipped models, cards and licences: inside the package when installed from a wheel,
# else the checkout's top-level weights/ (an editable install)
WEIGHTS_DIR = PACKAGE_DIR / "weights" if (PACKAGE_DIR / "weights").is_dir() else PACKAGE_DIR.parent / "weights"


def _shared_dir() -> Path:
    if os.environ.get("AGEVISION_SHARED"):
        return Path(os.environ["AGEVISION_SHARED"])
    beside = PACKAGE_DIR.parent.parent / "shared"
    return beside if beside.is_dir() else Path("../shared")


SHARED_DIR = _shared_dir()
UTKFACE_DIR = SHARED_DIR / "data" / "utkface" / "UTKFace"
DUPLICATES_FILE = SHARED_DIR / "data" / "utkface" / "duplicate_groups.txt"
VIDEOS_DIR = SHARED_DIR / "data" / "videos"
IMAGENET_FILE = SHARED_DIR / "pretrained" / "mobilenet_v2-b0353104.pth"

MIN_FACE = 24  # faces narrower than this many pixels are boxed with '?', not read
MIN_TRACK = 0.5  # seconds: shorter tracks are left out of summaries as likely false detections
TILE_SIZE = 768  # video and images: frames larger than this are also searched in tiles
DETECT_EVERY = 3  # video and webcam: detect on every 3rd frame, follow the faces in between
