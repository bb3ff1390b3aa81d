"""Sweeps on Ray Tune: a grid of config values over the supervised or the GRPO stage, optionally with
population-based training (PBT) that mutates live keys of running trials.

Each trial is a normal run directory DIR/<key=value,...> (config.yaml, metrics.jsonl, latest/best/final.pt, a
`synthnet patch` inbox). A trial runs its stage in chunks that end at validation steps (`stop_after`; the loops
resume exactly) and after each chunk reports the new validation rows to Tune, the last one with a snapshot of the
run's state as its Tune checkpoint. A PBT exploit restores a better trial's snapshot into this trial's run
directory, logs it in RUN/exploits.jsonl, and queues the explored values as one live patch (synthnet/patches.py):
the loop applies it at its first step and every metrics row from there on carries its id.
DIR/sweep.json ranks the trials by the best validation metric in their own metrics.jsonl.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import itertools
import json
import os
import random
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from omegaconf import OmegaConf

from synthnet.config import CHOICES, KNOBS, Config, compose, from_yaml, rl_base
from synthnet.errors import SynthNetError
from synthnet.jsonl import read_jsonl
from synthnet.orchestrate.cluster import connect
from synthnet.patches import check_value, request_patch
from synthnet.runlog import load_checkpoint
from synthnet.weights import atomic_write_text
from synthnet.zoo import read_manifest


@dataclasses.dataclass(frozen=True)
class Stage:
    length: str  # config key: steps of a run
    every: str  # config key: steps between validations (chunks end there)
    metric: str  # metrics.jsonl column reported to Tune and ranked by (higher is better)


STAGES = {"train": Stage("train.steps", "train.val_every", "val_acc"),
          "grpo": Stage("grpo.iters", "grpo.eval_every", "heldout_acc")}
STATE = ("latest.pt", "best.pt", "metrics.jsonl", "config.yaml",  # what a Tune checkpoint of a run holds
         "patches/history.jsonl", "patches/done", "patches/refused")
TRIAL = "trial.json"  # in a Tune checkpoint: the trial that wrote it and its step


@dataclasses.dataclass(frozen=True)
class Sweep:
    preset: str  # config preset of every trial
    stage: str  # train | grpo
    grid: dict[str, list]  # key -> typed values; the trials are their cartesian product
    overrides: tuple[str, ...]  # key=value for every trial
    out: Path  # absolute sweep directory
    model: Path | None  # absolute supervised run the GRPO stage starts from
    cwd: Path  # where the sweep started: trials resolve relative paths (zoo.path, idx:<dir>) from here
    pbt: bool  # population-based training over the grid's keys

    def config(self, point: dict[str, Any]) -> Config:
        """The resolved config of one grid point (GRPO: the model's config under the preset and overrides)."""
        base = None
        if self.stage == "grpo":
            from synthnet.synthesize import load_synthesizer

            base = rl_base(load_synthesizer(self.model).cfg)
        return compose(self.preset, [*self.overrides, *(f"{k}={v}" for k, v in point.items())], base=base)

    def points(self) -> list[dict[str, Any]]:
        return [dict(zip(self.grid, values)) for values in itertools.product(*self.grid.values())]


def trial_name(point: dict[str, Any]) -> str:
    """The run directory name of a grid point: key=value,key=value with path-unsafe characters as '_'."""
    return re.sub(r"[^\w.=,+-]", "_", ",".join(f"{k}={v}" for k, v in point.items()))


def parse_grid(items: list[str]) -> dict[str, list[str]]:
    """['key=a,b,c', ...] -> {key: [a, b, c]}."""
    grid: dict[str, list[str]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        values = [v for v in raw.split(",") if v]
        if not sep or not values:
            raise SynthNetError(f"--grid {item!r} is not key=a,b,c (e.g. --grid train.lr=1e-3,3e-3)")
        if key in grid:
            raise SynthNetError(f"--grid {key} is given twice")
        grid[key] = values
    if not grid:
        raise SynthNetError("a sweep needs at least one --grid key=a,b,c")
    return grid


def plan(preset: str, stage: str, grid_items: list[str], overrides: list[str], out: Path, model: Path | None,
         pbt: bool) -> Sweep:
    """Check everything a sweep needs before Ray starts; values are converted to the schema's types."""
    if stage not in STAGES:
        raise SynthNetError(f"--stage {stage!r} is not accepted; choose one of {', '.join(STAGES)}")
    if (stage == "grpo") != (model is not None):
        raise SynthNetError("--stage grpo needs --model RUN (a supervised run); --stage train takes no --model")
    if model is not None and not (Path(model) / "best.pt").is_file():
        raise SynthNetError(f"--model {model} is not a supervised run (no best.pt)")
    raw = parse_grid(grid_items)
    sweep = Sweep(preset, stage, {}, tuple(overrides), Path(out).resolve(), model and Path(model).resolve(),
                  Path.cwd(), pbt)
    grid = {key: [OmegaConf.select(sweep.config({key: v}), key) for v in values] for key, values in raw.items()}
    sweep = dataclasses.replace(sweep, grid=grid)
    names = [trial_name(p) for p in sweep.points()]
    if len(set(names)) < len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise SynthNetError(f"--grid values repeat (as {twice}); give each value once")
    if pbt:
        for key, values in grid.items():
            for v in values:
                check_value(key, v)  # PBT patches running trials: live keys within their bounds only
        if len(names) < 2:
            raise SynthNetError("--pbt needs a population: give --grid values that make at least 2 trials")
    for zoo in {sweep.config(p).zoo.path for p in sweep.points()}:
        read_manifest(Path(zoo))  # a missing zoo fails here, not in every trial
    return sweep


# ---- trial side: runs in a Ray worker ----

def steps_done(run: Path) -> int:
    """Steps the run's latest checkpoint holds (what a resume starts from)."""
    return load_checkpoint(run / "latest.pt")["step"] if (run / "latest.pt").is_file() else 0


def run_stage(sweep: Sweep, cfg: Config, run: Path, stop: int) -> None:
    if sweep.stage == "train":
        from synthnet.train import train

        train(cfg, run, stop_after=stop)
    else:
        from synthnet.rl.grpo import grpo

        grpo(cfg, sweep.model, run, stop_after=stop)


def snapshot(run: Path, dest: Path, name: str) -> None:
    """Copy the run's resumable state (STATE) into `dest`, with TRIAL naming its writer."""
    for rel in STATE:
        src = run / rel
        if src.is_dir():
            shutil.copytree(src, dest / rel)
        elif src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    (dest / TRIAL).write_text(json.dumps({"trial": name, "step": steps_done(run)}))


def restore(src: Path, run: Path) -> dict:
    """Replace the run's STATE by a snapshot's (its inbox and TensorBoard events stay); returns its TRIAL."""
    for rel in STATE:
        mine, theirs = run / rel, src / rel
        shutil.rmtree(mine) if mine.is_dir() else mine.unlink(missing_ok=True)
        if theirs.is_dir():
            shutil.copytree(theirs, mine)
        elif theirs.is_file():
            mine.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(theirs, mine)
    return json.loads((src / TRIAL).read_text())


def exploit(run: Path, donor: dict, values: dict[str, Any]) -> None:
    """After restoring the donor's snapshot: queue PBT's explored values as one live patch and log the exploit."""
    req = request_patch(run, [f"{k}={v}" for k, v in values.items()])
    with open(run / "exploits.jsonl", "a") as f:
        f.write(json.dumps({"step": donor["step"], "from": donor["trial"], "set": req["set"],
                            "request": req["request"]}) + "\n")


def run_chunks(sweep: Sweep, base: Config, run: Path, report: Callable[[dict, bool], None]) -> None:
    """Run the stage to its end in chunks that stop at validation steps; report(row, last) every new validation."""
    stage = STAGES[sweep.stage]
    total, every = OmegaConf.select(base, stage.length), OmegaConf.select(base, stage.every)
    done, stalled = steps_done(run), False
    while done < total:
        cfg = copy.deepcopy(base)  # the loop patches its config in place; a resume restores patched values itself
        run_stage(sweep, cfg, run, total if stalled else min(total, (done // every + 1) * every))
        before, done, every = done, steps_done(run), OmegaConf.select(cfg, stage.every)
        stalled = done == before  # no validation where expected (its cadence was patched): run to the end
        rows = [r for r in read_jsonl(run / "metrics.jsonl") if stage.metric in r and before < r["step"] <= done]
        for i, row in enumerate(rows):
            report(row, i == len(rows) - 1)


def trial(config: dict, sweep: Sweep) -> None:
    """Tune's function trainable: one grid point, or a PBT trial restarted from another trial's checkpoint."""
    from ray import tune

    os.chdir(sweep.cwd)  # Tune starts trials in their own directory
    name = tune.get_context().get_trial_name()
    run = sweep.out / name
    if (run / "final.pt").is_file():
        return  # finished: PBT's exploit at the last validation, or a restart, has nothing left to change
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        base = sweep.config({k: config[k] for k in sweep.grid})
    else:
        with checkpoint.as_directory() as src:
            donor = restore(Path(src), run)
        base = from_yaml((run / "config.yaml").read_text(), str(run / "config.yaml"))
        if donor["trial"] != name:
            exploit(run, donor, {k: config[k] for k in sweep.grid})
    metric = STAGES[sweep.stage].metric

    def report(row: dict, last: bool) -> None:
        result = {metric: row[metric], "step": row["step"]}
        if last:  # the run's state is that of this row: it becomes the trial's Tune checkpoint
            with tempfile.TemporaryDirectory() as tmp:
                snapshot(run, Path(tmp), name)
                tune.report(result, checkpoint=tune.Checkpoint.from_directory(tmp))
        else:
            tune.report(result)

    run_chunks(sweep, base, run, report)


# ---- driver side ----

def clamp(keys: list[str], config: dict) -> dict:
    """PBT's explored config with every numeric key back inside its KNOBS bounds."""
    return {**config, **{k: min(max(config[k], KNOBS[k].low), KNOBS[k].high) for k in keys if k not in CHOICES}}


def scheduler(sweep: Sweep) -> Any:
    """Synchronous PBT over the grid's keys at every validation: the bottom quarter of the trials (at least one)
    clone a top-quarter trial, then a choice key moves along its grid values and a numeric one is scaled by 0.8 or
    1.2 (ints rounded), or with probability 0.25 resampled from its grid values. Synchronous: trials are compared
    at the same step, and a clone never goes back in steps."""
    from ray.tune.schedulers import PopulationBasedTraining

    mutations = {k: v if k in CHOICES else functools.partial(random.choice, v) for k, v in sweep.grid.items()}
    return PopulationBasedTraining(time_attr="training_iteration", perturbation_interval=1, synch=True,
                                   hyperparam_mutations=mutations,
                                   custom_explore_fn=functools.partial(clamp, list(sweep.grid)))


def name_trial(keys: list[str], trial: Any) -> str:
    return trial_name({k: trial.config[k] for k in keys})


def fit(sweep: Sweep, address: str | None) -> None:
    """Run every trial on Ray Tune; SynthNetError if any failed."""
    connect(address)
    from ray import tune

    namer = functools.partial(name_trial, list(sweep.grid))
    tuner = tune.Tuner(
        tune.with_parameters(trial, sweep=sweep),
        param_space={k: tune.grid_search(v) for k, v in sweep.grid.items()},
        tune_config=tune.TuneConfig(metric=STAGES[sweep.stage].metric, mode="max", reuse_actors=True,
                                    scheduler=scheduler(sweep) if sweep.pbt else None,
                                    trial_name_creator=namer, trial_dirname_creator=namer),
        run_config=tune.RunConfig(name="tune", storage_path=str(sweep.out), verbose=1,
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=4)))
    results = tuner.fit()
    failed = [r for r in results if r.error]
    if failed:
        last_line = str(failed[0].error).strip().splitlines()[-1].removeprefix("synthnet.errors.SynthNetError: ")
        raise SynthNetError(f"{len(failed)} of {len(results)} trials failed, first {Path(failed[0].path).name}: "
                            f"{last_line} (logs: {sweep.out / 'tune'})")


def end_values(run: Path, keys: list[str]) -> dict[str, Any]:
    """The grid keys' values in force at the run's end (PBT and `synthnet patch` may have changed them)."""
    cfg = from_yaml(load_checkpoint(run / "final.pt")["synth"]["config"], str(run / "final.pt"))
    return {k: OmegaConf.select(cfg, k) for k in keys}


def summarize(sweep: Sweep) -> dict:
    """sweep.json's content: the sweep's settings and one row per trial, best metric first."""
    metric, trials = STAGES[sweep.stage].metric, []
    for point in sweep.points():
        run = sweep.out / trial_name(point)
        scores = [(r["step"], r[metric]) for r in read_jsonl(run / "metrics.jsonl") if metric in r]
        best_step, best = max(scores, key=lambda s: (s[1], -s[0]))  # the earliest best
        exploits = read_jsonl(run / "exploits.jsonl")
        trials.append({"trial": run.name, "run": str(run), "start": point, "end": end_values(run, list(point)),
                       "final": scores[-1][1], "best": best, "best_step": best_step, "exploits": exploits})
    trials.sort(key=lambda t: (-t["best"], -t["final"]))
    return {"preset": sweep.preset, "stage": sweep.stage, "metric": metric, "pbt": sweep.pbt,
            "grid": sweep.grid, "overrides": list(sweep.overrides), "model": sweep.model and str(sweep.model),
            "trials": trials}


def table(summary: dict) -> list[dict]:
    """One printable row per trial, ranked: the grid values it ended with, final and best metric, exploits."""
    shown = lambda v: f"{v:g}" if isinstance(v, float) else v  # noqa: E731
    return [{"rank": i, "trial": t["trial"], **{k: shown(v) for k, v in t["end"].items()}, "final": t["final"],
             "best": t["best"], "best step": t["best_step"], "exploits": len(t["exploits"])}
            for i, t in enumerate(summary["trials"], 1)]


def run_sweep(preset: str, stage: str, grid: list[str], overrides: list[str], out: Path, model: Path | None = None,
              pbt: bool = False, address: str | None = None) -> dict:
    """Plan, run every trial on Ray Tune, then rank them; writes OUT/sweep.json and returns its content."""
    sweep = plan(preset, stage, grid, overrides, out, model, pbt)
    fit(sweep, address)
    summary = summarize(sweep)
    atomic_write_text(sweep.out / "sweep.json", json.dumps(summary, indent=1))
    return summary
