"""GRPO loop: ratio = 1 on the first pass, reward rises on a toy target, the real loop runs and resumes."""

import copy
import json
import math
import subprocess
import sys
import time

import pytest
import torch

from conftest import tiny_cfg
from synthnet.config import Config, compose, rl_base
from synthnet.data import load_dataset
from synthnet.errors import SynthNetError
from synthnet.patches import list_patches, request_patch, request_rollback
from synthnet.rl.advantage import group_advantages
from synthnet.rl.grpo import grpo, inits, norm_ratio, policy_loss, reward_and_heldout_data, rollout
from synthnet.scoring import evaluate
from synthnet.seeds import HELDOUT_BASE
from synthnet.rl.policy import GaussianPolicy
from synthnet.synthesize import load_synthesizer
from synthnet.targets import parse_spec
from synthnet.tokens import layout


def _setup(run, sigma=0.05, explore="weights"):
    synth = load_synthesizer(run)
    policy = GaussianPolicy(synth, sigma, explore, copy.deepcopy(synth).requires_grad_(False))
    spec = synth.spec
    start = synth.encode(spec, inits(spec, [1_000_001, 1_000_002]))  # two inits, four rollouts each
    return synth, policy, spec, start


@pytest.mark.parametrize("explore", ["weights", "neurons"])
def test_ratio_is_one_on_the_first_pass(tiny_run, explore):
    synth, policy, spec, start = _setup(tiny_run, explore=explore)
    g = torch.Generator().manual_seed(0)
    ro = rollout(policy, spec, start, 4, torch.tensor([1, 2, 2, 1, 2, 1, 1, 2]), g)
    assert len(ro.rollout) == 12 and len(ro.inputs) == 4 + 4  # first steps: one per (init, K); then one each
    adv = torch.randn(len(ro.rollout))
    cfg = tiny_cfg(tiny_run).grpo
    dist, _ = policy.forward(spec, ro.inputs, ro.level_in, ro.level_out, ro.source)
    ratio = torch.exp(policy.log_prob(spec, dist, ro.actions) - ro.old_logp)
    torch.testing.assert_close(ratio, torch.ones_like(ratio), atol=1e-4, rtol=0)
    ref_mean, _ = synth.step(spec, ro.inputs, ro.level_in, ro.level_out)
    _, diag = policy_loss(policy, ref_mean.detach(), spec, ro, adv, cfg)
    assert abs(diag["ratio_mean"] - 1) < 1e-4 and diag["clip_low"] == 0 and diag["clip_high"] == 0
    assert abs(diag["kl"]) < 1e-6  # the policy is still the frozen reference


def test_shared_first_steps_sample_what_one_copy_per_rollout_samples(tiny_run):
    """Running each (init, K)'s first step once changes no action, log-prob or policy loss."""
    synth, policy, spec, start = _setup(tiny_run)
    k, adv = torch.tensor([1, 2, 2, 1, 2, 1, 1, 2]), torch.randn(12)
    cfg = tiny_cfg(tiny_run).grpo
    shared = rollout(policy, spec, start, 4, k, torch.Generator().manual_seed(0))
    copies = rollout(policy, spec, start.repeat_interleave(4, 0), 1, k, torch.Generator().manual_seed(0))
    assert len(shared.inputs) == 8 and len(copies.inputs) == 12
    assert torch.equal(shared.rollout, copies.rollout) and torch.equal(shared.step, copies.step)
    torch.testing.assert_close(shared.actions, copies.actions)
    torch.testing.assert_close(shared.old_logp, copies.old_logp)
    losses = [policy_loss(policy, ro.inputs + 0.01, spec, ro, adv, cfg)[0] for ro in (shared, copies)]
    torch.testing.assert_close(losses[0], losses[1])


