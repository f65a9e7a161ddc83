"""MediaPipe BlazeFace face detection: the only module that imports mediapipe.

agevision pins mediapipe 0.10.21 and runs its face-detection graphs (`mediapipe.solutions
.face_detection`): later releases' native library connects to Google's logging servers
whenever a detector is made (google-ai-edge/mediapipe#6291; a test runs detection under
strace and fails on any connection), and 0.10.21's Tasks API cannot run the full-range
model. The graphs load the models from the mediapipe wheel; the same files (byte for byte,
a test checks) ship in `weights/` with their licence.

Two models (Apache-2.0, from the mediapipe 0.10.21 wheel):
- "short": face_detection_short_range.tflite, for faces filling a good part of the frame
  (webcam at arm's length); it misses faces smaller than about a fifth of the frame.
- "full":  face_detection_full_range_sparse.tflite, for people further away (video).

Both models see the frame shrunk to their small input (128 or 192 pixels), so in a 1080p
street scene a face 80 pixels wide shrinks to 8 and is missed. With `tile_size`, frames
larger than that are also searched in overlapping tiles of about that size, and the
detections of the whole frame and of the tiles are merged.
"""

from __future__ import annotations

import os
import sys
import threading
import types
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from agevision.defaults import WEIGHTS_DIR
from agevision.errors import AgevisionError
from agevision.faces import Faces, areas, intersection, iou

MODEL_FILES = {
    "short": "face_detection_short_range.tflite",
    "full": "face_detection_full_range_sparse.tflite",
}
# The two models draw boxes of slightly different size around the same face (eye distance
# over box width: 0.42 short, 0.39 full, medians on UTKFace). Boxes are scaled about their
# centre to the full-range convention so that crops do not depend on the model.
BOX_SCALE = {"short": 1.07, "full": 1.0}
# Tiles show the detector clutter up close (an ear, half a face beside the whole one); on
# the shared clips such false finds scored 0.51-0.64, real small faces a median of 0.75.
TILE_MIN_SCORE = 0.6
# MediaPipe's short-range graph aborts the process on a picture 40,000 pixels long (30,000
# passes; an 8 x 20,000 photo padded for the still search is one): longer ones are shrunk
MAX_SIDE = 16384
# YuNet (MIT, OpenCV Zoo): proposes the faces BlazeFace missed in still photos (StillFaceFinder);
# identity.py finds landmarks with it
YUNET_FILE = WEIGHTS_DIR / "face_detection_yunet_2023mar_int8bq.onnx"


