"""Denoiser registry: every denoiser maps (tokens, layout, level_in, level_out) -> (tokens, aux).

forward(tokens (B, N, F), lay (tokens.Layout of the spec the tokens belong to), level_in (B,), level_out (B,))
  -> (out (B, N, F) in normalised token space, 0 on padding; aux dict)
aux: 'moe_loss' (switch load-balancing loss, weighted by train.moe_aux; 0 when dense), 'moe_z' (router z-loss,
weighted by train.moe_z; 0 when dense), 'expert_util' ((E,) fraction of tokens per expert; empty when dense).
Levels are noise levels (1 = random init, 0 = trained); the caller adds the input when model.predict=delta.
The layout says which slots are padding and which link two hidden layers (models/wiring.py); a set model built
for one width serves others through their layouts.

Adding a denoiser: one entry in DENOISERS (model.name's choices derive from it); a named size: one entry in SIZES
(chosen with model.size=NAME; its fields are the defaults that the preset and key=value overrides change).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from synthnet.errors import SynthNetError
from synthnet.models.flat_mlp import FlatMLP
from synthnet.models.perceiver import PerceiverDenoiser
from synthnet.models.set import SetDenoiser
from synthnet.targets import Spec

if TYPE_CHECKING:
    from synthnet.config import ModelConfig

DENOISERS = {"flat-mlp": FlatMLP, "set": SetDenoiser, "perceiver": PerceiverDenoiser}

SIZES: dict[str, dict] = {
    "set-S": {"name": "set", "dim": 64, "depth": 3, "heads": 4, "ffn_mult": 2, "experts": 0},
    "set-B": {"name": "set", "dim": 128, "depth": 4, "heads": 4, "ffn_mult": 4, "experts": 0},
    "set-MoE": {"name": "set", "dim": 64, "depth": 3, "heads": 4, "ffn_mult": 2, "experts": 4},
    "perceiver-S": {"name": "perceiver", "dim": 64, "depth": 2, "heads": 4, "latents": 16, "ffn_mult": 2,
                    "experts": 0},
    "flat-mlp": {"name": "flat-mlp", "dim": 512, "depth": 2, "experts": 0},
}


def build_denoiser(cfg: ModelConfig, spec: Spec) -> nn.Module:
    """The denoiser `cfg.name` for tokens of `spec`."""
    if cfg.name not in DENOISERS:
        raise SynthNetError(f"unknown model.name {cfg.name!r}; accepted: {', '.join(DENOISERS)}")
    if cfg.experts == 1 or cfg.experts < 0 or (cfg.name == "flat-mlp" and cfg.experts):
        raise SynthNetError(f"model.experts={cfg.experts} is not accepted for {cfg.name}; use 0 (dense) or >= 2 "
                            "(flat-mlp: 0 only)")
    if cfg.dim % cfg.heads:
        raise SynthNetError(f"model.dim={cfg.dim} must be divisible by model.heads={cfg.heads}")
    return DENOISERS[cfg.name](cfg, spec)
