"""Weights averaged from several training runs of the same network ("model soup"), then
calibrated and measured as `train` does: one network, one forward pass, what the runs
learned in between.

Runs fine-tuned from the same ImageNet start stay close enough in weight space that the
average of their weights is a good network; averaging a run trained for UTKFace with one
trained for the wild keeps some of each.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from agevision.errors import AgevisionError
from agevision.model import weights
from agevision.model.net import AgeGenderNet
from agevision.model.torch_backend import pick_device
from agevision.training.train import TrainConfig, _final_card, _load_data


def average_state(states: list[dict], shares: list[float]) -> dict:
    """The weighted mean of state dicts (floating tensors; other tensors from the first)."""
    if len(states) != len(shares) or not states:
        raise AgevisionError("give one share per weights folder")
    total = float(sum(shares))
    out = {}
    for name, first in states[0].items():
        if first.dtype.is_floating_point:
            out[name] = sum(s[name].float() * (w / total) for s, w in zip(states, shares, strict=True)).to(first.dtype)
        else:
            out[name] = first.clone()
    return out


def average_weights(folders: list[Path], shares: list[float], cfg: TrainConfig, console) -> dict:
    """Average the weights in `folders` by `shares`, calibrate on cfg's data split (as `train`
    does), measure on its validation part and write into cfg.out_dir. Returns the card."""
    started = time.time()
    loaded = [weights.load(f) for f in folders]
    cards = [c for _, c in loaded]
    if len({(c.input_size, c.age_bins, c.mean, c.std) for c in cards}) != 1:
        raise AgevisionError("the weights differ in input size, age bins or normalisation: they cannot be averaged")
    model = AgeGenderNet(num_age_bins=len(cards[0].age_bins))
    model.load_state_dict(average_state([m.state_dict() for m, _ in loaded], shares))
    device = pick_device(cfg.device)
    model = model.to(device).to(memory_format=torch.channels_last).eval()
    data = _load_data(cfg, console)
    card = _final_card(model, cards[0], cfg, data, [], started, device)
    card.extra["averaged_from"] = [{"weights": str(f), "share": s, "training_command": c.extra.get("command"),
                                    "validation_metrics": c.extra.get("validation_metrics")}
                                   for f, s, c in zip(folders, shares, cards, strict=True)]
    card.extra.pop("history", None)
    return weights.save(model, card, cfg.out_dir).to_dict()
