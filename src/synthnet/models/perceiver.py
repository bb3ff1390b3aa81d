"""Perceiver IO denoiser: a learned latent array reads the neuron tokens (cross-attention), thinks
(latent self-attention), and every token reads its answer back (output queries = the token embeddings).
Reading is a softmax-weighted sum over tokens and writing is per token, so it is permutation-equivariant too;
the latent array keeps the cost linear in the number of tokens.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from synthnet.models.film import LevelEmbedding
from synthnet.models.moe import merge_stats
from synthnet.models.set import Block, TokenIO
from synthnet.targets import Spec
from synthnet.tokens import Layout

if TYPE_CHECKING:
    from synthnet.config import ModelConfig


class PerceiverDenoiser(nn.Module):
    """Encode tokens into `latents` vectors, depth x latent self-attention, decode back to tokens."""

    def __init__(self,
                 cfg: ModelConfig,  # dim, depth, heads, latents, ffn_mult, experts
                 spec: Spec):  # the spec whose layout fixes F (other widths with the same F work too)
        super().__init__()
        self.io = TokenIO(spec, cfg.dim)
        self.level = LevelEmbedding(cfg.dim)
        self.latents = nn.Parameter(torch.randn(cfg.latents, cfg.dim) * 0.02)
        args = (cfg.dim, cfg.heads, cfg.ffn_mult, cfg.experts)
        self.encode = Block(*args, cross=True)
        self.blocks = nn.ModuleList(Block(*args) for _ in range(cfg.depth))
        self.decode = Block(*args, cross=True)

    def forward(self, tokens: torch.Tensor, lay: Layout, level_in: torch.Tensor,
                level_out: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """tokens: (B, N, F) normalised neuron tokens laid out by `lay` (any spec the model serves); level_in,
        level_out: (B,) in [0, 1] -> (out (B, N, F), aux: moe_loss, moe_z, expert_util)."""
        e, cond = self.io.embed(tokens, lay), self.level(level_in, level_out)
        z, s = self.encode(self.latents.expand(len(tokens), -1, -1), cond, e)
        stats = [s]
        for block in self.blocks:
            z, s = block(z, cond)
            stats.append(s)
        h, s = self.decode(e, cond, z)
        return self.io.predict(h, lay), merge_stats([*stats, s], tokens.device)
