"""Batch augmentation on tensors: the faces of video and photos taken in the wild, made from UTKFace.

UTKFace is frontal, well lit and tightly cropped; faces in frames are turned, dim, warm or
backlit, noisy, compressed, partly covered, and cropped with more or less around them.
`augment` makes such faces from UTKFace crops. All of it runs on whole (N, 3, S, S) float
batches on the training device (no data-loader workers on a 2-core machine), except the
JPEG step, which uses OpenCV on the CPU. How often each change is made lives in
`AugmentConfig`, which is part of the training config and of the model card.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    """Share of faces (0..1) given each change, and the size of the geometric ones.

    flip: mirrored. rotate: in-plane rotation up to this many degrees. zoom_out, zoom_in:
    the crop shows up to this much more (less) around the face, as crops at other margins
    do. shift: of the crop centre, as a fraction of its size. turn: an out-of-plane turn
    (yaw and pitch by a perspective warp, up to `turn_strength`), as the detector gives
    faces on video. lose_resolution: shrunk to 35-100% and enlarged back. light: dim,
    warm, cold, side-lit or backlit (see `_light`). occlude: a hand, microphone or dark
    glasses (see `_occlude`). noise: sensor noise, stronger in dark faces. gray: colour
    removed. compress: JPEG at quality 15-60, half of them smoothed first (`_compress`).
    """

    flip: float = 0.5
    rotate: float = 12.0
    zoom_out: float = 0.22
    zoom_in: float = 0.08
    shift: float = 0.08
    turn: float = 0.5
    turn_strength: float = 0.35
    lose_resolution: float = 0.2
    light: float = 0.5
    occlude: float = 0.25
    noise: float = 0.3
    gray: float = 0.08
    compress: float = 0.3


def changed_config(text: str) -> AugmentConfig:
    """`AugmentConfig()` with the fields that `text` names changed: "noise=0.4,turn=0" (field
    names, numbers from 0; shares at most 1). "" gives the defaults. ValueError saying what
    is wrong."""
    from dataclasses import fields, replace

    shares = {"flip", "turn", "lose_resolution", "light", "occlude", "noise", "gray", "compress"}
    known = {f.name for f in fields(AugmentConfig)}
    changes = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, eq, value = (s.strip() for s in part.partition("="))
        if not eq or name not in known:
            raise ValueError(f"{part!r} is not NAME=NUMBER with NAME one of {', '.join(sorted(known))}")
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"{name}={value!r} is not a number") from None
        if not (0 <= number <= (1 if name in shares else 90)):
            raise ValueError(f"{name} must be from 0 to {1 if name in shares else 90}, not {value}")
        changes[name] = number
    return replace(AugmentConfig(), **changes)


def augment(x: torch.Tensor, generator: torch.Generator | None = None, cfg: AugmentConfig | None = None
            ) -> torch.Tensor:
    """A randomly changed copy of a float batch, as set out in `cfg` (default `AugmentConfig()`).

    x: (N, 3, S, S) float RGB in [0, 255]. generator: for reproducible draws (CPU).
    Returns a new tensor of the same shape, in [0, 255].
    """
    cfg = cfg or AugmentConfig()
    n, dev = len(x), x.device

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator).to(dev)

    x = _warp(x, cfg, rand)
    x = _lose_resolution(x, rand(n) < cfg.lose_resolution, 0.35 + 0.65 * float(rand(1)))
    brightness = (rand(n, 1, 1, 1) * 2 - 1) * 25
    contrast = 1 + (rand(n, 1, 1, 1) * 2 - 1) * 0.25
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = ((x - mean) * contrast + mean + brightness).clamp(0, 255)
    x = _light(x, rand(n) < cfg.light, rand)
    x = _occlude(x, rand(n) < cfg.occlude, rand)
    x = _noise(x, rand(n) < cfg.noise, rand, generator)
    gray = rand(n, 1, 1, 1) < cfg.gray
    x = torch.where(gray, x.mean(dim=1, keepdim=True).expand_as(x), x)
    return _compress(x.clamp(0, 255), rand(n) < cfg.compress, rand(n))


def _warp(x: torch.Tensor, cfg: AugmentConfig, rand) -> torch.Tensor:
    """Flip, rotate, zoom and shift every face, and turn the chosen ones out of plane.

    The turn is a perspective warp: output point (u, v) samples the source at
    (u, v) / (1 + p u + q v), so one side of the face comes nearer and the other recedes,
    as a head turning by yaw (p) and pitch (q) looks to a camera.
    """
    n, size = len(x), x.shape[-1]
    angle = (rand(n) * 2 - 1) * math.radians(cfg.rotate)
    zoom = 1 + torch.where(rand(n) < 0.5, rand(n) * cfg.zoom_out, -rand(n) * cfg.zoom_in)  # >1: more context
    flip = torch.where(rand(n) < cfg.flip, -1.0, 1.0)
    shift = (rand(n, 2) * 2 - 1) * 2 * cfg.shift
    turned = (rand(n) < cfg.turn).float()
    p = (rand(n) * 2 - 1) * cfg.turn_strength * turned
    q = (rand(n) * 2 - 1) * cfg.turn_strength * 0.6 * turned
    lin = (torch.arange(size, device=x.device, dtype=x.dtype) * 2 + 1) / size - 1  # pixel centres in [-1, 1]
    v, u = torch.meshgrid(lin, lin, indexing="ij")
    u, v = u.expand(n, size, size), v.expand(n, size, size)
    w = 1 + p.view(n, 1, 1) * u + q.view(n, 1, 1) * v
    u, v = u / w, v / w
    cos, sin = (torch.cos(angle) * zoom).view(n, 1, 1), (torch.sin(angle) * zoom).view(n, 1, 1)
    gx = (cos * u - sin * v) * flip.view(n, 1, 1) + shift[:, 0].view(n, 1, 1)
    gy = sin * u + cos * v + shift[:, 1].view(n, 1, 1)
    grid = torch.stack([gx, gy], dim=-1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _light(x: torch.Tensor, chosen: torch.Tensor, rand) -> torch.Tensor:
    """The chosen faces relit, each in one of five ways, with a colour cast:
    dim (exposure 25-70% and a gamma that darkens the shadows), warm (tungsten), cold
    (daylight shade, screens), side-lit (a shadow across the face from a random direction),
    backlit (the face darker than what is around it). Returns a new tensor."""
    if not chosen.any():
        return x
    idx = torch.nonzero(chosen).flatten()
    y = x[idx] / 255
    m, size, dev = len(idx), x.shape[-1], x.device
    mode = (rand(m) * 5).long()
    lin = (torch.arange(size, device=dev, dtype=x.dtype) * 2 + 1) / size - 1
    v, u = torch.meshgrid(lin, lin, indexing="ij")
    # dim
    exposure = 0.25 + 0.45 * rand(m).view(m, 1, 1, 1)
    gamma = 1 + 0.8 * rand(m).view(m, 1, 1, 1)
    dim = y.clamp(min=1e-4) ** gamma * exposure
    # warm and cold: channel gains (R, G, B)
    t = (0.1 + 0.25 * rand(m)).view(m, 1, 1)
    warm = y * torch.stack([1 + t, 1 + 0.3 * t, 1 - 0.8 * t], dim=1).view(m, 3, 1, 1)
    cold = y * torch.stack([1 - 0.6 * t, 1 + 0.05 * t, 1 + 0.5 * t], dim=1).view(m, 3, 1, 1)
    # side-lit: a soft ramp across the face, dark on one side
    theta = rand(m) * 2 * math.pi
    ramp = (torch.cos(theta).view(m, 1, 1) * u + torch.sin(theta).view(m, 1, 1) * v)
    depth = (0.4 + 0.45 * rand(m)).view(m, 1, 1)
    side = y * (1 - depth * torch.sigmoid(4 * ramp)).unsqueeze(1)
    # backlit: dark centre, bright surround
    radius = torch.sqrt(u**2 + v**2).expand(m, size, size)
    centre = (0.3 + 0.35 * rand(m)).view(m, 1, 1)
    back = y * (centre + (1.3 - centre) * (radius / 1.2).clamp(max=1) ** 2).unsqueeze(1)
    out = torch.stack([dim, warm, cold, side, back])[mode, torch.arange(m, device=dev)]
    cast = 1 + (rand(m, 3) * 2 - 1) * 0.08  # white balance is never quite right
    out = out * cast.view(m, 3, 1, 1)
    x = x.clone()
    x[idx] = (out * 255).clamp(0, 255)
    return x


def _occlude(x: torch.Tensor, chosen: torch.Tensor, rand) -> torch.Tensor:
    """The chosen faces partly covered: a block (a hand, a microphone, another head) of
    8-30% of the crop in a random place and flat random colour, or, for a third of them,
    dark glasses (a band over the eyes). Returns a new tensor."""
    if not chosen.any():
        return x
    x = x.clone()
    size = x.shape[-1]
    for i in torch.nonzero(chosen).flatten().tolist():
        r = rand(6)
        color = (r[:3] * 255).view(3, 1, 1)
        if float(r[3]) < 1 / 3:  # glasses: eyes sit at about 35-45% of the crop height
            y0, y1 = int(size * (0.30 + 0.04 * float(r[4]))), int(size * (0.44 + 0.04 * float(r[5])))
            x0, x1 = int(size * 0.22), int(size * 0.78)
            x[i, :, y0:y1, x0:x1] = x[i, :, y0:y1, x0:x1] * 0.25 + color * 0.15
            continue
        area = 0.08 + 0.22 * float(r[4])
        aspect = math.exp((float(r[5]) * 2 - 1) * 0.8)
        h = min(int(size * math.sqrt(area * aspect)), size)
        w = min(int(size * math.sqrt(area / aspect)), size)
        y0 = int(float(rand(1)) * (size - h + 1))
        x0 = int(float(rand(1)) * (size - w + 1))
        x[i, :, y0 : y0 + h, x0 : x0 + w] = color
    return x


def _noise(x: torch.Tensor, chosen: torch.Tensor, rand, generator: torch.Generator | None = None) -> torch.Tensor:
    """Sensor noise on the chosen faces: Gaussian, sigma 2-12 grey levels, larger in the
    darker faces (a camera raises its gain in dim light). Returns a new tensor."""
    if not chosen.any():
        return x
    m = int(chosen.sum())
    level = 2 + 10 * rand(m).view(m, 1, 1, 1)
    dark = 1 + (1 - x[chosen].mean(dim=(1, 2, 3), keepdim=True) / 255)
    gen_noise = torch.randn(x[chosen].shape, generator=generator).to(x.device)
    x = x.clone()
    x[chosen] = (x[chosen] + gen_noise * level * dark).clamp(0, 255)
    return x


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
