"""Who was in the video: per-person summaries built from face records (see `records`).

`summarize` (or, record by record, `PeopleTally`) turns the records of one run into one
`Person` per person: the tracks that share a `person` id in the records (the identity
grouping of `agevision.identity`; a track without one is a person of its own), pooled,
and kept if seen long enough, with enough readable frames, to be a real face;
`write_people_csv` writes them with their thumbnails.
"""

from __future__ import annotations

import csv
import math
import warnings
from array import array
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from agevision.defaults import MIN_TRACK
from agevision.errors import AgevisionError
from agevision.records import check_face, iter_numbered

THUMB_SIZE = 112  # longest side of a thumbnail, pixels
THUMB_MARGIN = 0.25  # the box grown by this share of its size on every side
MIN_READINGS = 3  # a track is a person only with at least this many readable detected frames


@dataclass
class Person:
    """One person, summarised over the frames of all their tracks.

    person_id: the `person` of the face records (None when the records have none: then
    the person is one track). track_id: their first track; track_ids: all of them.
    first_seen, last_seen: seconds into the video. frames: frames in which the face was
    seen. readings: detected frames in which the face could be read (see
    `quality.readable`). age, age_low, age_high: the smoothed age and 80% interval at the
    track's last estimated frame for a one-track person, else the quality-weighted mean of
    all their tracks' readings (None if the face was never read). gender: "F", "M" or "?"
    (P(female) too near 0.5, or never read); p_female: its probability.
    best_frame, best_box, best_quality, best_track: where the person's best face (readable,
    frontal, large, sharp) is. thumbnail: that face as a BGR uint8 image, once cut out.
    """

    person_id: int | None
    track_id: int
    track_ids: list[int]
    first_seen: float
    last_seen: float
    frames: int
    readings: int
    age: float | None
    age_low: float | None
    age_high: float | None
    gender: str | None
    p_female: float | None
    best_frame: int
    best_box: list[float]
    best_quality: float
    best_track: int
    thumbnail: np.ndarray | None = field(default=None, repr=False)

    @property
    def duration(self) -> float:
        """Seconds between first and last sighting."""
        return self.last_seen - self.first_seen


@dataclass
class Summary:
    """Everything `agevision report` shows about one video.

    video: the input path as recorded. fps, frame_count: of the processed part. people:
    people kept, by first sighting. short_tracks: tracks without a person id seen for less
    than min_seconds, left out as likely false detections (a person id means the identity
    model found the face too, see `identity`). unreadable: people seen long enough but
    with fewer than MIN_READINGS readable frames (faces too dark, small, blurred or turned
    away to tell), counted apart and not listed. on_screen: (frame_count,) number of kept people seen in each frame.
    interrupted: the run stopped before the end of the video (or the file is cut).
    """

    video: str
    fps: float
    frame_count: int
    people: list[Person]
    short_tracks: int
    unreadable: int
    min_seconds: float
    on_screen: np.ndarray
    interrupted: bool
    header: dict = field(default_factory=dict)  # the records' video header

    @property
    def duration(self) -> float:
        return self.frame_count / self.fps if self.fps else 0.0

    def table(self) -> dict[str, list]:
        """The people as a DataFrame-ready dict of equal-length columns (no thumbnails)."""
        rows = [{k: v for k, v in asdict(p).items() if k != "thumbnail"} for p in self.people]
        keys = [k for k in Person.__dataclass_fields__ if k != "thumbnail"]
        return {k: [r[k] for r in rows] for k in keys}


@dataclass
class _Sightings:
    """One track's records, tallied: (first time, last time, frames, the latest estimate, the
    best face and quality-weighted sums of the estimates) over the detected records and over
    all of them; the frames it was seen in."""

    first: float
    last: float = 0.0
    frames: array = field(default_factory=lambda: array("i"))
    latest: dict[bool, dict] = field(default_factory=dict)  # detected-only? -> last record with an age
    best: dict[bool, tuple] = field(default_factory=dict)  # detected-only? -> (key, frame, box, quality)
    sums: dict[bool, np.ndarray] = field(default_factory=dict)  # detected-only? -> w, w*age, low, high, p_female
    readings: int = 0  # detected records with an estimate of their own (raw_age)

    def add(self, r: dict) -> None:
        self.last = r["time"]
        self.frames.append(int(r["frame"]))
        # a reading: the frame's own estimate (a track's first is read but not shown, see smooth)
        if r.get("detected", True) and r.get("raw_age", r.get("age")) is not None:
            self.readings += 1
        for only_detected in (False, True):
            if only_detected and not r.get("detected", True):
                continue
            key = best_face_key(r.get("quality"), r["box"], r.get("readable", True))
            if only_detected not in self.best or key > self.best[only_detected][0]:
                self.best[only_detected] = (key, int(r["frame"]), list(r["box"]), float(r.get("quality") or 0.0))
            if r.get("age") is not None:
                self.latest[only_detected] = {k: r.get(k) for k in ("age", "age_low", "age_high", "p_female")}
                w = max(r.get("quality") or 0.0, 0.05)
                row = w * np.array([1.0, r["age"], r["age_low"], r["age_high"], r["p_female"]])
                self.sums[only_detected] = self.sums.get(only_detected, 0) + row



