import cv2
import numpy as np
import pytest

from agevision.align import align_crops, crop_transforms
from agevision.detect import FaceDetector
from agevision.errors import AgevisionError
from agevision.faces import LEFT_EYE, RIGHT_EYE
from agevision.model.card import CropGeometry
from agevision.training.crops import make_crops, pad_for_detection
from tests.conftest import pick

SIZE = 96


def _eyes_in_crop(faces, size):
    mat = crop_transforms(faces, size)[0]
    eyes = faces.keypoints[0, [RIGHT_EYE, LEFT_EYE]]
    return eyes @ mat[:, :2].T + mat[:, 2]


@pytest.fixture(scope="module")
def face_image(utkface):
    image = cv2.imread(str(pick(utkface, "30_1_0_")[0]))
    padded, _, _ = pad_for_detection(image)
    return padded


@pytest.mark.parametrize("kind", ["short", "full"])
def test_detector_finds_the_padded_utkface_face(face_image, kind):
    with FaceDetector(kind) as det:
        faces = det.detect(face_image)
    assert len(faces) == 1
    h, w = face_image.shape[:2]
    x0, y0, x1, y1 = faces.boxes[0]
    assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
    assert abs((x0 + x1) / 2 - w / 2) < 0.1 * w and abs((y0 + y1) / 2 - h / 2) < 0.1 * h  # the face is centred
    assert 0.3 * w < x1 - x0 < 0.7 * w  # and about as large as the unpadded image
    assert faces.keypoints[0, RIGHT_EYE, 0] < faces.keypoints[0, LEFT_EYE, 0]  # subject's right eye is image-left


def test_detector_rejects_use_after_close(face_image):
    det = FaceDetector("short")
    det.close()
    det.close()
    with pytest.raises(AgevisionError):
        det.detect(face_image)


def test_alignment_levels_the_eyes_of_a_rotated_face(face_image):
    h, w = face_image.shape[:2]
    rot = cv2.warpAffine(face_image, cv2.getRotationMatrix2D((w / 2, h / 2), 25, 1.0), (w, h),
                         borderMode=cv2.BORDER_REPLICATE)
    with FaceDetector("full") as det:
        upright, tilted = det.detect(face_image), det.detect(rot)
    assert len(tilted) == 1
    for faces in (upright, tilted):
        (rx, ry), (lx, ly) = _eyes_in_crop(faces, SIZE)
        assert abs(ry - ly) < 0.03 * SIZE  # eyes level
        assert abs((rx + lx) / 2 - SIZE / 2) < 0.06 * SIZE  # centred
        assert 0.2 * SIZE < lx - rx < 0.4 * SIZE  # fixed scale
    a = align_crops(face_image, upright, SIZE)[0].astype(float)
    b = align_crops(rot, tilted, SIZE)[0].astype(float)
    assert np.abs(a - b).mean() < 20  # the same face, whichever way the frame was turned


def test_crop_of_face_cut_by_frame_edge_is_full_size(face_image):
    with FaceDetector("full") as det:
        faces = det.detect(face_image)
    x_mid = int((faces.boxes[0, 0] + faces.boxes[0, 2]) / 2)
    shifted = faces.subset(np.array([0]))
    shifted.boxes = shifted.boxes - [x_mid, 0, x_mid, 0]
    shifted.keypoints = shifted.keypoints - [x_mid, 0]
    crops = align_crops(face_image[:, x_mid:], shifted, SIZE)
    assert crops.shape == (1, SIZE, SIZE, 3) and crops.dtype == np.uint8


def test_make_crops_counts_fallbacks_and_unreadable(tmp_path, utkface):
    good = pick(utkface, "45_0_0_", 2)
    blank = tmp_path / "40_0_0_blank.jpg"
    cv2.imwrite(str(blank), np.full((200, 200, 3), 127, np.uint8))
    broken = tmp_path / "41_0_0_broken.jpg"
    broken.write_bytes(b"not a jpeg")
    with pytest.warns(UserWarning, match="1 unreadable"):
        result = make_crops([*good, blank, broken], SIZE, workers=1)
    assert result.crops.shape == (3, SIZE, SIZE, 3)
    assert result.found.tolist() == [True, True, False]
    assert result.readable.tolist() == [True, True, True, False]


