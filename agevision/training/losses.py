"""Training losses: age as a label distribution, gender as a probability."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def age_targets(ages: torch.Tensor, bins: torch.Tensor, sigma: float = 2.0) -> torch.Tensor:
    """Gaussian label distributions (N, K) centred on each true age (clipped to the bins).

    The spread grows with age (sigma + 3% of the age), as ageing signs blur with years.
    """
    ages = ages.float().clamp(bins[0], bins[-1]).unsqueeze(1)
    spread = sigma + 0.03 * ages
    t = torch.exp(-0.5 * ((bins.unsqueeze(0) - ages) / spread) ** 2)
    return t / t.sum(dim=1, keepdim=True)


def age_loss(age_logits: torch.Tensor, ages: torch.Tensor, bins: torch.Tensor, l1_weight: float = 0.05,
             soft: torch.Tensor | None = None, soft_weight: float = 0.0) -> torch.Tensor:
    """age_kl + l1_weight * age_l1 (see `loss_terms`): the age part of the training loss.
    soft: (N, K) age distributions (a teacher's reading, see `training.teacher`) that make up
    `soft_weight` of the KL term's target, the label distribution the rest; the L1 term
    keeps the labels."""
    log_p = F.log_softmax(age_logits, dim=1)
    target = age_targets(ages, bins)
    if soft is not None and soft_weight > 0:
        target = (1 - soft_weight) * target + soft_weight * soft.float()
    age_kl = F.kl_div(log_p, target, reduction="batchmean")
    expected = (log_p.exp() * bins).sum(dim=1)
    age_l1 = (expected - ages.float().clamp(bins[0], bins[-1])).abs().mean()
    return age_kl + l1_weight * age_l1


def loss_terms(
    age_logits: torch.Tensor, gender_logit: torch.Tensor, ages: torch.Tensor, genders: torch.Tensor,
    bins: torch.Tensor, l1_weight: float = 0.05, gender_weights: torch.Tensor | None = None,
    soft_ages: torch.Tensor | None = None, soft_weight: float = 0.0,
) -> torch.Tensor:
    """The training loss: age_kl + l1_weight * age_l1 + gender, where age_kl compares the age
    distribution with a label distribution, age_l1 is the error of the expected age and
    gender the BCE of the gender logit against `genders` (1 = female, or a probability: a
    label mixed with a teacher's reading, see `training.teacher`). The L1 term pulls the
    expected age (the number shown) onto the true age; the KL term keeps the distribution's
    shape. gender_weights: (N,) weights of the faces in the gender term (default: all alike).
    soft_ages, soft_weight: a teacher's age distributions and their share of the KL target
    (see `age_loss`).
    """
    age = age_loss(age_logits, ages, bins, l1_weight, soft_ages, soft_weight)
    if gender_weights is None:
        gender = F.binary_cross_entropy_with_logits(gender_logit, genders.float())
    else:
        per_face = F.binary_cross_entropy_with_logits(gender_logit, genders.float(), reduction="none")
        gender = (per_face * gender_weights).sum() / gender_weights.sum().clamp(min=1e-6)
    return age + gender
