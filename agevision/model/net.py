"""AgeGenderNet: a MobileNetV2 trunk with an age-distribution head and a gender head."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import mobilenet_v2

from agevision.model.card import ARCHITECTURE  # noqa: F401 - the network this module builds

NUM_AGE_BINS = 101  # ages 0..100 years; older faces are counted as 100


class AgeGenderNet(nn.Module):
    """Input: (N, 3, S, S) float normalised RGB. Output: (N, 102) logits.

    Columns 0..100 are age-bin logits (softmax gives the age distribution), column 101 is
    the gender logit (sigmoid gives P(female)).
    """

    def __init__(self, num_age_bins: int = NUM_AGE_BINS, dropout: float = 0.2) -> None:
        super().__init__()
        self.num_age_bins = num_age_bins
        self.features = mobilenet_v2().features
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(1280, num_age_bins + 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x)).flatten(1)
        return self.head(self.dropout(x))


def split_logits(logits: torch.Tensor, num_age_bins: int = NUM_AGE_BINS) -> tuple[torch.Tensor, torch.Tensor]:
    """(age_logits (N, K), gender_logit (N,)) from the network output."""
    return logits[:, :num_age_bins], logits[:, num_age_bins]


def fuse_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every BatchNorm2d that follows a Conv2d into the conv, in place, for inference.

    The model must be in eval mode. Returns the same model.
    """
    for module in model.modules():
        children = list(module.named_children())
        for (_, conv), (bn_name, bn) in zip(children, children[1:], strict=False):
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                with torch.no_grad():
                    conv.weight.mul_(scale.reshape(-1, 1, 1, 1))
                    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
                    conv.bias = nn.Parameter((bias - bn.running_mean) * scale + bn.bias)
                setattr(module, bn_name, nn.Identity())
    return model
