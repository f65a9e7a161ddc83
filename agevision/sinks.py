"""Sinks: where the results of a run go. Each is a context manager with one verb,
`write(frame, result)`, called by `pipeline.run_video` for every frame, and `finish(end)`
once the run is over; leaving the `with` block without finish() (an error) discards what
it wrote.

- `VideoSink`: the annotated video (H.264 MP4, fragmented, with the input's audio).
- `JsonlSink`: the JSONL records (`records`).
- `PeopleSink`: the people summary CSV and its thumbnails (`people`).
- `WindowSink`: an OpenCV window showing the annotated frames; q or Esc stops the run.

Files are written through `files.AtomicFile`: a target never holds a half-written file,
and finish() after an interruption (Ctrl-C, SIGTERM) still completes it, so what was
written stays playable. The MP4 is fragmented, so even the temporary file of a killed run
plays up to its last fragment (about 2 s).
"""

from __future__ import annotations

import json
import math
import queue
import threading
from fractions import Fraction
from pathlib import Path

import numpy as np

from agevision.errors import AgevisionError
from agevision.files import AtomicFile


class VideoWriter:
    """H.264 (yuv420p) MP4 writer fed BGR frames; encodes on a background thread.

    target: output .mp4 path. width, height, fps: of the input. audio_from: a video file
    whose first audio track is copied (not re-encoded) into the output, or None.
    Raises AgevisionError if the target cannot be written.
    """

    def __init__(self, target: Path, width: int, height: int, fps: Fraction, audio_from: Path | None = None,
                 crf: int = 20, preset: str = "veryfast", queue_size: int = 8) -> None:
        import av

        self._file = AtomicFile(target)
        self.target = self._file.target
        self.fps = Fraction(fps).limit_denominator(100000)
        try:  # fragmented: playable up to the last fragment even if the process is killed
            # through a Python file: a failed write (a full disk) raises, where FFmpeg's own I/O goes on quietly
            self._fh = open(self._file.path, "wb")
            self._out = av.open(self._fh, "w", format="mp4",
                                options={"movflags": "frag_keyframe+empty_moov+default_base_moof"})
        except (av.error.FFmpegError, OSError) as err:
            self._file.discard()
            raise AgevisionError(f"cannot write {self.target}: {_reason(err)}") from None
        self._video = self._out.add_stream("libx264", rate=self.fps)
        self._video.width, self._video.height = width + width % 2, height + height % 2
        self._video.pix_fmt = "yuv420p"
        self._video.codec_context.time_base = 1 / self.fps
        keyframes = max(int(round(2 * float(self.fps))), 1)  # a fragment every 2 s
        self._video.options = {"crf": str(crf), "preset": preset, "g": str(keyframes)}
        self._audio_in = self._audio_out = None
        self._audio_packets = None
        self._pending_audio = None
        if audio_from is not None:
            src = av.open(str(audio_from))
            if src.streams.audio:
                self._audio_in = src
                self._audio_out = self._out.add_stream_from_template(src.streams.audio[0])
                self._audio_packets = src.demux(src.streams.audio[0])
            else:
                src.close()
        self.frames_written = 0
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="encode", daemon=True)
        self._thread.start()

    def write(self, frame_bgr: np.ndarray) -> None:
        """Queue one BGR uint8 frame (H, W, 3) for encoding. Raises AgevisionError if encoding failed."""
        if self._error is not None:
            raise AgevisionError(f"writing {self.target} failed: {_reason(self._error)}")
        self._queue.put(frame_bgr)

    def _run(self) -> None:
        import av

        try:
            while (frame := self._queue.get()) is not None:
                h, w = frame.shape[:2]
                if (w, h) != (self._video.width, self._video.height):
                    frame = np.pad(frame, ((0, self._video.height - h), (0, self._video.width - w), (0, 0)),
                                   mode="edge")
                vf = av.VideoFrame.from_ndarray(frame, format="bgr24")
                vf.pts = self.frames_written
                self._mux_audio_until((self.frames_written + 1) / self.fps)
                for packet in self._video.encode(vf):
                    self._out.mux(packet)
                self.frames_written += 1
        except BaseException as err:  # reported by write() / close()
            self._error = err
            while self._queue.get() is not None:
                pass

    def _mux_audio_until(self, seconds: float) -> None:
        if self._audio_packets is None:
            return
        while True:
            packet = self._pending_audio or next(self._audio_packets, None)
            self._pending_audio = None
            if packet is None:
                self._audio_packets = None
                return
            if packet.dts is None:
                continue
            if packet.pts is not None and float(packet.pts * packet.time_base) > seconds:
                self._pending_audio = packet
                return
            packet.stream = self._audio_out
            self._out.mux(packet)

    def close(self, complete: bool = True) -> None:
        """Finish the file and move it to the target.

        complete: True when the whole input was written (all audio is copied); False after
        an interruption (audio is cut where the video ends). Raises AgevisionError if
        encoding failed (the partial file is then removed).
        """
        self._queue.put(None)
        self._thread.join()
        try:
            if self._error is None:
                for packet in self._video.encode():
                    self._out.mux(packet)
                self._mux_audio_until(math.inf if complete else self.frames_written / self.fps)
        except Exception as err:  # noqa: BLE001 - reported below as one line
            self._error = err
        finally:
            try:
                self._out.close()
                self._fh.close()
            except Exception as err:  # noqa: BLE001 - the last fragment could not be written
                self._error = self._error or err
            if self._audio_in is not None:
                self._audio_in.close()
        if self._error is not None:
            self._file.discard()
            raise AgevisionError(f"writing {self.target} failed: {_reason(self._error)}")
        if self.frames_written == 0:
            self._file.discard()
            return
        self._file.commit()

    def discard(self) -> None:
        """Stop and delete the partial output."""
        self._queue.put(None)
        self._thread.join()
        for closing in (self._out.close, self._fh.close):
            try:
                closing()
            except Exception:  # noqa: BLE001 - the file is being thrown away anyway
                pass
        if self._audio_in is not None:
            self._audio_in.close()
        self._file.discard()


