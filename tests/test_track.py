"""Tracker (motion, gaps), smoother (outliers), overlap suppression and face quality."""

import cv2
import numpy as np
import pytest

from agevision.detect import FaceDetector, suppress_overlaps
from agevision.faces import Faces
from agevision.quality import face_quality, frontalness
from agevision.smooth import Smoother
from agevision.sources import VideoSource
from agevision.track import Tracker
from tests.conftest import VIDEOS


def _face(box, age=30, p_female=0.2, keypoints=None):
    probs = np.full((1, 101), 0.1 / 101, np.float32)
    probs[0, age] += 0.9
    kps = np.zeros((1, 6, 2), np.float32) if keypoints is None else np.asarray([keypoints], np.float32)
    f = Faces(boxes=np.array([box], np.float32), keypoints=kps, scores=np.array([0.9], np.float32))
    f.age, f.age_probs, f.p_female = np.array([age], np.float32), probs, np.array([p_female], np.float32)
    return f


def test_tracker_follows_a_fast_face_and_bridges_a_gap():
    tracker = Tracker()
    ids = []
    for k in range(8):  # moving 45 px (0.45 box widths) a frame
        ids.append(int(tracker.update(_face([100 + 45 * k, 100, 200 + 45 * k, 200]))[0].track_ids[0]))
    for _ in range(10):  # the detector misses the face for a third of a second while it moves on
        tracker.update(Faces())
    # 495 px from where it was last seen: found again only by predicting its motion
    ids.append(int(tracker.update(_face([910, 100, 1010, 200]))[0].track_ids[0]))
    assert ids == [0] * 9
    # someone else, far away and at another size, is a new person
    assert int(tracker.update(_face([100, 500, 300, 700]))[0].track_ids[0]) == 1


def test_smoother_is_not_dragged_by_a_few_odd_frames():
    tracker, smoother = Tracker(), Smoother(np.arange(101))
    shown = []
    for k in range(40):
        f, ended = tracker.update(_face([100, 100, 200, 200], age=70 if 30 <= k < 34 else 30))
        f = smoother.update(f, ended)
        shown.append(float(f.age[0]))
    assert abs(shown[33] - shown[29]) < 1.5, shown  # four frames read 40 years off
    assert abs(shown[-1] - shown[29]) < 1.5


def test_tracker_keeps_two_crossing_faces_apart():
    # A walks right and B left, behind A: B is hidden while their boxes are under a box
    # width apart (9 frames); both keep their ids through the crossing
    tracker = Tracker()
    ids_a, ids_b = set(), set()
    for k in range(45):
        ax, bx = 100 + 12 * k, 628 - 12 * k
        boxes = [[ax, 200, ax + 100, 300]] + ([[bx, 205, bx + 100, 305]] if abs(ax - bx) >= 100 else [])
        f = Faces(boxes=np.array(boxes, np.float32), keypoints=np.zeros((len(boxes), 6, 2), np.float32),
                  scores=np.full(len(boxes), 0.9, np.float32))
        f, _ = tracker.update(f)
        ids_a.add(int(f.track_ids[0]))
        ids_b.update(int(i) for i in f.track_ids[1:])
    assert ids_a == {0} and ids_b == {1}


def _read(smoother, tracker, ages, start_frame, every=3, p_female=0.2):
    """Feed one face reading `ages` on every `every`-th frame; returns the shown ages and labels."""
    shown = []
    for k, age in enumerate(ages):
        f, ended = tracker.update(_face([100, 100, 200, 200], age=age, p_female=p_female))
        f = smoother.update(f, ended, frame=start_frame + every * k)
        shown.append((float(f.age[0]), str(f.gender[0])))
    return shown


def test_a_new_track_shows_no_label_until_its_second_reading():
    # street clip, frame 60: one detection twice the face's size (the face behind in its crop)
    # read 64 for a man of about 30, and as a new track of one reading it was shown as it was
    shown = _read(Smoother(np.arange(101)), Tracker(), [64, 30, 30], 0)
    assert np.isnan(shown[0][0]) and shown[0][1] == "?"
    assert not np.isnan(shown[1][0]) and shown[1][1] == "M"
    at_once = _read(Smoother(np.arange(101), min_readings=1), Tracker(), [64], 0)[0]
    assert at_once[0] > 60 and at_once[1] == "M"
    tracker, smoother = Tracker(), Smoother(np.arange(101))  # unreadable frames are not readings
    f, _ = tracker.update(_face([100, 100, 200, 200], age=30))
    f.age[:] = np.nan
    assert np.isnan(smoother.update(f, frame=0).age[0])
    assert np.isnan(_read(smoother, tracker, [30], 3)[0][0]) and not np.isnan(_read(smoother, tracker, [30], 6)[0][0])


def test_smoother_holds_through_a_confidently_wrong_second():
    # d12: a man reads 45, but 11-14 while his mouth is wide open, sure of it, for half a second at a time
    tracker, smoother = Tracker(), Smoother(np.arange(101))
    before = _read(smoother, tracker, [45] * 30, 0)[-1][0]
    during = _read(smoother, tracker, [12] * 10 + [45] * 3 + [12] * 10, 90)  # 30 frames twice, a break between
    assert all(abs(age - before) < 1.5 for age, _ in during), (before, during)


