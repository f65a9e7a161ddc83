"""Frame sources: video files (PyAV, threaded read-ahead) and cameras (OpenCV, latest frame only).

Both yield BGR uint8 frames (H, W, 3). A `VideoSource` never drops a frame; a
`CameraSource` always hands out the newest frame and drops older ones, so a slow consumer
never falls behind the camera.
"""

from __future__ import annotations

import queue
import threading
import warnings
from fractions import Fraction
from pathlib import Path

import numpy as np

from agevision.errors import AgevisionError

_END = object()


def put_unless_stopped(q: queue.Queue, item, stop: threading.Event) -> bool:
    """Put `item` on the bounded queue `q`, waiting for room, unless `stop` is set first (a
    producer thread whose consumer has gone). Returns whether it was put."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


class VideoSource:
    """Decode a video file on a background thread into a bounded queue.

    path: a video file. Raises AgevisionError if it is missing, unreadable, not a video or
    has no video stream. Frames come upright: a video stored on its side with a display
    rotation (as phones record portrait video) is turned as players show it. Attributes:
    width, height (of the frames as yielded), fps (Fraction), frame_count (estimate, 0 if
    unknown), rotation (degrees counterclockwise the frames were turned: 0, 90,
    180 or 270).
    """

    def __init__(self, path: Path, queue_size: int = 8) -> None:
        import av

        path = Path(path)
        if not path.is_file():
            raise AgevisionError(f"no such video file: {path}")
        try:
            self._container = av.open(str(path))
        except (av.error.FFmpegError, OSError, UnicodeDecodeError) as err:
            raise AgevisionError(f"{path} is not a readable video file ({type(err).__name__})") from None
        if not self._container.streams.video:
            self._container.close()
            raise AgevisionError(f"{path} has no video stream")
        self.path = path
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"
        cc = self._stream.codec_context  # None where the stream names a codec this FFmpeg lacks
        if cc is None:
            self._container.close()
            raise AgevisionError(f"{path} is not a readable video (its video stream's codec is unknown)")
        self.width, self.height = cc.width, cc.height
        if not self.width or not self.height:
            self._container.close()
            raise AgevisionError(f"{path} is not a readable video (a stream with no picture size)")
        self._error: str | None = None
        self._frames = self._container.decode(self._stream)
        self._first = self._next_frame()  # its display rotation tells how to turn every frame
        self.rotation = _quarter_turns(getattr(self._first, "rotation", 0)) * 90
        if self.rotation in (90, 270):
            self.width, self.height = self.height, self.width
        self.fps = stream_rate(self._stream)
        self.frame_count = promised_frames(self._stream)
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="decode", daemon=True)
        self._thread.start()

    def _next_frame(self):
        """The next decoded av.VideoFrame, or None at the end or on a decoding error (kept in _error)."""
        import av

        try:
            return next(self._frames)
        except StopIteration:
            return None
        except av.error.FFmpegError as err:
            self._error = f"{self.path}: decoding failed ({err})"
            return None

    def _run(self) -> None:
        import cv2

        turns = {90: cv2.ROTATE_90_COUNTERCLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_CLOCKWISE}
        turn = turns.get(self.rotation)
        frame, self._first = self._first, None
        try:
            while frame is not None and not self._stop.is_set():
                image = frame.to_ndarray(format="bgr24")
                self._put(image if turn is None else cv2.rotate(image, turn))
                frame = self._next_frame()
        finally:
            self._put(_END)

    def _put(self, item) -> None:
        put_unless_stopped(self._queue, item, self._stop)

    def __iter__(self):
        """Yield frames in order; raises AgevisionError if the file breaks before it ends."""
        count = 0
        while True:
            item = self._queue.get()
            if item is _END:
                break
            count += 1
            yield item
        if self._error and count == 0:
            raise AgevisionError(self._error)
        if self._error:
            warnings.warn(f"{self._error}; stopped after {count} frames", stacklevel=2)

    def ended_early(self, frames: int) -> bool:
        """Whether a read that gave `frames` frames stopped short of the end: decoding broke,
        or the file holds fewer frames than its header says (a cut or damaged file)."""
        if self._error:
            return True
        return self.frame_count > 0 and frames < self.frame_count - max(2, 0.02 * self.frame_count)

    def close(self) -> None:
        """Stop decoding and close the file; safe to call twice."""
        self._stop.set()
        self._thread.join(timeout=2)
        self._container.close()

    def __enter__(self) -> VideoSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _quarter_turns(degrees: float) -> int:
    """A display rotation (degrees counterclockwise, any sign) as 0-3 quarter turns."""
    return int(round(float(degrees or 0) / 90)) % 4


class CameraSource:
    """Grab camera frames on a background thread, keeping only the newest.

    camera: device index. width, height: requested capture size (the camera may differ).
    Raises AgevisionError when the camera cannot be opened or gives no frame.
    """

    def __init__(self, camera: int = 0, width: int | None = None, height: int | None = None) -> None:
        import cv2

        log = getattr(cv2.utils, "logging", None)
        if log is not None:
            log.setLogLevel(log.LOG_LEVEL_SILENT)  # we report failures ourselves
        self._cap = cv2.VideoCapture(camera)
        if not self._cap.isOpened():
            raise AgevisionError(f"no camera at index {camera} (is one connected, and free?)")
        if width:
            self._cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        if height:
            self._cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        ok, frame = self._cap.read()
        if not ok or frame is None:
            self._cap.release()
            raise AgevisionError(f"camera {camera} opened but gives no frames")
        self.height, self.width = frame.shape[:2]
        self.fps = Fraction(round(self._cap.get(cv2.CAP_PROP_FPS) or 30))
        self._latest: np.ndarray | None = frame
        self._lock = threading.Condition()
        self._stop = threading.Event()
        self._failed = False
        self._thread = threading.Thread(target=self._run, name="camera", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            ok, frame = self._cap.read()
            with self._lock:
                if not ok or frame is None:
                    self._failed = True
                    self._lock.notify_all()
                    return
                self._latest = frame  # an older frame not yet taken is dropped
                self._lock.notify_all()

    def __iter__(self):
        """Yield the newest frame each time; raises AgevisionError if the camera stops."""
        while True:
            with self._lock:
                while self._latest is None and not self._failed:
                    self._lock.wait(timeout=1.0)
                if self._latest is None:
                    raise AgevisionError("the camera stopped sending frames")
                frame, self._latest = self._latest, None
            yield frame

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._cap.release()

    def __enter__(self) -> CameraSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()



def stream_rate(stream) -> Fraction:
    """A PyAV video stream's frame rate (25 when it does not say)."""
    return Fraction(stream.average_rate or stream.guessed_rate or Fraction(25))


def promised_frames(stream) -> int:
    """The frames a PyAV video stream's header promises: its frame count, else its duration
    times its rate; 0 when it says neither."""
    if stream.frames:
        return int(stream.frames)
    if stream.duration and stream.time_base:
        return int(round(float(stream.duration * stream.time_base * stream_rate(stream))))
    return 0


def probe_frames(path: Path) -> int:
    """`promised_frames` of a video file, read without decoding a frame (0 if it cannot be read)."""
    import av

    try:
        with av.open(str(path)) as container:
            return promised_frames(container.streams.video[0]) if container.streams.video else 0
    except (av.error.FFmpegError, OSError, UnicodeDecodeError, ValueError):
        return 0
