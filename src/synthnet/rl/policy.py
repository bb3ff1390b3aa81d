"""The one policy interface the RL loop sees: forward -> distribution, sample, log_prob, kl.

An action is the next weight state: W_{t+1} ~ Normal(mu_theta(W_t, t), sigma^2 I) in normalised token space.
Log-probabilities and KLs are averaged over the valid (unpadded) weight dimensions so ratios stay sane.
At inference the mean is used, so what GRPO optimises is what users get.
"""

from __future__ import annotations

import torch
from torch.distributions import Normal, kl_divergence

from synthnet.synthesize import Synthesizer
from synthnet.targets import Spec
from synthnet.tokens import layout


class GaussianPolicy:
    """Wraps a Synthesizer's denoising step as a diagonal Gaussian with a shared, schedulable sigma."""

    def __init__(self, synth: Synthesizer, sigma: float):
        self.synth = synth  # the trainable denoiser (its mean is mu_theta)
        self.sigma = sigma  # std in normalised weight space (patched live by the GRPO loop)

    def forward(self, spec: Spec, tokens: torch.Tensor, level_in: torch.Tensor, level_out: torch.Tensor,
                rows: torch.Tensor | None = None):
        """tokens: (U, N, F); levels: (U,); rows: (M,) the input row of each distribution (default: one per input,
        M = U). Returns (Normal over (M, N, F), aux dict of the denoiser)."""
        mean, aux = self.synth.step(spec, tokens, level_in, level_out)
        mean = mean if rows is None else mean[rows]
        return Normal(mean, torch.full_like(mean, self.sigma)), aux

    def sample(self, spec: Spec, dist: Normal, g: torch.Generator) -> torch.Tensor:
        """(M, N, F) action; padded feature slots stay exactly 0."""
        noise = torch.randn(dist.mean.shape, generator=g) * dist.stddev
        return dist.mean + noise * layout(spec).mask

    @staticmethod
    def _mean_valid(spec: Spec, values: torch.Tensor) -> torch.Tensor:
        mask = layout(spec).mask.to(values.dtype)
        return (values * mask).sum(dim=(-1, -2)) / mask.sum()

    def log_prob(self, spec: Spec, dist: Normal, action: torch.Tensor) -> torch.Tensor:
        """(M,) Gaussian log-density of `action`, averaged over valid weight dimensions."""
        return self._mean_valid(spec, dist.log_prob(action))

    def kl(self, spec: Spec, dist: Normal, ref: Normal) -> torch.Tensor:
        """(M,) closed-form KL(dist || ref), averaged over valid weight dimensions."""
        return self._mean_valid(spec, kl_divergence(dist, ref))

    def entropy(self, spec: Spec, dist: Normal) -> torch.Tensor:
        return self._mean_valid(spec, dist.entropy())
