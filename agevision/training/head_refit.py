"""`agevision train --init DIR --age-head-only | --gender-head-only`: retrain one part of the
last layer only, on the frozen network of DIR.

The trunk reads the training faces once as they are and `cfg.epochs - 1` times augmented
(`cfg.augment`, then the card's `denoise` rule, as runtime reads them); the rows of the last
layer that the part owns are then fitted on those features, the other rows and everything
else staying as they are. Forward passes only: about 15 minutes for 8 copies on 2 cores, a
third of a full training.

- "age": the 101 age rows, with the age part of the training loss (`losses.age_loss`); the
  age temperature is fitted again on the calibration faces. The gender row, the gender
  temperature and the second gender network stay, so P(female) is the same as with DIR for
  every face (only where the second network joins in by age, `min_age`, can a new age
  change it).
- "gender": the gender row, with the gender part of the training loss against each face's
  gender target (its label, mixed with the `cfg.teacher` folders' reading as
  `training.teacher` says; weighed by `cfg.balance`); the gender temperature and the second
  gender network's weight are fitted again on the calibration faces. The age rows and the
  age temperature stay, so every age reading is DIR's.
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from agevision.errors import AgevisionError
from agevision.model import weights
from agevision.model.denoise import denoise
from agevision.model.net import NUM_AGE_BINS, AgeGenderNet
from agevision.training import calibration, ensemble
from agevision.training.losses import age_loss

PASSES = 4  # passes over all the copies' features
BATCH = 256  # faces per step of the head, and per forward pass of the trunk
PARTS = {"age": slice(0, NUM_AGE_BINS), "gender": slice(NUM_AGE_BINS, NUM_AGE_BINS + 1)}


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


def fit_rows(head: torch.nn.Linear, rows: slice, feats: torch.Tensor, loss_of, cfg) -> list[float]:
    """Fit the `rows` of `head` (in place) on features: `loss_of(logits, idx)` is the loss of
    those rows' logits for the faces `idx` (a LongTensor into `feats`). AdamW at cfg.lr with
    cosine decay over PASSES passes, dropout 0.2 on the features as in training; the other
    rows are not touched. Returns the mean loss of each pass."""
    gen = torch.Generator().manual_seed(cfg.seed)
    w = head.weight[rows].detach().clone().requires_grad_(True)
    b = head.bias[rows].detach().clone().requires_grad_(True)
    opt = torch.optim.AdamW([w, b], lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = PASSES * max(1, -(-len(feats) // BATCH))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    losses = []
    for _ in range(PASSES):
        order, running = torch.randperm(len(feats), generator=gen), []
        for i in range(0, len(feats), BATCH):
            idx = order[i : i + BATCH]
            x = F.dropout(feats[idx], 0.2, training=True)
            loss = loss_of(x @ w.T + b, idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            running.append(loss.item())
        losses.append(float(np.mean(running)))
    with torch.no_grad():
        head.weight[rows] = w
        head.bias[rows] = b
    return losses


def _loss(part: str, data, copies: int, cfg):
    """The loss of one part's logits for faces `idx` of `copies` stacked copies of the
    training faces (see `fit_rows`)."""
    if part == "age":
        ages, bins = torch.from_numpy(np.tile(data.train.ages, copies)), torch.arange(NUM_AGE_BINS,
                                                                                      dtype=torch.float32)
        return lambda logits, idx: age_loss(logits, ages[idx], bins, cfg.l1_weight)
    targets = torch.from_numpy(np.tile(data.gender_targets, copies)).float()
    weighs = data.gender_weights.repeat(copies).float()

    def gender(logits: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        per_face = F.binary_cross_entropy_with_logits(logits[:, 0], targets[idx], reduction="none")
        return (per_face * weighs[idx]).sum() / weighs[idx].sum().clamp(min=1e-6)

    return gender


def check(cfg, part: str) -> None:
    """AgevisionError, before any work, where `cfg` cannot refit `part`: no `init`; a
    `teacher` for the age part; `keep_gender` or a teacher's age for the gender part."""
    flag = f"--{part}-head-only"
    if cfg.init is None:
        raise AgevisionError(f"{flag} retrains the {part} rows of other weights: pass --init DIR")
    if part == "age" and cfg.teacher:
        raise AgevisionError(f"{flag} keeps the gender reading of --init: --teacher does not apply")
    if part == "gender" and (cfg.keep_gender or cfg.teacher_age_weight):
        raise AgevisionError(f"{flag} keeps the age reading of --init: --keep-gender and --teacher-age-weight "
                             "do not apply")


