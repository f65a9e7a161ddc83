"""Shot cuts: where a video jumps from one scene to another.

At a cut the faces of the previous frame are gone, and whoever is in the new shot is
someone else even if their box lands where the last person's was. `ShotCuts.is_cut(frame)`
compares the colour histogram of each frame with the previous frame's: within a shot it
changes little (people move, the colours stay), across a cut it changes a lot.
"""

from __future__ import annotations

import cv2
import numpy as np

# Bhattacharyya distance between the 8x8x8 BGR histograms of consecutive frames. On the
# shared clips, frames within a shot differ by at most 0.13 (a head shaking hard, 0.10);
# the Hamilton clip's three cuts by 0.26-0.31, and the first frames of any two clips by at
# least 0.27.
CUT_DISTANCE = 0.2
_SIDE = 90  # frames are subsampled to about this many pixels on their short side


def colour_histogram(frame_bgr: np.ndarray) -> np.ndarray:
    """8x8x8 BGR histogram (float32, sums to 1) of a subsampled BGR uint8 frame."""
    step = max(1, min(frame_bgr.shape[:2]) // _SIDE)
    hist = cv2.calcHist([np.ascontiguousarray(frame_bgr[::step, ::step])], [0, 1, 2], None, [8, 8, 8],
                        [0, 256, 0, 256, 0, 256])
    return hist / max(float(hist.sum()), 1.0)


class ShotCuts:
    """Call is_cut(frame) on every frame of a video, in order."""

    def __init__(self, distance: float = CUT_DISTANCE) -> None:
        self.distance = distance
        self._last: np.ndarray | None = None

    def is_cut(self, frame_bgr: np.ndarray) -> bool:
        """True if `frame_bgr` starts a new shot (its colours differ from the previous frame's
        by more than `distance`); False for the first frame."""
        hist = colour_histogram(frame_bgr)
        last, self._last = self._last, hist
        return last is not None and cv2.compareHist(last, hist, cv2.HISTCMP_BHATTACHARYYA) > self.distance
