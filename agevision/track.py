"""Face tracking across frames and per-track temporal smoothing of the estimates.

`Tracker.update(faces)` gives each face a track id: faces are matched to live tracks by
box overlap (IoU), best pairs first; a face left over is then matched to a track that lost
its face for a few frames if their centres are close and sizes alike (the detector missed
the face for a moment); other faces start new tracks; a track survives `max_missed` frames
without a face. `Tracker.coast(faces)` moves the clock on a frame in which nothing was
detected, carrying the faces along their tracks' predicted paths; `Tracker.drop(ids)` ends
tracks whose faces were lost (a shot cut).

`Smoother.update(faces)` replaces each face's age and gender by a confidence-weighted mean,
in probability space, of its track's estimates. A person's age does not change during a
video, so the mean keeps a long memory (`decay` close to 1); frames are weighted by how
sure the model is, how good the face is (frontal, large, sharp) and how well they agree
with the track so far, so that frames seen in profile or with the mouth wide open cannot
drag the label; a long run of disagreeing frames restarts the track's mean. A new track
starts from nothing, so a new person never inherits the previous person's label.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from agevision.faces import Faces, iou
from agevision.model.estimator import summarize_distribution


@dataclass
class _Track:
    box: np.ndarray  # last seen box
    last_frame: int
    velocity: np.ndarray  # smoothed change of the box per frame (x0, y0, x1, y1)

    def predicted(self, frame: int, horizon: int = 10) -> np.ndarray:
        """Where the box should be at `frame`, moving on at its velocity (for at most `horizon` frames)."""
        return self.box + self.velocity * min(frame - self.last_frame, horizon)


class Tracker:
    """IoU tracker with constant-velocity prediction. min_iou: least overlap between a face
    and a track's predicted box to continue the track; max_missed: frames a track may go
    unseen before it ends; max_shift: see `_bridge_gaps`."""

    def __init__(self, min_iou: float = 0.3, max_missed: int = 30, max_shift: float = 0.6) -> None:
        self.min_iou, self.max_missed, self.max_shift = min_iou, max_missed, max_shift
        self._tracks: dict[int, _Track] = {}
        self._next_id = 0
        self._frame = -1
        self.ended: list[int] = []  # ids of tracks that ended during the last update
        self._dropped: list[int] = []  # ids dropped since the last update

    def update(self, faces: Faces) -> Faces:
        """Set faces.track_ids (in place) for the next frame; returns faces."""
        self._frame += 1
        ids = list(self._tracks)
        boxes = np.array([self._tracks[i].predicted(self._frame) for i in ids], np.float32).reshape(-1, 4)
        overlap = iou(faces.boxes, boxes)
        assigned = np.full(len(faces), -1, np.int64)
        used: set[int] = set()
        for flat in np.argsort(-overlap, axis=None):
            f, t = np.unravel_index(flat, overlap.shape)
            if overlap[f, t] < self.min_iou:
                break
            if assigned[f] < 0 and t not in used:
                assigned[f] = ids[t]
                used.add(t)
        self._bridge_gaps(faces.boxes, boxes, ids, assigned, used)
        for f in range(len(faces)):
            if assigned[f] < 0:
                assigned[f] = self._next_id
                self._next_id += 1
            self._tracks[int(assigned[f])] = self._moved(self._tracks.get(int(assigned[f])), faces.boxes[f])
        self.ended = self._dropped + [i for i, t in self._tracks.items()
                                      if self._frame - t.last_frame > self.max_missed]
        self._dropped = []
        for i in self.ended:
            self._tracks.pop(i, None)
        faces.track_ids = assigned
        return faces

    @property
    def ids(self) -> list[int]:
        """Ids of the live tracks."""
        return list(self._tracks)

    def drop(self, ids: Iterable[int]) -> None:
        """End the tracks `ids` now (their faces were lost, e.g. at a shot cut): the next
        update gives their faces new ids and lists them in `ended`."""
        for i in ids:
            if self._tracks.pop(int(i), None) is not None:
                self._dropped.append(int(i))

    def coast(self, faces: Faces, boxes: np.ndarray | None = None) -> Faces:
        """Move the clock one frame on without a detection.

        faces: the tracked faces of the previous frame. boxes: (N, 4) where each of them was
        measured to be now (e.g. `motion.FaceFlow.follow`), NaN rows unknown. Returns a copy
        of the faces still tracked, each box at its measured place or else where its track
        predicts it, keypoints moved with the box; every other field (ids, estimates,
        quality) carried over. The tracks themselves keep their last detected boxes.
        """
        self._frame += 1
        self.ended = []
        keep = np.array([i for i, t in enumerate(faces.track_ids) if int(t) in self._tracks], np.int64)
        out = faces.subset(keep)
        measured = None if boxes is None else np.asarray(boxes, np.float64)[keep]
        for row, tid in enumerate(out.track_ids):
            old = out.boxes[row].astype(np.float64)
            if measured is not None and not np.isnan(measured[row]).any():
                new = measured[row]
            else:
                new = self._tracks[int(tid)].predicted(self._frame).astype(np.float64)
            zoom = (new[2] - new[0]) / max(old[2] - old[0], 1e-6)
            old_c, new_c = (old[:2] + old[2:]) / 2, (new[:2] + new[2:]) / 2
            out.keypoints[row] = (out.keypoints[row] - old_c) * zoom + new_c
            out.boxes[row] = new
        return out

    def _moved(self, track: _Track | None, box: np.ndarray) -> _Track:
        """The track seen at `box` in the current frame, its velocity updated (new tracks stand still)."""
        if track is None:
            return _Track(box.copy(), self._frame, np.zeros(4, np.float32))
        step = (box - track.box) / max(self._frame - track.last_frame, 1)
        return _Track(box.copy(), self._frame, (0.5 * track.velocity + 0.5 * step).astype(np.float32))

    def _bridge_gaps(self, face_boxes: np.ndarray, track_boxes: np.ndarray, ids: list[int], assigned: np.ndarray,
                     used: set[int]) -> None:
        """Give unassigned faces the id of an unused track whose predicted box is near and alike.

        Near: centres closer than `max_shift` box widths; alike: widths within a factor 1.5.
        """
        for f in np.flatnonzero(assigned < 0):
            fc, fw = (face_boxes[f, :2] + face_boxes[f, 2:]) / 2, face_boxes[f, 2] - face_boxes[f, 0]
            best, best_d = None, self.max_shift
            for t, box in enumerate(track_boxes):
                if t in used:
                    continue
                tw = box[2] - box[0]
                d = np.linalg.norm(fc - (box[:2] + box[2:]) / 2) / max((fw + tw) / 2, 1e-6)
                if d < best_d and 1 / 1.5 <= fw / max(tw, 1e-6) <= 1.5:
                    best, best_d = t, d
            if best is not None:
                assigned[f] = ids[best]
                used.add(best)


@dataclass
class _Sums:
    """Decayed, weighted sums of a track's readings: age distribution, P(female), weight."""

    age: np.ndarray
    female: float = 0.0
    weight: float = 0.0

    def add(self, decay: float, w: float, probs: np.ndarray, p_female: float) -> None:
        self.age = decay * self.age + w * probs
        self.female = decay * self.female + w * p_female
        self.weight = decay * self.weight + w


