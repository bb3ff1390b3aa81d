"""Set-Transformer denoiser: neuron tokens attend to each other; no positional encoding, so permuting the
hidden units of a layer permutes the output the same way. Also home of the pieces the Perceiver reuses:
the token embedding / head (`TokenIO`) and the FiLM-conditioned pre-LN attention block (`Block`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from synthnet.errors import SynthNetError
from synthnet.models.film import FiLM, LevelEmbedding
from synthnet.models.moe import FeedForward, merge_stats
from synthnet.targets import Spec
from synthnet.models.wiring import Wiring
from synthnet.tokens import N_ROLES, Layout, layout

if TYPE_CHECKING:
    from synthnet.config import ModelConfig


class TokenIO(nn.Module):
    """Tokens + roles -> embeddings, and embeddings -> per-token predictions with padding forced to 0.
    Slots that link two hidden layers go through `Wiring` (edge messages in, per-edge readout out) instead."""

    def __init__(self,
                 spec: Spec,  # the spec the model is built for: fixes F and whether it has hidden-to-hidden links
                 dim: int):  # denoiser width
        super().__init__()
        lay = layout(spec)
        self.spec = spec
        self.features = nn.Linear(lay.width, dim)
        self.roles = nn.Embedding(N_ROLES, dim)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, lay.width)
        # Small, not zero: the first outputs are ~1e-2 in normalised units, i.e. about the mean for x0 and about
        # the identity for delta, yet the trunk gets gradient from the first step (a zero head blocks it once).
        nn.init.normal_(self.head.weight, std=1e-3)
        nn.init.zeros_(self.head.bias)
        self.wiring = Wiring(dim, lay.links[0].kernel) if lay.links else None

    def _check(self, tokens: torch.Tensor, lay: Layout) -> None:
        if tokens.shape[-1] != self.head.out_features or tuple(tokens.shape[1:]) != (lay.n_tokens, lay.width):
            raise SynthNetError(f"denoiser built for {self.spec} takes tokens of F={self.head.out_features} "
                                f"features laid out as (N, F) = {(lay.n_tokens, lay.width)}; got "
                                f"{tuple(tokens.shape[1:])}")
        if lay.links and self.wiring is None:
            raise SynthNetError(f"denoiser built for {self.spec} has no hidden layer fed by hidden units and cannot "
                                "serve a spec that has one; build it for the deeper spec")

    def embed(self, tokens: torch.Tensor, lay: Layout) -> torch.Tensor:
        """tokens: (B, N, F) normalised, laid out by `lay` -> (B, N, dim)."""
        self._check(tokens, lay)
        edge = lay.edge.to(tokens.device)
        e = self.features(tokens.masked_fill(edge, 0.0)) + self.roles(lay.roles.to(tokens.device))
        return e if self.wiring is None else self.wiring.embed(tokens, e, lay)

    def predict(self, h: torch.Tensor, lay: Layout) -> torch.Tensor:
        """h: (B, N, dim) -> (B, N, F) predictions laid out by `lay`, 0 on padding."""
        h = self.norm(h)
        out = self.head(h) * lay.mask.to(h.device)
        return out if self.wiring is None else self.wiring.predict(h, out, lay)


class Block(nn.Module):
    """Pre-LN attention (self- or cross-) then feed-forward, each input FiLM-modulated by the level embedding."""

    def __init__(self,
                 dim: int,  # token width
                 heads: int,  # attention heads
                 ffn_mult: int,  # feed-forward hidden = ffn_mult * dim
                 experts: int,  # 0 = dense feed-forward; >= 2 = top-1 MoE
                 cross: bool = False):  # attend to a separate context (own LayerNorm) instead of to itself
        super().__init__()
        self.norm_q, self.norm_ffn = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim) if cross else nn.Identity()
        self.film_attn, self.film_ffn = FiLM(dim), FiLM(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.ffn = FeedForward(dim, ffn_mult, experts)

    def forward(self, x: torch.Tensor, cond: torch.Tensor,
                context: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """x: (B, T, dim) queries; cond: (B, dim); context: (B, S, dim) keys/values, None = self-attention
        -> (x (B, T, dim), FeedForward stats)."""
        q = self.film_attn(self.norm_q(x), cond)
        kv = q if context is None else self.norm_kv(context)
        x = x + self.attn(q, kv, kv, need_weights=False)[0]
        y, stats = self.ffn(self.film_ffn(self.norm_ffn(x), cond))
        return x + y, stats


class SetDenoiser(nn.Module):
    """depth x self-attention blocks over all neuron tokens of a network."""

    def __init__(self,
                 cfg: ModelConfig,  # dim, depth, heads, ffn_mult, experts
                 spec: Spec):  # the spec whose layout fixes F (other widths with the same F work too)
        super().__init__()
        self.io = TokenIO(spec, cfg.dim)
        self.level = LevelEmbedding(cfg.dim)
        self.blocks = nn.ModuleList(Block(cfg.dim, cfg.heads, cfg.ffn_mult, cfg.experts) for _ in range(cfg.depth))

    def forward(self, tokens: torch.Tensor, lay: Layout, level_in: torch.Tensor,
                level_out: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """tokens: (B, N, F) normalised neuron tokens laid out by `lay` (any spec the model serves); level_in,
        level_out: (B,) in [0, 1] -> (out (B, N, F), aux: moe_loss, moe_z, expert_util)."""
        h, cond = self.io.embed(tokens, lay), self.level(level_in, level_out)
        stats = []
        for block in self.blocks:
            h, s = block(h, cond)
            stats.append(s)
        return self.io.predict(h, lay), merge_stats(stats, tokens.device)