@contextmanager
def _quiet_stderr():
    """Silence native log lines (TFLite, glog) written to file descriptor 2."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def suppress_overlaps(boxes: np.ndarray, scores: np.ndarray, max_overlap: float) -> np.ndarray:
    """Indices of the boxes to keep, best score first: each box overlapping a better one by
    more than `max_overlap` (IoU) is dropped."""
    keep: list[int] = []
    for i in np.argsort(-scores):
        if not keep or iou(boxes[i : i + 1], boxes[keep]).max() <= max_overlap:
            keep.append(int(i))
    return np.array(keep, np.int64)


def _merge(whole: Faces, tiled: list[Faces], max_overlap: float) -> Faces:
    """The whole-frame detections plus those tile detections that are not the same faces:
    a tile box overlapping a whole-frame box by more than a tenth of its area is dropped (a
    part of a face found whole, or something beside it, like an ear), and
    overlapping tile boxes are suppressed as in `suppress_overlaps`. Sorted by score."""
    boxes = np.concatenate([f.boxes for f in tiled])
    scores = np.concatenate([f.scores for f in tiled])
    keypoints = np.concatenate([f.keypoints for f in tiled])
    if len(whole) and len(boxes):
        share = intersection(boxes, whole.boxes) / np.maximum(areas(boxes), 1e-6)[:, None]
        new = share.max(axis=1) <= 0.1
        boxes, scores, keypoints = boxes[new], scores[new], keypoints[new]
    keep = suppress_overlaps(boxes, scores, max_overlap)
    boxes = np.concatenate([whole.boxes, boxes[keep]])
    scores = np.concatenate([whole.scores, scores[keep]])
    keypoints = np.concatenate([whole.keypoints, keypoints[keep]])
    order = np.argsort(-scores, kind="stable")
    return Faces(boxes=boxes[order], keypoints=keypoints[order], scores=scores[order])


def tiles(width: int, height: int, tile_size: int, overlap: float = 0.25) -> list[tuple[int, int, int, int]]:
    """Overlapping tiles (x0, y0, x1, y1) covering a width x height frame, each at most about
    `tile_size` pixels a side, neighbours overlapping by `overlap` of a tile; [] when the
    frame fits in one tile or tile_size is 0."""
    if tile_size <= 0 or (width <= tile_size and height <= tile_size):
        return []
    nx, ny = -(-width // tile_size), -(-height // tile_size)
    tw = width / (nx - (nx - 1) * overlap) if nx > 1 else width
    th = height / (ny - (ny - 1) * overlap) if ny > 1 else height
    out = []
    for iy in range(ny):
        for ix in range(nx):
            x0, y0 = round(ix * tw * (1 - overlap)), round(iy * th * (1 - overlap))
            out.append((x0, y0, min(round(x0 + tw), width), min(round(y0 + th), height)))
    return out


def model_path(kind: str) -> Path:
    """Path of the shipped BlazeFace model `kind` ("short" or "full").

    Raises AgevisionError for an unknown kind or a missing file.
    """
    if kind not in MODEL_FILES:
        raise AgevisionError(f"unknown detector {kind!r}: choose one of {', '.join(MODEL_FILES)}")
    path = WEIGHTS_DIR / MODEL_FILES[kind]
    if not path.is_file():
        raise AgevisionError(f"face detector model missing: {path} (reinstall agevision)")
    return path


# Modules that `import mediapipe` runs and face detection never uses: its drawing helpers
# (they import matplotlib.pyplot) and the Tasks API (audio devices among them). Importing
# them took 0.45 of mediapipe's 0.65 s import here; they are loaded on first use instead.
_UNUSED_MEDIAPIPE = {
    "mediapipe.python.solutions.drawing_utils": "python/solutions/drawing_utils.py",
    "mediapipe.python.solutions.drawing_styles": "python/solutions/drawing_styles.py",
    "mediapipe.tasks": "tasks/__init__.py",
    "mediapipe.tasks.python": "tasks/python/__init__.py",
}


class _Deferred(types.ModuleType):
    """A module whose code runs on the first read of an attribute it does not have yet."""

    def __getattr__(self, attr: str):
        state = self.__dict__
        if state.get("_agevision_running") or (attr.startswith("__") and attr != "__all__"):  # `import *` loads
            raise AttributeError(f"module {self.__name__!r} has no attribute {attr!r}")
        state["_agevision_running"] = True
        self.__spec__.loader.exec_module(self)
        return getattr(self, attr)


def _defer_unused_mediapipe() -> list[tuple[str, types.ModuleType]]:
    """Before mediapipe is first imported, register its unused modules (`_UNUSED_MEDIAPIPE`)
    as `_Deferred` modules: each runs only when something reads one of its attributes, so a
    program that does use them gets them whole. Returns (name, module) of those registered,
    for `_bind_deferred` once mediapipe is imported; none once mediapipe is imported, or where
    a file is not where mediapipe 0.10.21 has it."""
    import importlib.util

    if "mediapipe" in sys.modules:
        return []
    spec = importlib.util.find_spec("mediapipe")  # finds the package without running it
    if spec is None or not spec.submodule_search_locations:
        return []
    root = Path(list(spec.submodule_search_locations)[0])
    registered = []
    for name, relative in _UNUSED_MEDIAPIPE.items():
        path = root / relative
        if not path.is_file() or name in sys.modules:
            continue
        package = [str(path.parent)] if path.name == "__init__.py" else None
        module_spec = importlib.util.spec_from_file_location(name, path, submodule_search_locations=package)
        if module_spec is None or module_spec.loader is None:
            continue
        module = _Deferred(name)
        module.__spec__, module.__loader__, module.__file__ = module_spec, module_spec.loader, str(path)
        module.__package__ = name if package else name.rpartition(".")[0]
        if package:
            module.__path__ = package
        sys.modules[name] = module
        registered.append((name, module))
    return registered


def _bind_deferred(registered: list[tuple[str, types.ModuleType]]) -> None:
    """Each deferred module made an attribute of its parent package, as an import would,
    unless the parent has set that name itself."""
    for name, module in registered:
        parent, _, child = name.rpartition(".")
        if parent in sys.modules and sys.modules.get(name) is module and child not in vars(sys.modules[parent]):
            setattr(sys.modules[parent], child, module)


class FaceDetector:
    """BlazeFace detector; use as a context manager or call close().

    kind: "short" or "full" (see module docstring).
    min_score: detections below this confidence are dropped.
    max_overlap: of two boxes overlapping more than this (IoU), the less confident is
    dropped: MediaPipe's own suppression lets some double detections of one face through.
    tile_size: frames wider or taller than this many pixels are also searched in
    overlapping tiles of at most about this size (0: never), to find small faces.
    One MediaPipe graph takes one picture at a time: `detect` may be called from several
    threads, and calls wait for each other.
    """

    def __init__(self, kind: str = "full", min_score: float = 0.5, max_overlap: float = 0.3,
                 tile_size: int = 0) -> None:
        model_path(kind)  # an unknown kind or a missing model is one clear error
        with _quiet_stderr():
            deferred = _defer_unused_mediapipe()
            from mediapipe.python.solutions.face_detection import FaceDetection

            _bind_deferred(deferred)

            self._detector = FaceDetection(min_detection_confidence=min_score, model_selection=int(kind == "full"))
            # the graph starts, and TFLite logs its set-up, on the first picture: a blank one, here
            self._detector.process(np.zeros((64, 64, 3), np.uint8))
        self.kind, self.max_overlap, self.tile_size = kind, max_overlap, tile_size
        self._lock = threading.Lock()
        self._shapes_seen: set[tuple[int, ...]] = set()

    def detect(self, frame_bgr: np.ndarray) -> Faces:
        """Find faces in one BGR uint8 frame (H, W, 3), in tiles too if it is large (see class doc).

        Returns a Faces record with boxes and keypoints in pixels of that frame,
        sorted by score (best first). Raises AgevisionError after close().
        """
        with self._lock:
            return self._detect(frame_bgr)

    def _detect(self, frame_bgr: np.ndarray) -> Faces:
        if self._detector is None:
            raise AgevisionError("face detector used after close()")
        h, w = frame_bgr.shape[:2]
        parts = [self._detect_whole(frame_bgr)]
        for x0, y0, x1, y1 in tiles(w, h, self.tile_size):
            found = self._detect_whole(frame_bgr[y0:y1, x0:x1])
            # a face cut by an inner tile edge is whole in the neighbouring tile or the frame
            b = found.boxes
            cut = (((b[:, 0] <= 2) & (x0 > 0)) | ((b[:, 1] <= 2) & (y0 > 0))
                   | ((b[:, 2] >= x1 - x0 - 2) & (x1 < w)) | ((b[:, 3] >= y1 - y0 - 2) & (y1 < h)))
            found = found.subset(~cut & (found.scores >= TILE_MIN_SCORE))
            found.boxes += np.array([x0, y0, x0, y0], np.float32)
            found.keypoints += np.array([x0, y0], np.float32)
            parts.append(found)
        if len(parts) == 1:
            return parts[0]
        return _merge(parts[0], parts[1:], self.max_overlap)

    def _detect_whole(self, frame_bgr: np.ndarray) -> Faces:
        """MediaPipe on the whole of `frame_bgr`, boxes harmonised, double detections dropped;
        a picture longer than MAX_SIDE is searched shrunk to that size."""
        import cv2

        h, w = frame_bgr.shape[:2]
        if max(h, w) > MAX_SIDE:
            scale = MAX_SIDE / max(h, w)
            small = cv2.resize(frame_bgr, (max(round(w * scale), 1), max(round(h * scale), 1)),
                               interpolation=cv2.INTER_AREA)
            found = self._detect_whole(small)
            found.boxes /= scale
            found.keypoints /= scale
            return found
        rgb = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB)  # contiguous, and far faster than [..., ::-1]
        if frame_bgr.shape not in self._shapes_seen:  # the native side logs its set-up per input size
            with _quiet_stderr():
                result = self._detector.process(rgb)
            self._shapes_seen.add(frame_bgr.shape)
        else:
            result = self._detector.process(rgb)
        h, w = frame_bgr.shape[:2]
        found = result.detections or []
        n = len(found)
        boxes = np.zeros((n, 4), np.float32)
        keypoints = np.zeros((n, 6, 2), np.float32)
        scores = np.zeros(n, np.float32)
        for i, det in enumerate(found):
            bb = det.location_data.relative_bounding_box
            boxes[i] = (bb.xmin * w, bb.ymin * h, (bb.xmin + bb.width) * w, (bb.ymin + bb.height) * h)
            kps = det.location_data.relative_keypoints[:6]
            keypoints[i, : len(kps)] = [(k.x * w, k.y * h) for k in kps]
            scores[i] = det.score[0] if det.score else 0.0
        if BOX_SCALE[self.kind] != 1.0:
            centre = (boxes[:, :2] + boxes[:, 2:]) / 2
            half = (boxes[:, 2:] - boxes[:, :2]) / 2 * BOX_SCALE[self.kind]
            boxes = np.concatenate([centre - half, centre + half], axis=1)
        keep = suppress_overlaps(boxes, scores, self.max_overlap)
        return Faces(boxes=boxes[keep], keypoints=keypoints[keep], scores=scores[keep])

    def close(self) -> None:
        """Release the native detector; safe to call twice."""
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self._detector is not None:
            with _quiet_stderr():
                self._detector.close()
            self._detector = None

    def __enter__(self) -> FaceDetector:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class StillFaceFinder:
    """Faces in still photos, tried harder than in video: a photo is read once, so a miss is
    worse than the time spent. Use as a context manager or call close().

    find(image) runs `kind` (with tiles of `tile_size`); when that finds no face, it tries in
    turn the other BlazeFace model, the photo padded by half its size on every side (a face
    filling the whole photo, as in a tight crop, is missed by both models otherwise), the
    photo enlarged to 2x if it is small (faces under about 20 pixels), and last both models
    at a lower confidence (0.3) on the padded photo. The first step that finds a face wins.
    Then the faces BlazeFace missed beside those it found (a laughing face turned away in a
    group): YuNet (`YUNET_FILE`, a second detector, shipped for face identities) proposes
    faces over the photo, and each one not found already is kept if BlazeFace finds it in a
    close-up of it (`_confirmed`), so that every face has BlazeFace's box and keypoints.
    """

    LOW_SCORE = 0.3
    SMALL = 640  # photos with a longest side under this are also tried enlarged
    # YuNet's confidence for a face proposal, BlazeFace's for confirming it (as for tiles). Set
    # on frames of the shared stage and street clips: at 0.8 the faces turned away or half
    # hidden that BlazeFace missed scored 0.80-0.91, the faces in the Royal Opera House crest
    # 0.61-0.77 (some real far faces, 0.68-0.78, are left out with them)
    RESCUE_SCORE = 0.8
    YUNET_SIDE = 1280  # YuNet reads the photo shrunk to this many pixels on its longest side
    CLOSE_UP = 256  # pixels: the width of the close-up BlazeFace confirms a proposal in

    def __init__(self, kind: str = "full", tile_size: int = 0, rescue: bool = True) -> None:
        self.kind, self.tile_size, self.rescue = kind, tile_size, rescue
        self._made: dict[tuple[str, float], FaceDetector] = {}
        self._yunet = None

    def _detector(self, kind: str, min_score: float = 0.5) -> FaceDetector:
        key = (kind, min_score)
        if key not in self._made:
            tiles_for = self.tile_size if (kind, min_score) == (self.kind, 0.5) else 0
            self._made[key] = FaceDetector(kind, min_score=min_score, tile_size=tiles_for)
        return self._made[key]

    def find(self, image_bgr: np.ndarray) -> Faces:
        """Faces of one BGR photo, boxes and keypoints in its pixels (see class doc)."""
        faces = self._blazeface(image_bgr)
        return self._add_missed(image_bgr, faces) if self.rescue else faces

    def _blazeface(self, image_bgr: np.ndarray) -> Faces:
        """BlazeFace's faces of the photo, trying harder while it finds none (class doc)."""
        import cv2

        other = "short" if self.kind == "full" else "full"
        faces = self._detector(self.kind).detect(image_bgr)
        if len(faces):
            return faces
        faces = self._detector(other).detect(image_bgr)
        if len(faces):
            return faces
        h, w = image_bgr.shape[:2]
        padded = cv2.copyMakeBorder(image_bgr, h // 2, h // 2, w // 2, w // 2, cv2.BORDER_REPLICATE)
        attempts = [(self.kind, 0.5, padded, 1.0), (other, 0.5, padded, 1.0)]
        if max(h, w) < self.SMALL:
            big = cv2.resize(image_bgr, (w * 2, h * 2), interpolation=cv2.INTER_CUBIC)
            attempts += [(self.kind, 0.5, big, 2.0), (other, 0.5, big, 2.0)]
        attempts += [(self.kind, self.LOW_SCORE, padded, 1.0), (other, self.LOW_SCORE, padded, 1.0)]
        for kind, score, picture, scale in attempts:
            faces = self._detector(kind, score).detect(picture)
            if len(faces):
                shift = np.array([w // 2, h // 2], np.float32) if picture is padded else np.zeros(2, np.float32)
                faces.boxes = (faces.boxes - np.tile(shift, 2)) / scale
                faces.keypoints = (faces.keypoints - shift) / scale
                return faces
        return faces

    def _add_missed(self, image_bgr: np.ndarray, faces: Faces) -> Faces:
        """`faces` and the faces YuNet proposes that none of them covers, each confirmed by
        BlazeFace in a close-up (`_confirmed`). Sorted by score."""
        proposals = self._yunet_boxes(image_bgr)
        if len(faces) and len(proposals):
            covered = intersection(proposals, faces.boxes) / np.maximum(areas(proposals), 1e-6)[:, None]
            proposals = proposals[covered.max(axis=1) <= 0.3]
        found = [f for f in (self._confirmed(image_bgr, box) for box in proposals) if f is not None]
        if not found:
            return faces
        return _merge(faces, found, 0.3)

    def _yunet_boxes(self, image_bgr: np.ndarray) -> np.ndarray:
        """(M, 4) boxes (x0, y0, x1, y1, photo pixels) of the faces YuNet finds at
        RESCUE_SCORE or more, on the photo shrunk to at most YUNET_SIDE pixels a side."""
        import cv2

        h, w = image_bgr.shape[:2]
        scale = min(1.0, self.YUNET_SIDE / max(h, w))
        if min(h, w) * scale < 16:  # no face fits (and YuNet gives NaN boxes on a strip)
            return np.zeros((0, 4), np.float32)
        small = cv2.resize(image_bgr, (max(int(w * scale), 1), max(int(h * scale), 1)),
                           interpolation=cv2.INTER_AREA) if scale < 1 else image_bgr
        if self._yunet is None:
            self._yunet = cv2.FaceDetectorYN.create(str(YUNET_FILE), "", (small.shape[1], small.shape[0]),
                                                    self.RESCUE_SCORE)
        self._yunet.setInputSize((small.shape[1], small.shape[0]))
        _, found = self._yunet.detect(small)
        if found is None:
            return np.zeros((0, 4), np.float32)
        found = found[np.isfinite(found[:, :4]).all(axis=1)]
        xywh = found[:, :4] / scale
        return np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:4]], axis=1).astype(np.float32)

    def _confirmed(self, image_bgr: np.ndarray, box: np.ndarray) -> Faces | None:
        """The one face BlazeFace (short-range model, made for faces this large; TILE_MIN_SCORE
        or more) finds in a
        close-up of `box` (the box grown by its size on every side, scaled to CLOSE_UP pixels
        wide) whose box holds the proposal's centre, in photo pixels; None if there is none."""
        import cv2

        x0, y0, x1, y1 = (float(v) for v in box)
        bw, bh = x1 - x0, y1 - y0
        h, w = image_bgr.shape[:2]
        xa, ya, xb, yb = int(max(x0 - bw, 0)), int(max(y0 - bh, 0)), int(min(x1 + bw, w)), int(min(y1 + bh, h))
        if xb - xa < 8 or yb - ya < 8:
            return None
        scale = self.CLOSE_UP / (xb - xa)
        region = cv2.resize(image_bgr[ya:yb, xa:xb], (self.CLOSE_UP, max(int(round((yb - ya) * scale)), 8)),
                            interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        found = self._detector("short").detect(region)
        found = found.subset(found.scores >= TILE_MIN_SCORE)
        if not len(found):
            return None
        found.boxes = found.boxes / scale + np.array([xa, ya, xa, ya], np.float32)
        found.keypoints = found.keypoints / scale + np.array([xa, ya], np.float32)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        b = found.boxes
        holds = np.flatnonzero((b[:, 0] <= cx) & (cx <= b[:, 2]) & (b[:, 1] <= cy) & (cy <= b[:, 3]))
        if not len(holds):
            return None
        return found.subset(np.array([holds[np.argmax(found.scores[holds])]]))

    def close(self) -> None:
        """Release every detector made; safe to call twice."""
        for det in self._made.values():
            det.close()
        self._made.clear()
        self._yunet = None

    def __enter__(self) -> StillFaceFinder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
