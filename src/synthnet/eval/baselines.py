"""Cheap weight generators built from the zoo, to show SynthNet is not one of them.

Each returns stacked params key -> (N, *shape), one net per eval seed, deterministic given the seeds (every
random draw comes from a torch.Generator seeded by the eval seed and the baseline). The Gaussian and the average
use the zoo finals after aligning their hidden units to the first final (one template, Hungarian matching): an
unaligned average of networks whose units sit in random orders is a strawman, so the baselines get that help.
"""

from __future__ import annotations

import torch

from synthnet.eval.novelty import Params, align, nearest
from synthnet.targets import Spec
from synthnet.zoo import ZooTensors

NOISE_SCALES = (0.1, 0.3, 1.0)  # final + noise: noise std as a multiple of each tensor's own std
N_AVERAGE = 16  # zoo finals averaged per eval seed (fewer when the zoo is smaller)


def _gen(seed: int, salt: int) -> torch.Generator:
    """A generator for one (eval seed, baseline) pair, so baselines never share random draws."""
    return torch.Generator().manual_seed(seed * 1_000_003 + salt)


def finals(zoo: ZooTensors) -> Params:
    """Last checkpoint of every zoo run: key -> (runs, *shape)."""
    return {k: v[:, -1] for k, v in zoo.params.items()}


def aligned_finals(spec: Spec, zoo: ZooTensors) -> Params:
    """Zoo finals with hidden units aligned to the first final: key -> (runs, *shape)."""
    f = finals(zoo)
    return align(spec, {k: v[:1] for k, v in f.items()}, f)


def nearest_init_copy(spec: Spec, zoo: ZooTensors, inits: Params) -> Params:
    """For each init (N, *shape): the final of the zoo run whose init is nearest by aligned distance, copied."""
    _, run = nearest(spec, inits, {k: v[:, 0] for k, v in zoo.params.items()})
    return {k: v[run, -1] for k, v in zoo.params.items()}


def finals_average(aligned: Params, seeds: list[int]) -> Params:
    """Per seed, the mean of N_AVERAGE distinct random aligned zoo finals (aligned: key -> (runs, *shape))."""
    runs = len(next(iter(aligned.values())))
    picks = [torch.randperm(runs, generator=_gen(s, 1))[:N_AVERAGE] for s in seeds]
    return {k: torch.stack([v[p].mean(0) for p in picks]) for k, v in aligned.items()}


def finals_gaussian(aligned: Params, seeds: list[int]) -> Params:
    """Per seed, one draw from a per-coordinate Gaussian (mean, std) fitted to the aligned zoo finals."""
    out = {}
    for i, (k, v) in enumerate(aligned.items()):
        mean, std = v.mean(0), v.std(0)
        noise = torch.stack([torch.randn(mean.shape, generator=_gen(s, 10 + i)) for s in seeds])
        out[k] = mean + std * noise
    return out


def final_plus_noise(zoo: ZooTensors, seeds: list[int], scale: float) -> Params:
    """Per seed, a random zoo final plus centred Gaussian noise of std scale x that tensor's std."""
    f = finals(zoo)
    runs = len(zoo.seeds)
    pick = torch.tensor([int(torch.randint(runs, (1,), generator=_gen(s, 2))) for s in seeds])
    out = {}
    for i, (k, v) in enumerate(f.items()):
        base = v[pick]  # (N, *shape)
        noise = torch.stack([torch.randn(base.shape[1:], generator=_gen(s, 100 + i)) for s in seeds])
        out[k] = base + scale * base.flatten(1).std(1).view(-1, *[1] * (base.dim() - 1)) * noise
    return out


def zoo_baselines(spec: Spec, zoo: ZooTensors, inits: Params, seeds: list[int]) -> dict[str, Params]:
    """Every zoo baseline by name, for inits key -> (N, *shape) of eval seeds `seeds`."""
    aligned = aligned_finals(spec, zoo)
    out = {"nearest_init_copy": nearest_init_copy(spec, zoo, inits),
           "finals_average": finals_average(aligned, seeds),
           "finals_gaussian": finals_gaussian(aligned, seeds)}
    out.update({f"final_noise_{s:g}": final_plus_noise(zoo, seeds, s) for s in NOISE_SCALES})
    return out
