"""Aligned crops of labelled face images (UTKFace style), made through the live crop path.

UTKFace pictures are tight 200x200 faces. Each one is padded by half its size on every side
(border replicated) so that the detector sees a face inside a frame, as in a video; the
detected face nearest the centre is aligned with `align.align_crops`. Images where no face
is found get a fallback crop from the median face geometry of the images where one was found,
and are counted, never dropped.
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from agevision import align
from agevision.align import DEFAULT_BOX, DEFAULT_KEYPOINTS, geometry_to_faces
from agevision.errors import AgevisionError
from agevision.faces import Faces
from agevision.model.card import CropGeometry


@dataclass
class CropSet:
    """Crops of a list of images.

    crops: (N, S, S, 3) uint8 RGB, one per readable image, in input order.
    found: (N,) bool, True where the detector found the face (False: fallback crop).
    readable: (M,) bool over the input paths; unreadable ones have no crop.
    """

    crops: np.ndarray
    found: np.ndarray
    readable: np.ndarray


def pad_for_detection(image_bgr: np.ndarray) -> tuple[np.ndarray, int, int]:
    """Pad a tight face image by half its size per side. Returns (padded, pad_x, pad_y)."""
    h, w = image_bgr.shape[:2]
    px, py = w // 2, h // 2
    return cv2.copyMakeBorder(image_bgr, py, py, px, px, cv2.BORDER_REPLICATE), px, py


def _central_face(faces: Faces, width: int, height: int) -> Faces:
    centres = (faces.boxes[:, :2] + faces.boxes[:, 2:]) / 2
    dist = np.linalg.norm(centres - [width / 2, height / 2], axis=1)
    return faces.subset(np.array([int(np.argmin(dist))]))


def _relative_geometry(faces: Faces, px: int, py: int, w: int, h: int) -> np.ndarray:
    """Box and keypoints of one face relative to the unpadded image, flattened to 16 numbers."""
    scale = np.array([w, h], np.float32)
    offset = np.array([px, py], np.float32)
    box = (faces.boxes[0].reshape(2, 2) - offset) / scale
    kps = (faces.keypoints[0] - offset) / scale
    return np.concatenate([box.ravel(), kps.ravel()])


def _worker_detect(args: tuple[list[str], str]) -> list[np.ndarray | None | str]:
    """Detect the central face of each image: relative geometry, None (no face) or 'unreadable'.

    Where the `kind` detector finds no face in the padded picture, the photo search of
    `agevision image` (`detect.StillFaceFinder`: the other model, enlarged, a lower
    confidence) tries: on UTKFace it finds 483 of the 497 faces the detector alone misses,
    which would otherwise get a guessed crop."""
    from agevision.detect import FaceDetector, StillFaceFinder

    paths, kind = args
    out: list[np.ndarray | None | str] = []
    with FaceDetector(kind, min_score=0.4) as detector, StillFaceFinder(kind, rescue=False) as still:
        for p in paths:
            image = cv2.imread(p, cv2.IMREAD_COLOR)
            if image is None:
                out.append("unreadable")
                continue
            padded, px, py = pad_for_detection(image)
            faces = detector.detect(padded)
            if len(faces) == 0:
                faces = still.find(padded)
            if len(faces) == 0:
                out.append(None)
                continue
            face = _central_face(faces, padded.shape[1], padded.shape[0])
            out.append(_relative_geometry(face, px, py, image.shape[1], image.shape[0]))
    return out


def detect_geometry(paths: list[Path], kind: str = "full", workers: int = 2, progress=None) -> list:
    """Per image: relative face geometry (16 floats), None if no face, or 'unreadable'."""
    chunks = [[str(p) for p in paths[i : i + 64]] for i in range(0, len(paths), 64)]
    results: list = []
    if workers <= 1 or len(chunks) == 1:
        for chunk in chunks:
            results.extend(_worker_detect((chunk, kind)))
            if progress:
                progress(len(chunk))
        return results
    with mp.get_context("spawn").Pool(workers) as pool:
        for part in pool.imap(_worker_detect, [(c, kind) for c in chunks]):
            results.extend(part)
            if progress:
                progress(len(part))
    return results


def _fallback_geometry(geoms: list) -> np.ndarray:
    """Median geometry of the detected faces, or the UTKFace medians if none was found."""
    found = [g for g in geoms if isinstance(g, np.ndarray)]
    if found:
        return np.median(np.stack(found), axis=0)
    return np.concatenate([DEFAULT_BOX, DEFAULT_KEYPOINTS.ravel()])


def crops_from_geometry(paths: list[Path], geoms: list, size: int, crop: CropGeometry = CropGeometry(),
                        fill: str = "replicate") -> CropSet:
    """Aligned `size`-pixel crops of `paths` from per-image geometry (see `detect_geometry`),
    the face placed in each as `crop` says, the crop filled past the picture as `fill` says
    (`align.FILLS`).

    Unreadable images are skipped with a warning (AgevisionError if none is readable).
    Images without a detected face get a fallback crop from the median geometry.
    """
    readable = np.array([not isinstance(g, str) for g in geoms])
    if not readable.any():
        raise AgevisionError(f"none of the {len(paths)} images could be read")
    if not readable.all():
        bad = [str(p) for p, ok in zip(paths, readable, strict=True) if not ok]
        warnings.warn(f"{len(bad)} unreadable image(s) skipped, e.g. {bad[0]}", stacklevel=2)
    fallback = _fallback_geometry(geoms)
    crops, found = [], []
    for p, g in zip(paths, geoms, strict=True):
        if isinstance(g, str):
            continue
        image = cv2.imread(str(p), cv2.IMREAD_COLOR)
        h, w = image.shape[:2]
        faces = geometry_to_faces(g if g is not None else fallback, w, h)
        crops.append(align.align_crops(image, faces, size, geometry=crop, fill=fill)[0])
        found.append(g is not None)
    return CropSet(np.stack(crops), np.array(found), readable)


def make_crops(paths: list[Path], size: int, kind: str = "full", workers: int = 2, progress=None,
               crop: CropGeometry = CropGeometry()) -> CropSet:
    """Aligned crops for each image in `paths` through detection and `align.align_crops`."""
    return crops_from_geometry(paths, detect_geometry(paths, kind, workers, progress), size, crop)


def _files_key(paths: list[Path], *extra: object) -> str:
    h = hashlib.sha1()
    h.update("|".join(str(e) for e in extra).encode())
    for p in paths:
        st = p.stat() if p.exists() else None
        h.update(f"{p.resolve()}|{st.st_size if st else -1}|{st.st_mtime_ns if st else -1}".encode())
    return h.hexdigest()[:16]


def _detector_version() -> str:
    """The face detector's version, part of every cache key: another MediaPipe finds other faces."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"mediapipe-{version('mediapipe')}"
    except PackageNotFoundError:
        return "mediapipe-unknown"


