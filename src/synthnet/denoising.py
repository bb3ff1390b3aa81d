"""The supervised denoising objective on a zoo, shared by the supervised loop and GRPO's auxiliary term.

Each batch is either (a) pairs W_i -> W_j (i < j, variable gaps, the input perturbed by a small centred Gaussian)
or (b) a K-step chain from W_0 run on the model's own outputs, every step supervised by the zoo checkpoint at its
noise level (so later steps learn to refine what earlier steps produce). A bridge model (synthesize.py) learns
(a) as states on the bridge from W_0 to the final weights -> the final weights, and (b) with every step supervised
by the final weights. Loss = MSE in normalised token space + a
functional term: KL of the synthesized network's outputs to the target network's on train inputs + optionally the
(label-smoothed) cross-entropy of synthesized final states on those inputs' train labels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from synthnet.config import Config, TrainConfig
from synthnet.data import Dataset
from synthnet.distributed import shard
from synthnet.errors import SynthNetError
from synthnet.scoring import logits
from synthnet.synthesize import Synthesizer, epoch_level, level_epoch, schedule
from synthnet.targets import Spec
from synthnet.tokens import BIAS, OUT, Normalizer, layout, to_tokens
from synthnet.zoo import ZooTensors, load_zoo


@dataclass
class ZooTokens:
    """One arch of the zoo in the denoiser's space, split into training and held-out runs."""

    spec: Spec
    tokens: torch.Tensor  # (R, E + 1, N, F) normalised tokens of the training runs' checkpoints (a bridge: E = 1)
    init_std: torch.Tensor  # (N, F) std of the W_0 tokens (scale of input perturbations)
    val_init: dict[str, torch.Tensor]  # key -> (V, *shape) inits of held-out runs
    val_teacher: float  # mean val-split accuracy of the held-out runs' own final checkpoints (their teachers)
    seeds: list[int]  # zoo seeds of every run read, training and held-out

    @property
    def epochs(self) -> int:
        return self.tokens.shape[1] - 1


def load_zoo_tokens(cfg: Config, normalizer: Normalizer | None = None) -> tuple[list[ZooTokens], Normalizer]:
    """Read every arch of the run's zoo in minibatch orders 0 .. zoo.orders - 1 (each order's runs are more runs
    of the same inits), hold out its last seeds in every order, fit the normaliser on order 0's training finals
    of every arch (unless one is given). A bridge model trains on W_0 and the final weights only, so its tokens hold
    those two checkpoints of each run and the memory-mapped zoo's other epochs are never read."""
    archs = [a for a in cfg.data.arch.split(",") if a]
    v, loaded = cfg.train.val_runs, []
    for arch in archs:
        orders = [load_zoo(Path(cfg.zoo.path), arch, order) for order in range(cfg.zoo.orders)]
        z = orders[0]
        if len(z.seeds) <= v:
            raise SynthNetError(f"zoo {cfg.zoo.path} has {len(z.seeds)} runs of {z.spec}; need more than "
                                f"train.val_runs={v}")
        if any(o.seeds != z.seeds for o in orders):
            raise SynthNetError(f"zoo {cfg.zoo.path}: its minibatch orders of {z.spec} hold different seeds; finish "
                                f"them with `synthnet zoo --orders {cfg.zoo.orders}`")
        loaded.append(orders)
    if normalizer is None:
        finals = [(z.spec, {k: t[:len(z.seeds) - v, -1] for k, t in z.params.items()}) for z, *_ in loaded]
        normalizer = Normalizer.fit_archs(finals)
    out = []
    for orders in loaded:
        z, runs = orders[0], len(orders[0].seeds) - v
        ends = [0, -1] if cfg.model.process == "bridge" else slice(None)
        tok = torch.cat([_tokens(o, runs, ends, normalizer) for o in orders])
        out.append(ZooTokens(z.spec, tok, tok[:, 0].std(0), {k: t[runs:, 0] for k, t in z.params.items()},
                             z.val_acc[runs:, -1].mean().item(), z.seeds))
    return out, normalizer


def _tokens(z: ZooTensors, runs: int, epochs: list[int] | slice, normalizer: Normalizer) -> torch.Tensor:
    """Checkpoints `epochs` of the first `runs` runs of a ZooTensors as normalised tokens (runs, epochs, N, F)."""
    params = {k: t[:runs, epochs] for k, t in z.params.items()}
    n_ep = next(iter(params.values())).shape[1]
    tok = normalizer.normalize(z.spec, to_tokens(z.spec, {k: t.flatten(0, 1) for k, t in params.items()}))
    return tok.view(runs, n_ep, *tok.shape[1:])