class JsonlWriter:
    """Writes one JSON object per line to `target` (through an `AtomicFile`).

    header: a record written first (see `records.video_header`), or None. Raises
    AgevisionError if the target cannot be written, or when a write fails (a full disk).
    """

    def __init__(self, target: Path, header: dict | None = None) -> None:
        self._out = AtomicFile(target)
        self.target = self._out.target
        try:
            self._file = open(self._out.path, "w", encoding="utf-8")
        except OSError as err:
            self._out.discard()
            raise AgevisionError(f"cannot write {self.target}: {err.strerror}") from None
        if header is not None:
            self.write([header])

    def write(self, records: list[dict]) -> None:
        """Append records (dicts) as JSON lines."""
        try:
            for rec in records:
                self._file.write(json.dumps(rec) + "\n")
        except OSError as err:
            self.discard()
            raise AgevisionError(f"cannot write {self.target}: {err.strerror}") from None

    def close(self, end: dict | None = None, persons: dict[int, int] | None = None) -> None:
        """Write `end` as the last record (if given), then move the file into place.

        persons: track id -> person id, known only now: each face record's `person` is
        set from it (the file is rewritten once, through a second temporary file)."""
        if end is not None:
            self.write([end])
        try:
            self._file.close()
            if persons is not None:
                self._set_persons(persons)
        except OSError as err:
            self.discard()
            raise AgevisionError(f"cannot write {self.target}: {err.strerror}") from None
        self._out.commit()

    def _set_persons(self, persons: dict[int, int]) -> None:
        from agevision.records import with_persons

        done = AtomicFile(self.target)
        try:
            with open(self._out.path, encoding="utf-8") as src, open(done.path, "w", encoding="utf-8") as dst:
                for line in src:
                    dst.write(json.dumps(with_persons(json.loads(line), persons)) + "\n")
        except BaseException:
            done.discard()
            raise
        self._out.discard()
        self._out = done

    def discard(self) -> None:
        """Remove what was written."""
        try:
            self._file.close()
        except OSError:
            pass
        self._out.discard()


def _reason(err: BaseException) -> str:
    """One line for a writing error: the OS reason where there is one ("No space left on device")."""
    if getattr(err, "strerror", None):
        return err.strerror
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


class Sink:
    """A destination for a run's results (see module doc). needs_annotated: `write` wants
    `result.annotated`; needs_clean_frame: `write` wants the frame before labels are drawn."""

    needs_annotated = False
    needs_clean_frame = False
    _finished = False

    def write(self, frame_bgr: np.ndarray, result) -> bool | None:
        """Take one frame's result (a `pipeline.FrameResult`); return False to stop the run."""
        raise NotImplementedError

    def finish(self, end: dict, persons: dict[int, int] | None = None) -> None:
        """The run is over (`end`: its end record; `persons`: track id -> person id, when
        identities were kept); complete the output."""
        self._finished = True

    def discard(self) -> None:
        """Throw away what was written."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        if not self._finished:
            self.discard()


class VideoSink(Sink):
    """The annotated frames as an MP4 (see `VideoWriter`); the audio cut where an
    interrupted run's video ends."""

    needs_annotated = True

    def __init__(self, target: Path, width: int, height: int, fps: Fraction, audio_from: Path | None = None) -> None:
        self.writer = VideoWriter(target, width, height, fps, audio_from=audio_from)

    def write(self, frame_bgr: np.ndarray, result) -> None:
        self.writer.write(result.annotated)

    def finish(self, end: dict, persons: dict[int, int] | None = None) -> None:
        self._finished = True
        self.writer.close(complete=not end.get("interrupted") and not end.get("truncated"))

    def discard(self) -> None:
        self._finished = True
        self.writer.discard()


