"""What a face's gender label says: "F", "M" or "?" (not sure). The one home of that rule.

The model gives P(female); a label is shown only when it is far enough from 0.5 to mean
something. Faces that cannot be read at all (too dark, small, blurred or turned away; see
`quality.readable`) have no P(female) and show "?" too. Numpy only.
"""

from __future__ import annotations

import numpy as np

UNSURE_BAND = 0.1  # P(female) within 0.5 +- this: "?"
HOLD = 0.05  # a shown F or M stays until P(female) falls this far inside the band (no flicker at its edge)
FEMALE, MALE, UNSURE = "F", "M", "?"


def gender_labels(p_female: np.ndarray, readable: np.ndarray | None = None) -> np.ndarray:
    """(N,) labels "F", "M" or "?" for P(female) values (NaN: no reading, so "?").

    readable: (N,) bool; False gives "?" whatever P(female) says.
    """
    p = np.asarray(p_female, np.float64)
    out = np.full(p.shape, UNSURE, dtype="<U1")
    out[p >= 0.5 + UNSURE_BAND] = FEMALE
    out[p <= 0.5 - UNSURE_BAND] = MALE
    if readable is not None:
        out[~np.asarray(readable, bool)] = UNSURE
    return out


def gender_label(p_female: float | None) -> str:
    """The label for one P(female) (None or NaN: "?")."""
    if p_female is None:
        return UNSURE
    return str(gender_labels(np.array([p_female]))[0])


def held_label(p_female: float, shown: str | None) -> str:
    """The label to show for a track whose smoothed P(female) is `p_female`, given the label
    shown until now (`shown`, None for a new track): F or M stays while P(female) is within
    HOLD of its side of the band, so that a value at the band's edge does not flicker."""
    if shown == FEMALE and p_female >= 0.5 + UNSURE_BAND - HOLD:
        return FEMALE
    if shown == MALE and p_female <= 0.5 - UNSURE_BAND + HOLD:
        return MALE
    return gender_label(p_female)