def _face_at(cx, top, width):
    from agevision.faces import Faces

    box = np.array([[cx - width / 2, top, cx + width / 2, top + width]], np.float32)
    kps = np.zeros((1, 6, 2), np.float32)
    kps[0, RIGHT_EYE] = [cx - 0.2 * width, top + 0.35 * width]
    kps[0, LEFT_EYE] = [cx + 0.2 * width, top + 0.37 * width]
    return Faces(boxes=box, keypoints=kps, scores=np.ones(1, np.float32))


def test_large_face_crop_is_anti_aliased():
    # One-pixel stripes shrunk 4x must average to grey, not alias into coarse stripes.
    frame = np.zeros((800, 800, 3), np.uint8)
    frame[:, ::2] = 255
    crop = align_crops(frame, _face_at(400, 200, 280), 112)[0].astype(float)
    assert abs(crop.mean() - 127.5) < 3
    assert crop[20:-20, 20:-20].std() < 3
    plain = cv2.warpAffine(frame, crop_transforms(_face_at(400, 200, 280), 112)[0], (112, 112))
    assert plain[20:-20, 20:-20].std() > 30  # what a plain bilinear warp gives


def test_shrunk_crop_lands_where_the_plain_warp_does():
    # On a smooth image, shrinking first must not move the crop; also near the frame edge.
    yy, xx = np.mgrid[0:900, 0:1200].astype(np.float64)
    frame = np.stack([127 + 120 * np.sin(xx / 60), 127 + 120 * np.cos(yy / 45), 127 + 100 * np.sin((xx + yy) / 80)], -1)
    frame = frame.astype(np.uint8)
    for face in (_face_at(600, 250, 450), _face_at(150, 300, 400)):
        mat = crop_transforms(face, 112)[0]
        plain = cv2.warpAffine(frame, mat, (112, 112), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        diff = np.abs(align_crops(frame, face, 112)[0].astype(float) - plain[:, :, ::-1])
        assert diff.mean() < 1.0


def test_tiles_cover_large_frames_with_overlap():
    from agevision.detect import tiles

    assert tiles(640, 360, 768) == [] and tiles(1920, 1080, 0) == []
    grid = tiles(1920, 1080, 768)
    assert len(grid) == 6  # 3 x 2
    covered = np.zeros((1080, 1920), bool)
    for x0, y0, x1, y1 in grid:
        assert x1 - x0 <= 1.1 * 768 and y1 - y0 <= 1.1 * 768
        covered[y0:y1, x0:x1] = True
    assert covered.all()
    assert grid[1][0] < grid[0][2] - 100  # neighbours overlap


def _frame(name, index=0):
    from agevision.sources import VideoSource
    from tests.conftest import VIDEOS

    with VideoSource(VIDEOS / name) as src:
        for n, frame in enumerate(src):
            if n == index:
                return frame


def test_tiled_detection_finds_small_faces_in_a_street_scene():
    frame = _frame("facenet-pytorch__video.mp4", 20)  # 1080p, 7 people 60-130 px wide
    with FaceDetector("full") as whole, FaceDetector("full", tile_size=768) as tiled:
        few, many = whole.detect(frame), tiled.detect(frame)
    assert len(many) >= 6 and len(many) >= len(few) + 4
    from agevision.faces import iou

    assert (iou(few.boxes, many.boxes).max(axis=1) > 0.9).all()  # whole-frame finds are kept as they were
    assert (iou(many.boxes, many.boxes) - np.eye(len(many)) <= 0.3).all()  # no face twice


def test_tiles_add_no_faces_to_a_talking_head():
    frame = _frame("video-retalking__face_2.mp4")  # 844 x 844: tiled, one large face
    with FaceDetector("full", tile_size=768) as tiled:
        assert len(tiled.detect(frame)) == 1


def test_mediapipe_modules_detection_does_not_use_load_on_first_use():
    """Making a detector leaves mediapipe's drawing helpers (matplotlib) and Tasks API unrun;
    a program that reads them still gets them whole."""
    code = (
        "import sys\n"
        "from agevision.detect import FaceDetector\n"
        "FaceDetector('short').close()\n"
        "print('matplotlib' in sys.modules, 'mediapipe.tasks.python.vision' in sys.modules)\n"
        "import mediapipe as mp\n"
        "print(mp.solutions.drawing_utils.DrawingSpec().thickness, 'matplotlib.pyplot' in sys.modules)\n"
        "from mediapipe.python.solutions.drawing_styles import *\n"  # a star import runs it too
        "print(callable(get_default_hand_landmarks_style))\n"
        "print(mp.tasks.vision.FaceDetector.__name__, mp.tasks.BaseOptions.__name__)\n"
        "from mediapipe.tasks.python.vision import FaceDetectorOptions\n"
        "print(FaceDetectorOptions.__name__)\n"
    )
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("\n")[:5] == ["False False", "2 True", "True", "FaceDetector BaseOptions",
                                          "FaceDetectorOptions"]


def test_still_photos_get_the_faces_blazeface_missed_beside_those_it_found():
    """The older woman laughing beside the Obamas (Hamilton clip, frame 250): BlazeFace finds the
    three faces around her; YuNet proposes her and BlazeFace confirms her in a close-up."""
    from agevision.detect import StillFaceFinder

    frame = _frame("face_recognition__short_hamilton_clip.mp4", 250)
    with StillFaceFinder("full", rescue=False) as plain, StillFaceFinder("full") as still:
        before, after = plain.find(frame), still.find(frame)
    centres = (after.boxes[:, :2] + after.boxes[:, 2:]) / 2
    her = np.linalg.norm(centres - [205, 130], axis=1) < 25
    assert len(before) == 3 and len(after) == 4 and her.sum() == 1
    assert not (np.linalg.norm((before.boxes[:, :2] + before.boxes[:, 2:]) / 2 - [205, 130], axis=1) < 25).any()
    b = after.boxes[her][0]
    assert 60 < b[2] - b[0] < 110  # a face-sized box, with BlazeFace's keypoints inside it
    k = after.keypoints[her][0]
    assert ((k[:4, 0] > b[0]) & (k[:4, 0] < b[2]) & (k[:4, 1] > b[1]) & (k[:4, 1] < b[3])).all()


def test_the_still_search_adds_no_face_to_a_talking_head():
    from agevision.detect import StillFaceFinder

    with StillFaceFinder("full") as still:
        for clip in ("LivePortrait__driving_d0.mp4", "SadTalker__WDA_KatieHill_000.mp4", "video-retalking__face_5.mp4"):
            assert len(still.find(_frame(clip, 20))) == 1, clip


def test_a_picture_too_long_for_mediapipe_is_searched_shrunk(face_image):
    """MediaPipe's short-range graph aborts the process on a picture 40,000 pixels long; such a
    picture is searched shrunk as a whole (no abort), and its face is found in the tiles."""
    face = cv2.resize(face_image, (600, 600))
    strip = np.zeros((600, 40000, 3), np.uint8)
    strip[:, 30000:30600] = face
    with FaceDetector("short", tile_size=768) as det:
        faces = det.detect(strip)
    assert len(faces) == 1
    x0, y0, x1, y1 = faces.boxes[0]
    assert 30000 < x0 < x1 < 30600 and 0 <= y0 < y1 <= 600


@pytest.mark.parametrize("shape", [(2, 9000, 3), (9000, 3, 3), (1, 1, 3)])
def test_the_still_search_finds_nothing_in_a_strip_and_says_so(shape):
    """YuNet gives NaN boxes on a strip a pixel or two high; the still search skips it."""
    from agevision.detect import StillFaceFinder

    with StillFaceFinder("full", tile_size=768) as still:
        assert len(still.find(np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8))) == 0


