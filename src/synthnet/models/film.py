"""Step conditioning: Fourier features of (level_in, level_out) -> MLP -> per-block FiLM scale and shift.

A level is a noise level in [0, 1] (1 = random init, 0 = fully trained), not an epoch.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class LevelEmbedding(nn.Module):
    """(level_in, level_out) -> one conditioning vector per network."""

    def __init__(self,
                 dim: int,  # width of the conditioning vector (= denoiser width)
                 freqs: int = 8):  # octaves pi * 2^k; resolve level differences down to about 2^-freqs
        super().__init__()
        self.register_buffer("freqs", math.pi * 2.0 ** torch.arange(freqs), persistent=False)
        self.mlp = nn.Sequential(nn.Linear(4 * freqs, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, level_in: torch.Tensor, level_out: torch.Tensor) -> torch.Tensor:
        """level_in, level_out: (B,) float in [0, 1] -> (B, dim) conditioning vector."""
        angles = torch.stack([level_in, level_out], -1)[..., None] * self.freqs  # (B, 2, freqs)
        return self.mlp(torch.cat([angles.sin(), angles.cos()], -1).flatten(1))


class FiLM(nn.Module):
    """x * (1 + scale(cond)) + shift(cond); zero-initialised so every block starts as the identity."""

    def __init__(self,
                 dim: int):  # width of both the modulated features and the conditioning vector
        super().__init__()
        self.proj = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))
        nn.init.zeros_(self.proj[1].weight)
        nn.init.zeros_(self.proj[1].bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """x: (B, T, dim) features; cond: (B, dim) level embedding -> (B, T, dim) modulated features."""
        scale, shift = self.proj(cond)[:, None].chunk(2, dim=-1)
        return x * (1 + scale) + shift
