"""Per-track temporal smoothing of the estimates: a person's label, not a frame's.

`Smoother.update(faces)` replaces each face's age and gender by a confidence-weighted mean,
in probability space, of its track's estimates. A person's age does not change during a
video, so the mean keeps a long memory (`decay` close to 1); frames are weighted by how
sure the model is, how good the face is (frontal, large, sharp) and how well they agree
with the track so far, so that frames seen in profile or with the mouth wide open cannot
drag the label; a long run of disagreeing frames restarts the track's mean. A new track
starts from nothing, so a new person never inherits the previous person's label, and shows
no label ("?") until it has a second reading: one reading alone is one detection, and a
detector's glitch (a box twice the face's size, taking in the face behind) is a new track
of one reading. The gender shown is "?" while the smoothed P(female) is near 0.5
(`labels.held_label`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agevision.faces import Faces
from agevision.labels import held_label
from agevision.model.decode import summarize_distribution

AGREE_POWER_PER_T = 4.0 / 0.7764  # the agreement power per unit of age temperature (see Smoother)


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
    readings: int = 0  # readings added so far
    label: str | None = None  # the gender label shown
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
    track's, to the power `agree_power`, at least `min_agree`. The power goes with the model
    card's `age_temperature` T, which sets how wide the readings are (for bell-shaped
    readings whose centres differ by d, the coefficient is exp(-d^2 / (8 s^2 T))): by
    default it is AGREE_POWER_PER_T x T (4 at T 0.7764, where it was set; 5.2 at the shipped
    1.0092), the same agreement for the same difference in age; it counts once the track is
    `warm_up` frames old (its first impression has formed). The model can be confidently
    wrong for a moment (a mouth opened wide reads 30 years young), and such readings barely
    overlap the track's distribution.

    Restart: a run of disagreeing readings starts with one whose agreement is under
    `min_agree` x 5 and goes on while each next reading overlaps the run more than the
    track. A run lasting `restart_frames` frames replaces the track's mean and gender label:
    the tracker has swapped people, or the first impression was wrong. A new track starts
    from nothing, so a new person never inherits the previous person's label.

    The gender shown is F, M or "?" from the smoothed P(female), held at the band's edge
    (`labels.held_label`), so that a face near 0.5 shows "?" and does not flip label
    frame to frame. A track with fewer than `min_readings` readings shows no age and "?"
    (age fields NaN, as an unreadable face; the raw reading is the frame's own).
    """

    def __init__(self, age_bins: np.ndarray, decay: float = 0.998, agree_power: float | None = None,
                 min_agree: float = 0.02, warm_up: int = 30, restart_frames: int = 60,
                 age_temperature: float = 1.0, min_readings: int = 2) -> None:
        self.age_bins = np.asarray(age_bins, np.float64)
        self.decay = decay
        agree_power = AGREE_POWER_PER_T * age_temperature if agree_power is None else agree_power
        self.agree_power, self.min_agree, self.warm_up = agree_power, min_agree, warm_up
        self.restart_frames, self.min_readings = restart_frames, min_readings
        self._states: dict[int, _State] = {}
        self._frame = -1

    def update(self, faces: Faces, ended: list[int] = (), frame: int | None = None) -> Faces:
        """The faces with their estimates smoothed by track id (a new record; `faces` is left
        as it is); `ended` tracks are forgotten first.

        frame: the frame's index in the video, for `warm_up` and `restart_frames` (default:
        one more than the previous update's, right when every frame is estimated). Faces
        without an estimate (age NaN: not readable) leave their track unchanged.
        """
        self._frame = self._frame + 1 if frame is None else frame
        for i in ended:
            self._states.pop(i, None)
        faces = faces.copy()
        if faces.age_probs is None or len(faces) == 0:
            return faces
        probs = faces.age_probs.astype(np.float64)
        out_probs = probs.copy()
        valid = ~np.isnan(faces.age)
        for row, tid in enumerate(faces.track_ids):
            if not valid[row]:
                continue
            st = self._states.setdefault(int(tid), _State(_Sums(np.zeros(len(self.age_bins))), self._frame))
            out_probs[row] = self._add(st, probs[row], float(faces.p_female[row]), self._weight(faces, row))
            st.readings += 1
            p_f = st.sums.female / st.sums.weight
            st.label = held_label(p_f, st.label)
            valid[row] = st.readings >= self.min_readings  # a new track is not shown yet: see the class doc
            faces.p_female[row] = p_f if valid[row] else np.nan
            faces.gender[row] = st.label if valid[row] else "?"
        faces.age_probs = out_probs.astype(np.float32)
        age, low, high = summarize_distribution(out_probs, self.age_bins)
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
                    st.sums, st.odd, st.label = st.odd, None, None
                    return st.sums.age / st.sums.weight
            else:
                st.odd = None
            w *= max(agree, self.min_agree)
        st.sums.add(self.decay, w, probs, p_female)
        return st.sums.age / st.sums.weight


def _overlap(probs: np.ndarray, sums: _Sums) -> float:
    """Bhattacharyya coefficient in [0, 1] between an age distribution and that of `sums`."""
    return float(np.sqrt(probs * sums.age / sums.weight).sum())
