"""Overlays: face boxes with age/gender labels, and the HUD. The only module that draws."""

from __future__ import annotations

import cv2
import numpy as np

from agevision.faces import Faces

FEMALE_COLOR = (180, 105, 255)  # BGR
MALE_COLOR = (255, 170, 60)
UNKNOWN_COLOR = (200, 200, 200)
FONT = cv2.FONT_HERSHEY_SIMPLEX
HELP_LINES = ("o: overlays   h: HUD   s: snapshot", "space: pause   q/Esc: quit")


def face_gender(faces: Faces, i: int) -> str:
    """The gender shown for face i: "F", "M" or "?" (not sure, or not readable)."""
    return str(faces.gender[i]) if not np.isnan(faces.age[i]) else "?"


def face_label(faces: Faces, i: int) -> str:
    """'F 31 ±4' (gender, expected age, half-width of the 80% interval), '? 31 ±4' when the
    gender is not sure, or '?' for a face that could not be read (too small, dark, blurred
    or turned away)."""
    if np.isnan(faces.age[i]):
        return "?"
    half = max((faces.age_high[i] - faces.age_low[i]) / 2, 0.5)
    return f"{face_gender(faces, i)} {faces.age[i]:.0f} \u00b1{half:.0f}"


def face_color(faces: Faces, i: int) -> tuple[int, int, int]:
    """BGR colour of face i's box: pink for F, blue for M, grey for "?"."""
    return {"F": FEMALE_COLOR, "M": MALE_COLOR}.get(face_gender(faces, i), UNKNOWN_COLOR)


PLUS_MINUS = "\u00b1"  # OpenCV's Hershey fonts have no such glyph: drawn as "+" over a bar


def _ascii(text: str) -> str:
    """`text` as OpenCV's fonts can measure it: each ± stands in as a "+" of the same width."""
    return text.replace(PLUS_MINUS, "+")


def _text_size(text: str, scale: float) -> tuple[int, int, int]:
    """(width, height, baseline) in pixels of the background rectangle `_text` draws for `text`."""
    (w, h), base = cv2.getTextSize(_ascii(text), FONT, scale, max(1, int(round(scale * 2))))
    return w + 4, h + base + 4, base


def _text_rect(text: str, org: tuple[int, int], scale: float) -> tuple[int, int, int, int]:
    """Background rectangle (x0, y0, x1, y1) of `text` drawn by `_text` at `org` (bottom left)."""
    w, h, _ = _text_size(text, scale)
    x, y = org
    y = max(y, h - 2)
    return x, y - h + 2, x + w, y + 2


def _text(frame: np.ndarray, text: str, org: tuple[int, int], scale: float, color, bg=(0, 0, 0)) -> None:
    thick = max(1, int(round(scale * 2)))
    x0, y0, x1, y1 = _text_rect(text, org, scale)
    base = _text_size(text, scale)[2]
    cv2.rectangle(frame, (x0, y0), (x1, y1), bg, -1)
    x, y = x0 + 2, y1 - 2 - base + 1
    for k, part in enumerate(text.split(PLUS_MINUS)):
        if k:  # a plus-minus sign: "+" with a bar under it
            (pw, ph), _ = cv2.getTextSize("+", FONT, scale, thick)
            cv2.putText(frame, "+", (x, y - max(1, ph // 6)), FONT, scale, color, thick, cv2.LINE_AA)
            cv2.line(frame, (x + 1, y), (x + pw - 1, y), color, thick, cv2.LINE_AA)
            x += pw
        if part:
            cv2.putText(frame, part, (x, y), FONT, scale, color, thick, cv2.LINE_AA)
            x += cv2.getTextSize(part, FONT, scale, thick)[0][0]


def _label_origin(text: str, box: tuple[int, int, int, int], scale: float, taken: list) -> tuple[int, int]:
    """Where a face's label goes: above its box, else below it, else further up, whichever
    first overlaps no label in `taken` (rectangles; the chosen one is added)."""
    x0, y0, x1, y1 = box
    height = _text_size(text, scale)[1]
    candidates = [(max(x0, 0), max(y0 - 4, 0)), (max(x0, 0), y1 + height)]
    candidates += [(max(x0, 0), y0 - 4 - k * height) for k in (1, 2, 3) if y0 - 4 - k * height >= height]
    for org in candidates:
        rect = _text_rect(text, org, scale)
        if not any(rect[0] < r[2] and r[0] < rect[2] and rect[1] < r[3] and r[1] < rect[3] for r in taken):
            taken.append(rect)
            return org
    taken.append(_text_rect(text, candidates[0], scale))
    return candidates[0]


class Renderer:
    """Draws onto BGR frames in place. show_faces / show_hud switch the two layers."""

    def __init__(self, show_faces: bool = True, show_hud: bool = True) -> None:
        self.show_faces, self.show_hud = show_faces, show_hud

    def draw(self, frame_bgr: np.ndarray, faces: Faces, fps: float | None = None, help_text: bool = False,
             paused: bool = False) -> np.ndarray:
        """Draw boxes and labels of `faces`, then the HUD (FPS, face count, keys). Returns the frame."""
        h, w = frame_bgr.shape[:2]
        scale = max(0.45, min(w, h) / 900)
        if self.show_faces:
            colors, boxes = [], []
            for i in range(len(faces)):
                boxes.append(tuple(int(round(v)) for v in faces.boxes[i]))
                colors.append(face_color(faces, i))
                cv2.rectangle(frame_bgr, boxes[i][:2], boxes[i][2:], colors[i], max(1, int(scale * 2.5)), cv2.LINE_AA)
            taken: list = []  # labels last, larger faces first, so that no label hides another
            for i in np.argsort(-faces.widths, kind="stable"):
                label = face_label(faces, i)
                org = _label_origin(label, boxes[i], scale * 0.9, taken)
                _text(frame_bgr, label, org, scale * 0.9, (255, 255, 255), bg=tuple(int(c * 0.55) for c in colors[i]))
        if self.show_hud:
            parts = [f"{fps:.1f} FPS" if fps else "-- FPS", f"{len(faces)} face{'s' if len(faces) != 1 else ''}"]
            if paused:
                parts.append("PAUSED")
            _text(frame_bgr, "  ".join(parts), (8, int(30 * scale) + 8), scale, (255, 255, 255))
            if help_text:
                for k, line in enumerate(HELP_LINES):
                    _text(frame_bgr, line, (8, h - 10 - int((len(HELP_LINES) - 1 - k) * 34 * scale)), scale * 0.8,
                          (255, 255, 255))
        return frame_bgr
