"""torchrun (2 gloo processes) matches one process, and runs killed with SIGKILL resume to the same metrics."""

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from conftest import TINY_ARCH, tiny_cfg
from synthnet.config import compose, rl_base
from synthnet.patches import parse_rule
from synthnet.rl.grpo import grpo, inits, rollout
from synthnet.rl.policy import GaussianPolicy
from synthnet.synthesize import load_synthesizer
from synthnet.train import train

pytestmark = pytest.mark.slow  # end to end (subprocesses, Ray, torchrun): `make test` runs it, -m "not slow" not

VOLATILE = ("steps_per_s", "rollout_steps_per_s", "time_")  # wall-clock figures
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}  # what torchrun gives each rank; also spares a shared CPU
# `synthnet grpo` takes grpo.* from the defaults, not from the tiny run: these keep its rollouts tiny
SMALL_GRPO = ["grpo.k_max=2", "grpo.eval_inits=4", "grpo.passes=1"]
LOOSE = ("adv_", "loss")  # GRPO figures that cancel to ~0: compared to 1e-3 absolute


@pytest.fixture(autouse=True)
def one_thread():
    """The in-process runs here share 2 cores with subprocesses: one thread each, as torchrun gives its ranks."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def rows(run):
    return [{k: v for k, v in json.loads(line).items() if not k.startswith(VOLATILE)}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


def cli(*args):
    return [sys.executable, "-m", "synthnet", *map(str, args)]


def start(cmd, log):
    """Popen with stdout and stderr into the file `log` (a pipe nobody reads could stall the child)."""
    with open(log, "w") as f:
        return subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=ONE_THREAD)


def succeeded(proc: subprocess.Popen, log) -> None:
    proc.wait(timeout=300)
    assert proc.returncode == 0, log.read_text()[-4000:]


def torchrun(log, *args) -> subprocess.Popen:
    """Start `synthnet ARGS` on 2 gloo ranks (the one-process reference runs meanwhile)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return start([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}",
                  "-m", "synthnet", *map(str, args)], log)


def assert_rows_close(got, want):
    """One row per step (rank 0 alone wrote them), equal to the one-process rows up to float summation order.
    Advantage summaries and the GRPO loss get a looser absolute tolerance: dividing by the std of a nearly tied group
    amplifies the float dust of its rewards, and both are means of O(1) terms that cancel (equal-K groups)."""
    assert [r["step"] for r in got] == [r["step"] for r in want]
    for g, w in zip(got, want):
        assert g.keys() == w.keys(), g.keys() ^ w.keys()
        for key, value in w.items():
            if not isinstance(value, float):  # ints and lists (prompt_seeds) match exactly
                assert g[key] == value, (w["step"], key, g[key], value)
                continue
            tol = 1e-3 if key.startswith(LOOSE) else 1e-5
            assert math.isclose(g[key], value, rel_tol=1e-3, abs_tol=tol), (w["step"], key, g[key], value)


def assert_weights_close(run_a, run_b):
    a = load_synthesizer(run_a, "final").denoiser.state_dict()
    b = load_synthesizer(run_b, "final").denoiser.state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-3, atol=1e-5)


def test_torchrun_supervised_matches_one_process(tiny_zoo, tmp_path):
    """2 ranks x half batch = 1 process x full batch; a self-tuning rule halves rank 0's lr from step 1 on, so
    unless every rank follows rank 0's config the ranks diverge (and the run fails its replica check)."""
    overrides = ["train.steps=12", "train.val_every=4", "train.label_weight=0.5"]
    rule = "lr_half:loss>0:train.lr*0.5:5"
    one, two = tmp_path / "one", tmp_path / "two"
    log = tmp_path / "torchrun.log"
    proc = torchrun(log, "train", "--zoo", tiny_zoo, "--out", two, "--preset", "tiny", f"data.arch={TINY_ARCH}",
                    *overrides, "--rule", rule)
    train(tiny_cfg(tiny_zoo, *overrides), one, rules=[parse_rule(rule)])
    succeeded(proc, log)  # exit 0 includes the ranks' final check that they hold identical weights
    assert_rows_close(rows(two), rows(one))
    assert {r["patch_id"] for r in rows(one)} == {0, 1, 2, 3}  # the rule fired at steps 1, 6 and 11
    assert_weights_close(two, one)