def _recalibrate(part: str, model: AgeGenderNet, card, data, cfg, device: torch.device):
    """`card` with the part's temperature (and, for gender, the second network's weight)
    fitted again on the calibration faces, as a full training fits them."""
    from agevision.model.decode import decode
    from agevision.training.train import _calibration_logits

    calib_src = data.calib if len(data.calib.names) else data.val
    a, g, crops = _calibration_logits(model, calib_src, cfg, device, card)
    reps = 1 + cfg.calib_augmented
    if part == "age":
        return replace(card, age_temperature=calibration.fit_age(a, np.tile(calib_src.ages, reps)))
    genders = np.tile(calib_src.genders, reps)
    card = replace(card, gender_temperature=calibration.fit_gender(g, genders))
    if len(genders):  # dlib's gender network beside ours, as a full training fits it
        read = decode(a, g, card.age_temperature, card.gender_temperature).age
        card = ensemble.attach(card, g / card.gender_temperature,
                               ensemble.second_logits(crops, card.input_size, card.crop), genders, read)
    return card


def refit(cfg, console, part: str = "age") -> dict:
    """Run the retraining of `part` ("age" or "gender") as set out above; returns the card
    written to cfg.out_dir (a dict). cfg: a `train.TrainConfig` that `check` accepts;
    AgevisionError otherwise, before any work."""
    from agevision.model.torch_backend import pick_device
    from agevision.training.train import _config_dict, _load_data, augmented_copy, card_metrics, predict_logits

    if part not in PARTS:
        raise ValueError(f"part is 'age' or 'gender', not {part!r}")
    check(cfg, part)
    started = time.time()
    torch.manual_seed(cfg.seed)
    device = pick_device(cfg.device)
    model, card = weights.load(cfg.init)
    model = model.to(device)
    cfg = replace(cfg, crop=card.crop)  # the frozen network reads crops as it was trained on them
    for folder in cfg.teacher:
        if weights.load_card(folder).crop != card.crop:
            raise AgevisionError(f"--teacher {folder}: its weights read crops placed otherwise than --init {cfg.init}")
    data = _load_data(cfg, console)
    gen = torch.Generator().manual_seed(cfg.seed)
    train_feats = []
    for copy in range(cfg.epochs):
        crops = data.train.crops if copy == 0 else augmented_copy(data.train.crops, gen, cfg.augment)
        train_feats.append(features(model, denoise(crops, card.denoise), card, device))
        console.print(f"features of the training faces, copy {copy + 1}/{cfg.epochs} "
                      f"({time.time() - started:.0f} s)")
    head = model.head.cpu()
    losses = fit_rows(head, PARTS[part], torch.cat(train_feats), _loss(part, data, cfg.epochs, cfg), cfg)
    model.head = head.to(device)
    console.print(f"{part} head loss by pass: " + ", ".join(f"{v:.3f}" for v in losses))
    new = _recalibrate(part, model, card, data, cfg, device)
    val_metrics = {}
    if len(data.val.names):
        crops = denoise(data.val.crops, new.denoise)
        a, g = predict_logits(model, crops, device, new)
        val_metrics = card_metrics(new, a, g, crops, data.val.ages, data.val.genders)
    was = {"age": {"age_temperature_was": card.age_temperature},
           "gender": {"gender_temperature_was": card.gender_temperature,
                      "gender_ensemble_weight_was": None if card.gender_ensemble is None
                      else card.gender_ensemble.weight}}[part]
    extra = {**new.extra, "validation_metrics": val_metrics, f"{part}_head_refit": {
        "from_tensors_sha256": card.tensors_sha256, "copies": cfg.epochs, "passes": PASSES,
        "losses": losses, "config": _config_dict(cfg), **was,
        **({"teacher_tensors_sha256": data.teacher_sha256} if cfg.teacher else {}),
        "seconds": round(time.time() - started),
        "command": " ".join(["agevision", *sys.argv[1:]]) if sys.argv else ""}}
    written = weights.save(model.cpu(), replace(new, extra=extra), cfg.out_dir)
    console.print(f"weights written to {cfg.out_dir}")
    return written.to_dict()
