"""Who is who: identity vectors per track, and tracks grouped into people.

`FaceEmbedder.embed(frame, faces)` turns faces into 128-number identity vectors (SFace,
run by OpenCV, on a 112x112 crop aligned on the detector's keypoints). `TrackIdentities`
watches the detected frames of a run and keeps a few vectors per track, from its best faces
only (readable, frontal, large, sharp), so the cost stays a few embeddings per track, not
one per frame. `group_tracks` puts tracks together into people: average-linkage
clustering of the tracks' vectors at SAME_PERSON, never joining two tracks seen at the
same time. The vectors are identity data: they stay in memory unless asked for
(`save_vectors`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from agevision.defaults import WEIGHTS_DIR
from agevision.detect import YUNET_FILE
from agevision.errors import AgevisionError
from agevision.faces import LEFT_EYE, MOUTH, NOSE_TIP, RIGHT_EYE, Faces

SFACE_FILE = WEIGHTS_DIR / "face_recognition_sface_2021dec_int8bq.onnx"
REGION = 0.6  # YuNet looks for the face's landmarks in its box grown by this share of its width a side
REGION_WIDTH = 192  # pixels: the grown box is scaled to this width for YuNet
CROP = 112  # SFace's input, pixels a side
# Where SFace's training crops put the subject's right eye, left eye, nose tip and the middle
# of the mouth (the mean of its two mouth corners), on the 112x112 crop.
TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [56.1396, 92.2848]], np.float32)
# Cosine similarity of two tracks' vectors from which they are one person. On the identity
# dev set (scripts/people_count.py; YuNet alignment) pairs of tracks of one person scored
# 0.46-0.94 and of two people at most 0.37: the middle of that gap.
SAME_PERSON = 0.42
PER_TRACK = 4  # vectors kept per track (its best faces)
MAX_TRIES = 8  # embeddings made per track at most (a better face replaces the worst kept)
MIN_GAP = 10  # frames between two embeddings of one track (near-identical faces add little)


class FaceEmbedder:
    """SFace identity vectors: embed(frame_bgr, faces) -> ((N, 128) float32 unit vectors,
    (N,) bool found).

    The crop is a similarity transform of the frame onto SFace's 112x112 template.
    align="yunet": YuNet finds the face again in its grown box and its five landmarks
    (eyes, nose tip, mouth corners) place the crop; where it finds none, or with
    align="keypoints", the detector's eye, nose and mouth keypoints do. (BlazeFace's
    keypoints are loose on small and turned faces: see README, "Who is who".)
    Raises AgevisionError if a model file is missing.
    """

    def __init__(self, align: str = "yunet", model: Path = SFACE_FILE, landmarks: Path = YUNET_FILE) -> None:
        if align not in ("yunet", "keypoints"):
            raise AgevisionError(f"align must be 'yunet' or 'keypoints', not {align!r}")
        for path in (Path(model), Path(landmarks)):
            if not path.is_file():
                raise AgevisionError(f"face-identity model missing: {path} (reinstall agevision)")
        self._net = cv2.FaceRecognizerSF.create(str(model), "")
        self._yunet = cv2.FaceDetectorYN.create(str(landmarks), "", (REGION_WIDTH, REGION_WIDTH), 0.5) \
            if align == "yunet" else None

    def crops(self, frame_bgr: np.ndarray, faces: Faces) -> tuple[list[np.ndarray], np.ndarray]:
        """(the aligned 112x112 BGR crops of the faces, (N,) bool: YuNet found the face; all
        True with align="keypoints")."""
        out, found = [], np.ones(len(faces), bool)
        for i, (box, kps) in enumerate(zip(faces.boxes, faces.keypoints, strict=True)):
            points = self._landmarks(frame_bgr, box) if self._yunet is not None else None
            if points is None:
                found[i] = self._yunet is None
                points = kps[[RIGHT_EYE, LEFT_EYE, NOSE_TIP, MOUTH]]
            mat = similarity(points, TEMPLATE)
            out.append(cv2.warpAffine(frame_bgr, mat, (CROP, CROP), flags=cv2.INTER_LINEAR,
                                      borderMode=cv2.BORDER_REPLICATE))
        return out, found

    def embed(self, frame_bgr: np.ndarray, faces: Faces) -> tuple[np.ndarray, np.ndarray]:
        """((N, 128) unit vectors, (N,) bool: the face was found again by YuNet; a face it
        cannot find, an ear or the back of a head more often than not, gives a poor vector)."""
        crops, found = self.crops(frame_bgr, faces)
        vectors = np.zeros((len(faces), 128), np.float32)
        for i, crop in enumerate(crops):
            vectors[i] = self._net.feature(crop).reshape(-1)
        return unit(vectors), found

    def _landmarks(self, frame_bgr: np.ndarray, box: np.ndarray) -> np.ndarray | None:
        """(4, 2) eyes, nose tip and mouth middle of the face in `box`, in frame pixels, as
        YuNet finds them in the grown box (the face whose centre is nearest the box's); None if it
        finds no face whose centre is in the box."""
        x0, y0, x1, y1 = (float(v) for v in box)
        grow = REGION * (x1 - x0)
        h, w = frame_bgr.shape[:2]
        xa, ya = int(max(x0 - grow, 0)), int(max(y0 - grow, 0))
        xb, yb = int(min(x1 + grow, w)), int(min(y1 + grow, h))
        if xb - xa < 8 or yb - ya < 8:
            return None
        scale = REGION_WIDTH / (xb - xa)
        region = cv2.resize(frame_bgr[ya:yb, xa:xb], (REGION_WIDTH, max(int(round((yb - ya) * scale)), 8)),
                            interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        self._yunet.setInputSize((region.shape[1], region.shape[0]))
        _, found = self._yunet.detect(region)
        if found is None:
            return None
        centres = found[:, :2] + found[:, 2:4] / 2
        inside = ((centres[:, 0] >= (x0 - xa) * scale) & (centres[:, 0] <= (x1 - xa) * scale)
                  & (centres[:, 1] >= (y0 - ya) * scale) & (centres[:, 1] <= (y1 - ya) * scale))
        if not inside.any():
            return None
        middle = np.array([(x0 + x1) / 2 - xa, (y0 + y1) / 2 - ya]) * scale
        near = np.flatnonzero(inside)
        best = found[near[np.argmin(np.linalg.norm(centres[near] - middle, axis=1))]]  # nearest the box centre
        marks = best[4:14].reshape(5, 2)  # right eye, left eye, nose tip, mouth corners (image left first)
        points = np.vstack([marks[:3], marks[3:].mean(0, keepdims=True)])
        return points / scale + np.array([xa, ya], np.float32)


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The (2, 3) rotation + uniform scale + shift that best maps points `src` onto `dst`
    (least squares, Umeyama's method); (K, 2) each. Keypoints all in one spot give a
    transform that only shifts them onto the template's centre."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    var = (a**2).sum() / len(a)
    if var < 1e-9:
        return np.hstack([np.eye(2), (mu_d - mu_s)[:, None]])
    u, sig, vt = np.linalg.svd(b.T @ a / len(a))
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[1] = -1
    rot = u @ np.diag(d) @ vt
    scale = (sig * d).sum() / var
    return np.hstack([scale * rot, (mu_d - scale * rot @ mu_s)[:, None]])


def unit(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


@dataclass
class _Kept:
    seen: set[int] = field(default_factory=set)  # frames the track was detected in
    tries: int = 0
    last_try: int = -(10**9)
    vectors: list[tuple[float, np.ndarray]] = field(default_factory=list)  # (quality, vector)


class TrackIdentities:
    """A few identity vectors per track, from its best detected faces.

    observe(frame_index, frame_bgr, faces) on each frame in which faces were detected
    (faces with track ids, quality and readable set). A readable face is embedded when its
    track has fewer than PER_TRACK vectors, or its quality beats the worst one kept, at
    most MAX_TRIES times per track and MIN_GAP frames apart; only faces the embedder finds
    again (see `FaceEmbedder.embed`) are kept. people() groups the tracks; a track with
    no face kept has no person.
    """

    def __init__(self, embedder: FaceEmbedder | None = None, threshold: float = SAME_PERSON) -> None:
        self.embedder = embedder or FaceEmbedder()
        self.threshold = threshold
        self.tracks: dict[int, _Kept] = {}
        self.embeddings = 0  # made so far

    def observe(self, frame_index: int, frame_bgr: np.ndarray, faces: Faces) -> None:
        pick = []
        for i, tid in enumerate(int(t) for t in faces.track_ids):
            if tid < 0:
                continue
            kept = self.tracks.setdefault(tid, _Kept())
            kept.seen.add(frame_index)
            q = float(faces.quality[i]) if not np.isnan(faces.quality[i]) else 0.0
            if not faces.readable[i] or kept.tries >= MAX_TRIES or frame_index - kept.last_try < MIN_GAP:
                continue
            if len(kept.vectors) < PER_TRACK or q > min(v[0] for v in kept.vectors):
                pick.append(i)
        if not pick:
            return
        chosen = faces.subset(np.array(pick))
        vectors, found = self.embedder.embed(frame_bgr, chosen)
        self.embeddings += len(pick)
        for j, i in enumerate(pick):
            kept = self.tracks[int(faces.track_ids[i])]
            kept.tries += 1
            kept.last_try = frame_index
            if not found[j]:
                continue
            q = float(chosen.quality[j]) if not np.isnan(chosen.quality[j]) else 0.0
            kept.vectors.append((q, vectors[j]))
            if len(kept.vectors) > PER_TRACK:
                kept.vectors.remove(min(kept.vectors, key=lambda v: v[0]))

    def track_vectors(self) -> dict[int, np.ndarray]:
        """Track id -> its vector (quality-weighted mean of those kept, unit length), for
        the tracks with at least one readable face."""
        out = {}
        for tid, kept in self.tracks.items():
            if kept.vectors:
                w = np.array([max(q, 0.05) for q, _ in kept.vectors], np.float32)
                out[tid] = unit((w[:, None] * np.stack([v for _, v in kept.vectors])).sum(0))
        return out

    def seen(self) -> dict[int, set[int]]:
        """Track id -> the frames it was detected in."""
        return {tid: k.seen for tid, k in self.tracks.items()}

    def people(self) -> dict[int, int]:
        """Track id -> person id (1, 2, ... in order of first sighting), see `group_tracks`.
        Tracks never readable have no person."""
        return group_tracks(self.track_vectors(), self.seen(), self.threshold)


def group_tracks(vectors: dict[int, np.ndarray], seen: dict[int, set[int]],
                 threshold: float = SAME_PERSON) -> dict[int, int]:
    """People from tracks: track id -> person id.

    vectors: track id -> unit identity vector. seen: track id -> frames it was detected in.
    Average-linkage clustering of the cosine similarities: the two groups whose tracks are
    most alike on average are joined while that average is at least `threshold`, unless a
    track of one was detected in a frame in which a track of the other was (one person is
    not two faces at once). Person ids count from 1 in order of first sighting.
    """
    frames = {t: seen.get(t) or {0} for t in vectors}
    ids = sorted(vectors, key=lambda t: (min(frames[t]), t))
    n = len(ids)
    if n == 0:
        return {}
    v = np.stack([vectors[t] for t in ids]).astype(np.float64)
    sums = v @ v.T  # summed similarity between groups
    first = np.array([min(frames[t]) for t in ids])
    last = np.array([max(frames[t]) for t in ids])
    clash = (first[:, None] <= last[None, :]) & (first[None, :] <= last[:, None])  # spans overlap...
    for a, b in zip(*np.nonzero(np.triu(clash, 1)), strict=True):  # ...and a frame has both
        clash[a, b] = clash[b, a] = not frames[ids[a]].isdisjoint(frames[ids[b]])
    size = np.ones(n)
    alive = np.ones(n, bool)
    members = [[i] for i in range(n)]
    while True:
        avg = sums / np.outer(size, size)
        ok = alive[:, None] & alive[None, :] & ~clash
        np.fill_diagonal(ok, False)
        avg = np.where(ok, avg, -np.inf)
        flat = int(np.argmax(avg))
        a, b = divmod(flat, n)
        if not np.isfinite(avg[a, b]) or avg[a, b] < threshold:
            break
        a, b = min(a, b), max(a, b)
        sums[a, :] += sums[b, :]
        sums[:, a] += sums[:, b]
        clash[a, :] |= clash[b, :]
        clash[:, a] |= clash[:, b]
        size[a] += size[b]
        alive[b] = False
        members[a] += members[b]
        members[b] = []
    groups = sorted((sorted(m) for m in members if m), key=lambda m: m[0])
    return {ids[i]: person for person, m in enumerate(groups, start=1) for i in m}


def save_vectors(target: Path, vectors: dict[int, np.ndarray], persons: dict[int, int]) -> None:
    """Write track ids, person ids and track vectors as an .npz (no pickles) through
    `files.write_atomic`. This is identity data: written only when the user asks."""
    import io

    from agevision.files import write_atomic

    ids = sorted(vectors)
    buf = io.BytesIO()
    np.savez(buf, track_id=np.array(ids, np.int64), person=np.array([persons.get(t, 0) for t in ids], np.int64),
             vector=np.stack([vectors[t] for t in ids]) if ids else np.zeros((0, 128), np.float32))
    write_atomic(Path(target), buf.getvalue())