def _picture_share(geometry, utkface, n=6):
    """Share of each crop's pixels that lie inside the UTKFace picture it was cut from
    (the rest is the picture's edge replicated), for the first n pictures of 30-year-olds."""
    from agevision.align import geometry_to_faces
    from agevision.training.crops import detect_geometry

    paths = pick(utkface, "30_", n)
    shares = []
    for path, geom in zip(paths, detect_geometry(paths, workers=1), strict=True):
        if geom is None:  # no face found: training gives it a fallback crop
            continue
        h, w = cv2.imread(str(path)).shape[:2]
        mat = crop_transforms(geometry_to_faces(geom, w, h), SIZE, geometry)[0]
        inside = cv2.warpAffine(np.ones((h, w), np.uint8), mat, (SIZE, SIZE), borderValue=0)
        shares.append(inside.mean())
    return np.array(shares)


def test_a_utkface_picture_fills_the_tight_crop_but_not_the_wide_one(utkface):
    from agevision.align import TIGHT
    from agevision.model.card import CropGeometry

    tight, wide = _picture_share(TIGHT, utkface), _picture_share(CropGeometry(), utkface)
    assert len(tight) >= 4 and (tight > 0.85).all(), tight  # a few pixels of edge at most
    assert (wide < 0.5).all(), wide  # most of the old crop was the picture's edge smeared outwards


