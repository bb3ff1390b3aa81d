"""The one policy interface the RL loop sees: forward -> distribution, sample, log_prob, kl.

An action is the next weight state, Gaussian around the denoiser's mean mu_theta(W_t, t) in normalised token space,
exploring either every weight (explore=weights: W_{t+1} ~ Normal(mu, sigma^2 I), d = all weights) or one direction
per neuron (explore=neurons: W_{t+1} = mu + sigma * z_n * u_n, z ~ Normal(0, I) over the N tokens, u_n the unit row
of the frozen reference's step for token n). A group of G rollouts can carry at most about sqrt(G / d) of the
reward's gradient: d = 2,410 weights of mlp:64-32-10 against N = 33 neurons. Log-probabilities are exact Gaussian
densities of the explored coordinates; they and the KL to the reference (on the means, every weight) are averaged
over the valid dimensions so ratios stay sane. At inference the mean is used, so what GRPO optimises is what users
get.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from synthnet.synthesize import Synthesizer
from synthnet.targets import Spec
from synthnet.tokens import layout

@dataclass
class StepDist:
    """The policy's distribution over M next states."""

    mean: torch.Tensor  # (M, N, F) mu_theta
    sigma: float  # std of every explored coordinate
    basis: torch.Tensor | None  # (M, N, F) unit row per token (explore=neurons), None: every weight explored


class GaussianPolicy:
    """Wraps a Synthesizer's denoising step as a Gaussian with a shared, schedulable sigma."""

    def __init__(self, synth: Synthesizer, sigma: float, explore: str = "weights", ref: Synthesizer | None = None):
        self.synth = synth  # the trainable denoiser (its mean is mu_theta)
        self.sigma = sigma  # std in normalised weight space (patched live by the GRPO loop)
        self.explore = explore  # weights | neurons
        self.ref = ref  # the frozen reference whose steps give the neuron directions (explore=neurons)

    def forward(self, spec: Spec, tokens: torch.Tensor, level_in: torch.Tensor, level_out: torch.Tensor,
                rows: torch.Tensor | None = None, ref_mean: torch.Tensor | None = None) -> tuple[StepDist, dict]:
        """tokens: (U, N, F); levels: (U,); rows: (M,) the input row of each distribution (default: one per input,
        M = U); ref_mean: (U, N, F) the reference's step at tokens when the caller has it (explore=neurons; else it
        is computed). Returns (distribution over (M, N, F), aux dict of the denoiser)."""
        mean, aux = self.synth.step(spec, tokens, level_in, level_out)
        basis = None
        if self.explore == "neurons":
            if ref_mean is None:
                with torch.no_grad():
                    ref_mean, _ = self.ref.step(spec, tokens, level_in, level_out)
            step = (ref_mean - tokens) * layout(spec).mask
            basis = step / step.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        if rows is not None:
            mean, basis = mean[rows], None if basis is None else basis[rows]
        return StepDist(mean, self.sigma, basis), aux

    def noise_shape(self, dist: StepDist) -> tuple[int, ...]:
        """Shape of the unit noise of one draw: (M, N, F) over weights, (M, N, 1) over neurons."""
        return tuple(dist.mean.shape) if dist.basis is None else (*dist.mean.shape[:2], 1)

    def act(self, spec: Spec, dist: StepDist, noise: torch.Tensor) -> torch.Tensor:
        """(M, N, F) action for unit noise of noise_shape(dist); padded feature slots stay exactly 0."""
        direction = layout(spec).mask if dist.basis is None else dist.basis
        return dist.mean + dist.sigma * noise * direction

    def sample(self, spec: Spec, dist: StepDist, g: torch.Generator) -> torch.Tensor:
        return self.act(spec, dist, torch.randn(self.noise_shape(dist), generator=g))

    @staticmethod
    def _mean_valid(spec: Spec, values: torch.Tensor) -> torch.Tensor:
        mask = layout(spec).mask.to(values.dtype)
        return (values * mask).sum(dim=(-1, -2)) / mask.sum()

    def log_prob(self, spec: Spec, dist: StepDist, action: torch.Tensor) -> torch.Tensor:
        """(M,) Gaussian log-density of `action`'s explored coordinates, averaged over them."""
        offset = action - dist.mean
        if dist.basis is None:
            return self._mean_valid(spec, _log_density(offset, dist.sigma))
        return _log_density((offset * dist.basis).sum(-1), dist.sigma).mean(-1)  # (M, N) along each direction

    def kl(self, spec: Spec, dist: StepDist, ref_mean: torch.Tensor) -> torch.Tensor:
        """(M,) KL(Normal(mean, sigma) || Normal(ref_mean, sigma)) over every weight, averaged over valid ones."""
        return self._mean_valid(spec, (dist.mean - ref_mean).pow(2) / (2 * dist.sigma**2))

    def entropy(self, spec: Spec, dist: StepDist) -> torch.Tensor:
        """(M,) entropy per explored coordinate (it depends on sigma only)."""
        return torch.full((len(dist.mean),), 0.5 * math.log(2 * math.pi * math.e) + math.log(dist.sigma))


def _log_density(offset: torch.Tensor, sigma: float) -> torch.Tensor:
    """Elementwise log-density of Normal(0, sigma^2) at offset."""
    return -offset.pow(2) / (2 * sigma**2) - math.log(sigma) - 0.5 * math.log(2 * math.pi)