def test_torchrun_grpo_resumes_a_one_process_run_and_matches_it(tiny_run, tmp_path):
    """Groups straddle the ranks (3 inits x 2 rollouts over 2 ranks) and bnpo gives the ranks unequal step counts:
    only gathered rewards and the right loss scale give the one-process numbers."""
    overrides = ["grpo.iters=5", "grpo.eval_every=2", "grpo.inits=3", "grpo.group=2", "grpo.loss_norm=bnpo", *SMALL_GRPO]
    cfg = compose(None, overrides, base=rl_base(load_synthesizer(tiny_run).cfg))
    one, two = tmp_path / "one", tmp_path / "two"
    grpo(cfg, tiny_run, two, stop_after=3)  # checkpoint at 2, row 3 to be redone by the 2 ranks
    log = tmp_path / "torchrun.log"
    proc = torchrun(log, "grpo", "--model", tiny_run, "--out", two, *overrides)
    grpo(cfg, tiny_run, one)
    succeeded(proc, log)
    assert_rows_close(rows(two), rows(one))
    assert_weights_close(two, one)


def test_torchrun_rank_shares_of_rollouts_draw_what_one_process_draws(tiny_run):
    """Each rank's share of the rollouts gets the actions one process gives those rollouts, and every rank's
    generator ends where one process's does, even when a rank has no rollout left at a step."""
    synth = load_synthesizer(tiny_run)
    policy, spec = GaussianPolicy(synth, 0.05), synth.spec
    start = synth.encode(spec, inits(spec, [1_000_001, 1_000_002, 1_000_003]))  # two rollouts each
    k = torch.tensor([1, 1, 1, 2, 2, 1])  # the first share's rollouts all stop after one step
    g = torch.Generator().manual_seed(0)
    whole = rollout(policy, spec, start, 2, k, g)
    for mine in (range(0, 3), range(3, 6)):
        g_rank = torch.Generator().manual_seed(0)
        part = rollout(policy, spec, start, 2, k, g_rank, mine)
        assert torch.equal(g_rank.get_state(), g.get_state())
        rows = (whole.rollout >= mine.start) & (whole.rollout < mine.stop)
        assert torch.equal(part.rollout + mine.start, whole.rollout[rows]) and torch.equal(part.step, whole.step[rows])
        torch.testing.assert_close(part.actions, whole.actions[rows])
        torch.testing.assert_close(part.old_logp, whole.old_logp[rows])


def kill_mid_run(cmd, out, after_step):
    """Start cmd, SIGKILL it once latest.pt exists and a metrics row with step >= after_step is written."""
    log = out.parent / "killed.log"
    proc = start(cmd, log)
    deadline = time.time() + 120
    try:
        while time.time() < deadline and proc.poll() is None:
            path = out / "metrics.jsonl"
            done = path.read_text().split("\n")[:-1] if path.is_file() else []  # complete rows
            if (out / "latest.pt").is_file() and any(json.loads(r)["step"] >= after_step for r in done):
                break
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"the run ended before the kill: {log.read_text()[-2000:]}"
    assert not (out / "final.pt").is_file()


def resume_after_sigkill(cmd, out, after_step):
    """Kill `cmd` mid-run, then run it again to the end."""
    kill_mid_run(cmd, out, after_step)
    r = subprocess.run(cmd, capture_output=True, text=True, env=ONE_THREAD)
    assert r.returncode == 0, r.stderr[-3000:]


def test_resume_after_sigkill_supervised(tiny_zoo, tmp_path):
    overrides = ["train.steps=20", "train.val_every=5"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    resume_after_sigkill(cli("train", "--zoo", tiny_zoo, "--out", split, "--preset", "tiny", f"data.arch={TINY_ARCH}",
                             *overrides), split, after_step=7)
    train(tiny_cfg(tiny_zoo, *overrides), straight)
    assert rows(split) == rows(straight)


def test_resume_after_sigkill_grpo(tiny_run, tmp_path):
    overrides = ["grpo.iters=15", "grpo.eval_every=3", "grpo.inits=2", "grpo.group=4", *SMALL_GRPO]
    straight, split = tmp_path / "straight", tmp_path / "split"
    resume_after_sigkill(cli("grpo", "--model", tiny_run, "--out", split, *overrides), split, after_step=4)
    grpo(compose(None, overrides, base=rl_base(load_synthesizer(tiny_run).cfg)), tiny_run, straight)
    assert rows(split) == rows(straight)
