"""The GRPO loop: fresh random inits as prompts, groups of stochastic denoising rollouts as completions, real
accuracy as reward (train and val samples, never the held-out ones or test), PPO-clipped group-relative policy
gradient, KL to the frozen supervised model, and two optional terms: the supervised denoising loss on zoo runs
(aux_weight) and the exact gradient of the reward's smooth part, the label cross-entropy of the prompts' mean-policy
syntheses on the reward's samples backpropagated through the whole chain (label_weight, as DRaFT does for diffusion
models). Rollouts are discarded after each update.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from synthnet.config import Config, to_yaml
from synthnet.data import Dataset, load_dataset
from synthnet.denoising import ZooTokens, chain_batch, load_zoo_tokens, train_batch
from synthnet.distributed import gather_cat, mean_over_ranks, require_multiple, share, world
from synthnet.errors import SynthNetError
from synthnet.patches import Rule
from synthnet.rl.advantage import group_advantages, spread, zero_spread_fraction
from synthnet.rl.policy import GaussianPolicy, StepDist
from synthnet.rl.reward import rollout_reward, step_rewards
from synthnet.runlog import Run
from synthnet.scoring import evaluate, logits
from synthnet.seeds import HELDOUT_BASE, prompt_seeds
from synthnet.synthesize import Synthesizer, load_synthesizer
from synthnet.targets import Spec, init_state
from synthnet.weights import stack_states
from synthnet.zoo import recipe, train_many


@dataclass
class Rollouts:
    """All (state, action) steps of B*G rollouts, flattened over (rollout, step): M = sum of K. The rollouts of one
    init that take the same K share their first (state, levels), so the policy needs only U <= M distinct inputs."""

    inputs: torch.Tensor  # (U, N, F) distinct states before a step
    level_in: torch.Tensor  # (U,)
    level_out: torch.Tensor  # (U,)
    source: torch.Tensor  # (M,) row of inputs / level_in / level_out that each step starts from
    actions: torch.Tensor  # (M, N, F) sampled next state
    old_logp: torch.Tensor  # (M,) log-prob under the policy that sampled it
    rollout: torch.Tensor  # (M,) rollout index in [0, B*G)
    step: torch.Tensor  # (M,) step index in [0, K)
    k: torch.Tensor  # (B*G,) steps of each rollout


def inits(spec: Spec, seeds: list[int]) -> dict[str, torch.Tensor]:
    return stack_states([init_state(spec, s) for s in seeds])


@torch.no_grad()
def rollout(policy: GaussianPolicy, spec: Spec, start: torch.Tensor, group: int, k: torch.Tensor, g: torch.Generator,
            mine: range | None = None) -> Rollouts:
    """Run the rollouts r in `mine` (default: all R) for k[r] stochastic steps from start[r // group], batched.
    start: (B, N, F) the inits, each shared by `group` consecutive rollouts; k: (R,) with R = B * group.

    The first step of the rollouts of one init with one K is a single policy forward. Under torchrun each rank
    runs its share; all draw the noise of all R rollouts from g, as one process would, so their generators stay in
    step. The Rollouts index the rollouts of `mine` from 0.
    """
    mine = range(len(k)) if mine is None else mine
    cur, rec, n_inputs = start[torch.arange(len(k)) // group], [], 0
    for s in range(int(k.max())):
        active = (k > s).nonzero().squeeze(1)
        rows = ((active >= mine.start) & (active < mine.stop)).nonzero().squeeze(1)  # ours, among the active
        idx = active[rows]
        first, source = first_steps(idx, k, group) if s == 0 else (idx, torch.arange(len(idx)))
        kk = k[first].float()
        l_in, l_out = 1 - s / kk, 1 - (s + 1) / kk
        dist, _ = policy.forward(spec, cur[first], l_in, l_out, source)
        action = sample_rows(policy, spec, dist, rows, len(active), g)
        rec.append((cur[first], l_in, l_out, source + n_inputs, action, policy.log_prob(spec, dist, action),
                    idx - mine.start, torch.full_like(idx, s)))
        n_inputs += len(first)
        cur = cur.clone()
        cur[idx] = action
    cols = list(zip(*rec))
    return Rollouts(*(torch.cat(c) for c in cols), k=k[mine.start:mine.stop])


def first_steps(idx: torch.Tensor, k: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The distinct first steps of rollouts idx (n,): rollouts of one init (r // group) taking one K start from the
    same (state, levels). Returns (one rollout per distinct first step (U,), each rollout's distinct step (n,))."""
    _, source = torch.unique(idx // group * (int(k.max()) + 1) + k[idx], return_inverse=True)
    pos = torch.zeros(int(source.max()) + 1, dtype=torch.long)
    pos = pos.scatter_reduce(0, source, torch.arange(len(idx)), "amin", include_self=False)
    return idx[pos], source


def sample_rows(policy: GaussianPolicy, spec: Spec, dist: StepDist, rows: torch.Tensor, n: int,
                g: torch.Generator) -> torch.Tensor:
    """(len(rows), N, F) actions of `rows` of the n active rollouts, `dist` being over those rows. The noise of all
    n is drawn from g, as one process would, and the rows' share is used."""
    noise = torch.randn((n, *policy.noise_shape(dist)[1:]), generator=g)
    return policy.act(spec, dist, noise[rows])


def step_index(k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(rollout (M,), step (M,)) of every step of rollouts taking k (R,) steps, in rollout()'s row order."""
    step, run = (torch.arange(int(k.max()))[:, None] < k).nonzero(as_tuple=True)
    return run, step


def sample_k(inits: int, group: int, cfg, g: torch.Generator) -> torch.Tensor:
    """(inits * group,) steps of every rollout: one K per init, shared by its whole group, so that the group
    baseline compares rollouts of equal length (with K drawn per rollout, most of a group's reward spread is the
    K it was dealt, which the policy cannot change). uniform: K uniform over 1..k_max; fixed: always k_max."""
    if cfg.k_dist == "fixed":
        k = torch.full((inits,), cfg.k_max, dtype=torch.long)
    else:
        k = torch.randint(1, cfg.k_max + 1, (inits,), generator=g)
    return k.repeat_interleave(group)


@torch.no_grad()
def score(synth: Synthesizer, spec: Spec, start: torch.Tensor, ro: Rollouts, x, y) -> tuple[torch.Tensor, ...]:
    """Accuracy on (x, y) (R, K_max + 1) along every rollout (NaN past its K), final CE (R,), norm ratio (R,).

    Every state of every rollout goes through the batched evaluator in one call.
    """
    r, kmax = len(ro.k), int(ro.k.max())
    states = synth.decode(spec, torch.cat([start, ro.actions]))
    sc = evaluate(spec, states, x, y)
    acc = torch.full((r, kmax + 1), float("nan"))
    acc[:, 0] = sc.acc[:r]
    acc[ro.rollout, ro.step + 1] = sc.acc[r:]
    last = (ro.step == ro.k[ro.rollout] - 1).nonzero().squeeze(1)
    order = ro.rollout[last].argsort()
    final_idx = r + last[order]
    ratio = norm_ratio({k: v[final_idx] for k, v in states.items()}, {k: v[:r] for k, v in states.items()})
    return acc, sc.loss[final_idx], ratio


def norm_ratio(params: dict[str, torch.Tensor], start: dict[str, torch.Tensor]) -> torch.Tensor:
    """(R,) weight norm of each network in `params` (key -> (R, *shape)) over that of its init in `start`."""
    flat = [torch.cat([v.flatten(1) for v in p.values()], 1) for p in (params, start)]
    return flat[0].norm(dim=1) / flat[1].norm(dim=1)


def check_norm_limit(ratio: float, limit: float) -> None:
    """Warn when the starting model's outputs (mean norm `ratio` to their inits) already exceed reward.norm_limit:
    the blow-up penalty would then fire on nearly every rollout and drown the accuracy signal (GRPO would learn
    to shrink weights)."""
    if ratio > limit:
        print(f"warning: the model's outputs sit at {ratio:.1f}x their init's weight norm, above reward.norm_limit="
              f"{limit:g}; the blow-up penalty will dominate the reward (pass e.g. reward.norm_limit={2 * ratio:.0f})")


def gather_rewards(reward: torch.Tensor, acc: torch.Tensor, terms: dict, k_max: int) -> tuple:
    """Every rank's reward (R_rank,), acc (R_rank, K_rank + 1) and reward terms joined in rollout order, so that
    advantages see whole groups: (R,), (R, k_max + 1) (NaN past each rollout's K), {name: (R,)}."""
    acc = F.pad(acc, (0, k_max + 1 - acc.shape[1]), value=float("nan"))
    got = gather_cat({"reward": reward, "acc": acc, **terms})
    return got.pop("reward"), got.pop("acc"), got


def advantages(reward: torch.Tensor, acc: torch.Tensor, k: torch.Tensor, groups: int, cfg) -> tuple[torch.Tensor, dict]:
    """(M,) advantage of every step (step_index(k) order) under the configured group mode, plus diagnostics."""
    run, step = step_index(k)
    seq = group_advantages(reward.view(groups, -1), cfg.std_norm).flatten()[run]
    stp_table = group_advantages(step_rewards(acc), cfg.std_norm)
    stp = torch.nan_to_num(stp_table[run, step])
    adv = {"sequences": seq, "steps": stp, "both": seq + stp}[cfg.group_mode]
    adv = adv.clamp(-cfg.adv_clip, cfg.adv_clip)
    diag = {"zero_spread_groups": zero_spread_fraction(reward.view(groups, -1)),
            "group_range_mean": spread(reward.view(groups, -1)).mean().item(),
            "adv_mean": adv.mean().item(), "adv_std": adv.std().item() if len(adv) > 1 else 0.0,
            "adv_min": adv.min().item(), "adv_max": adv.max().item(), "adv_frac_pos": (adv > 0).float().mean().item()}
    return adv, diag


def normalise_loss(per_step: torch.Tensor, ro: Rollouts, kind: str, k_max: int) -> torch.Tensor:
    """grpo: mean over each rollout's steps, then over rollouts; bnpo: mean over all steps; dr_grpo: sum / (R*K_max)."""
    if kind == "bnpo":
        return per_step.mean()
    if kind == "dr_grpo":
        return per_step.sum() / (len(ro.k) * k_max)
    per_rollout = torch.zeros(len(ro.k)).index_add(0, ro.rollout, per_step) / ro.k.float()
    return per_rollout.mean()


def rank_scale(ro: Rollouts, k: torch.Tensor, kind: str) -> float:
    """World size x this rank's fraction of the loss normaliser (steps for bnpo, else rollouts): DDP's mean of the
    ranks' losses, each normalised over its own rollouts and scaled by this, is the loss over all rollouts."""
    mine, total = (len(ro.rollout), int(k.sum())) if kind == "bnpo" else (len(ro.k), len(k))
    return world() * mine / total


def policy_loss(policy: GaussianPolicy, ref_mean: torch.Tensor, spec: Spec, ro: Rollouts, adv: torch.Tensor, cfg,
                scale: float = 1.0):
    """scale x (PPO-clipped surrogate + kl_beta * KL(pi || pi_ref), normalised as configured) + MoE penalty.
    ref_mean: (U, N, F) the frozen reference's means at ro.inputs; scale: rank_scale under torchrun.
    Returns (loss, diag)."""
    dist, aux = policy.forward(spec, ro.inputs, ro.level_in, ro.level_out, ro.source, ref_mean)
    ref_mean = ref_mean[ro.source]
    ratio = torch.exp(policy.log_prob(spec, dist, ro.actions) - ro.old_logp)
    clipped = ratio.clamp(1 - cfg.eps_low, 1 + cfg.eps_high)
    surrogate = -torch.minimum(ratio * adv, clipped * adv)
    kl = policy.kl(spec, dist, ref_mean)
    loss = scale * normalise_loss(surrogate + cfg.kl_beta * kl, ro, cfg.loss_norm, cfg.k_max)
    loss = loss + policy.synth.moe_penalty(aux)
    diag = {"kl": kl.mean().item(), "ratio_mean": ratio.mean().item(),
            "clip_low": ((ratio < 1 - cfg.eps_low) & (adv < 0)).float().mean().item(),
            "clip_high": ((ratio > 1 + cfg.eps_high) & (adv > 0)).float().mean().item(),
            "entropy": policy.entropy(spec, dist).mean().item()}
    if aux["expert_util"].numel():
        diag.update({f"expert_util/{i}": u.item() for i, u in enumerate(aux["expert_util"])})
    return loss, diag


def update_loss(policy: GaussianPolicy, ref_mean: torch.Tensor, spec: Spec, ro: Rollouts, adv: torch.Tensor,
                scale: float, zt: ZooTokens, data: Dataset, cfg: Config, g: torch.Generator, prompts: torch.Tensor,
                reward_set: tuple):
    """policy_loss + aux_weight x the supervised chain loss on zoo runs + label_weight x label_loss of this rank's
    prompts (U, N, F) on the reward's samples, as one function: DDP wants one forward per backward.
    Returns (loss, diag)."""
    gc = cfg.grpo
    loss, diag = policy_loss(policy, ref_mean, spec, ro, adv, gc, scale)
    if gc.aux_weight > 0:
        aux_loss, _ = chain_batch(policy.synth, zt, 10**9, cfg, g, *train_batch(data, g))
        loss = loss + gc.aux_weight * aux_loss
    if gc.label_weight > 0:
        k = int(torch.randint(1, gc.k_max + 1, (1,), generator=g))
        ce = label_loss(policy.synth, spec, prompts, k, *reward_set, gc.label_smoothing)
        loss, diag["label_ce"] = loss + gc.label_weight * ce * len(prompts) / gc.inits * world(), ce.item()
    return loss, diag


def label_loss(synth: Synthesizer, spec: Spec, start: torch.Tensor, k: int, x: torch.Tensor, y: torch.Tensor,
               smoothing: float) -> torch.Tensor:
    """Mean label-smoothed cross-entropy on (x (S, features), y (S,)) of the K-step mean-policy syntheses of
    start (B, N, F), differentiable through every step: the exact gradient of what the reward scores."""
    out = logits(spec, synth.decode(spec, synth.chain(spec, start, k)[0][-1]), x)  # (B, S, C)
    return F.cross_entropy(out.transpose(1, 2), y.expand(len(out), -1), label_smoothing=smoothing)


def reward_and_heldout_data(data: Dataset, heldout_frac: float, reward_split: str) -> tuple[tuple, ...]:
    """((x, y) the reward scores on, (x, y) the held-out accuracy scores on), never sharing a sample: a policy
    rewarded on a few hundred samples can learn to fit those very samples, and held-out inits scored on them would
    call that progress. The held-out samples are the last `heldout_frac` of the val split (all of it for
    reward_split train); the reward scores on the rest of val (val), on the train split (train) or on both."""
    x, y = data.split("val")
    if reward_split == "train":
        return (data.x_train, data.y_train), (x, y)
    n_held = round(len(x) * heldout_frac)
    if not 0 < n_held < len(x):
        raise SynthNetError(f"grpo.heldout_frac={heldout_frac:g} leaves {n_held} of the {len(x)} val samples held "
                            "out; it needs at least one on each side")
    reward_x, reward_y = x[:-n_held], y[:-n_held]
    if reward_split == "train+val":
        reward_x, reward_y = torch.cat([data.x_train, reward_x]), torch.cat([data.y_train, reward_y])
    return (reward_x, reward_y), (x[-n_held:], y[-n_held:])


@torch.no_grad()
def heldout(spec: Spec, outputs: list[dict[str, torch.Tensor]], held: tuple, reward_set: tuple, train: tuple) -> dict:
    """Accuracy of the mean-policy (inference) outputs Synthesizer.outputs gave for the held-out inits, per K:
    heldout_acc on the val samples the reward never sees (what checkpoints are chosen by); reward_set_acc on the
    reward's own samples and train_acc on the train split, whose gap to heldout_acc shows the policy learning the
    reward's samples rather than better weights. Each (x, y); the un-suffixed keys are the max over K, and
    heldout_best_k the K of heldout_acc."""
    row = {}
    for name, (x, y) in (("heldout_acc", held), ("reward_set_acc", reward_set), ("train_acc", train)):
        per_k = [evaluate(spec, s, x, y).acc.mean().item() for s in outputs]
        row.update({f"{name}/k{k}": a for k, a in enumerate(per_k, 1)}, **{name: max(per_k)})
        row.setdefault("heldout_best_k", 1 + per_k.index(max(per_k)))
    return row


def start_row(synth: Synthesizer, spec: Spec, held: dict[str, torch.Tensor], held_seeds: list[int],
              scored_on: tuple, data: Dataset, cfg: Config) -> dict:
    """Row 0: the supervised model on the held-out inits `held` (seeds `held_seeds`), and the accuracy of those
    inits' teachers (the zoo recipe) on the held-out samples: the line heldout_acc must reach for GRPO to match
    conventional training. Warns when the norm-limit penalty would fire on nearly every rollout."""
    outputs = synth.outputs(spec, held, cfg.grpo.k_max)
    check_norm_limit(norm_ratio(outputs[-1], held).mean().item(), cfg.reward.norm_limit)
    row = heldout(spec, outputs, *scored_on)
    teachers = train_many(spec, held_seeds, data, recipe(cfg.zoo))
    row["heldout_teacher_acc"] = evaluate(spec, teachers, *scored_on[0]).acc.mean().item()
    print(f"held-out accuracy at the start {row['heldout_acc']:.4f}; the teachers of those inits: "
          f"{row['heldout_teacher_acc']:.4f}")
    synth.best_k = row["heldout_best_k"]
    return row


def update(run: Run, policy: GaussianPolicy, ref: Synthesizer, spec: Spec, ro: Rollouts, adv: torch.Tensor,
           k: torch.Tensor, zt: ZooTokens, data: Dataset, cfg: Config, g: torch.Generator, good: tuple,
           prompts: torch.Tensor, reward_set: tuple) -> tuple:
    """grpo.passes optimiser steps over the same rollouts (old log-probs kept), each with the auxiliary denoising
    loss. A non-finite loss or gradient on any rank restores `good` (the last finite weights and optimiser state)
    and ends the update. Returns (metrics row, the new `good`)."""
    gc, synth, opt = cfg.grpo, policy.synth, run.opt
    scale = rank_scale(ro, k, gc.loss_norm)
    with torch.no_grad():
        ref_mean, _ = ref.step(spec, ro.inputs, ro.level_in, ro.level_out)  # once for all passes
    for _ in range(gc.passes):
        loss, diag = run.replica(update_loss, policy, ref_mean, spec, ro, adv, scale, zt, data, cfg, g, prompts,
                                 reward_set)
        opt.zero_grad(set_to_none=True)
        loss.backward()  # DDP: gradients averaged over ranks
        grad_norm = nn.utils.clip_grad_norm_(synth.denoiser.parameters(), gc.grad_clip)
        loss_all = mean_over_ranks({"loss": loss.item()})["loss"]  # every rank takes the same branch
        finite = math.isfinite(loss_all) and bool(torch.isfinite(grad_norm))
        if not finite:
            synth.denoiser.load_state_dict(good[0])
            opt.load_state_dict(good[1])
            break
        opt.step()
    if finite:
        good = (copy.deepcopy(synth.denoiser.state_dict()), copy.deepcopy(opt.state_dict()))
    row = {**mean_over_ranks(diag, weight=len(ro.rollout)), "loss": loss_all, "grad_norm": float(grad_norm),
           "nan_skip": int(not finite)}  # diagnostics: means over all ranks' steps
    return row, good


def rollout_row(reward: torch.Tensor, terms: dict, k: torch.Tensor, cfg: Config, policy: GaussianPolicy,
                times: list[float]) -> dict:
    """Metrics of one iteration's rollouts: reward statistics and terms, live values, throughput and where the time
    went (times: perf_counter at the start, after rollout, after reward and at the end)."""
    t0, t_roll, t_reward, t_end = times
    return {"reward_mean": reward.mean().item(), "reward_std": reward.std().item(),
            "reward_min": reward.min().item(), "reward_max": reward.max().item(),
            **{f"{n}_mean": v.mean().item() for n, v in terms.items()}, "sigma": policy.sigma, "lr": cfg.grpo.lr,
            **{f"reward.{key}": v for key, v in cfg.reward.items()}, "rollout_steps_per_s": int(k.sum()) / (t_end - t0),
            "time_rollout": t_roll - t0, "time_reward": t_reward - t_roll, "time_update": t_end - t_reward}


def grpo(cfg: Config, model_run: Path, out: Path, stop_after: int | None = None,
         rules: Sequence[Rule] = ()) -> Synthesizer:
    """Reinforce the supervised model of `model_run` into run directory `out` (exact resume, live patches).

    Under torchrun each rank runs its share of the rollouts and of the update (DDP); rewards are gathered so that
    advantages see whole groups.
    """
    gc = cfg.grpo
    require_multiple("train.batch", cfg.train.batch)  # the auxiliary loss's batch
    # ---- set-up: policy, frozen reference, zoo for the auxiliary loss, samples, fixed held-out inits ----
    synth = load_synthesizer(model_run, "best")
    if to_yaml(synth.cfg.model) != to_yaml(cfg.model):
        raise SynthNetError(f"model.* keys are structural: {model_run} was trained with other model settings")
    synth.cfg, synth.run_dir = cfg, str(out)
    synth.seeds = {**synth.seeds, "grpo_heldout": [[HELDOUT_BASE, HELDOUT_BASE + gc.eval_inits]]}
    ref = copy.deepcopy(synth).eval().requires_grad_(False)
    policy = GaussianPolicy(synth, gc.sigma, gc.explore, ref)
    zoos, _ = load_zoo_tokens(cfg, synth.normalizer)
    spec, data = zoos[0].spec, load_dataset(cfg.data.dataset)
    data.check_arch(spec)
    (x, y), held_out = reward_and_heldout_data(data, gc.heldout_frac, gc.reward_split)
    scored_on = (held_out, (x, y), data.split("train"))  # what heldout() scores the held-out inits' outputs on
    held_seeds = list(range(HELDOUT_BASE, HELDOUT_BASE + gc.eval_inits))
    held = inits(spec, held_seeds)
    opt = torch.optim.AdamW(synth.denoiser.parameters(), lr=gc.lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(gc.seed)
    run = Run(out, cfg, synth, opt, g, rules, loop_state={"prompts": 0})  # prompts: seeds drawn so far
    if run.main:
        print(f"GRPO: {gc.inits} fresh inits x {gc.group} rollouts x K<={gc.k_max} per iteration, "
              f"{gc.iters} iterations, group mode {gc.group_mode}, {world()} rank(s)")
    if run.main and run.step == 0:
        row = start_row(synth, spec, held, held_seeds, scored_on, data, cfg)
        run.start(row, row["heldout_acc"])
    good = (copy.deepcopy(synth.denoiser.state_dict()), copy.deepcopy(opt.state_dict()))
    for _ in run.steps(gc.iters, stop_after, "grpo"):
        t0 = time.perf_counter()
        policy.sigma = gc.sigma
        for group in opt.param_groups:
            group["lr"] = gc.lr
        # ---- rollout: B fresh inits (never one twice in a run) x G stochastic sequences, this rank's share ----
        seeds = prompt_seeds(gc.seed, run.state["prompts"], gc.inits)
        run.state["prompts"] += gc.inits
        synth.seeds["grpo_prompts"] = [[seeds[-1] + 1 - run.state["prompts"], seeds[-1] + 1]]
        start = synth.encode(spec, inits(spec, seeds))
        k = sample_k(gc.inits, gc.group, gc, g)
        mine = share(len(k))
        synth.train()
        ro = rollout(policy, spec, start, gc.group, k, g, mine)
        t_roll = time.perf_counter()
        # ---- reward: every state of our rollouts on the reward's samples, one evaluator call; gathered ----
        acc, ce, growth = score(synth, spec, start[torch.arange(mine.start, mine.stop) // gc.group], ro, x, y)
        reward, terms = rollout_reward(acc, ce, growth, ro.k, cfg.reward)
        reward, acc, terms = gather_rewards(reward, acc, terms, int(k.max()))
        t_reward = time.perf_counter()
        # ---- advantage: over whole groups, then our rollouts' steps ----
        adv, row = advantages(reward, acc, k, gc.inits, gc)
        run_of_step, _ = step_index(k)
        adv = adv[(run_of_step >= mine.start) & (run_of_step < mine.stop)]
        # ---- update: policy-gradient passes + auxiliary denoising ----
        prompts = start[torch.arange(mine.start, mine.stop).div(gc.group, rounding_mode="floor").unique()]
        update_row, good = update(run, policy, ref, spec, ro, adv, k, zoos[0], data, cfg, g, good, prompts, (x, y))
        row.update(update_row, prompt_seeds=[seeds[0], seeds[-1] + 1])
        row.update(rollout_row(reward, terms, k, cfg, policy, [t0, t_roll, t_reward, time.perf_counter()]))
        # ---- held-out evaluation (rank 0): the mean policy on inits it never trains on ----
        evaluating = run.main and ((run.step + 1) % gc.eval_every == 0 or run.step + 1 == gc.iters)
        if evaluating:
            row.update(heldout(spec, synth.outputs(spec, held, gc.k_max), *scored_on))
            synth.best_k = row["heldout_best_k"]
        run.end_step(row, row["heldout_acc"] if evaluating else None, f"grpo heldout {row.get('heldout_acc', 0):.3f}")
    return synth
