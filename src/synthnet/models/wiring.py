"""Weights between two hidden layers as edges between tokens, so a set denoiser knows which units they connect.

A hidden layer fed by hidden units stores its incoming weights in slots ordered by the feeding layer's unit index
(tokens.Link). Permuting the feeding layer permutes those slots, so no per-token linear map of them can mean
anything, and a set denoiser fed them as features does not learn (digits, pure token MSE: mlp:64-64-32-10 stayed
at chance). As neural-functional networks do, each such weight w_ij instead
  - carries a message between its two end tokens: the fed unit i gets sum_j w_ij U(e_j), the feeding unit j gets
    sum_i w_ij V(e_i) (one linear map per kernel position), scaled by 1/sqrt(the number of terms);
  - is predicted per edge from its end tokens' final features: a bilinear form q(h_i) . k(h_j) / sqrt(dim) for each
    kernel position.
Both are sums and products over matched indices, so permuting either layer's units permutes the result the same way.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from synthnet.errors import SynthNetError
from synthnet.tokens import Layout


class Wiring(nn.Module):
    """Edge messages into the token embeddings, and per-edge readout of the linked slots."""

    def __init__(self,
                 dim: int,  # denoiser width
                 kernel: int):  # kernel positions per edge (1 for an mlp): every link served must have it
        super().__init__()
        self.dim, self.kernel = dim, kernel
        self.to_dst = nn.Linear(dim, kernel * dim)  # feeding unit's embedding -> message per kernel position
        self.to_src = nn.Linear(dim, kernel * dim)  # fed unit's embedding -> message per kernel position
        self.query = nn.Linear(dim, kernel * dim)  # fed unit's features -> one bilinear form per kernel position
        self.key = nn.Linear(dim, dim)  # feeding unit's features
        nn.init.normal_(self.query.weight, std=1e-3)  # small first predictions, as TokenIO's head
        nn.init.zeros_(self.query.bias)

    def _check(self, lay: Layout) -> None:
        for link in lay.links:
            if link.kernel != self.kernel:
                raise SynthNetError(f"denoiser built for {self.kernel} kernel positions per edge got a layer with "
                                    f"{link.kernel}; serve specs with the same kernel size")

    def embed(self, tokens: torch.Tensor, e: torch.Tensor, lay: Layout) -> torch.Tensor:
        """tokens: (B, N, F) normalised; e: (B, N, dim) per-token embeddings -> (B, N, dim) with edge messages."""
        self._check(lay)
        messages = torch.zeros_like(e)
        for link in lay.links:
            w = link.rows(tokens)  # (B, I, J, K)
            src, dst = e[:, link.src:link.src + link.src_units], e[:, link.dst:link.dst + link.dst_units]
            into_dst = torch.einsum("bijk,bjkd->bid", w, self.to_dst(src).unflatten(-1, (self.kernel, self.dim)))
            into_src = torch.einsum("bijk,bikd->bjd", w, self.to_src(dst).unflatten(-1, (self.kernel, self.dim)))
            messages[:, link.dst:link.dst + link.dst_units] += into_dst / math.sqrt(link.src_units * link.kernel)
            messages[:, link.src:link.src + link.src_units] += into_src / math.sqrt(link.dst_units * link.kernel)
        return e + messages

    def predict(self, h: torch.Tensor, out: torch.Tensor, lay: Layout) -> torch.Tensor:
        """h: (B, N, dim) final features; out: (B, N, F) per-token predictions -> out with every linked slot
        replaced by its edge readout."""
        self._check(lay)
        out = out.masked_fill(lay.edge.to(out.device), 0.0)
        for link in lay.links:
            q = self.query(h[:, link.dst:link.dst + link.dst_units]).unflatten(-1, (self.kernel, self.dim))
            k = self.key(h[:, link.src:link.src + link.src_units])
            edges = torch.einsum("bikd,bjd->bijk", q, k).flatten(-2) / math.sqrt(self.dim)  # (B, I, J * K)
            cols = (link.col, out.shape[-1] - link.col - edges.shape[-1])
            rows = (link.dst, out.shape[1] - link.dst - link.dst_units)
            out = out + nn.functional.pad(edges, cols + rows)
        return out