def _person(person_id: int | None, tracks: dict[int, _Sightings], smoothed: bool) -> Person:
    """The tracks of one person as a Person: estimates and best face from detected records
    (all records if none was detected); the final smoothed estimate of a one-track person,
    else the quality-weighted mean of the readings of all tracks."""
    seen = any(True in t.best for t in tracks.values())
    if smoothed and len(tracks) == 1:
        final = next(iter(tracks.values())).latest.get(seen, {})
    else:
        sums = [t.sums[seen] for t in tracks.values() if seen in t.sums]
        if sums:
            w, *rest = np.sum(sums, axis=0)
            final = {k: round(float(v / w), 3) for k, v in zip(("age", "age_low", "age_high", "p_female"), rest,
                                                                strict=True)}
        else:
            final = {}
    with_best = [(t.best[seen], tid) for tid, t in tracks.items() if seen in t.best]
    (_, frame, box, quality), best_track = max(with_best, key=lambda b: b[0][0])
    ids = sorted(tracks, key=lambda tid: (tracks[tid].first, tid))
    return Person(person_id=person_id, track_id=ids[0], track_ids=ids,
                  first_seen=min(t.first for t in tracks.values()), last_seen=max(t.last for t in tracks.values()),
                  frames=sum(len(t.frames) for t in tracks.values()), readings=sum(t.readings for t in tracks.values()),
                  age=final.get("age"), age_low=final.get("age_low"), age_high=final.get("age_high"),
                  gender=_gender(final.get("p_female")), p_female=final.get("p_female"),
                  best_frame=frame, best_box=box, best_quality=quality, best_track=best_track)


class PeopleTally:
    """The people of one video, gathered one record at a time as `agevision video` writes
    them or a records file is read: memory grows with the number of tracks (plus 4 bytes a
    face per frame), not with the records.

    add(record) for each record in file order; summary(min_seconds) at the end.
    Raises AgevisionError on records of several videos or runs, or not written by
    `agevision video --json`.
    """

    def __init__(self) -> None:
        self.header: dict | None = None
        self.end: dict | None = None
        self._tracks: dict[int, _Sightings] = {}
        self._persons: dict[int, int] = {}  # track id -> person id, from the records
        self._last_frame: int | None = None  # frame of the last face record

    def add(self, r: dict, line: int | None = None) -> None:
        """Tally one record (a header, face or end record); `line`: where it is in its file,
        for errors. Raises AgevisionError on a record that is not valid (`records.check_face`)."""
        kind = r.get("type", "face")
        if kind == "video":
            if self.header is not None:
                a, b = str(self.header.get("video")), str(r.get("video"))
                if a != b:
                    raise AgevisionError(f"records from 2 different videos are mixed ({a}, {b}); "
                                         "summarise one video at a time")
                raise AgevisionError(f"records of 2 runs over {a} are mixed; keep one run per file")
            self.header = r
        elif kind == "end":
            self.end = r
        elif kind == "face":
            check_face(r, line)
            if self._last_frame is not None and r["frame"] < self._last_frame:
                raise AgevisionError("face records go back in time: records of several runs are mixed")
            self._last_frame = int(r["frame"])
            tid = int(r["track_id"])
            if tid not in self._tracks:
                self._tracks[tid] = _Sightings(first=r["time"])
            self._tracks[tid].add(r)
            if r.get("person") is not None:
                self._persons[tid] = int(r["person"])

    def summary(self, min_seconds: float = MIN_TRACK, persons: dict[int, int] | None = None) -> Summary:
        """The people so far (see `summarize`). persons: track id -> person id, instead of
        the records' own `person` fields. With either (or a header that says the records
        carry identities), a track without a person is counted as unreadable."""
        if self.header is None:
            raise AgevisionError("no video header record: these records were not written by `agevision video --json`")
        fps = float(self.header.get("fps") or 0) or 25.0
        if self.end is not None:
            frame_count, interrupted = int(self.end.get("frames", 0)), bool(self.end.get("interrupted", False))
        else:
            frame_count = self._last_frame + 1 if self._last_frame is not None else 0
            interrupted = True
        smoothed = bool(self.header.get("smoothed", True))
        people, short, unreadable = [], 0, 0
        on_screen = np.zeros(max(frame_count, 0), np.int32)
        groups: dict[tuple, dict[int, _Sightings]] = {}
        grouped = persons is not None or bool(self.header.get("identities"))
        persons = self._persons if persons is None else persons
        for tid, track in self._tracks.items():
            key = ("person", persons[tid]) if persons.get(tid) is not None else ("track", tid)
            groups.setdefault(key, {})[tid] = track
        for (kind, pid), tracks in groups.items():
            seconds = sum((t.last - t.first) + 1 / fps for t in tracks.values())
            if kind == "track" and seconds < min_seconds:  # a face the identity model found is no false detection
                short += 1
                continue
            # grouped by identity, a track with no person never showed a face that could be read
            if sum(t.readings for t in tracks.values()) < MIN_READINGS or (grouped and kind == "track"):
                unreadable += 1
                continue
            people.append(_person(pid if kind == "person" else None, tracks, smoothed))
            for track in tracks.values():
                frames = np.frombuffer(track.frames, np.int32)
                np.add.at(on_screen, frames[frames < len(on_screen)], 1)
        people.sort(key=lambda p: (p.first_seen, p.track_id))
        return Summary(video=str(self.header.get("video")), fps=fps, frame_count=frame_count, people=people,
                       short_tracks=short, unreadable=unreadable, min_seconds=min_seconds, on_screen=on_screen,
                       interrupted=interrupted, header=self.header)


