"""Outputs: the annotated video (H.264 MP4, with the input's audio) and JSONL face records.

Each writer writes to a temporary file beside its target and renames it into place on
close(), so a target path never holds a half-written file. close() after an interruption
(Ctrl-C) still finishes the file properly: what was written stays playable. discard()
removes the temporary file instead.
"""

from __future__ import annotations

import json
import math
import os
import queue
import threading
from fractions import Fraction
from pathlib import Path

import numpy as np

from agevision.errors import AgevisionError
from agevision.faces import Faces


def _temp_path(target: Path) -> Path:
    return target.with_name(f".{target.stem}.partial{target.suffix}")


def check_writable(target: Path) -> Path:
    """The temporary path to write `target` through; AgevisionError if `target` cannot be written."""
    target = Path(target)
    if target.is_dir():
        raise AgevisionError(f"cannot write {target}: it is a folder")
    if not target.parent.is_dir():
        raise AgevisionError(f"cannot write {target}: folder {target.parent} does not exist")
    if not os.access(target.parent, os.W_OK):
        raise AgevisionError(f"cannot write {target}: folder {target.parent} is not writable")
    return _temp_path(target)


class VideoWriter:
    """H.264 (yuv420p) MP4 writer fed BGR frames; encodes on a background thread.

    target: output .mp4 path. width, height, fps: of the input. audio_from: a video file
    whose first audio track is copied (not re-encoded) into the output, or None.
    Raises AgevisionError if the target cannot be written.
    """

    def __init__(self, target: Path, width: int, height: int, fps: Fraction, audio_from: Path | None = None,
                 crf: int = 20, preset: str = "veryfast", queue_size: int = 8) -> None:
        import av

        self.target = Path(target)
        self._tmp = check_writable(self.target)
        try:
            self._out = av.open(str(self._tmp), "w", format="mp4")
        except (av.error.FFmpegError, OSError) as err:
            raise AgevisionError(f"cannot write {self.target}: {err}") from None
        self.fps = Fraction(fps).limit_denominator(100000)
        self._video = self._out.add_stream("libx264", rate=self.fps)
        self._video.width, self._video.height = width + width % 2, height + height % 2
        self._video.pix_fmt = "yuv420p"
        self._video.codec_context.time_base = 1 / self.fps
        self._video.options = {"crf": str(crf), "preset": preset}
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
            raise AgevisionError(f"writing {self.target} failed: {self._error}")
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
            self._out.close()
            if self._audio_in is not None:
                self._audio_in.close()
        if self._error is not None:
            self._tmp.unlink(missing_ok=True)
            raise AgevisionError(f"writing {self.target} failed: {self._error}")
        if self.frames_written == 0:
            self._tmp.unlink(missing_ok=True)
            return
        self._tmp.replace(self.target)

    def discard(self) -> None:
        """Stop and delete the partial output."""
        self._queue.put(None)
        self._thread.join()
        try:
            self._out.close()
        except Exception:  # noqa: BLE001 - the file is being thrown away anyway
            pass
        if self._audio_in is not None:
            self._audio_in.close()
        self._tmp.unlink(missing_ok=True)


def face_records(faces: Faces, frame_index: int, time_s: float, raw: Faces | None = None,
                 source: str | None = None, detected: bool = True) -> list[dict]:
    """One JSON-ready dict per face ("type": "face"): frame, time, track id, box, detection
    score, face quality, smoothed and raw age, 80% interval, P(female), the gender shown ("F",
    "M" or "?"), whether the face could be read (unreadable faces have no age), and whether
    the face was detected in this frame (False: a frame between detections, where the
    box is the tracker's prediction and the estimates are carried over)."""
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
            "box": [round(float(v), 1) for v in faces.boxes[i]],
            "score": round(float(faces.scores[i]), 3),
            "quality": None if np.isnan(faces.quality[i]) else round(float(faces.quality[i]), 3),
            "age": num(faces.age[i], 1),
            "age_low": num(faces.age_low[i], 1),
            "age_high": num(faces.age_high[i], 1),
            "p_female": num(faces.p_female[i], 3),
            "gender": str(faces.gender[i]) if known else "?",
            "readable": bool(faces.readable[i]),
            "raw_age": num(raw.age[i], 1) if raw is not None else None,
            "raw_p_female": num(raw.p_female[i], 3) if raw is not None else None,
            "detected": detected,
        }
        if source is not None:
            rec["source"] = source
        records.append(rec)
    return records


def video_header(path: Path, width: int, height: int, fps: float, frame_count: int, smoothed: bool = True,
                 detect_every: int = 1) -> dict:
    """The first record of a video's JSONL ("type": "video"): which video, its size, rate and
    length, whether the face records' age and gender are smoothed per track, and on every
    how many frames faces were detected."""
    from agevision import __version__

    return {"type": "video", "video": str(path), "width": width, "height": height, "fps": round(float(fps), 4),
            "frame_count": frame_count, "smoothed": smoothed, "detect_every": detect_every,
            "agevision": __version__}


class JsonlWriter:
    """Writes one JSON object per line to `target` (via a temporary file; see module doc).

    header: a record written first (see `video_header`), or None.
    """

    def __init__(self, target: Path, header: dict | None = None) -> None:
        self.target = Path(target)
        self._tmp = check_writable(self.target)
        try:
            self._file = open(self._tmp, "w")
        except OSError as err:
            raise AgevisionError(f"cannot write {self.target}: {err.strerror}") from None
        self.count = 0
        if header is not None:
            self._file.write(json.dumps(header) + "\n")

    def write(self, records: list[dict]) -> None:
        """Append records (dicts) as JSON lines."""
        for rec in records:
            self._file.write(json.dumps(rec) + "\n")
        self.count += len(records)

    def close(self, end: dict | None = None) -> None:
        """Write `end` as the last record (if given), then move the file into place."""
        if end is not None:
            self._file.write(json.dumps(end) + "\n")
        self._file.close()
        self._tmp.replace(self.target)

    def discard(self) -> None:
        self._file.close()
        self._tmp.unlink(missing_ok=True)
