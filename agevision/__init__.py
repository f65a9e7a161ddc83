"""agevision: real-time age and gender estimation from faces in webcam and video.

Public API (imported lazily, so `import agevision` stays light):
- `Estimator`: shipped weights in, age and gender of a batch of aligned face crops out.
- `read_records(path)`, `summarize(records)`: the people in a video from the JSONL records
  of `agevision video --json` (see agevision.records and agevision.people).
"""

import os

from agevision.errors import AgevisionError

# OpenCV decodes nothing larger than this (a picture of a few KB can claim billions of
# pixels); agevision.images checks sizes first and says so, this is the backstop.
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(100_000_000))
# OpenCV's own log lines ("[ WARN:0@1.7] global cap_v4l.cpp ... can't open camera") are not
# for users: agevision says what went wrong in one line. OPENCV_LOG_LEVEL=INFO shows them.
os.environ.setdefault("OPENCV_LOG_LEVEL", "OFF")

__version__ = "0.2.0"
__all__ = ["AgevisionError", "Estimator", "Person", "Summary", "read_records", "summarize"]

_LAZY = {"Estimator": "agevision.model.estimator", "Person": "agevision.people", "Summary": "agevision.people",
         "read_records": "agevision.records", "summarize": "agevision.people"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'agevision' has no attribute {name!r}")
