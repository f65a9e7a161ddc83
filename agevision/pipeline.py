"""The frame loop: source -> detect (or follow) -> track -> estimate -> smooth -> render -> sinks.

`FrameProcessor` runs the stages on one frame. `run_video` drives a file through it to an
annotated video and/or JSONL records with a progress bar; `run_live` shows a window (webcam
or a file played live) with hotkeys.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from agevision.detect import FaceDetector
from agevision.errors import AgevisionError
from agevision.faces import Faces
from agevision.model.estimator import Estimator
from agevision.motion import FaceFlow
from agevision.quality import assess
from agevision.render import Renderer
from agevision.shots import ShotCuts
from agevision.smooth import Smoother
from agevision.track import Tracker


@dataclass
class StageTimes:
    """Accumulated seconds per stage, for `agevision bench`."""

    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(
        ("detect", "quality", "track", "crop+model", "smooth", "render"), 0.0))
    frames: int = 0

    def ms_per_frame(self) -> dict[str, float]:
        return {k: 1000 * v / max(self.frames, 1) for k, v in self.seconds.items()}


def share_cpu(estimator: Estimator) -> int:
    """Give the model half the CPU cores (at least one) when it runs on the CPU, leaving the
    rest to the decode, encode and detector threads that run beside it. Returns the number
    of torch threads now in use.

    On the 2-core dev machine, one torch thread instead of two took the talking-head clip
    from 99 to 138 FPS (`scripts/bench_pipeline.py --threads`): two threads spin against
    the video threads.
    """
    import os

    import torch

    if estimator.device.type == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))
    return torch.get_num_threads()


class FrameProcessor:
    """All per-frame stages. Use as a context manager (it owns the face detector).

    detector: "short" or "full". min_face: faces narrower than this many pixels get a box
    but no age or gender. smooth: False shows the raw per-frame estimates.
    detect_every: detect faces (and estimate them) on every n-th frame only; on the frames
    in between each face is followed by optical flow (`motion.FaceFlow`; where that fails,
    its track's predicted path) and keeps its last estimates. A frame in which a face is
    lost (see `motion.FaceFlow.follow`) is detected instead.
    Shot cuts (`shots.ShotCuts`) end every track and are detected, so that no one in the
    new shot inherits a label from the last.
    After process(), `detected` says whether that frame was a detection frame;
    `lost_frames` counts the frames detected because a face was lost, `cuts` the shot cuts.
    tile_size: see `detect.FaceDetector` (0: the whole frame only).
    """

    def __init__(self, estimator: Estimator, detector: str = "full", min_face: int = 24, smooth: bool = True,
                 renderer: Renderer | None = None, detect_every: int = 1, tile_size: int = 0) -> None:
        if detect_every < 1:
            raise AgevisionError(f"detect_every must be at least 1, got {detect_every}")
        self.detect_every = detect_every
        self.detected = False
        self._index = -1
        self._last: Faces | None = None  # the faces of the previous frame
        self._detected: Faces | None = None  # the faces of the last detection frame
        self.flow = FaceFlow() if detect_every > 1 else None
        self.estimator = estimator
        self.detector = FaceDetector(detector, tile_size=tile_size)
        self.min_face = min_face
        self.tracker = Tracker()
        self.smoother = Smoother(estimator.age_bins) if smooth else None
        self.renderer = renderer or Renderer()
        self.times = StageTimes()
        self.shots = ShotCuts()
        self.lost_frames = self.cuts = 0

    def process(self, frame_bgr: np.ndarray) -> tuple[Faces, Faces]:
        """Detect, track, estimate and smooth the faces of one BGR frame.

        Returns (smoothed faces, raw per-frame estimates of the same faces). On a frame
        between detections (see `detect_every`) the raw estimates are NaN.
        """
        self._index += 1
        self.times.frames += 1
        t = self.times.seconds
        t0 = time.perf_counter()
        cut = self.shots.is_cut(frame_bgr)
        t["track"] += time.perf_counter() - t0
        if cut:  # whoever is in the new shot is someone else
            self.cuts += 1
            self.tracker.drop(self.tracker.ids)
        elif self._last is not None and self._index % self.detect_every:
            followed = self._coast(frame_bgr)
            if followed is not None:
                return followed
        self.detected = True
        t0 = time.perf_counter()
        faces = self.detector.detect(frame_bgr)
        tq = time.perf_counter()
        faces.quality, faces.readable = assess(frame_bgr, faces, self.min_face)
        t1 = time.perf_counter()
        self.tracker.update(faces)
        t2 = time.perf_counter()
        self.estimator.estimate(frame_bgr, faces)
        t3 = time.perf_counter()
        raw = replace(faces, age=faces.age.copy(), p_female=faces.p_female.copy(), gender=faces.gender.copy())
        if self.smoother is not None:
            self.smoother.update(faces, self.tracker.ended, self._index)
        t4 = time.perf_counter()
        t["detect"] += tq - t0
        t["quality"] += t1 - tq
        t["track"] += t2 - t1
        t["crop+model"] += t3 - t2
        t["smooth"] += t4 - t3
        self._last = self._detected = faces
        if self.flow is not None:
            self.flow.remember(frame_bgr, faces)
            t["track"] += time.perf_counter() - t4
        return faces, raw

    def _coast(self, frame_bgr: np.ndarray) -> tuple[Faces, Faces] | None:
        """A frame between detections: the last faces followed into `frame_bgr`, or None
        when a face was lost (something passed in front of it, or it moved too fast): then
        the frame is detected instead."""
        t0 = time.perf_counter()
        # rows of _last and _detected match: tracks only end on detection frames
        boxes, lost = self.flow.follow(frame_bgr, self._detected)
        if lost.any():
            self.times.seconds["track"] += time.perf_counter() - t0
            self.lost_frames += 1
            return None
        faces = self.tracker.coast(self._last, boxes)

        def nan():
            return np.full(len(faces), np.nan, np.float32)

        raw = replace(faces, age=nan(), age_low=nan(), age_high=nan(), p_female=nan(), age_probs=None)
        self.detected = False
        self._last = faces
        self.times.seconds["track"] += time.perf_counter() - t0
        return faces, raw

    def draw(self, frame_bgr: np.ndarray, faces: Faces, **hud) -> np.ndarray:
        t0 = time.perf_counter()
        out = self.renderer.draw(frame_bgr, faces, **hud)
        self.times.seconds["render"] += time.perf_counter() - t0
        return out

    def close(self) -> None:
        self.detector.close()

    def __enter__(self) -> FrameProcessor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class FpsMeter:
    """Frames per second over the last `window` frames."""

    def __init__(self, window: int = 30) -> None:
        self._stamps: deque[float] = deque(maxlen=window)

    def tick(self) -> float | None:
        self._stamps.append(time.perf_counter())
        if len(self._stamps) < 2:
            return None
        return (len(self._stamps) - 1) / max(self._stamps[-1] - self._stamps[0], 1e-9)


@contextmanager
def _stop_on_ctrl_c():
    """An Event set by Ctrl-C (SIGINT) instead of a KeyboardInterrupt raised mid-frame.

    A KeyboardInterrupt can land anywhere, even inside a native library's destructor;
    checking a flag between frames stops cleanly. Off the main thread nothing is changed.
    """
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


@dataclass
class VideoResult:
    frames: int
    faces: int
    seconds: float
    interrupted: bool
    times: StageTimes


def run_video(processor: FrameProcessor, frames: Iterable[np.ndarray], fps: float, total: int | None,
              video_writer=None, jsonl_writer=None, show: Callable[[np.ndarray], bool] | None = None,
              progress=None, thumbnails=None) -> VideoResult:
    """Run every frame through `processor`, drawing and writing to the given sinks.

    jsonl_writer: anything with write(list of face record dicts). thumbnails: a
    `people.ThumbnailKeeper` shown each frame before it is drawn on, or None.
    show: called with each annotated frame; returning False stops the run early.
    progress: called with (frames done, current FPS). Ctrl-C stops the run after the
    current frame (VideoResult.interrupted); sinks are closed by the caller. Returns a VideoResult.
    """
    meter = FpsMeter()
    start = time.perf_counter()
    n = n_faces = 0
    interrupted = False
    with _stop_on_ctrl_c() as stop:
        for frame in frames:
            faces, raw = processor.process(frame)
            current = meter.tick()
            n += 1
            n_faces += len(faces)
            if jsonl_writer is not None:
                from agevision.sinks import face_records

                jsonl_writer.write(face_records(faces, n - 1, (n - 1) / fps, raw, detected=processor.detected))
            if thumbnails is not None and processor.detected:
                thumbnails.update(n - 1, frame, faces)
            if video_writer is not None or show is not None:
                annotated = processor.draw(frame, faces, fps=current)
                if video_writer is not None:
                    video_writer.write(annotated)
                if show is not None and show(annotated) is False:
                    interrupted = True
                    break
            if progress is not None:
                progress(n, current)
            if stop.is_set():
                interrupted = True
                break
    return VideoResult(n, n_faces, time.perf_counter() - start, interrupted, processor.times)


KEYS = {ord("q"): "quit", 27: "quit", ord("o"): "overlays", ord("h"): "hud", ord("s"): "snapshot",
        ord(" "): "pause"}


def run_live(processor: FrameProcessor, frames: Iterable[np.ndarray], show: Callable[[np.ndarray], None],
             read_key: Callable[[], int], snapshot_dir: Path = Path("."), help_seconds: float = 5.0) -> dict:
    """The interactive loop: annotated frames to `show`, keys from `read_key` (-1 = none).

    Keys: o overlays, h HUD, s snapshot PNG (into snapshot_dir), space pause, q/Esc quit.
    Returns counts: frames, snapshots (list of paths), quit (bool).
    """
    import cv2

    meter = FpsMeter()
    start = time.perf_counter()
    shown, snapshots, paused, last = 0, [], False, None
    it = iter(frames)
    while True:
        if not paused or last is None:
            frame = next(it, None)
            if frame is None:
                return {"frames": shown, "snapshots": snapshots, "quit": False}
            faces, _ = processor.process(frame)
            last = (frame, faces)
        frame, faces = last
        canvas = processor.draw(frame.copy(), faces, fps=meter.tick() if not paused else None,
                                help_text=time.perf_counter() - start < help_seconds, paused=paused)
        show(canvas)
        shown += 1
        action = KEYS.get(read_key() & 0xFF if read_key is not None else -1)
        if action == "quit":
            return {"frames": shown, "snapshots": snapshots, "quit": True}
        if action == "overlays":
            processor.renderer.show_faces = not processor.renderer.show_faces
        elif action == "hud":
            processor.renderer.show_hud = not processor.renderer.show_hud
        elif action == "pause":
            paused = not paused
        elif action == "snapshot":
            path = Path(snapshot_dir) / time.strftime(f"agevision-%Y%m%d-%H%M%S-{len(snapshots)}.png")
            if not cv2.imwrite(str(path), canvas):
                raise AgevisionError(f"cannot write snapshot {path}")
            snapshots.append(path)