def summarize(records: Iterable[dict], min_seconds: float = MIN_TRACK) -> Summary:
    """People in one video from its records (as from `records.read_records`).

    min_seconds: tracks without a person id seen for less time than this are left out as
    likely false detections (counted in Summary.short_tracks). Raises AgevisionError on records of
    several videos, or records not written by `agevision video --json`.
    """
    tally = PeopleTally()
    for r in records:
        tally.add(r)
    return tally.summary(min_seconds)


def summarize_file(path: Path, min_seconds: float = MIN_TRACK) -> Summary:
    """`summarize` of a records file, errors naming the line they are on."""
    tally = PeopleTally()
    for line, r in iter_numbered(path):
        tally.add(r, line)
    return tally.summary(min_seconds)


def _gender(p_female: float | None) -> str:
    """The summary's gender from the track's final P(female) ("?" near 0.5 or never read).
    The label shown on the video may differ at the edge of the "?" band, where the smoother
    holds it steady (`labels.held_label`)."""
    from agevision.labels import gender_label

    return gender_label(p_female)


def best_face_key(quality: float | None, box, readable: bool = True) -> tuple[bool, float, float]:
    """Sort key of a track's faces, best last: readable (a face, not an ear, the back of a
    head or a blur: `quality.readable`), then quality (3 decimals, as in the records), then
    box area."""
    q = 0.0 if quality is None or math.isnan(quality) else float(quality)
    return bool(readable), round(q, 3), max(box[2] - box[0], 0) * max(box[3] - box[1], 0)


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
        self._best: dict[int, tuple] = {}

    def update(self, frame_index: int, frame_bgr: np.ndarray, faces) -> None:
        """Consider the faces (a Faces record with track ids and quality) of one BGR frame."""
        for i, tid in enumerate(faces.track_ids):
            key = best_face_key(float(faces.quality[i]), faces.boxes[i], bool(faces.readable[i]))
            if int(tid) not in self._best or key > self._best[int(tid)]:
                self._best[int(tid)] = key
                self.thumbnails[int(tid)] = (frame_index, cut_thumbnail(frame_bgr, faces.boxes[i]))

    def attach(self, summary: Summary) -> None:
        """Set each person's thumbnail from the kept ones (their best track's)."""
        for p in summary.people:
            if p.best_track in self.thumbnails:
                p.thumbnail = self.thumbnails[p.best_track][1]