def test_the_crop_geometry_places_the_box(face_image):
    from agevision.align import TIGHT

    with FaceDetector("full") as det:
        faces = det.detect(face_image)
    for geometry in (TIGHT, CropGeometry(0.62, (0.5, 0.47)), CropGeometry(0.8, (0.4, 0.6))):
        mat = crop_transforms(faces, SIZE, geometry)[0]
        x0, y0, x1, y1 = faces.boxes[0]
        cx, cy = mat[:, :2] @ [(x0 + x1) / 2, (y0 + y1) / 2] + mat[:, 2]
        assert abs(cx - geometry.center[0] * SIZE) < 1e-3 and abs(cy - geometry.center[1] * SIZE) < 1e-3
        scale = np.sqrt(abs(np.linalg.det(mat[:, :2])))
        assert abs(scale * (x1 - x0) - geometry.box_fraction * SIZE) < 1e-3


def test_a_mirrored_crop_differs_from_the_smeared_one_only_past_the_picture(utkface):
    from agevision.align import geometry_to_faces
    from agevision.training.crops import cache_key, crops_from_geometry, detect_geometry

    paths = pick(utkface, "30_", 2)
    geoms = detect_geometry(paths, workers=1)
    smeared = crops_from_geometry(paths, geoms, SIZE).crops
    mirrored = crops_from_geometry(paths, geoms, SIZE, fill="mirror").crops
    for path, geom, a, b in zip(paths, geoms, smeared, mirrored, strict=True):
        if geom is None:  # a fallback crop: its geometry is the median's
            continue
        h, w = cv2.imread(str(path)).shape[:2]
        mat = crop_transforms(geometry_to_faces(geom, w, h), SIZE, CropGeometry())[0]
        inside = cv2.warpAffine(np.ones((h, w), np.uint8), mat, (SIZE, SIZE), borderValue=0).astype(bool)
        inside = cv2.erode(inside.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)  # away from the edge
        assert np.array_equal(a[inside], b[inside])
        outside = ~cv2.dilate(inside.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
        assert outside.mean() > 0.3  # the wide crop is mostly past the picture
        assert np.abs(a[outside].astype(int) - b[outside]).mean() > 5  # streaks there, not the mirrored picture
    # the smeared crops keep the cache key they had; the mirrored ones get their own
    assert cache_key(paths, SIZE, "full") == cache_key(paths, SIZE, "full", CropGeometry(), "replicate")
    assert cache_key(paths, SIZE, "full", CropGeometry(), "mirror") != cache_key(paths, SIZE, "full")
