"""How much of the reward's gradient one GRPO group carries, in weight space, for one-step (K=1) rollouts.

For each of --inits fresh inits, G rollouts are sampled around the policy mean mu (as the GRPO loop does) and scored
with the configured reward on the reward's samples (grpo.reward_split). The group's policy-gradient direction in
action space is sum_i A_i * eps_i (A: group advantages, eps: the unit noise of rollout i). Printed per group size:
its cosine with the exact gradient of the reward's smooth part (-cross-entropy on those samples) at mu, against
sqrt(G / (G + d)), what G samples of a linear reward would give in the d explored dimensions (grpo.explore: every
weight, or one direction per neuron, whose span caps the cosine further: printed), and 1/sqrt(weights), a random
direction; and its cosine with the train split's cross-entropy gradient, the teacher's own objective. Figures only:
nothing is asserted. Run:
  .venv/bin/python benchmarks/grpo_signal.py --model RUN [--inits 32] [--groups 8,32,128] [grpo.explore=neurons ...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

from synthnet.config import compose, rl_base
from synthnet.data import load_dataset
from synthnet.rl.advantage import group_advantages
from synthnet.rl.grpo import inits, reward_and_heldout_data
from synthnet.rl.policy import GaussianPolicy
from synthnet.rl.reward import rollout_reward
from synthnet.scoring import evaluate, logits
from synthnet.seeds import SIGNAL_PROBE
from synthnet.synthesize import load_synthesizer
from synthnet.tokens import layout


def ce_gradient(synth, spec, mean: torch.Tensor, x, y) -> torch.Tensor:
    """(B, N, F) gradient of -(mean val cross-entropy) of each decoded network with respect to its tokens."""
    tokens = mean.clone().requires_grad_(True)
    out = logits(spec, synth.decode(spec, tokens), x)  # (B, S, C)
    ce = F.cross_entropy(out.transpose(1, 2), y.expand(len(out), -1), reduction="none").mean(1)
    (grad,) = torch.autograd.grad(-ce.sum(), tokens)
    return grad


@torch.no_grad()
def group_direction(policy, spec, start, group, x, y, reward_cfg, g) -> torch.Tensor:
    """(B, N, F) sum over each init's group of advantage x the rollout's noise, K=1 rollouts from start (B, N, F)
    scored by the real reward."""
    ones = torch.ones(len(start))
    dist, _ = policy.forward(spec, start, ones, 0 * ones, torch.arange(len(start)).repeat_interleave(group))
    action = policy.sample(spec, dist, g)
    states = policy.synth.decode(spec, torch.cat([start, action]))
    sc = evaluate(spec, states, x, y)
    b = len(start)
    acc = torch.stack([sc.acc[:b].repeat_interleave(group), sc.acc[b:]], 1)
    steps = torch.ones(len(action), dtype=torch.long)
    reward, _ = rollout_reward(acc, sc.loss[b:], torch.ones(len(action)), steps, reward_cfg)
    adv = group_advantages(reward.view(b, group)).flatten()
    eps = (action - dist.mean) / policy.sigma
    return (adv[:, None, None] * eps).view(b, group, *start.shape[1:]).sum(1)


def cosine(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B,) cosine between a and b (B, N, F) over the valid slots."""
    a, b = (a * mask).flatten(1), (b * mask).flatten(1)
    return F.cosine_similarity(a, b, dim=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True, help="supervised (or GRPO) run directory")
    ap.add_argument("--inits", type=int, default=32, help="fresh inits (prompts)")
    ap.add_argument("--groups", default="8,32,128", help="group sizes to try")
    ap.add_argument("overrides", nargs="*", help="config overrides (grpo.sigma, reward.*)")
    args = ap.parse_args()
    synth = load_synthesizer(args.model, "best")
    cfg = compose(None, args.overrides, base=rl_base(synth.cfg))
    spec, g = synth.spec, torch.Generator().manual_seed(0)
    data = load_dataset(cfg.data.dataset)
    (x, y), _ = reward_and_heldout_data(data, cfg.grpo.heldout_frac, cfg.grpo.reward_split)
    start = synth.encode(spec, inits(spec, list(range(SIGNAL_PROBE[0], SIGNAL_PROBE[0] + args.inits))))
    ones = torch.ones(len(start))
    with torch.no_grad():
        mean, _ = synth.step(spec, start, ones, 0 * ones)
    mask = layout(spec).mask.float()
    policy = GaussianPolicy(synth, cfg.grpo.sigma, cfg.grpo.explore, synth)
    exact = ce_gradient(synth, spec, mean, x, y)
    train = ce_gradient(synth, spec, mean, *data.split("train"))
    dims = int(mask.sum()) if cfg.grpo.explore == "weights" else len(mask)
    print(f"explore={cfg.grpo.explore}: d = {dims} explored dimensions; a random direction has cosine "
          f"~ {int(mask.sum()) ** -0.5:.3f}; "
          f"val-CE vs train-CE gradient cosine {cosine(exact, train, mask).mean():.3f}")
    if cfg.grpo.explore == "neurons":  # the most any estimate in the neurons' span can reach
        basis = policy.forward(spec, start, ones, 0 * ones)[0].basis
        span = (exact * basis).sum(-1, keepdim=True) * basis
        print(f"cosine of the exact gradient with its projection on the neuron directions "
              f"{cosine(exact, span, mask).mean():.3f}")
    for group in map(int, args.groups.split(",")):
        d = group_direction(policy, spec, start, group, x, y, cfg.reward, g)
        c, ct = cosine(d, exact, mask), cosine(d, train, mask)
        print(f"G={group:4d} cosine with the val-CE gradient {c.mean():.3f} +- {c.std():.3f} (linear-reward bound "
              f"{(group / (group + dims)) ** 0.5:.3f}), with the train-CE gradient {ct.mean():.3f}")


if __name__ == "__main__":
    main()