def cache_key(paths: list[Path], size: int, kind: str, crop: CropGeometry = CropGeometry(),
              fill: str = "replicate") -> str:
    """A key naming a crop cache: the files (name, size, mtime), crop size, detector, alignment,
    fill (named only when not the default, so that existing caches keep their keys)."""
    extra = () if fill == "replicate" else (fill,)
    return _files_key(paths, size, kind, crop.box_fraction, crop.center, "v5-still", _detector_version(), *extra)


def cached_geometry(paths: list[Path], cache_dir: Path, kind: str = "full", progress=None) -> list:
    """`detect_geometry`, stored under `cache_dir` and reused for the same files and detector."""
    file = Path(cache_dir) / f"geometry-{_files_key(paths, kind, 'v2-still', _detector_version())}.npz"
    if file.is_file():
        with np.load(file) as data:
            geom, status = data["geometry"], data["status"]
        return [g if s == 1 else (None if s == 0 else "unreadable") for g, s in zip(geom, status, strict=True)]
    geoms = detect_geometry(paths, kind, progress=progress)
    status = np.array([1 if isinstance(g, np.ndarray) else (0 if g is None else -1) for g in geoms], np.int8)
    geom = np.stack([g if isinstance(g, np.ndarray) else np.zeros(16, np.float32) for g in geoms])
    _save_npz(file, geometry=geom, status=status)
    return geoms


def cached_crops(paths: list[Path], size: int, cache_dir: Path, kind: str = "full", progress=None,
                 crop: CropGeometry = CropGeometry(), fill: str = "replicate") -> CropSet:
    """`make_crops`, stored under `cache_dir` and reused when the same images are asked again.

    The detected geometry is cached on its own, so crops at another size or alignment only
    re-warp the images, without detecting again.
    """
    cache_dir = Path(cache_dir)
    file = cache_dir / f"crops-{cache_key(paths, size, kind, crop, fill)}.npz"
    if file.is_file():
        with np.load(file) as data:
            return CropSet(data["crops"], data["found"], data["readable"])
    result = crops_from_geometry(paths, cached_geometry(paths, cache_dir, kind, progress), size, crop, fill)
    _save_npz(file, crops=result.crops, found=result.found, readable=result.readable)
    return result


def _save_npz(file: Path, **arrays: np.ndarray) -> None:
    """Arrays into an .npz cache file, through a temporary file (`files.AtomicFile`)."""
    from agevision.files import AtomicFile

    file.parent.mkdir(parents=True, exist_ok=True)
    with AtomicFile(file) as out:
        with open(out.path, "wb") as f:
            np.savez(f, **arrays)
        out.commit()
