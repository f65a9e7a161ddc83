"""The JSONL records of a run: the one home of their schema, written and read here.

A records file (`agevision video --json`) holds a header record (`"type": "video"`: the
video, its size, frame rate and frame count, whether estimates are smoothed), one
`"type": "face"` record per face per frame, and an end record (`"type": "end"`: frames
processed, whether the run was interrupted, whether the input ended early). `agevision
image --json` writes face records with a "source" instead. `iter_records` reads a file
back one record at a time; `check_face` validates a face record as `report` needs it.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from agevision.errors import AgevisionError
from agevision.faces import Faces

MAX_LINE = 1 << 20  # bytes: a longer line is not a record (a file that is not records, or hostile)
MAX_FRAME = 1 << 31  # frame numbers and track ids beyond this are not from a real video


def face_records(faces: Faces, frame_index: int, time_s: float, raw: Faces | None = None,
                 source: str | None = None, detected: bool = True) -> list[dict]:
    """One JSON-ready dict per face ("type": "face"): frame, time, track id, person id (None
    here: known when the run is over, see `with_persons`), box, detection score, face
    quality, smoothed and raw age, 80% interval, P(female), the gender shown ("F", "M" or
    "?"; a new track shows none until its second reading, but its raw reading is kept),
    whether the face could be read (unreadable faces have no age), and whether the face was
    detected in this frame (False: a frame between detections, where the box is the
    tracker's prediction and the estimates are carried over)."""
    records = []
    for i in range(len(faces)):
        known = not np.isnan(faces.age[i])

        def num(v: float, nd: int = 2, known: bool = known):
            return None if not known or np.isnan(v) else round(float(v), nd)

        rec = {
            "type": "face",
            "frame": frame_index,
            "time": round(time_s, 3),
            "track_id": int(faces.track_ids[i]),
            "person": None,
            "box": [round(float(v), 1) for v in faces.boxes[i]],
            "score": round(float(faces.scores[i]), 3),
            "quality": None if np.isnan(faces.quality[i]) else round(float(faces.quality[i]), 3),
            "age": num(faces.age[i], 1),
            "age_low": num(faces.age_low[i], 1),
            "age_high": num(faces.age_high[i], 1),
            "p_female": num(faces.p_female[i], 3),
            "gender": str(faces.gender[i]) if known else "?",
            "readable": bool(faces.readable[i]),
            # the frame's own reading, also where none is shown yet (a new track, see smooth)
            "raw_age": num(raw.age[i], 1, known=True) if raw is not None else None,
            "raw_p_female": num(raw.p_female[i], 3, known=True) if raw is not None else None,
            "detected": detected,
        }
        if source is not None:
            rec["source"] = source
        records.append(rec)
    return records


def with_persons(rec: dict, persons: dict[int, int]) -> dict:
    """A face record with its `person` set from `persons` (track id -> person id; None
    for a track with no person); other records unchanged."""
    if rec.get("type", "face") != "face":
        return rec
    return {**rec, "person": persons.get(int(rec["track_id"]))}


def video_header(path: Path, width: int, height: int, fps: float, frame_count: int, smoothed: bool = True,
                 detect_every: int = 1, identities: bool = False) -> dict:
    """The first record of a video's JSONL ("type": "video"): which video, its size, rate and
    length, whether the face records' age and gender are smoothed per track, on every how
    many frames faces were detected, and whether tracks were grouped into people by face
    identity (then a face record's `person` is None only for a track whose face could
    never be read)."""
    from agevision import __version__

    return {"type": "video", "video": str(path), "width": width, "height": height, "fps": round(float(fps), 4),
            "frame_count": frame_count, "smoothed": smoothed, "detect_every": detect_every,
            "identities": identities, "agevision": __version__}


def end_record(frames: int, interrupted: bool, truncated: bool = False) -> dict:
    """The last record of a run ("type": "end"): frames processed, whether the run was
    stopped early (Ctrl-C, a signal, a window closed) and whether the input ended before
    the frames its header promised (a cut file)."""
    rec = {"type": "end", "frames": int(frames), "interrupted": bool(interrupted)}
    if truncated:
        rec["truncated"] = True
    return rec


def iter_records(path: Path) -> Iterator[dict]:
    """The records of a JSONL file written by `agevision video --json`, one at a time (see
    `iter_numbered` for the errors)."""
    for _, rec in iter_numbered(path):
        yield rec


def iter_numbered(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, record) for each record of a JSONL records file.

    Raises AgevisionError if the file is missing, unreadable or empty, has a line longer
    than MAX_LINE bytes, or a broken line before the last; a broken last line (a cut file)
    is dropped with a warning.
    """
    path = Path(path)
    if not path.is_file():
        raise AgevisionError(f"no such records file: {path}")
    broken, any_line, good = None, False, 0
    try:
        with open(path, encoding="utf-8") as f:
            n = 0
            while line := f.readline(MAX_LINE + 1):
                n += 1
                if len(line) > MAX_LINE:
                    raise AgevisionError(f"{path} line {n} is longer than {MAX_LINE // 1024} KB: not a records file")
                if not line.strip():
                    continue
                if broken is not None:
                    raise _not_a_record(path, broken)
                any_line = True
                try:
                    rec = json.loads(line)
                except ValueError:
                    rec = None
                if not isinstance(rec, dict):
                    broken = n
                    continue
                good += 1
                yield n, rec
    except (OSError, UnicodeDecodeError) as err:
        raise AgevisionError(f"cannot read {path}: {err}") from None
    if not any_line:
        raise AgevisionError(f"{path} is empty: no records")
    if broken is not None:
        if not good:
            raise _not_a_record(path, broken)
        warnings.warn(f"{path}: last line ({broken}) is cut short (truncated file?); ignored", stacklevel=2)


def _not_a_record(path: Path, line: int) -> AgevisionError:
    return AgevisionError(f"{path} line {line} is not a JSON record: is this a records file from "
                          "`agevision video --json`?")


def read_records(path: Path) -> list[dict]:
    """All records of a JSONL file written by `agevision video --json`, in file order (see
    `iter_records` for the errors)."""
    return list(iter_records(path))


def _number(rec: dict, key: str, line: int | None, lo: float, hi: float, optional: bool = False) -> None:
    value = rec.get(key)
    if value is None and optional:
        return
    where = f"line {line}: " if line else ""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise AgevisionError(f"{where}face record field {key!r} is {value!r}, not a finite number")
    if not lo <= value <= hi:
        raise AgevisionError(f"{where}face record field {key!r} is {value}, outside {lo:g}..{hi:g}")


def check_face(rec: dict, line: int | None = None) -> dict:
    """`rec` if it is a face record `summarize` can use; AgevisionError naming the line if
    a field is missing, of the wrong type, NaN or infinite, or out of range."""
    where = f"line {line}: " if line else ""
    missing = [k for k in ("frame", "time", "track_id", "box") if k not in rec]
    if missing:
        raise AgevisionError(f"{where}a face record lacks {', '.join(missing)}: not agevision records")
    for key in ("frame", "track_id"):
        if not isinstance(rec[key], int) or isinstance(rec[key], bool):
            raise AgevisionError(f"{where}face record field {key!r} is {rec[key]!r}, not a whole number")
    _number(rec, "frame", line, 0, MAX_FRAME)
    _number(rec, "track_id", line, 0, MAX_FRAME)
    person = rec.get("person")
    if person is not None and (not isinstance(person, int) or isinstance(person, bool) or not 1 <= person <= MAX_FRAME):
        raise AgevisionError(f"{where}face record field 'person' is {person!r}, not a person id")
    _number(rec, "time", line, 0, 1e8)
    box = rec["box"]
    if not isinstance(box, list) or len(box) != 4:
        raise AgevisionError(f"{where}face record field 'box' is {box!r}, not 4 numbers")
    for k, v in enumerate(box):
        _number({"box": v}, "box", line, -1e6, 1e6)
        box[k] = float(v)
    for key, lo, hi in (("age", 0, 150), ("age_low", 0, 150), ("age_high", 0, 150), ("p_female", 0, 1),
                        ("quality", 0, 1), ("score", 0, 1)):
        _number(rec, key, line, lo, hi, optional=True)
    if rec.get("age") is not None:  # an estimate comes whole
        for key in ("age_low", "age_high", "p_female"):
            _number(rec, key, line, 0, 150 if key != "p_female" else 1)
    if rec.get("gender") not in (None, "F", "M", "?"):
        raise AgevisionError(f"{where}face record field 'gender' is {rec['gender']!r}, not F, M or ?")
    return rec