def sample_pairs(zt: ZooTokens, batch: int, frac: float, cfg, g: torch.Generator):
    """(src (B,N,F), tgt (B,N,F), level_in (B,), level_out (B,), run (B,), epoch_out (B,)) with i < j.

    Sources are W_0 half of the time; targets are the final checkpoint with probability p_final. The gap
    schedule caps the level gap at a value ramping with training progress `frac` in [0, 1].
    """
    e = zt.epochs
    run = torch.randint(len(zt.tokens), (batch,), generator=g)
    from_init = torch.rand(batch, generator=g) < 0.5
    later = torch.randint(1, e, (batch,), generator=g) if e > 1 else torch.zeros(batch, dtype=torch.long)
    i = torch.where(from_init, 0, later)  # a 1-epoch zoo has only W_0 -> W_1
    j_any = i + 1 + (torch.rand(batch, generator=g) * (e - i)).long().clamp(max=e - i - 1)
    j = torch.where(torch.rand(batch, generator=g) < cfg.p_final, torch.full_like(i, e), j_any)
    cap = {"mixed": 1.0, "easy_to_hard": 0.25 + 0.75 * frac, "hard_to_easy": 1.0 - 0.75 * frac}[cfg.gap]
    lo_level = (epoch_level(i, e) - cap).clamp(min=0.0)
    j = torch.minimum(j, level_epoch(lo_level, e).floor().long().clamp(min=1)).maximum(i + 1)
    return zt.tokens[run, i], zt.tokens[run, j], epoch_level(i, e), epoch_level(j, e), run, j


def perturb(tokens: torch.Tensor, init_std: torch.Tensor, step: int, cfg, g: torch.Generator) -> torch.Tensor:
    """Centred Gaussian noise, sigma log-uniform in [perturb_min, perturb_max] x init scale, ramped in."""
    b = tokens.shape[0]
    u = torch.rand(b, 1, 1, generator=g)
    sigma = torch.exp(math.log(cfg.perturb_min) + u * (math.log(cfg.perturb_max) - math.log(cfg.perturb_min)))
    ramp = min(1.0, step / max(cfg.perturb_ramp, 1))
    noise = torch.randn(tokens.shape, generator=g)
    noise = noise - noise.mean(dim=(1, 2), keepdim=True)
    return tokens + ramp * sigma * init_std * noise


def slot_weights(spec: Spec, weight: float) -> torch.Tensor:
    """(N, F) token-MSE weight per slot: `weight` on bias and outgoing-weight slots, 1 on incoming ones.
    A wide first layer gives its few outgoing weights a sliver of the slots (mlp:784-64-10: 11 of 795)."""
    kind = layout(spec).kind
    return torch.where((kind == BIAS) | (kind == OUT), weight, 1.0)


def denoise_loss(synth: Synthesizer, spec: Spec, pred: torch.Tensor, tgt: torch.Tensor, x: torch.Tensor,
                 y: torch.Tensor, final: torch.Tensor, t: TrainConfig) -> tuple[torch.Tensor, dict]:
    """MSE in token space (bias and outgoing slots weighted slot_weight) + func_weight * KL(target net ||
    synthesized net) on train inputs x (S, features) + label_weight * cross-entropy (label_smoothing) on their labels
    y (S,) of the rows of pred that are final states (final (B,)), averaged over all B rows."""
    mse = ((pred - tgt).pow(2) * slot_weights(spec, t.slot_weight)).mean()
    loss, parts = mse, {"mse": mse.item()}
    if t.func_weight > 0 or t.label_weight > 0:
        lp = logits(spec, synth.decode(spec, pred), x).log_softmax(-1)  # (B, S, C)
    if t.func_weight > 0:
        lt = logits(spec, synth.decode(spec, tgt), x).log_softmax(-1)
        kl = (lt.exp() * (lt - lp)).sum(-1).mean()
        loss, parts["kl"] = loss + t.func_weight * kl, kl.item()
    if t.label_weight > 0:  # a mean over all B rows (0 for non-final ones): a torchrun shard's share is exact
        ce_rows = nn.functional.cross_entropy(lp.transpose(1, 2), y.expand(len(lp), -1), reduction="none",
                                              label_smoothing=t.label_smoothing).mean(1)
        ce = (ce_rows * final).mean()
        loss, parts["label_ce"] = loss + t.label_weight * ce, ce.item()
    return loss, parts


