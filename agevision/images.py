"""`agevision image`: still images (or ready-cropped faces) to labels, annotated copies and records."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from agevision.errors import AgevisionError
from agevision.faces import Faces

MAX_PIXELS = 100_000_000  # larger pictures are refused before decoding (a decompression bomb)


def picture_size(path) -> tuple[int, int] | None:
    """(width, height) from an image file's header (a path or a binary file object), without
    decoding it; None if the format is not known to Pillow."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None  # Pillow's own bomb check raises; agevision checks the size itself
    try:
        with Image.open(path) as im:
            return im.size
    except Exception:  # noqa: BLE001 - any file Pillow cannot identify: OpenCV decides, under its pixel cap
        return None


def read_bgr(path: Path) -> np.ndarray:
    """Read an image as BGR uint8 (H, W, 3), converting grayscale, 4-channel and 16-bit images,
    turned upright as its EXIF orientation says (phone photos).

    Raises AgevisionError if the file is missing, not a readable image, or larger than
    MAX_PIXELS (checked from its header, before anything is decoded).
    """
    path = Path(path)
    if not path.is_file():
        raise AgevisionError(f"no such image: {path}")
    _check_size(picture_size(path), str(path))
    # not IMREAD_UNCHANGED: that one ignores the EXIF orientation
    try:
        image = cv2.imread(str(path), cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH)
    except cv2.error:  # OpenCV's own checks (its pixel cap among them)
        image = None
    return _as_bgr(image, f"{path} is not a readable image")


def decode_bgr(data: bytes, name: str = "the image") -> np.ndarray:
    """`read_bgr` of an image held in memory (an upload): the same checks, the same result."""
    import io

    _check_size(picture_size(io.BytesIO(data)), name)
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH)
    except cv2.error:
        image = None
    return _as_bgr(image, f"{name} is not a readable image")


def _check_size(size: tuple[int, int] | None, name: str) -> None:
    if size is not None and size[0] * size[1] > MAX_PIXELS:
        raise AgevisionError(f"{name} is {size[0]}x{size[1]} pixels, more than the {MAX_PIXELS // 1_000_000} million "
                             "agevision reads (shrink it first)")


def _as_bgr(image: np.ndarray | None, why: str) -> np.ndarray:
    if image is None or image.size == 0:
        raise AgevisionError(why)
    if image.dtype != np.uint8:
        image = cv2.convertScaleAbs(image, alpha=255.0 / max(float(image.max()), 1.0))
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    return image  # IMREAD_ANYCOLOR gives 3 channels for colour images, alpha dropped


def crop_face(image_bgr: np.ndarray) -> Faces:
    """The face geometry of an image that is already a tight face crop (UTKFace framing)."""
    from agevision.align import DEFAULT_BOX, DEFAULT_KEYPOINTS, geometry_to_faces

    h, w = image_bgr.shape[:2]
    return geometry_to_faces(np.concatenate([DEFAULT_BOX, DEFAULT_KEYPOINTS.ravel()]), w, h)


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def expand_inputs(paths: list[Path]) -> list[Path]:
    """The image files that `paths` name: files as they are, folders as the images directly
    inside them (sorted), and glob patterns (`photos/*.jpg`, for shells that do not expand
    them) as the files they match. A name that is none of these is kept, to be reported
    as missing. Each file once, in order."""
    import glob

    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        elif not p.exists() and glob.has_magic(str(p)):
            out += sorted(Path(m) for m in glob.glob(str(p)) if Path(m).is_file())
        else:
            out.append(p)
    seen: set[str] = set()
    unique = []
    for p in out:
        key = str(p.resolve()) if p.exists() else str(p)
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def _output_name(path: Path, taken: set[str]) -> str:
    """A file name for the annotated copy of `path` not yet in `taken` (added): `name.png`,
    else `name-2.png`, `name-3.png`... so that two inputs with one name do not overwrite."""
    name, k = f"{path.stem}.png", 1
    while name in taken:
        k += 1
        name = f"{path.stem}-{k}.png"
    taken.add(name)
    return name


def _names_a_picture(path: Path) -> bool:
    """Whether `--out` names a picture file (an image suffix, and not a folder that exists)."""
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.is_dir()