def test_smoother_restarts_when_the_track_shows_someone_else():
    # the tracker swapped two people: a 60-year-old man's track now holds a 20-year-old woman
    tracker, smoother = Tracker(), Smoother(np.arange(101))
    _read(smoother, tracker, [60] * 40, 0)
    after = _read(smoother, tracker, [20] * 30, 120, p_female=0.9)
    alone = _read(Smoother(np.arange(101)), Tracker(), [20, 20], 0)[-1][0]  # what a new track of her shows
    first = next(k for k, (age, _) in enumerate(after) if abs(age - alone) < 2)
    assert 3 * first <= smoother.restart_frames + 3, after  # within about 2 s at 30 fps
    assert after[-1] == (alone, "F")


def test_overlapping_double_detections_are_suppressed():
    boxes = np.array([[0, 0, 100, 100], [30, 0, 130, 100], [300, 0, 400, 100]], np.float32)
    keep = suppress_overlaps(boxes, np.array([0.6, 0.9, 0.8], np.float32), 0.3)
    assert keep.tolist() == [1, 2]


def test_quality_prefers_a_frontal_sharp_face():
    eyes_nose = [[40, 50], [80, 50], [60, 70], [60, 85], [20, 55], [100, 55]]
    turned = [[40, 50], [80, 50], [78, 70], [75, 85], [20, 55], [100, 55]]
    assert frontalness(_face([0, 0, 120, 120], keypoints=eyes_nose))[0] > 0.95
    assert frontalness(_face([0, 0, 120, 120], keypoints=turned))[0] < 0.3
    with VideoSource(VIDEOS / "LivePortrait__driving_d0.mp4") as src, FaceDetector("full") as det:
        frame = next(iter(src))
        faces = det.detect(frame)
    q = face_quality(frame, faces)[0]
    blurred = face_quality(cv2.GaussianBlur(frame, (0, 0), 4), faces)[0]
    assert 0.3 < q <= 1 and blurred < q


def test_coast_carries_faces_along_their_tracks():
    tracker = Tracker()
    for k in range(8):  # moving 10 px right per frame
        last, _ = tracker.update(_face([100 + 10 * k, 100, 200 + 10 * k, 200], keypoints=[[140 + 10 * k, 130]] * 6))
    coasted = tracker.coast(last)
    assert np.allclose(coasted.boxes, [[180, 100, 280, 200]], atol=0.5)  # predicted one frame on
    assert np.allclose(coasted.keypoints[0, 0], [220, 130], atol=0.5)  # keypoints move with the box
    assert coasted.track_ids[0] == last.track_ids[0] and coasted.age[0] == last.age[0]
    measured = tracker.coast(coasted, np.array([[195, 110, 295, 210]], np.float32))
    assert np.allclose(measured.boxes, [[195, 110, 295, 210]])  # a measured box wins over the prediction
    # unknown (NaN): the track's prediction, three frames after its last detection
    assert np.allclose(tracker.coast(measured, np.full((1, 4), np.nan)).boxes, [[200, 100, 300, 200]], atol=0.5)
    # the next detection continues the same track
    assert tracker.update(_face([210, 100, 310, 200]))[0].track_ids[0] == last.track_ids[0]


def test_face_flow_measures_how_a_real_face_moved():
    from agevision.motion import FaceFlow

    with VideoSource(VIDEOS / "LivePortrait__driving_d3.mp4") as src:
        frame = next(iter(src))
    with FaceDetector("full") as det:
        faces = det.detect(frame)
    assert len(faces) == 1
    flow = FaceFlow()
    flow.remember(frame, faces)
    shifted = cv2.warpAffine(frame, np.float32([[1, 0, 9], [0, 1, -6]]), frame.shape[1::-1],
                             borderMode=cv2.BORDER_REPLICATE)
    moved, lost = flow.follow(shifted, faces)
    assert np.allclose(moved - faces.boxes, [[9, -6, 9, -6]], atol=1.0) and not lost.any()
    boxes, lost = flow.follow(shifted, Faces())
    assert boxes.shape == (0, 4) and lost.shape == (0,)
    flat = np.full_like(frame, 128)  # nothing to follow: unknown, not a guess, and lost
    boxes, lost = flow.follow(flat, faces)
    assert np.isnan(boxes).all() and lost.all()


def test_shot_cuts_found_where_the_scene_changes_and_not_in_a_shaking_head():
    from agevision.shots import ShotCuts

    def cuts(name):
        shots = ShotCuts()
        with VideoSource(VIDEOS / name) as src:
            return [n for n, frame in enumerate(src) if shots.is_cut(frame)]

    assert cuts("face_recognition__short_hamilton_clip.mp4") == [20, 82, 211]  # looked at: three new shots
    assert cuts("LivePortrait__driving_d12.mp4") == []  # a head shaking hard, one shot


def test_agreement_is_the_same_for_the_same_age_difference_at_any_age_temperature():
    """Readings made wider by a higher age temperature overlap more; the smoother's power
    moves with the temperature so that a reading 12 years off a track counts as much."""
    from agevision.model.decode import decode
    from agevision.smooth import _overlap, _Sums

    bins = np.arange(101, dtype=np.float64)
    logits = -((bins[None, :] - np.array([[40.0], [52.0]])) ** 2) / (2 * 5.0**2)
    agreements = []
    for t in (0.7764, 1.0092, 1.6):
        probs = decode(logits, np.zeros(2), t, 1.0).age_probs.astype(np.float64)
        power = Smoother(bins, age_temperature=t).agree_power
        agreements.append(_overlap(probs[1], _Sums(probs[0], 0.0, 1.0)) ** power)
    assert Smoother(bins, age_temperature=0.7764).agree_power == pytest.approx(4.0)
    assert max(agreements) / min(agreements) < 1.05, agreements
