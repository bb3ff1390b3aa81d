"""Group-relative advantages: (r - group mean) / (group std + eps), NaN-aware, without a critic."""

from __future__ import annotations

import torch


def group_advantages(rewards: torch.Tensor, std_norm: bool = True, eps: float = 1e-6) -> torch.Tensor:
    """rewards: (groups, members), NaN for absent members -> advantages of the same shape (NaN kept).

    A group whose rewards are all equal gets zero advantage (never NaN); std_norm=False is Dr. GRPO.
    """
    present = ~torch.isnan(rewards)
    count = present.sum(1, keepdim=True).clamp(min=1)
    filled = torch.where(present, rewards, torch.zeros_like(rewards))
    mean = filled.sum(1, keepdim=True) / count
    flat = spread(rewards)[:, None] <= 0  # exactly zero, not float dust divided by a tiny std
    centred = torch.where(present & ~flat, rewards - mean, torch.zeros_like(rewards))
    adv = centred
    if std_norm:
        std = (centred.pow(2).sum(1, keepdim=True) / count).sqrt()
        adv = centred / (std + eps)
    return torch.where(present, adv, torch.full_like(adv, float("nan")))


def spread(rewards: torch.Tensor) -> torch.Tensor:
    """(groups,) max - min of the present rewards of each group (0 for a group of one)."""
    hi = torch.nan_to_num(rewards, nan=-float("inf")).max(1).values
    lo = torch.nan_to_num(rewards, nan=float("inf")).min(1).values
    return (hi - lo).clamp(min=0)


def zero_spread_fraction(rewards: torch.Tensor) -> float:
    """Fraction of groups (rows) whose present rewards are all equal: they teach nothing."""
    return (spread(rewards) <= 0).float().mean().item()