@dataclass
class _State:
    sums: _Sums
    first_frame: int  # frame of the track's first reading
    female_label: bool | None = None
    odd: _Sums | None = None  # the readings of a run that disagrees with the track (see Smoother)
    odd_since: int = 0  # frame of the first reading of that run


class Smoother:
    """Per-track weighted running mean, in probability space, of age distribution and P(female).

    A person's age does not change during a video, so the mean keeps a long memory: with
    each new reading, older readings keep `decay` of their weight (0.998: a half-life of 346
    readings, 12 s when every frame of a 30 fps video is read). A reading's weight is the
    detection score x how sure the model is (1 - normalised entropy) x face quality (when
    measured) x how well it agrees with the track so far; it weighs age and gender alike.

    Agreement: the Bhattacharyya coefficient between the reading's age distribution and the
    track's, to the power `agree_power`, at least `min_agree`; it counts once the track is
    `warm_up` frames old (its first impression has formed). The model can be confidently
    wrong for a moment (a mouth opened wide reads 30 years young), and such readings barely
    overlap the track's distribution.

    Restart: a run of disagreeing readings starts with one whose agreement is under
    `min_agree` x 5 and goes on while each next reading overlaps the run more than the
    track. A run lasting `restart_frames` frames replaces the track's mean and gender label:
    the tracker has swapped people, or the first impression was wrong. A new track starts
    from nothing, so a new person never inherits the previous person's label.

    hysteresis: the shown gender changes only when the smoothed P(female) passes 0.5 by
    this margin, so a face near 0.5 does not flip label frame to frame.
    """

    def __init__(self, age_bins: np.ndarray, decay: float = 0.998, hysteresis: float = 0.15,
                 agree_power: float = 4.0, min_agree: float = 0.02, warm_up: int = 30,
                 restart_frames: int = 60) -> None:
        self.age_bins = np.asarray(age_bins, np.float64)
        self.decay, self.hysteresis = decay, hysteresis
        self.agree_power, self.min_agree, self.warm_up = agree_power, min_agree, warm_up
        self.restart_frames = restart_frames
        self._states: dict[int, _State] = {}
        self._frame = -1

    def update(self, faces: Faces, ended: list[int] = (), frame: int | None = None) -> Faces:
        """Smooth the estimated fields of `faces` (in place) by track id; forget `ended` tracks.

        frame: the frame's index in the video, for `warm_up` and `restart_frames` (default:
        one more than the previous update's, right when every frame is estimated). Faces
        without an estimate (age NaN, e.g. too small) leave their track unchanged. Returns faces.
        """
        self._frame = self._frame + 1 if frame is None else frame
        for i in ended:
            self._states.pop(i, None)
        if faces.age_probs is None or len(faces) == 0:
            return faces
        probs = faces.age_probs.astype(np.float64)
        out_probs = probs.copy()
        for row, tid in enumerate(faces.track_ids):
            if np.isnan(faces.age[row]):
                continue
            st = self._states.setdefault(int(tid), _State(_Sums(np.zeros(len(self.age_bins))), self._frame))
            out_probs[row] = self._add(st, probs[row], float(faces.p_female[row]), self._weight(faces, row))
            p_f = st.sums.female / st.sums.weight
            if st.female_label is None or abs(p_f - 0.5) > self.hysteresis:
                st.female_label = p_f >= 0.5
            faces.p_female[row] = p_f
            faces.female[row] = st.female_label
        faces.age_probs = out_probs.astype(np.float32)
        age, low, high = summarize_distribution(out_probs, self.age_bins)
        valid = ~np.isnan(faces.age)
        faces.age = np.where(valid, age, np.nan).astype(np.float32)
        faces.age_low = np.where(valid, low, np.nan).astype(np.float32)
        faces.age_high = np.where(valid, high, np.nan).astype(np.float32)
        return faces

    @staticmethod
    def _weight(faces: Faces, row: int) -> float:
        """Weight of one reading before agreement: detection score x certainty x quality."""
        p = faces.age_probs[row].astype(np.float64)
        entropy = -(p * np.log(p + 1e-12)).sum() / np.log(len(p))
        w = float(faces.scores[row]) * max(1.0 - entropy, 0.05)
        if not np.isnan(faces.quality[row]):
            w *= max(float(faces.quality[row]), 0.05)
        return w

    def _add(self, st: _State, probs: np.ndarray, p_female: float, w: float) -> np.ndarray:
        """Add one reading to a track (see the class doc); returns the track's age distribution."""
        if self._frame - st.first_frame >= self.warm_up and st.sums.weight > 0:
            overlap = _overlap(probs, st.sums)
            agree = overlap**self.agree_power
            if agree < 5 * self.min_agree or (st.odd is not None and _overlap(probs, st.odd) > overlap):
                if st.odd is None:
                    st.odd, st.odd_since = _Sums(np.zeros(len(self.age_bins))), self._frame
                st.odd.add(self.decay, w, probs, p_female)
                if self._frame - st.odd_since >= self.restart_frames:
                    st.sums, st.odd, st.female_label = st.odd, None, None
                    return st.sums.age / st.sums.weight
            else:
                st.odd = None
            w *= max(agree, self.min_agree)
        st.sums.add(self.decay, w, probs, p_female)
        return st.sums.age / st.sums.weight


def _overlap(probs: np.ndarray, sums: _Sums) -> float:
    """Bhattacharyya coefficient in [0, 1] between an age distribution and that of `sums`."""
    return float(np.sqrt(probs * sums.age / sums.weight).sum())
