"""Face tracking across frames: which face of a frame is which person of the last.

`Tracker.update(faces)` returns the faces with a track id each, and the tracks that ended:
faces are matched to live tracks by box overlap (IoU), best pairs first; a face left over
is then matched to a track that lost its face for a few frames if their centres are close
and sizes alike (the detector missed the face for a moment); other faces start new tracks;
a track survives `max_missed` frames without a face. `Tracker.coast(faces)` moves the
clock on a frame in which nothing was detected, carrying the faces along their tracks'
predicted paths; `Tracker.drop(ids)` ends tracks whose faces were lost (a shot cut).
The per-track smoothing of the estimates is `smooth.Smoother`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

import numpy as np

from agevision.faces import Faces, iou


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
        self._dropped: list[int] = []  # ids dropped since the last update

    def update(self, faces: Faces) -> tuple[Faces, list[int]]:
        """The next frame's faces: (a copy of `faces` with their track ids, ids of the tracks
        that ended with this frame: unseen for too long, or dropped since the last update)."""
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
        ended = self._dropped + [i for i, t in self._tracks.items() if self._frame - t.last_frame > self.max_missed]
        self._dropped = []
        for i in ended:
            self._tracks.pop(i, None)
        return replace(faces, track_ids=assigned), ended

    @property
    def ids(self) -> list[int]:
        """Ids of the live tracks."""
        return list(self._tracks)

    def drop(self, ids: Iterable[int]) -> None:
        """End the tracks `ids` now (their faces were lost, e.g. at a shot cut): the next
        update gives their faces new ids and lists them as ended."""
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