def annotate_images(paths: list[Path], out_dir: Path | None, json_path: Path | None, crops: bool, detector: str,
                    min_face: int, weights: Path | None, device: str | None, console, tile_size: int = 0,
                    backend: str = "auto") -> int:
    """Estimate every face of every image; print a line per face; write copies/records.

    paths: files, folders or glob patterns (see `expand_inputs`). backend: see
    `model.estimator.make_runner`. tile_size: see
    `detect.FaceDetector`. Annotated copies go into `out_dir` (made when the first is
    written) as PNGs named after their inputs; an `out_dir` named like a picture
    (`annotated.jpg`, not an existing folder) is the one input's copy itself, in that format.
    Records go into `json_path`, written only if the run finds a face.

    Returns the number of faces. Raises AgevisionError when no image could be read or no
    face was found at all (nothing is then left behind); single bad files are reported and
    skipped.
    """
    from agevision.detect import StillFaceFinder
    from agevision.files import check_folder_writable, check_writable, write_atomic
    from agevision.quality import assess
    from agevision.records import face_records
    from agevision.render import Renderer, face_label
    from agevision.sinks import JsonlWriter

    files = expand_inputs(paths) if out_dir is not None and _names_a_picture(out_dir) else None
    out_file = None
    if files is not None:  # `--out annotated.png`: one input's copy, in the format its name says
        if len(files) != 1:
            raise AgevisionError(f"--out {out_dir} names a picture, but {len(files)} images were given: give a "
                                 f"folder for their annotated copies")
        out_file, out_dir = check_writable(out_dir), None
    if out_dir is not None:
        if out_dir.exists() and not out_dir.is_dir():
            raise AgevisionError(f"--out {out_dir} is a file, not a folder")
        check_folder_writable(out_dir, "--out")
    if json_path is not None:
        check_writable(json_path)
    files = expand_inputs(paths) if files is None else files
    if not files:
        raise AgevisionError(f"no images in {', '.join(str(p) for p in paths)}")
    first = read_bgr(files[0]) if len(files) == 1 else None  # the one input's error before the model loads
    from agevision.model.estimator import Estimator  # torch: after the inputs are known to be there

    estimator = Estimator(weights, device, backend=backend)
    jw = JsonlWriter(json_path) if json_path else None
    renderer = Renderer(show_hud=False)
    total = readable = 0
    made_dir = out_dir is not None and not out_dir.exists()
    written: list[Path] = []
    names: set[str] = set()
    detector_cm = StillFaceFinder(detector, tile_size=tile_size) if not crops else None
    try:
        for path in files:
            try:
                image = first if first is not None else read_bgr(path)
            except AgevisionError as err:
                if len(files) == 1:  # the one input: its own reason is the error line
                    raise
                console.print(f"[red]skipped:[/] {err}")
                continue
            readable += 1
            if crops:
                faces = crop_face(image)
            else:
                faces = detector_cm.find(image)
                faces.quality, faces.readable = assess(image, faces, min_face)
            faces = estimator.estimate(image, faces)
            faces.track_ids = np.arange(len(faces))
            if len(faces) == 0 and len(files) > 1:  # with one input, the error line says it
                console.print(f"{path}: no face found")
            for i in range(len(faces)):
                p = "" if np.isnan(faces.p_female[i]) else f"  P(female) {faces.p_female[i]:.2f}"
                console.print(f"{path}: face {i + 1}: {face_label(faces, i)}{p}")
            total += len(faces)
            if jw is not None:
                jw.write(face_records(faces, 0, 0.0, source=str(path)))
            if (out_dir is not None or out_file is not None) and len(faces):
                target = out_file
                if target is None:
                    out_dir.mkdir(parents=True, exist_ok=True)
                    target = out_dir / _output_name(path, names)
                ok, encoded = cv2.imencode(target.suffix.lower(), renderer.draw(image.copy(), faces))
                if not ok:
                    raise AgevisionError(f"cannot encode the annotated copy of {path} as {target.suffix}")
                written.append(write_atomic(target, encoded.tobytes()))
        if readable == 0:
            raise AgevisionError("none of the images could be read")
        if total == 0:
            raise AgevisionError(f"no face found in {files[0]}" if len(files) == 1 else "no face found in any image")
        if jw is not None:
            jw.close()
            jw = None
    except BaseException:
        for f in written:  # a failed run leaves nothing behind
            f.unlink(missing_ok=True)
        if made_dir and out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()
        raise
    finally:
        if jw is not None:
            jw.discard()
        if detector_cm is not None:
            detector_cm.close()
    return total
