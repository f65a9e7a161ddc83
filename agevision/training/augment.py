"""Batch augmentation on tensors: flips, small affine jitter, lost resolution and photometric changes.

All of it runs on whole (N, 3, S, S) float batches, on the training device, so that no
data-loader workers are needed on a 2-core machine.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def augment(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Randomly flip, rotate (±10°), scale (±8%), shift (±5%), blur and recolour a float batch.

    Blur: a fifth of the faces are shrunk to 35-100% of their size and blown up again, as a
    small face in a wide video frame is. Compression: 30% go through JPEG at quality 15-60,
    half of those smoothed first, as video codecs and camera denoising smooth skin (see
    `_compress`). x: (N, 3, S, S) float in [0, 255]. Returns a new tensor of the same shape.
    """
    n, dev = len(x), x.device

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator).to(dev)

    angle = (rand(n) * 2 - 1) * math.radians(10)
    scale = 1 + (rand(n) * 2 - 1) * 0.08
    flip = torch.where(rand(n) < 0.5, -1.0, 1.0).to(dev)
    shift = (rand(n, 2) * 2 - 1) * 0.1
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos * flip, -sin, shift[:, 0]], 1), torch.stack([sin * flip, cos, shift[:, 1]], 1)], 1
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    x = _lose_resolution(x, rand(n) < 0.2, 0.35 + 0.65 * float(rand(1)))
    brightness = (rand(n, 1, 1, 1) * 2 - 1) * 25
    contrast = 1 + (rand(n, 1, 1, 1) * 2 - 1) * 0.25
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * contrast + mean + brightness
    gray = rand(n, 1, 1, 1) < 0.1
    x = torch.where(gray, x.mean(dim=1, keepdim=True).expand_as(x), x)
    return _compress(x.clamp(0, 255), rand(n) < 0.3, rand(n))


def _compress(x: torch.Tensor, chosen: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    """`x` with the `chosen` images compressed as video is: fine texture (the skin's, which
    reads as age) smoothed away and blocks added. On UTKFace validation faces, H.264 at CRF
    30 made the shipped model read people of 30-60 4.2 years younger, and edge-preserving
    smoothing 4.7. level (N,) in [0, 1): JPEG quality 60 down to 15; below 0.5 the image is
    also smoothed (bilateral filter) first. Runs on the CPU (OpenCV); returns a new tensor."""
    import cv2

    if not chosen.any():
        return x
    x = x.clone()
    for i in torch.nonzero(chosen).flatten().tolist():
        image = x[i].permute(1, 2, 0).round().to(torch.uint8).cpu().numpy()[:, :, ::-1].copy()  # BGR
        lv = float(level[i])
        if lv < 0.5:
            image = cv2.bilateralFilter(image, 7, 20 + 40 * lv, 5)
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(60 - 45 * lv)])
        if ok:
            image = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        x[i] = torch.from_numpy(image[:, :, ::-1].copy()).permute(2, 0, 1).to(x)
    return x


def _lose_resolution(x: torch.Tensor, chosen: torch.Tensor, factor: float) -> torch.Tensor:
    """`x` with the `chosen` images shrunk by `factor` (anti-aliased) and enlarged back."""
    if not chosen.any() or factor >= 0.99:
        return x
    size = x.shape[-1]
    small = F.interpolate(x[chosen], size=max(int(size * factor), 8), mode="bilinear", antialias=True)
    x = x.clone()
    x[chosen] = F.interpolate(small, size=size, mode="bilinear", align_corners=False)
    return x
