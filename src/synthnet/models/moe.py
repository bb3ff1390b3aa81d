"""Feed-forward layer: dense when experts == 0, else a top-1 (Switch) mixture of expert MLPs.

Every token goes to exactly one expert, weighted by its router probability (so the router gets a gradient).
No capacity limit and no dropped tokens: routing is per token, so the layer stays permutation-equivariant.
Losses are returned unweighted; the training loop weights them (train.moe_aux, train.moe_z).
"""

from __future__ import annotations

import torch
from torch import nn


def _mlp(dim: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))


class FeedForward(nn.Module):
    """Dense or switch-routed MLP over the last dimension."""

    def __init__(self,
                 dim: int,  # token width
                 mult: int,  # hidden width = mult * dim
                 experts: int):  # 0 = one dense MLP; >= 2 = top-1 routed expert MLPs
        super().__init__()
        self.experts = nn.ModuleList(_mlp(dim, mult * dim) for _ in range(max(experts, 1)))
        self.router = nn.Linear(dim, experts, bias=False) if experts else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """x: (B, T, dim) -> (y (B, T, dim), stats); stats is {} when dense, else
        'balance' (scalar, Switch load-balancing loss E * sum_e f_e * P_e; 1 when balanced),
        'z' (scalar, router z-loss mean logsumexp(logits)^2) and 'util' ((E,) fraction of tokens per expert)."""
        if self.router is None:
            return self.experts[0](x), {}
        flat = x.reshape(-1, x.shape[-1])
        logits = self.router(flat)  # (M, E)
        probs = logits.softmax(-1)
        gate, choice = probs.max(-1)  # (M,), (M,)
        out = torch.zeros_like(flat)
        for e, expert in enumerate(self.experts):
            rows = torch.nonzero(choice == e).flatten()
            out.index_copy_(0, rows, expert(flat[rows]) * gate[rows, None])
        util = torch.bincount(choice, minlength=len(self.experts)).to(x.dtype) / len(choice)
        stats = {"balance": len(self.experts) * (util * probs.mean(0)).sum(),
                 "z": logits.logsumexp(-1).pow(2).mean(), "util": util}
        return out.reshape(x.shape), stats


def merge_stats(stats: list[dict[str, torch.Tensor]], device: torch.device) -> dict[str, torch.Tensor]:
    """Per-layer FeedForward stats -> the denoiser's aux dict, averaged over MoE layers:
    'moe_loss' (balance loss, scalar), 'moe_z' (router z-loss, scalar), 'expert_util' ((E,), or (0,) if dense)."""
    moe = [s for s in stats if s]
    if not moe:
        zero = torch.zeros((), device=device)
        return {"moe_loss": zero, "moe_z": zero, "expert_util": torch.zeros(0, device=device)}
    return {"moe_loss": torch.stack([s["balance"] for s in moe]).mean(),
            "moe_z": torch.stack([s["z"] for s in moe]).mean(),
            "expert_util": torch.stack([s["util"] for s in moe]).mean(0)}
