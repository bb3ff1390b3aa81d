"""The GRPO loop: fresh random inits as prompts, groups of stochastic denoising rollouts as completions,
real validation accuracy as reward, PPO-clipped group-relative policy gradient, KL to the frozen supervised
model and the supervised denoising loss kept as an auxiliary term. Rollouts are discarded after each update.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from synthnet.config import Config, to_yaml
from synthnet.data import load_dataset
from synthnet.errors import SynthNetError
from synthnet.evaluate import evaluate
from synthnet.orchestrate.patches import LivePatches, Rule
from synthnet.progress import progress
from synthnet.rl.advantage import group_advantages, spread, zero_spread_fraction
from synthnet.rl.policy import GaussianPolicy
from synthnet.rl.reward import rollout_reward, step_rewards
from synthnet.runlog import RunLog, load_checkpoint, restore_training_state, save_training_state
from synthnet.synthesize import Synthesizer, load_synthesizer
from synthnet.targets import Spec, init_state
from synthnet.train import chain_batch, load_zoo_tokens
from synthnet.weights import stack_states

TRAIN_SEED_BASE = 1_000_000  # fresh GRPO prompts: seeds from here up (zoo seeds are small, eval seeds 100000+)
HELDOUT_SEED_BASE = 500_000  # the fixed held-out inits GRPO reports on (val split)


@dataclass
class Rollouts:
    """All (state, action) steps of B*G rollouts, flattened over (rollout, step): M = sum of K."""

    inputs: torch.Tensor  # (M, N, F) state before the step
    actions: torch.Tensor  # (M, N, F) sampled next state
    level_in: torch.Tensor  # (M,)
    level_out: torch.Tensor  # (M,)
    old_logp: torch.Tensor  # (M,) log-prob under the policy that sampled it
    rollout: torch.Tensor  # (M,) rollout index in [0, B*G)
    step: torch.Tensor  # (M,) step index in [0, K)
    k: torch.Tensor  # (B*G,) steps of each rollout


def inits(spec: Spec, seeds: list[int]) -> dict[str, torch.Tensor]:
    return stack_states([init_state(spec, s) for s in seeds])


@torch.no_grad()
def rollout(policy: GaussianPolicy, spec: Spec, start: torch.Tensor, k: torch.Tensor, g: torch.Generator) -> Rollouts:
    """Run every rollout r for k[r] stochastic steps from start[r] (R, N, F), all rollouts batched."""
    cur, rec = start.clone(), []
    for s in range(int(k.max())):
        idx = (k > s).nonzero().squeeze(1)
        kk = k[idx].float()
        l_in, l_out = 1 - s / kk, 1 - (s + 1) / kk
        dist, _ = policy.forward(spec, cur[idx], l_in, l_out)
        action = policy.sample(spec, dist, g)
        rec.append((cur[idx], action, l_in, l_out, policy.log_prob(spec, dist, action), idx, torch.full_like(idx, s)))
        cur = cur.clone()
        cur[idx] = action
    cols = list(zip(*rec))
    return Rollouts(*(torch.cat(c) for c in cols), k=k)


def sample_k(n: int, cfg, g: torch.Generator) -> torch.Tensor:
    if cfg.k_dist == "fixed":
        return torch.full((n,), cfg.k_max, dtype=torch.long)
    return torch.randint(1, cfg.k_max + 1, (n,), generator=g)


@torch.no_grad()
def score(synth: Synthesizer, spec: Spec, start: torch.Tensor, ro: Rollouts, x, y) -> tuple[torch.Tensor, ...]:
    """Val accuracy (R, K_max + 1) along every rollout (NaN past its K), final CE (R,), norm ratio (R,).

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
    flat = torch.cat([v.flatten(1) for v in states.values()], 1)
    norm_ratio = flat[final_idx].norm(dim=1) / flat[:r].norm(dim=1)
    return acc, sc.loss[final_idx], norm_ratio


def advantages(reward: torch.Tensor, acc: torch.Tensor, ro: Rollouts, groups: int, cfg) -> tuple[torch.Tensor, dict]:
    """(M,) advantage of every step under the configured group mode, plus diagnostics."""
    seq = group_advantages(reward.view(groups, -1), cfg.std_norm).flatten()[ro.rollout]
    stp_table = group_advantages(step_rewards(acc), cfg.std_norm)
    stp = torch.nan_to_num(stp_table[ro.rollout, ro.step])
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