def attach_thumbnails_from_video(summary: Summary, video: Path | None = None, records: Path | None = None) -> bool:
    """Cut each person's best face out of the video: `video` if given, else the one named in
    the records, a relative name taken from the folder of the `records` file (not the
    working folder), and used only if its picture size and frame count are those the
    records' header gives (any other readable video is not embedded).

    Decodes the video up to the last frame needed. Returns False, with a warning, when the
    video cannot be opened or is not the records' video (the people then have no thumbnails).
    """
    from agevision.sources import VideoSource

    if video is not None:
        path = Path(video)
    else:
        path = Path(summary.video)
        if not path.is_absolute() and records is not None:
            path = Path(records).resolve().parent / path
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
    h = summary.header
    if video is None and h and ((src.width, src.height) != (h.get("width"), h.get("height"))
                                or abs(src.frame_count - int(h.get("frame_count") or 0)) > 1):
        src.close()
        warnings.warn(f"no thumbnails: {path} is not the video these records were made from (its size or length "
                      "differs); pass --video", stacklevel=2)
        return False
    with src:
        last = max(wanted)
        for n, frame in enumerate(src):
            for p in wanted.get(n, ()):
                p.thumbnail = cut_thumbnail(frame, p.best_box)
            if n >= last:
                break
    return True


CSV_COLUMNS = ("person", "track_id", "tracks", "first_seen_s", "last_seen_s", "duration_s", "frames", "readings", "age",
               "age_low", "age_high", "gender", "p_female", "thumbnail")


def people_rows(summary: Summary, thumbnails: dict[int, str] | None = None) -> list[dict]:
    """One CSV-ready dict per person (CSV_COLUMNS), numbers rounded; `thumbnails` maps a
    person's first track id -> file. person: the records' person id (else 1, 2, ...);
    tracks: all their track ids, space-separated."""
    def r(v, nd=1):
        return "" if v is None else round(float(v), nd)

    return [{
        "person": p.person_id if p.person_id is not None else k + 1, "track_id": p.track_id,
        "tracks": " ".join(str(t) for t in p.track_ids), "first_seen_s": r(p.first_seen, 2),
        "last_seen_s": r(p.last_seen, 2),
        "duration_s": r(p.duration, 2), "frames": p.frames, "readings": p.readings, "age": r(p.age),
        "age_low": r(p.age_low), "age_high": r(p.age_high), "gender": p.gender or "", "p_female": r(p.p_female, 3),
        "thumbnail": (thumbnails or {}).get(p.track_id, ""),
    } for k, p in enumerate(summary.people)]


def write_people_csv(summary: Summary, target: Path) -> Path | None:
    """Write the people table to `target` (CSV) and their thumbnails as JPEGs into a folder
    beside it (`<name>_thumbs/`), named in the CSV's thumbnail column.

    Returns the thumbnail folder (None when no person has a thumbnail). Raises
    AgevisionError if the target or the thumbnail folder cannot be written (a file where
    the folder goes, a read-only folder, a full disk); the CSV is then not written.
    """
    import io

    import cv2

    from agevision.files import check_writable, write_atomic

    target = check_writable(Path(target))
    thumbs_dir = target.with_name(f"{target.stem}_thumbs")
    names: dict[int, str] = {}
    with_thumbs = [p for p in summary.people if p.thumbnail is not None]
    made_dir, written = False, []
    try:
        if with_thumbs:
            if thumbs_dir.exists() and not thumbs_dir.is_dir():
                raise AgevisionError(f"cannot write thumbnails: {thumbs_dir} is a file, not a folder")
            try:
                made_dir = not thumbs_dir.exists()
                thumbs_dir.mkdir(exist_ok=True)
            except OSError as err:
                raise AgevisionError(f"cannot make the thumbnail folder {thumbs_dir}: {err.strerror}") from None
            for p in with_thumbs:
                name = f"person_{p.person_id}.jpg" if p.person_id is not None else f"track_{p.track_id}.jpg"
                ok, buf = cv2.imencode(".jpg", p.thumbnail)
                if not ok:
                    raise AgevisionError(f"cannot encode thumbnail {thumbs_dir / name}")
                written.append(write_atomic(thumbs_dir / name, buf.tobytes()))
                names[p.track_id] = f"{thumbs_dir.name}/{name}"
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(people_rows(summary, names))
        write_atomic(target, text.getvalue())
    except BaseException:  # nothing half-made is left: the thumbnails go with the CSV that names them
        for f in written:
            f.unlink(missing_ok=True)
        if made_dir and thumbs_dir.is_dir() and not any(thumbs_dir.iterdir()):
            thumbs_dir.rmdir()
        raise
    return thumbs_dir if with_thumbs else None
