"""The proof-of-concept baseline: one MLP over the whole flattened token array (no weight sharing across
neurons, no permutation symmetry), so it only serves the exact spec (N, F) it was built for."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from synthnet.errors import SynthNetError
from synthnet.models.film import LevelEmbedding
from synthnet.models.moe import merge_stats
from synthnet.targets import Spec
from synthnet.tokens import Layout, layout

if TYPE_CHECKING:
    from synthnet.config import ModelConfig


class FlatMLP(nn.Module):
    """[flattened tokens, level embedding] -> depth x (Linear, GELU) -> flattened tokens."""

    def __init__(self,
                 cfg: ModelConfig,  # dim (hidden width), depth (hidden layers)
                 spec: Spec):  # the one spec this model serves
        super().__init__()
        lay = layout(spec)
        self.spec, self.size = spec, lay.n_tokens * lay.width
        self.level = LevelEmbedding(cfg.dim)
        widths = [self.size + cfg.dim] + [cfg.dim] * cfg.depth
        layers = [m for a, b in zip(widths[:-1], widths[1:]) for m in (nn.Linear(a, b), nn.GELU())]
        self.mlp = nn.Sequential(*layers, nn.Linear(widths[-1], self.size))
        nn.init.normal_(self.mlp[-1].weight, std=1e-3)  # start near 0, as the attention denoisers do
        nn.init.zeros_(self.mlp[-1].bias)
        self.register_buffer("mask", lay.mask, persistent=False)

    def forward(self, tokens: torch.Tensor, lay: Layout, level_in: torch.Tensor,
                level_out: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """tokens: (B, N, F) normalised neuron tokens of the built spec; lay: its layout (only checked: position in
        the flat vector already says everything); level_in, level_out: (B,) in [0, 1] -> (out (B, N, F), aux with
        zero MoE losses)."""
        if tuple(tokens.shape[1:]) != tuple(self.mask.shape) or not lay.mask.equal(self.mask):
            raise SynthNetError(f"flat-mlp was built for {self.spec} (tokens {tuple(self.mask.shape)}) and serves "
                                f"no other spec; got tokens {tuple(tokens.shape[1:])}")
        x = torch.cat([tokens.flatten(1), self.level(level_in, level_out)], -1)
        return self.mlp(x).view_as(tokens) * self.mask, merge_stats([], tokens.device)