def train_batch(data: Dataset, g: torch.Generator, size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """(x (size, features), y (size,)): train-split samples the functional and label losses score on."""
    idx = torch.randint(len(data.x_train), (size,), generator=g)
    return data.x_train[idx], data.y_train[idx]


def chain_batch(synth: Synthesizer, zt: ZooTokens, step: int, cfg: Config, g: torch.Generator, x: torch.Tensor,
                y: torch.Tensor):
    """A K-step chain from perturbed W_0 on the model's own outputs; each step vs the zoo at its level (a bridge
    model: vs the final weights). Under torchrun every rank draws the whole batch and runs its share."""
    t = cfg.train
    k = int(torch.randint(1, t.k_max + 1, (1,), generator=g))
    run = torch.randint(len(zt.tokens), (t.batch,), generator=g)
    start = perturb(zt.tokens[run, 0], zt.init_std, step, t, g)
    bridge = cfg.model.process == "bridge"  # every step predicts the final weights, on a path drawn from g
    noise = shard(torch.randn((t.batch, k - 1, *start.shape[1:]), generator=g)) if bridge else None
    run = shard(run)
    states, total = synth.chain(zt.spec, shard(start), k, noise)
    epochs = torch.full((k,), zt.epochs) if bridge else level_epoch(schedule(k)[1:], zt.epochs).round().long()
    parts = {}
    for s, ep in zip(states, epochs):
        final = torch.full((len(run),), bool(ep == zt.epochs))
        loss, parts = denoise_loss(synth, zt.spec, s, zt.tokens[run, ep], x, y, final, t)
        total = total + loss / k
    return total, {**parts, "k": k}


def pair_batch(synth: Synthesizer, zt: ZooTokens, step: int, cfg: Config, g: torch.Generator, x: torch.Tensor,
               y: torch.Tensor):
    """Pairs W_i -> W_j; under torchrun every rank draws the whole batch and runs its share."""
    t = cfg.train
    src, tgt, l_in, l_out, _, j = sample_pairs(zt, t.batch, step / t.steps, t, g)
    src = perturb(src, zt.init_std, step, t, g)
    src, tgt, l_in, l_out, j = shard(src), shard(tgt), shard(l_in), shard(l_out), shard(j)
    pred, aux = synth.step(zt.spec, src, l_in, l_out)
    loss, parts = denoise_loss(synth, zt.spec, pred, tgt, x, y, j == zt.epochs, t)
    parts.update({f"expert_util/{i}": u.item() for i, u in enumerate(aux["expert_util"])})
    return loss + synth.moe_penalty(aux), {**parts, "k": 0}


def bridge_batch(synth: Synthesizer, zt: ZooTokens, step: int, cfg: Config, g: torch.Generator, x: torch.Tensor,
                 y: torch.Tensor):
    """States on the Brownian bridge from a run's (perturbed) W_0 to its final weights, at level 1 half of the time
    and uniform in (0, 1) otherwise -> the final weights; under torchrun every rank draws the whole batch and runs
    its share."""
    t = cfg.train
    run = torch.randint(len(zt.tokens), (t.batch,), generator=g)
    level = torch.where(torch.rand(t.batch, generator=g) < 0.5, 1.0, torch.rand(t.batch, generator=g))
    init, final = perturb(zt.tokens[run, 0], zt.init_std, step, t, g), zt.tokens[run, -1]
    noise = torch.randn(init.shape, generator=g) * layout(zt.spec).mask
    lv = level[:, None, None]
    state = lv * init + (1 - lv) * final + cfg.model.bridge_sigma * (lv * (1 - lv)).sqrt() * noise
    state, final, level = shard(state), shard(final), shard(level)
    _, aux = synth.step(zt.spec, state, level, torch.zeros_like(level))
    loss, parts = denoise_loss(synth, zt.spec, aux["final"], final, x, y, torch.ones(len(final), dtype=torch.bool), t)
    parts.update({f"expert_util/{i}": u.item() for i, u in enumerate(aux["expert_util"])})
    return loss + synth.moe_penalty(aux), {**parts, "k": 0}
