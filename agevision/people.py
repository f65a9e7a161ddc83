"""Who was in the video: per-person summaries built from face records.

`agevision video --json` writes JSONL: a header record (`"type": "video"`: the video, its
size, frame rate and frame count), one `"type": "face"` record per face per frame (see
`sinks.face_records`) and an end record (`"type": "end"`: frames processed, interrupted).
`read_records` reads such a file back; `summarize` turns the records into one `Person` per
track long enough to be a real face; `write_people_csv` writes them with their thumbnails.
"""

from __future__ import annotations

import csv
import json
import math
import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from agevision.errors import AgevisionError

THUMB_SIZE = 112  # longest side of a thumbnail, pixels
THUMB_MARGIN = 0.25  # the box grown by this share of its size on every side


@dataclass
class Person:
    """One tracked face, summarised over the frames it was seen in.

    track_id: the id in the face records. first_seen, last_seen: seconds into the video.
    frames: frames in which the face was detected. age, age_low, age_high: the track's
    smoothed age and 80% interval at its last estimated frame (None if the face was never
    large enough to estimate). gender: "F", "M" or None; p_female: its probability.
    best_frame, best_box, best_quality: where the track's best face (frontal, large, sharp)
    is. thumbnail: that face as a BGR uint8 image, once cut out (None until then).
    """

    track_id: int
    first_seen: float
    last_seen: float
    frames: int
    age: float | None
    age_low: float | None
    age_high: float | None
    gender: str | None
    p_female: float | None
    best_frame: int
    best_box: list[float]
    best_quality: float
    thumbnail: np.ndarray | None = field(default=None, repr=False)

    @property
    def duration(self) -> float:
        """Seconds between first and last sighting."""
        return self.last_seen - self.first_seen


@dataclass
class Summary:
    """Everything `agevision report` shows about one video.

    video: the input path as recorded. fps, frame_count: of the processed part. people:
    tracks kept, by first sighting. short_tracks: tracks left out as too short (likely false
    detections). on_screen: (frame_count,) number of kept people seen in each frame.
    interrupted: the run stopped before the end of the video (or the file is cut).
    """

    video: str
    fps: float
    frame_count: int
    people: list[Person]
    short_tracks: int
    min_seconds: float
    on_screen: np.ndarray
    interrupted: bool

    @property
    def duration(self) -> float:
        return self.frame_count / self.fps if self.fps else 0.0

    def table(self) -> dict[str, list]:
        """The people as a DataFrame-ready dict of equal-length columns (no thumbnails)."""
        rows = [{k: v for k, v in asdict(p).items() if k != "thumbnail"} for p in self.people]
        keys = [k for k in Person.__dataclass_fields__ if k != "thumbnail"]
        return {k: [r[k] for r in rows] for k in keys}