def policy_loss(policy: GaussianPolicy, ref: Synthesizer, spec: Spec, ro: Rollouts, adv: torch.Tensor, cfg):
    """PPO-clipped surrogate + kl_beta * KL(pi || pi_ref), normalised as configured. Returns (loss, diag)."""
    dist, aux = policy.forward(spec, ro.inputs, ro.level_in, ro.level_out)
    ratio = torch.exp(policy.log_prob(spec, dist, ro.actions) - ro.old_logp)
    clipped = ratio.clamp(1 - cfg.eps_low, 1 + cfg.eps_high)
    surrogate = -torch.minimum(ratio * adv, clipped * adv)
    with torch.no_grad():
        ref_mean, _ = ref.step(spec, ro.inputs, ro.level_in, ro.level_out)
    kl = policy.kl(spec, dist, torch.distributions.Normal(ref_mean, torch.full_like(ref_mean, policy.sigma)))
    loss = normalise_loss(surrogate + cfg.kl_beta * kl, ro, cfg.loss_norm, cfg.k_max) + policy.synth.moe_penalty(aux)
    diag = {"kl": kl.mean().item(), "ratio_mean": ratio.mean().item(),
            "clip_low": ((ratio < 1 - cfg.eps_low) & (adv < 0)).float().mean().item(),
            "clip_high": ((ratio > 1 + cfg.eps_high) & (adv > 0)).float().mean().item(),
            "entropy": policy.entropy(spec, dist).mean().item()}
    if aux["expert_util"].numel():
        diag.update({f"expert_util/{i}": u.item() for i, u in enumerate(aux["expert_util"])})
    return loss, diag


@torch.no_grad()
def heldout(synth: Synthesizer, spec: Spec, params: dict, k_max: int, x, y) -> dict:
    """Mean-policy (inference) val accuracy on the fixed held-out inits, per K."""
    row = {f"heldout_acc/k{k}": evaluate(spec, s, x, y).acc.mean().item()
           for k, s in enumerate(synth.outputs(spec, params, k_max), 1)}
    row["heldout_acc"] = max(row.values())
    return row


