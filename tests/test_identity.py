"""Who is who: identity vectors, tracks grouped into people, and the people the commands count."""

import csv
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from agevision.cli import app
from agevision.identity import (
    MAX_TRIES,
    SAME_PERSON,
    TEMPLATE,
    FaceEmbedder,
    TrackIdentities,
    group_tracks,
    similarity,
    unit,
)
from agevision.people import summarize
from tests.conftest import VIDEOS

runner = CliRunner()


def _vector(seed: int, noise: float = 0.0, base: int | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = np.random.default_rng(base if base is not None else seed).normal(size=128)
    return unit(v + noise * rng.normal(size=128))


def test_tracks_of_one_face_are_one_person_unless_seen_at_once():
    a1, a2, b = _vector(1, 0.3, base=0), _vector(2, 0.3, base=0), _vector(3)
    assert a1 @ a2 > SAME_PERSON > a1 @ b
    # a, then b, then a again: two people, the first with two tracks
    assert group_tracks({0: a1, 1: b, 2: a2}, {0: {0, 3}, 1: {6, 9}, 2: {12}}) == {0: 1, 1: 2, 2: 1}
    # the same two faces on screen together are two people however alike
    assert group_tracks({0: a1, 2: a2}, {0: {0, 3, 6}, 2: {6, 9}}) == {0: 1, 2: 2}
    # overlapping spans are fine when no frame has both (a track the detector dropped for a moment)
    assert group_tracks({0: a1, 2: a2}, {0: {0, 3, 9}, 2: {6}}) == {0: 1, 2: 1}
    assert group_tracks({}, {}) == {}


def test_a_group_never_takes_a_track_that_clashes_with_any_of_its_tracks():
    a1, a2, a3 = (_vector(k, 0.2, base=0) for k in (1, 2, 3))
    people = group_tracks({0: a1, 1: a2, 2: a3}, {0: {0}, 1: {5}, 2: {0, 5}})
    assert people[0] != people[2] and people[1] != people[2]


def test_person_ids_count_from_one_by_first_sighting():
    vs = {7: _vector(1), 3: _vector(2), 5: _vector(3)}
    assert group_tracks(vs, {7: {0}, 3: {10}, 5: {20}}) == {7: 1, 3: 2, 5: 3}


def test_similarity_recovers_a_rotation_scale_and_shift():
    angle, scale, shift = 0.3, 2.5, np.array([40.0, -7.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    src = (TEMPLATE - shift) @ np.linalg.inv(rot).T  # points that the transform maps onto the template
    mat = similarity(src, TEMPLATE)
    assert np.allclose(src @ mat[:, :2].T + mat[:, 2], TEMPLATE, atol=1e-3)
    assert np.allclose(similarity(np.zeros((4, 2)), TEMPLATE)[:, :2], np.eye(2))  # degenerate: a shift only


def _clip_frames(name: str, every: int = 15, n: int = 4) -> list[np.ndarray]:
    from agevision.sources import VideoSource

    out = []
    with VideoSource(VIDEOS / name) as src:
        for k, frame in enumerate(src):
            if k % every == 0:
                out.append(frame)
            if len(out) == n:
                break
    return out


def _embed_largest(embedder, detector, frame):
    from agevision.quality import assess

    found = detector.detect(frame)
    found.quality, found.readable = assess(frame, found)
    big = found.subset(np.array([int(np.argmax(found.widths))]))
    vectors, ok = embedder.embed(frame, big)
    return vectors[0], bool(ok[0])


def test_one_person_is_alike_across_frames_and_two_people_are_not():
    from agevision.detect import FaceDetector

    embedder = FaceEmbedder()
    with FaceDetector("full") as detector:
        a = [_embed_largest(embedder, detector, f) for f in _clip_frames("LivePortrait__driving_d0.mp4")]
        b = [_embed_largest(embedder, detector, f) for f in _clip_frames("LivePortrait__driving_d10.mp4")]
    assert all(ok for _, ok in a + b)  # YuNet finds every face again
    same = [float(x @ y) for i, (x, _) in enumerate(a) for y, _ in a[i + 1:]]
    other = [float(x @ y) for x, _ in a for y, _ in b]
    assert min(same) > SAME_PERSON + 0.2 and max(other) < SAME_PERSON - 0.1, (same, other)


def test_a_face_yunet_cannot_find_gives_no_vector():
    from agevision.faces import Faces

    blank = np.full((200, 200, 3), 128, np.uint8)
    faces = Faces(boxes=np.array([[50, 50, 150, 150]], np.float32),
                  keypoints=np.array([[[80, 90], [120, 90], [100, 110], [100, 130], [60, 95], [140, 95]]], np.float32),
                  scores=np.ones(1, np.float32), track_ids=np.array([0]), quality=np.ones(1, np.float32))
    vectors, found = FaceEmbedder().embed(blank, faces)
    assert vectors.shape == (1, 128) and not found[0]
    ids = TrackIdentities()
    ids.observe(0, blank, faces)
    assert ids.track_vectors() == {} and ids.people() == {} and ids.embeddings == 1


def test_each_track_is_embedded_a_few_times_only():
    from agevision.defaults import DETECT_EVERY
    from agevision.model.estimator import Estimator
    from agevision.pipeline import FrameProcessor
    from agevision.sources import VideoSource

    with VideoSource(VIDEOS / "LivePortrait__driving_d6.mp4") as src, \
            FrameProcessor(Estimator(), detect_every=DETECT_EVERY, identify=True) as proc:
        for k, frame in enumerate(src):
            proc.process(frame)
            if k == 300:
                break
        assert proc.identities.embeddings <= MAX_TRIES * len(proc.identities.tracks)
        assert proc.people() == {0: 1}


def _records(persons: dict[int, int | None], identities: bool = True):
    header = {"type": "video", "video": "clip.mp4", "width": 640, "height": 360, "fps": 10.0, "frame_count": 60,
              "identities": identities}
    recs = [header]
    spans = {0: range(0, 20), 1: range(25, 45), 2: range(50, 60), 3: range(0, 60)}
    ages = {0: 30.0, 1: 40.0, 2: 50.0, 3: 70.0}
    for n in range(60):
        for tid, span in spans.items():
            if n in span:
                recs.append({"type": "face", "frame": n, "time": n / 10, "track_id": tid, "person": persons.get(tid),
                             "box": [10 + 100 * tid, 10, 60 + 100 * tid, 60], "score": 0.9, "quality": 0.5,
                             "age": ages[tid], "age_low": ages[tid] - 5, "age_high": ages[tid] + 5,
                             "p_female": 0.8, "gender": "F", "readable": True, "detected": True})
    return [*recs, {"type": "end", "frames": 60, "interrupted": False}]


def test_a_persons_tracks_are_pooled_and_tracks_with_no_person_counted_apart():
    s = summarize(_records({0: 1, 1: 1, 2: 2}))  # track 3 has no person: never a face the identity model found
    assert sorted(p.person_id for p in s.people) == [1, 2] and s.unreadable == 1
    first = next(p for p in s.people if p.person_id == 1)
    assert first.track_ids == [0, 1] and first.frames == 40 and first.readings == 40
    assert first.age == pytest.approx(35.0) and (first.first_seen, first.last_seen) == (0.0, 4.4)
    # without identities every track is a person, as before
    s = summarize(_records({}, identities=False))
    assert [p.track_ids for p in s.people] == [[0], [3], [1], [2]] and s.unreadable == 0  # by first sighting


def test_a_person_seen_briefly_is_kept_a_track_seen_briefly_is_not():
    recs = _records({0: 1, 1: 2, 2: 3, 3: 4})
    brief = [r for r in recs if r.get("track_id") != 2 or r["frame"] < 52]  # track 2: 0.2 s, 2 readable frames
    s = summarize(brief)
    assert s.unreadable == 1 and sorted(p.person_id for p in s.people) == [1, 2, 4]  # too few readings
    brief = [r for r in recs if r.get("track_id") != 2 or r["frame"] < 53]  # 0.3 s, 3 readings: a person
    assert sorted(p.person_id for p in summarize(brief).people) == [1, 2, 3, 4]
    unnamed = [{**r, "person": None} if r.get("track_id") == 2 else r for r in brief]
    assert summarize(unnamed, min_seconds=0.5).short_tracks == 1


def test_video_counts_a_person_who_comes_back_once(tmp_path):
    """Clip A, then clip B, then clip A again (two shot cuts): two people, the first with two tracks;
    the JSONL, the CSV and the saved vectors agree."""
    from fractions import Fraction

    from agevision.sinks import VideoWriter
    from agevision.sources import VideoSource

    joined = tmp_path / "joined.mp4"
    writer = VideoWriter(joined, 512, 512, Fraction(25))
    for name, n in (("LivePortrait__driving_d0.mp4", 40), ("LivePortrait__driving_d12.mp4", 40),
                    ("LivePortrait__driving_d0.mp4", 40)):
        with VideoSource(VIDEOS / name) as src:
            for k, frame in enumerate(src):
                if k == n:
                    break
                writer.write(frame)
    writer.close()
    records, people, vectors = tmp_path / "r.jsonl", tmp_path / "p.csv", tmp_path / "v.npz"
    r = runner.invoke(app, ["video", str(joined), "--json", str(records), "--summary", str(people)])
    assert r.exit_code == 0, r.output
    assert "(2 people)" in r.output
    rows = list(csv.DictReader(people.open()))
    assert [row["person"] for row in rows] == ["1", "2"] and len(rows[0]["tracks"].split()) == 2
    faces = [json.loads(line) for line in records.read_text().splitlines()][1:-1]
    assert {f["person"] for f in faces} == {1, 2}
    assert {f["track_id"] for f in faces if f["person"] == 1} == {int(t) for t in rows[0]["tracks"].split()}
    assert all(f["frame"] < 40 or f["frame"] >= 80 for f in faces if f["person"] == 1)
    assert not vectors.exists() and sorted(p.name for p in tmp_path.iterdir()) == \
        ["joined.mp4", "p.csv", "p_thumbs", "r.jsonl"]  # identity vectors only when asked for
    r = runner.invoke(app, ["video", str(joined), "--save-embeddings", str(vectors)])
    assert r.exit_code == 0, r.output
    saved = np.load(vectors)  # no pickles in it
    assert sorted(saved.files) == ["person", "track_id", "vector"] and saved["vector"].shape[1] == 128
    assert sorted(set(saved["person"].tolist())) == [1, 2]
    r = runner.invoke(app, ["video", str(joined), "--save-embeddings", str(tmp_path / "v.pkl")])
    assert r.exit_code != 0 and "must end in .npz" in r.output
