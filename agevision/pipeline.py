"""The frame loop: source -> shots -> detect (or follow) -> quality -> track -> estimate -> smooth -> render -> sinks.

`FrameProcessor.process(frame)` runs the stages on one frame and returns a `FrameResult`.
`run_video` drives a file through it into a list of sinks (`sinks.Sink`: annotated video,
JSONL records, people summary, window); `run_live` shows a window (webcam or a file played
live) with hotkeys.
"""

from __future__ import annotations

import queue
import signal
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from agevision.defaults import MIN_FACE
from agevision.detect import FaceDetector
from agevision.errors import AgevisionError
from agevision.faces import Faces
from agevision.motion import FaceFlow
from agevision.quality import assess
from agevision.records import face_records
from agevision.render import Renderer
from agevision.shots import ShotCuts
from agevision.smooth import Smoother
from agevision.sources import put_unless_stopped
from agevision.track import Tracker

if TYPE_CHECKING:  # the model (and torch) load when a processor is made, not on import
    from agevision.model.estimator import Estimator


class Stopwatch:
    """Seconds per named stage, summed over the frames; `with watch("detect"): ...` times one.
    "detect" is finding the faces and assessing their quality (`FrameProcessor.find`), or,
    in `run_video`, waiting for `detect_ahead` to have done so."""

    STAGES = ("detect", "track", "crop+model", "smooth", "identity", "render")

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(self.STAGES, 0.0)
        self.frames = 0

    @contextmanager
    def __call__(self, stage: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - t0

    def ms_per_frame(self) -> dict[str, float]:
        """Milliseconds per frame for each stage."""
        return {k: 1000 * v / max(self.frames, 1) for k, v in self.seconds.items()}


@dataclass
class FrameResult:
    """What `FrameProcessor.process` made of one frame.

    index: the frame's number from 0. faces: the tracked faces with the labels shown
    (smoothed per track unless smoothing is off). raw: the same faces with this frame's own
    estimates (NaN on a frame between detections). detected: faces were detected (and
    estimated) in this frame, not followed from the last. ended: ids of the tracks that
    ended with this frame. cut: a shot cut was found here. time: seconds into the video and
    fps: the live frame rate, both set by the loop that runs the processor. annotated:
    the frame with labels drawn, when a sink asked for it.
    """

    index: int
    faces: Faces
    raw: Faces
    detected: bool
    ended: list[int] = field(default_factory=list)
    cut: bool = False
    time: float = 0.0
    fps: float | None = None
    annotated: np.ndarray | None = None
    _records: list[dict] | None = field(default=None, repr=False)

    @property
    def records(self) -> list[dict]:
        """The face records of this frame (`records.face_records`), made once."""
        if self._records is None:
            self._records = face_records(self.faces, self.index, self.time, self.raw, detected=self.detected)
        return self._records


def share_cpu(estimator: Estimator) -> int:
    """Give the model half the CPU cores (at least one) when it runs on the CPU, leaving the
    rest to the decode, encode and detector threads that run beside it. Returns the number
    of model threads now in use.

    On the 2-core dev machine, one torch thread instead of two took the talking-head clip
    from 99 to 138 FPS (`scripts/bench_pipeline.py --threads`): two threads spin against
    the video threads.
    """
    import os

    if estimator.device.type != "cpu":
        return estimator.set_threads(1)
    return estimator.set_threads(max(1, (os.cpu_count() or 2) // 2))


class FrameProcessor:
    """All per-frame stages. Use as a context manager (it owns the face detector).

    detector: "short" or "full". min_face: faces narrower than this many pixels are boxed
    but not read (see `quality.readable`, which also leaves out faces too dark, blurred or
    turned away). smooth: False shows the raw per-frame estimates.
    detect_every: detect faces (and estimate them) on every n-th frame only; on the frames
    in between each face is followed by optical flow (`motion.FaceFlow`; where that fails,
    its track's predicted path) and keeps its last estimates. A frame in which a face is
    lost (see `motion.FaceFlow.follow`) is detected instead.
    Shot cuts (`shots.ShotCuts`) end every track and are detected, so that no one in the
    new shot inherits a label from the last.
    tile_size: see `detect.FaceDetector` (0: the whole frame only).
    face_detector: a `detect.FaceDetector` made already (it then owns it), instead of one
    made from `detector` and `tile_size`.
    identify: keep identity vectors of each track's best faces (`identity.TrackIdentities`,
    in `self.identities`), so that `people()` can say which tracks are one person.
    times: a `Stopwatch` of the stages over all frames processed.
    """

    def __init__(self, estimator: Estimator, detector: str = "full", min_face: int = MIN_FACE, smooth: bool = True,
                 renderer: Renderer | None = None, detect_every: int = 1, tile_size: int = 0,
                 identify: bool = False, face_detector: FaceDetector | None = None) -> None:
        if detect_every < 1:
            raise AgevisionError(f"detect_every must be at least 1, got {detect_every}")
        self.detect_every = detect_every
        self._index = -1
        self._last: Faces | None = None  # the faces of the previous frame
        self._detected: Faces | None = None  # the faces of the last detection frame
        self.flow = FaceFlow() if detect_every > 1 else None
        self.estimator = estimator
        self.detector = face_detector or FaceDetector(detector, tile_size=tile_size)
        self.min_face = min_face
        self.tracker = Tracker()
        self.smoother = Smoother(estimator.age_bins, age_temperature=estimator.card.age_temperature) if smooth else None
        self.renderer = renderer or Renderer()
        self.times = Stopwatch()
        self.shots = ShotCuts()
        self.identities = None
        if identify:
            from agevision.identity import TrackIdentities

            self.identities = TrackIdentities()

    def find(self, frame_bgr: np.ndarray) -> Faces:
        """The faces the detector finds in one BGR frame, their quality assessed (no tracking;
        safe to call from another thread while `process` runs on an earlier frame)."""
        found = self.detector.detect(frame_bgr)
        found.quality, found.readable = assess(frame_bgr, found, self.min_face)
        return found

    @property
    def frames_done(self) -> int:
        """How many frames `process` has seen; the next one has this index."""
        return self._index + 1

    def scheduled(self, index: int) -> bool:
        """Whether frame `index` (counted from this processor's first) is detected on schedule,
        not followed. Frames in between may be detected too (a face lost, a shot cut)."""
        return index % self.detect_every == 0

    def process(self, frame_bgr: np.ndarray, found: Faces | None = None) -> FrameResult:
        """Detect (or follow), track, estimate and smooth the faces of one BGR frame.

        found: `find(frame_bgr)` made already (see `detect_ahead`); used if this frame is
        detected, instead of detecting it again."""
        self._index += 1
        self.times.frames += 1
        with self.times("track"):
            cut = self.shots.is_cut(frame_bgr)
        if cut:  # whoever is in the new shot is someone else
            self.tracker.drop(self.tracker.ids)
        elif self._last is not None and not self.scheduled(self._index):
            followed = self._follow(frame_bgr)
            if followed is not None:
                return followed
        if found is None:
            with self.times("detect"):
                found = self.find(frame_bgr)
        with self.times("track"):
            tracked, ended = self.tracker.update(found)
        with self.times("crop+model"):
            raw = self.estimator.estimate(frame_bgr, tracked)
        with self.times("smooth"):
            shown = self.smoother.update(raw, ended, self._index) if self.smoother is not None else raw
        if self.identities is not None:
            with self.times("identity"):
                self.identities.observe(self._index, frame_bgr, tracked)
        with self.times("track"):
            if self.flow is not None:
                self.flow.remember(frame_bgr, shown)
        self._last = self._detected = shown
        return FrameResult(self._index, shown, raw, detected=True, ended=ended, cut=cut)

    def _follow(self, frame_bgr: np.ndarray) -> FrameResult | None:
        """A frame between detections: the last faces followed into `frame_bgr`, or None
        when a face was lost (something passed in front of it, or it moved too fast): then
        the frame is detected instead."""
        with self.times("track"):
            # rows of _last and _detected match: tracks only end on detection frames
            boxes, lost = self.flow.follow(frame_bgr, self._detected)
            if lost.any():
                return None
            faces = self.tracker.coast(self._last, boxes)
            nan = np.full(len(faces), np.nan, np.float32)
            raw = replace(faces, age=nan, age_low=nan.copy(), age_high=nan.copy(), p_female=nan.copy(),
                          age_probs=None)
            self._last = faces
        return FrameResult(self._index, faces, raw, detected=False)

    def people(self) -> dict[int, int] | None:
        """Track id -> person id over the frames so far (`identity.group_tracks`), or None
        without `identify`."""
        return self.identities.people() if self.identities is not None else None

    def draw(self, frame_bgr: np.ndarray, faces: Faces, **hud) -> np.ndarray:
        """Labels and HUD drawn onto `frame_bgr` (in place; see `Renderer.draw`), timed."""
        with self.times("render"):
            return self.renderer.draw(frame_bgr, faces, **hud)

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


STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


@contextmanager
def stop_on_signals():
    """An Event set by Ctrl-C (SIGINT), SIGTERM or SIGHUP instead of the process dying mid-frame.

    A KeyboardInterrupt can land anywhere, even inside a native library's destructor, and
    SIGTERM / SIGHUP would kill the process with its outputs half written; checking a flag
    between frames stops cleanly, and the outputs are finished. Off the main thread nothing
    is changed.
    """
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in STOP_SIGNALS}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@dataclass
class VideoResult:
    """What `run_video` did: frames and face boxes processed, seconds, whether it stopped early."""

    frames: int
    faces: int
    seconds: float
    interrupted: bool
    times: Stopwatch

    def end_record(self) -> dict:
        """The JSONL end record of the run (see `records.end_record`)."""
        from agevision.records import end_record

        return end_record(self.frames, self.interrupted)


_END = object()


def detect_ahead(processor: FrameProcessor, frames: Iterable[np.ndarray], depth: int = 4
                 ) -> Iterator[tuple[np.ndarray, Faces | None]]:
    """(frame, found) for each of `frames`, in order, for `processor.process(frame, found)`.

    found: `processor.find(frame)` for the frames it detects on schedule, made on a thread
    up to `depth` frames ahead while the caller works on earlier ones (the detector and the
    rest of the frame loop then share the CPU's cores); None for the frames in between. The
    results are the same as without it. An error raised by `frames` is raised here, after
    the frames before it. Closing the generator (or leaving the loop) stops the thread and
    waits for it, so the detector and the source can be closed after.
    """
    out: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    first = processor.frames_done

    def work() -> None:
        try:
            for i, frame in enumerate(frames, first):
                found = processor.find(frame) if processor.scheduled(i) else None
                if not put_unless_stopped(out, (frame, found), stop):
                    return
            put_unless_stopped(out, _END, stop)
        except BaseException as err:  # noqa: BLE001 - handed to the caller's thread
            put_unless_stopped(out, err, stop)

    thread = threading.Thread(target=work, name="detect-ahead", daemon=True)
    thread.start()
    try:
        while True:
            with processor.times("detect"):  # the frame loop's wait for the detector
                item = out.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


def run_video(processor: FrameProcessor, frames: Iterable[np.ndarray], fps: float, sinks: Sequence = (),
              progress: Callable[[int, float | None], None] | None = None) -> VideoResult:
    """Run every frame through `processor` and hand each result to every sink.

    sinks: objects with `write(frame, result)` (see `sinks.Sink`); one returning False
    stops the run (a window closed with q). The frame is drawn on once, for the sinks that
    want `result.annotated`; those that want the frame clean get it before drawing.
    progress: called with (frames done, current FPS). Ctrl-C, SIGTERM and SIGHUP stop the
    run after the current frame (VideoResult.interrupted); the caller finishes the sinks.
    """
    meter = FpsMeter()
    start = time.perf_counter()
    n = n_faces = 0
    interrupted = False
    annotate = any(getattr(s, "needs_annotated", False) for s in sinks)
    keep_clean = annotate and any(getattr(s, "needs_clean_frame", False) for s in sinks)
    rate = float(fps) or 25.0
    with stop_on_signals() as stop, closing(detect_ahead(processor, frames)) as ahead:
        for frame, found in ahead:
            result = processor.process(frame, found)
            result.fps, result.time = meter.tick(), result.index / rate
            n += 1
            n_faces += len(result.faces)
            if annotate:
                result.annotated = processor.draw(frame.copy() if keep_clean else frame, result.faces, fps=result.fps)
            if any([sink.write(frame, result) is False for sink in sinks]):
                interrupted = True
                break
            if progress is not None:
                progress(n, result.fps)
            if stop.is_set():
                interrupted = True
                break
    return VideoResult(n, n_faces, time.perf_counter() - start, interrupted, processor.times)


def paced(frames: Iterable[np.ndarray], fps: float) -> Iterable[np.ndarray]:
    """`frames` no faster than `fps` a second (a file played live at its own rate; a frame
    that comes late is passed on at once, and the clock does not race to catch up)."""
    step = 1.0 / fps if fps and fps > 0 else 0.0
    due = time.perf_counter()
    for frame in frames:
        now = time.perf_counter()
        if due > now:
            time.sleep(due - now)
        due = max(due, now) + step  # the next frame one step after this one was let through
        yield frame


QUIT_KEYS = (ord("q"), 27)  # q and Esc, in every window
KEYS = {**dict.fromkeys(QUIT_KEYS, "quit"), ord("o"): "overlays", ord("h"): "hud", ord("s"): "snapshot",
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
            faces = processor.process(frame).faces
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
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                saved = cv2.imwrite(str(path), canvas)
            except (OSError, cv2.error):
                saved = False
            if saved:
                snapshots.append(path)
            else:  # a snapshot that cannot be saved must not end the session
                warnings.warn(f"cannot write snapshot {path}", stacklevel=2)