def read_records(path: Path) -> list[dict]:
    """Read a JSONL file of records written by `agevision video --json`.

    Returns the records in file order. Raises AgevisionError if the file is missing, empty
    or has a broken line before the last; a broken last line (a cut file) is dropped with a
    warning.
    """
    path = Path(path)
    if not path.is_file():
        raise AgevisionError(f"no such records file: {path}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise AgevisionError(f"cannot read {path}: {err}") from None
    lines = [(n, line) for n, line in enumerate(lines, 1) if line.strip()]
    if not lines:
        raise AgevisionError(f"{path} is empty: no records")
    records = []
    for k, (n, line) in enumerate(lines):
        try:
            rec = json.loads(line)
            if not isinstance(rec, dict):
                raise ValueError("not an object")
        except ValueError:
            if k == len(lines) - 1 and records:
                warnings.warn(f"{path}: last line ({n}) is cut short (truncated file?); ignored", stacklevel=2)
                break
            raise AgevisionError(f"{path} line {n} is not a JSON record: is this a records file from "
                                 "`agevision video --json`?") from None
        records.append(rec)
    return records


def _split_records(records: list[dict]) -> tuple[dict, list[dict], dict | None]:
    """(header, face records, end record) with checks; AgevisionError on mixed or foreign records."""
    headers = [r for r in records if r.get("type") == "video"]
    faces = [r for r in records if r.get("type", "face") == "face"]
    ends = [r for r in records if r.get("type") == "end"]
    videos = sorted({str(h.get("video")) for h in headers})
    if len(videos) > 1:
        raise AgevisionError(f"records from {len(videos)} different videos are mixed ({', '.join(videos[:3])}); "
                             "summarise one video at a time")
    if len(headers) > 1:
        raise AgevisionError(f"records of {len(headers)} runs over {videos[0]} are mixed; keep one run per file")
    if not headers:
        raise AgevisionError("no video header record: these records were not written by `agevision video --json`")
    needed = {"frame", "time", "track_id", "box"}
    for r in faces:
        if not needed <= set(r):
            raise AgevisionError(f"a face record lacks {', '.join(sorted(needed - set(r)))}: not agevision records")
    frames = [r["frame"] for r in faces]
    if any(b < a for a, b in zip(frames, frames[1:], strict=False)):
        raise AgevisionError("face records go back in time: records of several runs are mixed")
    return headers[0], faces, (ends[-1] if ends else None)


def summarize(records: Iterable[dict], min_seconds: float = 0.5) -> Summary:
    """People in one video from its records (as from `read_records`).

    min_seconds: tracks seen for less time than this are left out as likely false
    detections (counted in Summary.short_tracks). Raises AgevisionError on records of
    several videos, or records not written by `agevision video --json`.
    """
    header, faces, end = _split_records(list(records))
    fps = float(header.get("fps") or 0) or 25.0
    if end is not None:
        frame_count, interrupted = int(end.get("frames", 0)), bool(end.get("interrupted", False))
    else:
        frame_count, interrupted = (faces[-1]["frame"] + 1 if faces else 0), True
    tracks: dict[int, list[dict]] = {}
    for r in faces:
        tracks.setdefault(int(r["track_id"]), []).append(r)
    people, short = [], 0
    for tid, recs in tracks.items():
        first, last = recs[0]["time"], recs[-1]["time"]
        if (last - first) + 1 / fps < min_seconds:
            short += 1
            continue
        # frames between detections ("detected": false) repeat the last estimate on a predicted box
        seen = [r for r in recs if r.get("detected", True)] or recs
        estimated = [r for r in seen if r.get("age") is not None]
        final = estimated[-1] if (estimated and header.get("smoothed", True)) else _weighted_mean(estimated)
        best = max(seen, key=lambda r: best_face_key(r.get("quality"), r["box"]))
        people.append(Person(
            track_id=tid, first_seen=first, last_seen=last, frames=len(recs),
            age=final.get("age"), age_low=final.get("age_low"), age_high=final.get("age_high"),
            gender=_gender(final.get("p_female")), p_female=final.get("p_female"),
            best_frame=int(best["frame"]), best_box=list(best["box"]), best_quality=float(best.get("quality") or 0.0),
        ))
    people.sort(key=lambda p: (p.first_seen, p.track_id))
    kept = {p.track_id for p in people}
    on_screen = np.zeros(max(frame_count, 0), np.int32)
    for r in faces:
        if int(r["track_id"]) in kept and r["frame"] < len(on_screen):
            on_screen[r["frame"]] += 1
    return Summary(video=str(header.get("video")), fps=fps, frame_count=frame_count, people=people,
                   short_tracks=short, min_seconds=min_seconds, on_screen=on_screen, interrupted=interrupted)


def _gender(p_female: float | None) -> str | None:
    """The summary's gender from the track's final P(female). The label shown on the video
    may differ near 0.5: the smoother holds it steady there (hysteresis)."""
    return None if p_female is None else ("F" if p_female >= 0.5 else "M")


def _weighted_mean(recs: list[dict]) -> dict:
    """Age, interval ends and P(female) averaged over raw (unsmoothed) records, weighted by
    face quality; {} when there are none."""
    if not recs:
        return {}
    w = np.array([max(r.get("quality") or 0.0, 0.05) for r in recs])
    out = {k: round(float(np.average([r[k] for r in recs], weights=w)), 3)
           for k in ("age", "age_low", "age_high", "p_female")}
    return out


def best_face_key(quality: float | None, box) -> tuple[float, float]:
    """Sort key of a track's faces, best last: quality (3 decimals, as in the records), then box area."""
    q = 0.0 if quality is None or math.isnan(quality) else float(quality)
    return round(q, 3), max(box[2] - box[0], 0) * max(box[3] - box[1], 0)


def cut_thumbnail(frame_bgr: np.ndarray, box: Iterable[float]) -> np.ndarray:
    """The face in `box` (x0, y0, x1, y1 pixels) with a margin, at most THUMB_SIZE pixels a side.

    The part of the grown box outside the frame is left out. Returns a BGR uint8 image.
    """
    import cv2

    x0, y0, x1, y1 = (float(v) for v in box)
    mx, my = (x1 - x0) * THUMB_MARGIN, (y1 - y0) * THUMB_MARGIN
    h, w = frame_bgr.shape[:2]
    xa, ya = int(max(math.floor(x0 - mx), 0)), int(max(math.floor(y0 - my), 0))
    xb, yb = int(min(math.ceil(x1 + mx), w)), int(min(math.ceil(y1 + my), h))
    crop = frame_bgr[ya:max(yb, ya + 1), xa:max(xb, xa + 1)]
    scale = THUMB_SIZE / max(crop.shape[:2])
    if scale < 1:
        crop = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(crop)


class ThumbnailKeeper:
    """Keeps, during a run, each track's best face so far (highest quality) as a thumbnail.

    update(frame, faces) after each frame; thumbnails maps track id -> (frame index, image).
    """

    def __init__(self) -> None:
        self.thumbnails: dict[int, tuple[int, np.ndarray]] = {}
        self._best: dict[int, tuple[float, float]] = {}

    def update(self, frame_index: int, frame_bgr: np.ndarray, faces) -> None:
        """Consider the faces (a Faces record with track ids and quality) of one BGR frame."""
        for i, tid in enumerate(faces.track_ids):
            key = best_face_key(float(faces.quality[i]), faces.boxes[i])
            if int(tid) not in self._best or key > self._best[int(tid)]:
                self._best[int(tid)] = key
                self.thumbnails[int(tid)] = (frame_index, cut_thumbnail(frame_bgr, faces.boxes[i]))

    def attach(self, summary: Summary) -> None:
        """Set each person's thumbnail from the kept ones."""
        for p in summary.people:
            if p.track_id in self.thumbnails:
                p.thumbnail = self.thumbnails[p.track_id][1]


def attach_thumbnails_from_video(summary: Summary, video: Path | None = None) -> bool:
    """Cut each person's best face out of the video (default: the one named in the records).

    Decodes the video up to the last frame needed. Returns False, with a warning, when the
    video cannot be opened (the people then have no thumbnails).
    """
    from agevision.sources import VideoSource

    path = Path(video or summary.video)
    wanted: dict[int, list[Person]] = {}
    for p in summary.people:
        wanted.setdefault(p.best_frame, []).append(p)
    if not wanted:
        return True
    try:
        src = VideoSource(path)
    except AgevisionError as err:
        warnings.warn(f"no thumbnails: {err}", stacklevel=2)
        return False
    with src:
        last = max(wanted)
        for n, frame in enumerate(src):
            for p in wanted.get(n, ()):
                p.thumbnail = cut_thumbnail(frame, p.best_box)
            if n >= last:
                break
    return True


CSV_COLUMNS = ("person", "track_id", "first_seen_s", "last_seen_s", "duration_s", "frames", "age", "age_low",
               "age_high", "gender", "p_female", "thumbnail")


def people_rows(summary: Summary, thumbnails: dict[int, str] | None = None) -> list[dict]:
    """One CSV-ready dict per person (CSV_COLUMNS), numbers rounded; `thumbnails` maps track id -> file."""
    def r(v, nd=1):
        return "" if v is None else round(float(v), nd)

    return [{
        "person": k + 1, "track_id": p.track_id, "first_seen_s": r(p.first_seen, 2), "last_seen_s": r(p.last_seen, 2),
        "duration_s": r(p.duration, 2), "frames": p.frames, "age": r(p.age), "age_low": r(p.age_low),
        "age_high": r(p.age_high), "gender": p.gender or "", "p_female": r(p.p_female, 3),
        "thumbnail": (thumbnails or {}).get(p.track_id, ""),
    } for k, p in enumerate(summary.people)]


def write_people_csv(summary: Summary, target: Path) -> Path | None:
    """Write the people table to `target` (CSV) and their thumbnails as JPEGs into a folder
    beside it (`<name>_thumbs/`), named in the CSV's thumbnail column.

    Returns the thumbnail folder (None when no person has a thumbnail). Raises
    AgevisionError if the target cannot be written.
    """
    import cv2

    from agevision.sinks import check_writable

    target = Path(target)
    tmp = check_writable(target)
    thumbs_dir = target.with_name(f"{target.stem}_thumbs")
    names: dict[int, str] = {}
    with_thumbs = [p for p in summary.people if p.thumbnail is not None]
    if with_thumbs:
        thumbs_dir.mkdir(exist_ok=True)
        for p in with_thumbs:
            name = f"track_{p.track_id}.jpg"
            if not cv2.imwrite(str(thumbs_dir / name), p.thumbnail):
                raise AgevisionError(f"cannot write thumbnail {thumbs_dir / name}")
            names[p.track_id] = f"{thumbs_dir.name}/{name}"
    try:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
            writer.writeheader()
            writer.writerows(people_rows(summary, names))
        tmp.replace(target)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise AgevisionError(f"cannot write {target}: {err.strerror}") from None
    return thumbs_dir if with_thumbs else None
