"""Sensor noise in face crops: how much a crop has, and a light blur for those with too much.

The network reads noisy faces as much older than they are (UTKFace validation with Gaussian
noise of sigma 6 grey levels added to the crops: MAE 11.5, read 8.8 years old on average;
sigma 10: MAE 25.9), as a webcam gives them in dim light. A Gaussian blur brings the
readings back (sigma 6: MAE 5.1), but costs a little on clean faces, so only what measures
noisier than the card's threshold is blurred, the more the noisier (`card.Denoise`; figures
from `scripts/noise_report.py`: clean UTKFace crops measure 0.2-1.1, 1st to 99th percentile,
JPEG and H.264 ones as low; noise of sigma 3 measures 1.8-2.5). Applied to the crops by
`Estimator.prepare`, and to the frame under a face enlarged into its crop by
`align.align_crops` (enlarging spreads the noise where the crop's measure misses it). No torch.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from agevision.model.card import Denoise

# Second differences in both directions: zero on any plane, so it sees noise and edges only.
_KERNEL = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
_SCALE = math.sqrt(math.pi / 2) / 6  # mean |kernel response| of white noise of sigma 1 is 6 / sqrt(pi/2)
# The most a crop is blurred (pixels): UTKFace faces with noise of sigma 15 (level 9.8) read
# best at 1.3; beyond it a crop is more noise than face.
MAX_SIGMA = 1.5


def noise_levels(crops_rgb: np.ndarray) -> np.ndarray:
    """(N,) float32: the standard deviation of the sensor noise in each crop's grey levels.

    crops_rgb: (N, S, S, 3) uint8 RGB, S >= 3. Fast noise variance estimation (Immerkaer,
    1996): the mean absolute response to a kernel that cancels smooth shading, scaled so that
    white Gaussian noise of sigma s measures s. Texture and hard edges add a little.
    """
    if len(crops_rgb) == 0:
        return np.zeros(0, np.float32)
    n, s = crops_rgb.shape[:2]
    # all crops stacked as one tall image: one pass each; the rows where neighbours meet are dropped
    grey = cv2.cvtColor(np.ascontiguousarray(crops_rgb).reshape(n * s, s, 3), cv2.COLOR_RGB2GRAY)
    response = _response(grey).reshape(n, s, s)[:, 1:-1, 1:-1]
    return (response.mean(axis=(1, 2)) * _SCALE).astype(np.float32)


def _response(grey: np.ndarray) -> np.ndarray:
    """|kernel response| of a uint8 grey image, float32, the same shape."""
    return np.abs(cv2.filter2D(grey.astype(np.float32), -1, _KERNEL))


def noise_level(image: np.ndarray) -> float:
    """The noise level (as `noise_levels`) of one (H, W, 3) uint8 BGR image, H, W >= 3."""
    return float(_response(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))[1:-1, 1:-1].mean() * _SCALE)


def blur_sigma(level: float, rule: Denoise) -> float:
    """The blur (pixels) for an image of this noise level: `rule.scale` x sqrt(level), at most
    MAX_SIGMA; 0 at or below `rule.above`."""
    return min(rule.scale * math.sqrt(level), MAX_SIGMA) if level > rule.above else 0.0


def denoise(crops_rgb: np.ndarray, rule: Denoise | None) -> np.ndarray:
    """The crops with those noisier than `rule.above` blurred (Gaussian, sigma
    `rule.scale` x sqrt(noise level) pixels, at most MAX_SIGMA); the others as they are.

    crops_rgb: (N, S, S, 3) uint8 RGB. rule None: the crops themselves, untouched. Returns
    the same array when no crop is noisy, else a new one.
    """
    if rule is None or len(crops_rgb) == 0:
        return crops_rgb
    sigmas = [blur_sigma(float(level), rule) for level in noise_levels(crops_rgb)]
    if not any(sigmas):
        return crops_rgb
    out = crops_rgb.copy()
    for i, sigma in enumerate(sigmas):
        if sigma:
            out[i] = cv2.GaussianBlur(crops_rgb[i], (0, 0), sigma)
    return out