class JsonlSink(Sink):
    """The run's records: `header` first, a face record per face per frame, `end` last;
    finish() sets each face record's person."""

    def __init__(self, target: Path, header: dict) -> None:
        self.writer = JsonlWriter(target, header)

    def write(self, frame_bgr: np.ndarray, result) -> None:
        self.writer.write(result.records)

    def finish(self, end: dict, persons: dict[int, int] | None = None) -> None:
        self._finished = True
        self.writer.close(end, persons)

    def discard(self) -> None:
        self._finished = True
        self.writer.discard()


class PeopleSink(Sink):
    """The people of the run (`people.PeopleTally`: tracks grouped by the `persons` given to
    finish()), each with their best face kept as a thumbnail, written as a CSV and a
    thumbnail folder by finish(). `summary` holds the `people.Summary` after finish()."""

    needs_clean_frame = True

    def __init__(self, target: Path, header: dict, min_seconds: float) -> None:
        from agevision.files import check_writable
        from agevision.people import PeopleTally, ThumbnailKeeper

        self.target = check_writable(target)
        self.min_seconds = min_seconds
        self.tally, self.keeper = PeopleTally(), ThumbnailKeeper()
        self.tally.add(header)
        self.summary = None

    def write(self, frame_bgr: np.ndarray, result) -> None:
        for rec in result.records:
            self.tally.add(rec)
        if result.detected:
            self.keeper.update(result.index, frame_bgr, result.faces)

    def finish(self, end: dict, persons: dict[int, int] | None = None) -> None:
        from agevision.people import write_people_csv

        self._finished = True
        self.tally.add(end)
        self.summary = self.tally.summary(self.min_seconds, persons)
        self.keeper.attach(self.summary)
        write_people_csv(self.summary, self.target)


class WindowSink(Sink):
    """Shows the annotated frames in a window (see `window`); q or Esc stops the run."""

    needs_annotated = True

    def __init__(self, title: str = "agevision") -> None:
        self.show, self.read_key, self.close = window(title)

    def write(self, frame_bgr: np.ndarray, result) -> bool:
        from agevision.pipeline import QUIT_KEYS

        self.show(result.annotated)
        return (self.read_key() & 0xFF) not in QUIT_KEYS

    def finish(self, end: dict, persons: dict[int, int] | None = None) -> None:
        self._finished = True
        self.close()

    def discard(self) -> None:
        self.close()


def check_display() -> None:
    """AgevisionError unless a window can open: on Linux, OpenCV's Qt needs a reachable X
    display (DISPLAY), and without one it aborts the whole process instead of raising."""
    import os
    import socket
    import sys

    if not sys.platform.startswith("linux"):
        return
    display = os.environ.get("DISPLAY", "")
    hint = "run under a desktop session, or without the window (agevision video without --show)"
    if not display:
        raise AgevisionError(f"cannot open a window: no display (DISPLAY is not set); {hint}")
    host, _, rest = display.rpartition(":")
    number = rest.split(".")[0]
    if not number.isdigit():
        raise AgevisionError(f"cannot open a window: DISPLAY={display!r} is not a display name; {hint}")
    try:
        if host in ("", "unix"):
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(1.0)
                sock.connect(f"/tmp/.X11-unix/X{number}")
        else:
            socket.create_connection((host, 6000 + int(number)), timeout=1.0).close()
    except OSError:
        raise AgevisionError(f"cannot open a window: no X display answers at DISPLAY={display}; {hint}") from None


def window(title: str):
    """(show, read_key, close) for an OpenCV window; AgevisionError if there is no display."""
    import cv2

    check_display()
    try:
        cv2.namedWindow(title, cv2.WINDOW_NORMAL)
    except cv2.error:
        raise AgevisionError("cannot open a window (no display? set DISPLAY or run without --show)") from None

    sized = []

    def show(frame):
        if sized != [frame.shape[:2]]:  # at the frame's own size, not the toolkit's default
            cv2.resizeWindow(title, frame.shape[1], frame.shape[0])
            sized[:] = [frame.shape[:2]]
        cv2.imshow(title, frame)

    def close():
        cv2.destroyWindow(title)
        cv2.waitKey(1)

    return show, lambda: cv2.waitKey(1), close
