"""`agevision train --init DIR --age-head-only`: retrain the age rows of the last layer only.

Everything else of the weights in DIR stays as it is: the trunk, the gender row of the last
layer, the gender temperature and the second gender network, so P(female) is the same as
with DIR for every face (only where the second network joins in by age, `min_age`, can a new
age change it). The trunk reads the training faces once as they are and `cfg.epochs - 1`
times augmented (`cfg.augment`, then the card's `denoise` rule, as runtime reads them); the
101 age rows are then fitted on those features with the age part of the training loss
(`losses.age_loss`), and the age temperature is fitted again on the calibration faces.
Forward passes only: about 15 minutes for 8 copies on 2 cores, a third of a full training.
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace

import numpy as np
import torch

from agevision.errors import AgevisionError
from agevision.model import weights
from agevision.model.denoise import denoise
from agevision.model.net import NUM_AGE_BINS, AgeGenderNet
from agevision.training import calibration
from agevision.training.losses import age_loss

PASSES = 4  # passes over all the copies' features
BATCH = 256  # faces per step of the head, and per forward pass of the trunk


def features(model: AgeGenderNet, crops: np.ndarray, card, device: torch.device) -> torch.Tensor:
    """(N, 1280) float32 pooled trunk features of (N, S, S, 3) uint8 RGB crops (eval mode)."""
    from agevision.training.train import _normalise, _to_batch

    model.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(crops), BATCH):
            x = _normalise(_to_batch(crops[i : i + BATCH], device), card)
            out.append(model.pool(model.features(x)).flatten(1).float().cpu())
    return torch.cat(out) if out else torch.zeros((0, 1280))


def fit_age_rows(head: torch.nn.Linear, feats: torch.Tensor, ages: torch.Tensor, cfg) -> list[float]:
    """Fit the first NUM_AGE_BINS rows of `head` (in place) on features and true ages: AdamW
    at cfg.lr with cosine decay over PASSES passes, dropout 0.2 on the features as in
    training; the gender row is not touched. Returns the mean loss of each pass."""
    gen = torch.Generator().manual_seed(cfg.seed)
    w = head.weight[:NUM_AGE_BINS].detach().clone().requires_grad_(True)
    b = head.bias[:NUM_AGE_BINS].detach().clone().requires_grad_(True)
    opt = torch.optim.AdamW([w, b], lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = PASSES * max(1, -(-len(feats) // BATCH))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    bins = torch.arange(NUM_AGE_BINS, dtype=torch.float32)
    losses = []
    for _ in range(PASSES):
        order, running = torch.randperm(len(feats), generator=gen), []
        for i in range(0, len(feats), BATCH):
            idx = order[i : i + BATCH]
            x = torch.nn.functional.dropout(feats[idx], 0.2, training=True)
            loss = age_loss(x @ w.T + b, ages[idx], bins, cfg.l1_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            running.append(loss.item())
        losses.append(float(np.mean(running)))
    with torch.no_grad():
        head.weight[:NUM_AGE_BINS] = w
        head.bias[:NUM_AGE_BINS] = b
    return losses


def refit(cfg, console) -> dict:
    """Run the age-head retraining as set out above; returns the card written to cfg.out_dir
    (a dict). cfg: a `train.TrainConfig` with `init` and no `teacher`; AgevisionError
    otherwise, before any work."""
    from agevision.model.torch_backend import pick_device
    from agevision.training.train import (
        _calibration_logits,
        _config_dict,
        _load_data,
        augmented_copy,
        card_metrics,
        predict_logits,
    )

    if cfg.init is None:
        raise AgevisionError("--age-head-only retrains the age rows of other weights: pass --init DIR")
    if cfg.teacher:
        raise AgevisionError("--age-head-only keeps the gender reading of --init: --teacher does not apply")
    started = time.time()
    torch.manual_seed(cfg.seed)
    device = pick_device(cfg.device)
    model, card = weights.load(cfg.init)
    model = model.to(device)
    cfg = replace(cfg, crop=card.crop)  # the frozen network reads crops as it was trained on them
    data = _load_data(cfg, console)
    gen = torch.Generator().manual_seed(cfg.seed)
    train_feats = []
    for copy in range(cfg.epochs):
        crops = data.train.crops if copy == 0 else augmented_copy(data.train.crops, gen, cfg.augment)
        train_feats.append(features(model, denoise(crops, card.denoise), card, device))
        console.print(f"features of the training faces, copy {copy + 1}/{cfg.epochs} "
                      f"({time.time() - started:.0f} s)")
    ages = torch.from_numpy(np.tile(data.train.ages, cfg.epochs))
    losses = fit_age_rows(model.head, torch.cat(train_feats), ages, cfg)
    console.print("age head loss by pass: " + ", ".join(f"{v:.3f}" for v in losses))
    calib_src = data.calib if len(data.calib.names) else data.val
    a, _, _ = _calibration_logits(model, calib_src, cfg, device, card)
    age_t = calibration.fit_age(a, np.tile(calib_src.ages, 1 + cfg.calib_augmented))
    new = replace(card, age_temperature=age_t)
    val_metrics = {}
    if len(data.val.names):
        crops = denoise(data.val.crops, new.denoise)
        a, g = predict_logits(model, crops, device, new)
        val_metrics = card_metrics(new, a, g, crops, data.val.ages, data.val.genders)
    extra = {**card.extra, "validation_metrics": val_metrics, "age_head_refit": {
        "from_tensors_sha256": card.tensors_sha256, "copies": cfg.epochs, "passes": PASSES,
        "losses": losses, "config": _config_dict(cfg), "age_temperature_was": card.age_temperature,
        "seconds": round(time.time() - started),
        "command": " ".join(["agevision", *sys.argv[1:]]) if sys.argv else ""}}
    written = weights.save(model.cpu(), replace(new, extra=extra), cfg.out_dir)
    console.print(f"weights written to {cfg.out_dir}")
    return written.to_dict()