def test_reward_rises_on_a_toy_target(tiny_run):
    """Toy reward = mean weight value of the one-step output: GRPO must push the policy mean up."""
    synth, policy, spec, start = _setup(tiny_run, sigma=0.1)
    mask = layout(spec).mask.float()
    cfg = tiny_cfg(tiny_run, "grpo.kl_beta=0", "grpo.passes=2").grpo
    opt = torch.optim.Adam(synth.denoiser.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    k = torch.ones(8, dtype=torch.long)
    rewards = []
    for _ in range(12):
        ro = rollout(policy, spec, start, 4, k, g)
        r = (ro.actions * mask).sum(dim=(1, 2)) / mask.sum()
        rewards.append(r.mean().item())
        adv = group_advantages(r.view(2, 4)).flatten()[ro.rollout]
        for _ in range(cfg.passes):
            loss, _ = policy_loss(policy, ro.inputs, spec, ro, adv, cfg)  # kl_beta=0: the reference is unused
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert sum(rewards[-3:]) / 3 > sum(rewards[:3]) / 3 + 0.1, rewards


def test_norm_limit_below_the_models_own_outputs_is_warned(tiny_run, tmp_path, capsys):
    """A stale reward.norm_limit under the outputs' norm ratio makes the blow-up penalty swamp accuracy: say so."""
    synth, _, spec, _ = _setup(tiny_run)
    held = inits(spec, list(range(HELDOUT_BASE, HELDOUT_BASE + 4)))
    ratio = norm_ratio(synth.outputs(spec, held, 2)[-1], held).mean().item()
    assert 0.9 * ratio >= 1.0  # reward.norm_limit takes values from 1 up
    for limit, warned in ((0.9 * ratio, True), (2 * ratio, False)):
        cfg = compose(None, ["grpo.iters=1", "grpo.k_max=2", "grpo.eval_inits=4", "grpo.inits=2", "grpo.group=2",
                             f"reward.norm_limit={limit}"], base=rl_base(synth.cfg))
        grpo(cfg, tiny_run, tmp_path / str(warned))
        assert ("warning: the model's outputs sit at" in capsys.readouterr().out) == warned


def test_grpo_config_keeps_the_model_settings_but_not_its_stale_grpo_ones():
    model_cfg = compose("tiny", ["model.dim=48", "train.lr=0.005", "reward.norm_limit=3", "grpo.lr=7e-6"])
    cfg = compose(None, ["grpo.iters=5"], base=rl_base(model_cfg))
    assert (cfg.model.dim, cfg.train.lr, cfg.zoo.path) == (48, 0.005, model_cfg.zoo.path)
    assert (cfg.reward.norm_limit, cfg.grpo.lr, cfg.grpo.iters) == (Config().reward.norm_limit, Config().grpo.lr, 5)


def test_reward_samples_never_include_the_held_out_ones():
    data = load_dataset("digits")
    x_val, _ = data.split("val")
    (xv, _), held = reward_and_heldout_data(data, 0.34, "val")
    assert len(held[0]) == round(0.34 * len(x_val)) and torch.equal(torch.cat([xv, held[0]]), x_val)
    (xtv, _), held_tv = reward_and_heldout_data(data, 0.34, "train+val")
    assert torch.equal(xtv, torch.cat([data.x_train, xv])) and torch.equal(held_tv[0], held[0])
    (xt, _), held_t = reward_and_heldout_data(data, 0.34, "train")
    assert torch.equal(xt, data.x_train) and torch.equal(held_t[0], x_val)  # train: all of val held out
    with pytest.raises(SynthNetError, match="heldout_frac=1"):
        reward_and_heldout_data(data, 1.0, "val")


def _rows(run):
    skip = ("rollout_steps_per_s", "time_")
    return [{k: v for k, v in json.loads(line).items() if not k.startswith(skip)}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_grpo_loop_logs_diagnostics_and_resumes_exactly(tiny_run, tmp_path):
    cfg = compose(None, ["grpo.iters=4", "grpo.eval_every=2"], base=load_synthesizer(tiny_run).cfg)
    straight, split = tmp_path / "straight", tmp_path / "split"
    grpo(cfg, tiny_run, straight)
    rows = _rows(straight)
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4]
    for key in ("reward_mean", "reward_std", "reward_min", "reward_max", "zero_spread_groups", "group_range_mean",
                "adv_mean", "adv_std", "clip_low", "clip_high", "kl", "entropy", "grad_norm", "sigma", "nan_skip"):
        assert key in rows[1], key
    for key in ("heldout_acc", "reward_set_acc", "train_acc"):
        assert key in rows[0] and key in rows[2] and key not in rows[1], key
        assert rows[2][key] == max(rows[2][f"{key}/k{k}"] for k in range(1, cfg.grpo.k_max + 1))
    data = load_dataset(cfg.data.dataset)
    _, held = reward_and_heldout_data(data, cfg.grpo.heldout_frac, cfg.grpo.reward_split)
    seeds = list(range(HELDOUT_BASE, HELDOUT_BASE + cfg.grpo.eval_inits))
    spec = parse_spec(cfg.data.arch)
    untrained = evaluate(spec, inits(spec, seeds), *held).acc.mean().item()  # the inits themselves
    assert rows[0]["heldout_teacher_acc"] > untrained + 0.3 and "heldout_teacher_acc" not in rows[2]
    grpo(cfg, tiny_run, split, stop_after=3)
    grpo(cfg, tiny_run, split)
    assert _rows(split) == rows


def test_neuron_exploration_with_the_exact_gradient_term_explores_one_direction_per_neuron(tiny_run, tmp_path):
    """explore=neurons moves each token of a rollout along one direction only, and label_weight adds the prompts'
    label cross-entropy, logged, to a loop that still runs and resumes like the default one."""
    synth, policy, spec, start = _setup(tiny_run, explore="neurons")
    ro = rollout(policy, spec, start, 4, torch.ones(8, dtype=torch.long), torch.Generator().manual_seed(0))
    dist, _ = policy.forward(spec, ro.inputs, ro.level_in, ro.level_out, ro.source)
    move = ro.actions - dist.mean  # (M, N, F): each token moves along its direction only
    along = (move * dist.basis).sum(-1, keepdim=True) * dist.basis
    torch.testing.assert_close(move, along)
    assert along.abs().sum() > 0 and torch.equal(dist.basis[0], dist.basis[1])  # one init's rollouts: one basis
    cfg = compose(None, ["grpo.iters=2", "grpo.eval_every=2", "grpo.explore=neurons", "grpo.label_weight=1"],
                  base=load_synthesizer(tiny_run).cfg)
    grpo(cfg, tiny_run, tmp_path / "run")
    rows = _rows(tmp_path / "run")
    assert all(math.isfinite(r["label_ce"]) and r["label_ce"] > 0 for r in rows[1:])


def test_prompt_seeds_are_never_reused_across_a_live_patch_and_a_resume(tiny_run, tmp_path):
    """Fewer prompts per iteration after a patch, and a kill + resume between: every prompt seed stays new, and the
    model's record (what `synthnet eval` refuses) holds exactly the prompts drawn."""
    cfg = compose(None, ["grpo.iters=5", "grpo.eval_every=2", "grpo.inits=3"], base=load_synthesizer(tiny_run).cfg)
    out = tmp_path / "run"
    grpo(cfg, tiny_run, out, stop_after=2)  # killed after iteration 2 (latest.pt at 2)
    request_patch(out, ["grpo.inits=2"])
    grpo(cfg, tiny_run, out)
    spans = [r["prompt_seeds"] for r in _rows(out)[1:]]
    assert [b - a for a, b in spans] == [3, 3, 2, 2, 2]
    drawn = [s for a, b in spans for s in range(a, b)]
    assert len(set(drawn)) == len(drawn)
    record = load_synthesizer(out, "final").seeds
    assert record["grpo_prompts"] == [[min(drawn), max(drawn) + 1]] and len(drawn) == max(drawn) + 1 - min(drawn)
    assert record["grpo_heldout"] == [[HELDOUT_BASE, HELDOUT_BASE + cfg.grpo.eval_inits]]
    assert record["zoo"] == load_synthesizer(tiny_run).seeds["zoo"]


def _wait_for(run, predicate, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        path = run / "metrics.jsonl"
        rows = [json.loads(x) for x in path.read_text().splitlines()] if path.is_file() else []
        hit = [r for r in rows if predicate(r)]
        if hit:
            return hit[0]
        time.sleep(0.2)
    raise AssertionError(f"no metrics row matched within {timeout} s")


@pytest.mark.slow
def test_patch_a_running_grpo_run_then_roll_back(tiny_run, tmp_path):
    out = tmp_path / "grpo"
    cmd = [sys.executable, "-m", "synthnet", "grpo", "--model", str(tiny_run), "--out", str(out),
           "grpo.iters=100000", "grpo.eval_every=1000", "grpo.lr=2e-5"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(out, lambda r: r["step"] >= 1)
        with pytest.raises(SynthNetError, match="model.dim"):
            request_patch(out, ["model.dim=8"])  # restart-only: refused up front
        with pytest.raises(SynthNetError, match="grpo.lr"):
            request_patch(out, ["grpo.lr=5"])  # out of range
        assert not list(out.glob("patches/inbox/*")), "a refused patch wrote a request"
        request_patch(out, ["grpo.lr=1e-4", "reward.acc_weight=0.5"])
        row = _wait_for(out, lambda r: r.get("patch_id") == 1)
        assert row["lr"] == 1e-4 and row["reward.acc_weight"] == 0.5
        before = _wait_for(out, lambda r: r["step"] < row["step"] and r["step"] >= 1)
        assert before["lr"] == 2e-5 and before["reward.acc_weight"] == 1.0 and before["patch_id"] == 0
        request_rollback(out)
        back = _wait_for(out, lambda r: r["step"] > row["step"] and r["lr"] == 2e-5)
        assert back["reward.acc_weight"] == 1.0
        history = list_patches(out)
        assert {h["key"] for h in history if h["status"] == "rolled_back"} == {"grpo.lr", "reward.acc_weight"}
    finally:
        proc.kill()
        proc.wait()