def grpo(cfg: Config, model_run: Path, out: Path, stop_after: int | None = None,
         rules: Sequence[Rule] = ()) -> Synthesizer:
    """Reinforce the supervised model of `model_run` into run directory `out` (exact resume, live patches)."""
    out, gc = Path(out), cfg.grpo
    # ---- set-up: policy, frozen reference, zoo for the auxiliary loss, fixed held-out inits ----
    synth = load_synthesizer(model_run, "best")
    if to_yaml(synth.cfg.model) != to_yaml(cfg.model):
        raise SynthNetError(f"model.* keys are structural: {model_run} was trained with other model settings")
    synth.cfg, synth.run_dir = cfg, str(out)
    ref = copy.deepcopy(synth).eval().requires_grad_(False)
    policy = GaussianPolicy(synth, gc.sigma)
    zoos, _ = load_zoo_tokens(cfg, synth.normalizer)
    data = load_dataset(cfg.data.dataset)
    x, y = data.split("val")
    spec = zoos[0].spec
    held = inits(spec, list(range(HELDOUT_SEED_BASE, HELDOUT_SEED_BASE + gc.eval_inits)))
    opt = torch.optim.AdamW(synth.denoiser.parameters(), lr=gc.lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(gc.seed)
    ckpt = load_checkpoint(out / "latest.pt") if (out / "latest.pt").is_file() else {}
    patches = LivePatches(out, cfg, rules, ckpt.get("patches"))  # restores patched values and ramps
    it, best = 0, -1.0
    if ckpt:
        it, best = restore_training_state(ckpt, synth, opt, g)
    log = RunLog(out, cfg)
    log.truncate_after(it)
    print(f"GRPO: {gc.inits} fresh inits x {gc.group} rollouts x K<={gc.k_max} per iteration, "
          f"{gc.iters} iterations, group mode {gc.group_mode}")

    def checkpoint(name: str) -> None:
        save_training_state(out / f"{name}.pt", synth, opt, g, it, best, patches)

    if it == 0:
        row = heldout(synth, spec, held, gc.k_max, x, y)
        best = row["heldout_acc"]
        checkpoint("best")
        log.log(0, row)
    good = (copy.deepcopy(synth.denoiser.state_dict()), copy.deepcopy(opt.state_dict()))
    end = gc.iters if stop_after is None else min(gc.iters, stop_after)
    with progress() as bar:
        task = bar.add_task("grpo", total=gc.iters, completed=it)
        while it < end:
            t0 = time.perf_counter()
            patch_id = patches.apply(it)  # live patches take effect here, at the step boundary
            policy.sigma = gc.sigma
            for group in opt.param_groups:
                group["lr"] = gc.lr
            # ---- rollout: B fresh inits x G stochastic sequences, one batch ----
            seeds = [TRAIN_SEED_BASE + gc.seed * 10**7 + it * gc.inits + i for i in range(gc.inits)]
            start = synth.encode(spec, inits(spec, seeds)).repeat_interleave(gc.group, 0)
            k = sample_k(len(start), gc, g)
            synth.train()
            ro = rollout(policy, spec, start, k, g)
            t_roll = time.perf_counter()
            # ---- reward: every state of every rollout on the val split, one evaluator call ----
            acc, ce, norm_ratio = score(synth, spec, start, ro, x, y)
            reward, terms = rollout_reward(acc, ce, norm_ratio, k, cfg.reward)
            t_reward = time.perf_counter()
            # ---- advantage ----
            adv, row = advantages(reward, acc, ro, gc.inits, gc)
            # ---- update: mu passes over the same rollouts (old log-probs kept) + auxiliary denoising ----
            for _ in range(gc.mu):
                loss, diag = policy_loss(policy, ref, spec, ro, adv, gc)
                if gc.aux_weight > 0:
                    xb = data.x_train[torch.randint(len(data.x_train), (256,), generator=g)]
                    aux_loss, _ = chain_batch(synth, zoos[0], 10**9, cfg, g, xb)
                    loss = loss + gc.aux_weight * aux_loss
                opt.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = nn.utils.clip_grad_norm_(synth.denoiser.parameters(), gc.grad_clip)
                if not (torch.isfinite(loss) and torch.isfinite(grad_norm)):
                    synth.denoiser.load_state_dict(good[0])
                    opt.load_state_dict(good[1])
                    row["nan_skip"] = 1
                    break
                opt.step()
            else:
                good = (copy.deepcopy(synth.denoiser.state_dict()), copy.deepcopy(opt.state_dict()))
                row["nan_skip"] = 0
            it += 1
            # ---- diagnostics ----
            t_end = time.perf_counter()
            row.update({"reward_mean": reward.mean().item(), "reward_std": reward.std().item(),
                        "reward_min": reward.min().item(), "reward_max": reward.max().item(),
                        **{f"{n}_mean": v.mean().item() for n, v in terms.items()}, **diag,
                        "loss": loss.item(), "grad_norm": float(grad_norm), "sigma": policy.sigma, "lr": gc.lr,
                        **{f"reward.{k}": v for k, v in cfg.reward.items()},
                        "rollout_steps_per_s": len(ro.rollout) / (t_end - t0),
                        "time_rollout": t_roll - t0, "time_reward": t_reward - t_roll, "time_update": t_end - t_reward})
            row["patch_id"] = patch_id
            evaluating = it % gc.eval_every == 0 or it == gc.iters
            if evaluating:
                row.update(heldout(synth, spec, held, gc.k_max, x, y))
            patches.observe(it, row)  # self-tuning rules, before the checkpoint so a resume replays them
            if evaluating:
                if row["heldout_acc"] > best:
                    best = row["heldout_acc"]
                    checkpoint("best")
                checkpoint("latest")
                bar.update(task, description=f"grpo heldout {row['heldout_acc']:.3f}")
            log.log(it, row)
            bar.advance(task)
    if it >= gc.iters:
        checkpoint("final")
    log.close()
    return synth
