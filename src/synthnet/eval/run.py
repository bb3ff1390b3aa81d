"""`synthnet eval`: SynthNet against its teacher, zoo baselines, memorisation checks, robustness and speed.

For every eval seed (never a seed the model used: its record, seeds.py) the default random init is built, then six
sections are measured on the test split. K is chosen on the val split of the same seeds (the K with the highest
mean val accuracy); test is read only to report, so nothing here is selected on it. Wall-clock figures are per
network: a batch of N networks is timed and divided by N, for the teacher (training only, evaluation excluded) and
for synthesis alike, in the same process.

results.json (schema 2; keys are stable, figures are floats unless stated):
  schema: 2;  model / flat_model: the synthesizers' `identity` dicts (flat_model null when not given)
  zoo: {path, arch, runs (int), epochs (int), manifest_sha256};  dataset, arch: str;  seeds: [int]
  k_max, best_k: int (best_k = the K with the highest mean SynthNet val accuracy; novelty, baselines, robustness
  and speed use it);  k_chosen_on: "val";  val_acc_by_k: [k_max] mean val accuracy of SynthNet per K;
  recipe: {epochs, lr, batch} (the teacher recipe, read from the zoo's records)
  seconds: {phase: wall-clock seconds of that phase of this evaluation}
  A figure that is infinite or undefined is null (e.g. nearest_init_copy's ratio_final: its d_final is 0).
  per_seed: [{seed: int, teacher, synthnet, baselines, novelty, robustness, speed}], one per seed, where
    teacher:    acc, loss, seconds: [epochs + 1] per epoch (seconds: cumulative training time); final_acc
    synthnet:   acc, loss, seconds, val_acc: [k_max] (index K-1: a K-step synthesis; acc and loss on test, val_acc
                on val); chain_acc: {"K": [K] accuracy after each step of the K-step synthesis}; best_acc
                (at best_k); margin (best_acc - teacher final_acc); beats_teacher (1.0 when margin > 0, else 0.0)
    baselines:  {name: {acc, loss, d_teacher, d_final, ratio_final}} for nearest_init_copy, finals_average,
                finals_gaussian, final_noise_<scale> (see baselines.py) and flat_mlp when a flat model is given
    novelty:    d_teacher (aligned distance to its own teacher), d_ckpt (to the nearest zoo checkpoint, any
                epoch), teacher_d_ckpt (the same for its teacher), ckpt_run, ckpt_epoch (int: zoo seed and
                epoch of it), d_final, final_run (int; nearest zoo final), ratio_ckpt = d_teacher / d_ckpt,
                ratio_final = d_teacher / d_final, final_vs_zoo = d_final / mean zoo-vs-zoo leave-one-out
                nearest-final distance (zoo_loo_distance), iou_teacher (error IoU with its teacher), iou_zoo_max
                (highest error IoU with any zoo final), iou_synth_mean (mean error IoU with the other synthesized nets)
    robustness: {"sigma_<s>": {acc, gain}} for init + centred Gaussian noise of std s x each tensor's std
                (gain = output change / input change, L2), {"init_<scheme>": {acc}} for other init schemes
    speed:      synth_seconds (best K), teacher_seconds (teacher time to reach this seed's SynthNet
                accuracy, linear between epochs; its full training time when never reached), teacher_epoch
                (fractional), reached (1.0 / 0.0), ratio = teacher_seconds / synth_seconds
  aggregate: {section: {stats: the per-seed tree with every float leaf replaced by {mean, std, min, max} over
    seeds (lists element-wise; integer leaves are identifiers and are left out), plus section-level figures}}:
    teacher: epochs, seconds_per_net;  synthnet: best_k, beats_teacher_frac, margin_sample_sd (the std of the mean
    margin over bootstrap resamples of the test samples, seeds fixed: how far the split's size alone moves it);
    baselines: flat_mlp_k (when given, chosen on val too);  novelty: the verdict of ../shared/SYNTHNET.md's
    two-part criterion: derived (mean ratio_ckpt <= ratio_threshold, 0.85: derived from its own init), copy_ratio
    (mean d_ckpt / mean teacher_d_ckpt) and not_copy (copy_ratio >= copy_threshold, 0.85: no closer to the zoo than
    a conventionally trained net), pass (both); zoo_loo_distance and zoo_loo_iou
    ({mean, std, min, max} of the nearest other final's distance over a seeded sample of at most 256 zoo finals /
    of the highest error IoU with another final over every final), pairwise_iou_synth, pairwise_iou_teacher (mean
    over pairs), ensemble_synth_acc, ensemble_teacher_acc (average softmax);  speed: the per-seed figures computed
    on the mean curves (target = mean SynthNet best-K accuracy against the teacher's mean accuracy curve).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path
from typing import Any, Callable

import torch

from synthnet.data import Dataset, load_dataset
from synthnet.errors import SynthNetError
from synthnet.eval import report
from synthnet.eval.baselines import finals, zoo_baselines
from synthnet.eval.novelty import (Params, aligned_distance, ensemble_accuracy, error_iou, flat, mean_off_diagonal,
                                   nearest, nearest_checkpoint, pairwise_iou)
from synthnet.scoring import evaluate, logits
from synthnet.progress import progress
from synthnet.seeds import Record, clashes
from synthnet.targets import Spec, init_state, parse_spec
from synthnet.weights import atomic_write_text, save_weights, stack_states
from synthnet.zoo import MANIFEST, Recipe, ZooTensors, load_zoo_orders, train_many

SCHEMA = 2
RATIO_THRESHOLD = 0.85  # derived from its init: mean d_teacher / d_ckpt at most this
COPY_THRESHOLD = 0.85  # not a copy: mean d_ckpt at least this x the teachers' own mean d_ckpt
LOO_FINALS = 256  # zoo finals whose nearest other final is searched: a seeded sample (all runs cost runs^2 pairs)
SIGMAS = (1e-3, 1e-2, 1e-1)  # robustness: init perturbation std, x each tensor's init std
SCHEMES = ("kaiming_normal", "xavier_uniform", "xavier_normal")  # robustness: init schemes not trained on
PHASES = ("teacher", "synthnet", "baselines", "novelty", "robustness", "report")
Section = tuple[dict, dict]  # (per-seed tree of (N, ...) tensors, section-level figures)


def _index(tree: Any, i: int) -> Any:
    """Seed i's slice of a tree of (N, ...) tensors, as JSON values."""
    return {k: _index(v, i) for k, v in tree.items()} if isinstance(tree, dict) else tree[i].tolist()


def _stats(tree: dict) -> dict:
    """{mean, std, min, max} over seeds for every float leaf of a tree of (N, ...) tensors."""
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out[k] = _stats(v)
        elif v.is_floating_point():
            out[k] = {"mean": v.mean(0).tolist(), "std": v.std(0, unbiased=False).tolist(),
                      "min": v.amin(0).tolist(), "max": v.amax(0).tolist()}
    return out


def _finite(tree: Any) -> Any:
    """JSON-safe copy: infinite or undefined floats (a ratio over a zero distance, its std) become None."""
    if isinstance(tree, dict):
        return {k: _finite(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_finite(v) for v in tree]
    return None if isinstance(tree, float) and not math.isfinite(tree) else tree


def _summary(v: torch.Tensor) -> dict:
    return {"mean": float(v.mean()), "std": float(v.std(unbiased=False)), "min": float(v.min()), "max": float(v.max())}


def _teacher(spec: Spec, seeds: list[int], data: Dataset, recipe: Recipe) -> tuple[Section, Params]:
    """Train every seed's default init with the recipe; per-epoch test accuracy and training time."""
    x, y = data.split("test")
    acc, loss, secs = [], [], []
    spent, mark = 0.0, None

    def on_epoch(epoch: int, params: Params) -> None:
        nonlocal spent, mark
        spent += time.perf_counter() - mark if mark is not None else 0.0
        scores = evaluate(spec, params, x, y)
        acc.append(scores.acc), loss.append(scores.loss), secs.append(spent / len(seeds))
        mark = time.perf_counter()

    final = train_many(spec, seeds, data, recipe, on_epoch=on_epoch)
    tree = {"acc": torch.stack(acc, 1), "loss": torch.stack(loss, 1),
            "seconds": torch.tensor(secs).expand(len(seeds), -1), "final_acc": acc[-1]}
    return (tree, {"epochs": recipe.epochs, "seconds_per_net": secs[-1]}), final


def _synth_runs(synth, spec: Spec, inits: Params, k_max: int, data: Dataset) -> tuple[dict, list]:
    """Synthesize with K = 1..k_max steps: per-seed tree (acc, loss, seconds, chain_acc on test; val_acc) and the K
    final states."""
    x, y = data.split("test")
    n = next(iter(inits.values())).shape[0]
    rows, states, chain = [], [], {}
    for k in range(1, k_max + 1):
        t0 = time.perf_counter()
        run = synth.run(spec, inits, k)
        seconds = (time.perf_counter() - t0) / n
        scores = [evaluate(spec, s, x, y) for s in run]
        chain[str(k)] = torch.stack([s.acc for s in scores], 1)
        val = evaluate(spec, run[-1], *data.split("val")).acc
        rows.append((scores[-1].acc, scores[-1].loss, torch.full((n,), seconds), val))
        states.append(run[-1])
    acc, loss, secs, val_acc = (torch.stack(c, 1) for c in zip(*rows))
    return {"acc": acc, "loss": loss, "seconds": secs, "val_acc": val_acc, "chain_acc": chain}, states


def _best_k(tree: dict) -> int:
    """The K with the highest mean val accuracy (never chosen on test)."""
    return int(tree["val_acc"].mean(0).argmax()) + 1


def _synthnet(tree: dict, teacher_acc: torch.Tensor) -> Section:
    """Add the best-K figures and the comparison with the teacher to a _synth_runs tree."""
    k = _best_k(tree)
    best = tree["acc"][:, k - 1]
    margin = best - teacher_acc
    beats = (margin > 0).float()
    return {**tree, "best_acc": best, "margin": margin, "beats_teacher": beats}, \
        {"best_k": k, "beats_teacher_frac": float(beats.mean())}


def margin_sample_sd(spec: Spec, synth: Params, teachers: Params, x: torch.Tensor, y: torch.Tensor,
                     draws: int = 2000) -> float:
    """Std of the mean margin (SynthNet - teacher accuracy, over seeds) across bootstrap resamples of the samples
    (x (S, F), y (S,)), synth and teachers (N, *shape) fixed: the margin's noise from the split's size alone, which
    more seeds do not average away (every seed meets the same samples)."""
    right = [(evaluate(spec, p, x, y).pred == y).float() for p in (synth, teachers)]  # (N, S) each
    per_sample = (right[0] - right[1]).mean(0)  # (S,)
    g = torch.Generator().manual_seed(0)
    return per_sample[torch.randint(len(y), (draws, len(y)), generator=g)].mean(1).std().item()


def _distances(spec: Spec, nets: Params, teachers: Params, zoo_finals: Params) -> dict:
    """d_teacher, d_final (with final_run index) and ratio_final of nets (N, *shape)."""
    d_teacher = aligned_distance(spec, nets, teachers)
    d_final, i_final = nearest(spec, nets, zoo_finals)
    return {"d_teacher": d_teacher, "d_final": d_final, "final_index": i_final, "ratio_final": d_teacher / d_final}


def _baselines(spec: Spec, zoo: ZooTensors, inits: Params, seeds: list[int], teachers: Params,
               flat_runs: tuple[dict, list] | None, x: torch.Tensor, y: torch.Tensor) -> Section:
    """Accuracy and distance ratio (against zoo finals) of every baseline."""
    nets = zoo_baselines(spec, zoo, inits, seeds)
    extras = {}
    if flat_runs is not None:
        extras["flat_mlp_k"] = _best_k(flat_runs[0])
        nets["flat_mlp"] = flat_runs[1][extras["flat_mlp_k"] - 1]
    tree = {}
    for name, params in nets.items():
        scores = evaluate(spec, params, x, y)
        dist = _distances(spec, params, teachers, finals(zoo))
        tree[name] = {"acc": scores.acc, "loss": scores.loss, **{k: dist[k] for k in ("d_teacher", "d_final", "ratio_final")}}
    return tree, extras


def zoo_loo_distance(spec: Spec, zoo_finals: Params) -> torch.Tensor:
    """(min(R, LOO_FINALS),) aligned distance of each of a seeded sample of zoo finals (R, *shape) to its nearest
    other final: the zoo's own spacing, which final_vs_zoo divides by."""
    runs = len(next(iter(zoo_finals.values())))
    sample = torch.randperm(runs, generator=torch.Generator().manual_seed(0))[:LOO_FINALS]
    return nearest(spec, {k: v[sample] for k, v in zoo_finals.items()}, zoo_finals, exclude=sample)[0]


def _novelty(spec: Spec, zoo: ZooTensors, synth: Params, teachers: Params, x: torch.Tensor, y: torch.Tensor) -> Section:
    """Memorisation checks of the synthesized nets (N, *shape) against the zoo, their teachers and each other."""
    zoo_finals = finals(zoo)
    per_run = zoo.val_acc.shape[1]  # checkpoints per run (epochs + 1)
    dist = _distances(spec, synth, teachers, zoo_finals)
    d_ckpt, i_ckpt = nearest_checkpoint(spec, synth, zoo.params)
    loo = zoo_loo_distance(spec, zoo_finals)
    pred_s, pred_t = evaluate(spec, synth, x, y).pred, evaluate(spec, teachers, x, y).pred
    pred_z = evaluate(spec, zoo_finals, x, y).pred
    zoo_iou = pairwise_iou(pred_z, y).fill_diagonal_(-1.0).amax(1)
    synth_iou = pairwise_iou(pred_s, y)
    n = len(pred_s)
    zoo_seeds = torch.tensor(zoo.seeds)
    tree = {"d_teacher": dist["d_teacher"], "d_ckpt": d_ckpt, "ckpt_run": zoo_seeds[i_ckpt // per_run],
            "ckpt_epoch": i_ckpt % per_run, "d_final": dist["d_final"], "final_run": zoo_seeds[dist["final_index"]],
            "ratio_ckpt": dist["d_teacher"] / d_ckpt, "ratio_final": dist["ratio_final"],
            "final_vs_zoo": dist["d_final"] / loo.mean(), "iou_teacher": error_iou(pred_s, pred_t, y),
            "iou_zoo_max": error_iou(pred_s[:, None], pred_z[None], y).amax(1),
            "iou_synth_mean": (synth_iou.sum(1) - synth_iou.diagonal()) / (n - 1)}
    tree["teacher_d_ckpt"], _ = nearest_checkpoint(spec, teachers, zoo.params)
    ratio = float(tree["ratio_ckpt"].mean())
    copy_ratio = float(d_ckpt.mean() / tree["teacher_d_ckpt"].mean())
    derived, not_copy = ratio <= RATIO_THRESHOLD, copy_ratio >= COPY_THRESHOLD
    extras = {"ratio_threshold": RATIO_THRESHOLD, "derived": derived, "copy_ratio": copy_ratio,
              "copy_threshold": COPY_THRESHOLD, "not_copy": not_copy, "pass": derived and not_copy,
              "zoo_loo_distance": _summary(loo),
              "zoo_loo_iou": _summary(zoo_iou), "pairwise_iou_synth": mean_off_diagonal(synth_iou),
              "pairwise_iou_teacher": mean_off_diagonal(pairwise_iou(pred_t, y)),
              "ensemble_synth_acc": ensemble_accuracy(logits(spec, synth, x), y),
              "ensemble_teacher_acc": ensemble_accuracy(logits(spec, teachers, x), y)}
    return tree, extras


def _perturb(inits: Params, seeds: list[int], sigma: float) -> Params:
    """inits + centred Gaussian noise of std sigma x each tensor's std (same noise direction for every sigma)."""
    out = {k: v.clone() for k, v in inits.items()}
    for i, s in enumerate(seeds):
        gen = torch.Generator().manual_seed(s)
        for k, v in out.items():
            v[i] += sigma * v[i].std() * torch.randn(v[i].shape, generator=gen)
    return out


def _robustness(synth, spec: Spec, inits: Params, seeds: list[int], k: int, base: Params,
                x: torch.Tensor, y: torch.Tensor) -> Section:
    """Accuracy after perturbing the init, and under init schemes the model did not train on. A perturbed init
    keeps its init's sampler draws, so the gain is the synthesis map's and not a fresh draw's."""
    tree = {}
    for sigma in SIGMAS:
        pert = _perturb(inits, seeds, sigma)
        out = synth.run(spec, pert, k, draws_of=inits)[-1]
        gain = (flat(spec, out) - flat(spec, base)).norm(dim=1) / (flat(spec, pert) - flat(spec, inits)).norm(dim=1)
        tree[f"sigma_{sigma:g}"] = {"acc": evaluate(spec, out, x, y).acc, "gain": gain}
    for scheme in SCHEMES:
        start = stack_states([init_state(spec, s, scheme) for s in seeds])
        tree[f"init_{scheme}"] = {"acc": evaluate(spec, synth.run(spec, start, k)[-1], x, y).acc}
    return tree, {}


def time_to_reach(acc: torch.Tensor, seconds: torch.Tensor, target: float) -> tuple[float, float, bool]:
    """(seconds, fractional epoch, reached) for a curve acc (E+1,) over cumulative seconds (E+1,) to reach target.

    Linear between the epochs around the first one at or above target; never reached: the full time.
    """
    hit = torch.nonzero(acc >= target).flatten()
    if len(hit) == 0:
        return float(seconds[-1]), float(len(acc) - 1), False
    e = int(hit[0])
    if e == 0:
        return 0.0, 0.0, True
    frac = float((target - acc[e - 1]) / (acc[e] - acc[e - 1]))
    return float(seconds[e - 1] + frac * (seconds[e] - seconds[e - 1])), e - 1 + frac, True


def _speed_row(acc: torch.Tensor, seconds: torch.Tensor, target: float, synth_seconds: float) -> dict:
    t, epoch, reached = time_to_reach(acc, seconds, target)
    return {"synth_seconds": synth_seconds, "teacher_seconds": t, "teacher_epoch": epoch,
            "reached": float(reached), "ratio": t / synth_seconds}


def _speed(teacher: dict, synthnet: dict, k: int) -> Section:
    """Synthesis time against the teacher's time to reach the same accuracy, per seed and on the mean curves."""
    synth_s = synthnet["seconds"][:, k - 1]
    rows = [_speed_row(teacher["acc"][i], teacher["seconds"][i], float(synthnet["best_acc"][i]), float(synth_s[i]))
            for i in range(len(synth_s))]
    tree = {key: torch.tensor([r[key] for r in rows]) for key in rows[0]}
    mean = _speed_row(teacher["acc"].mean(0), teacher["seconds"][0], float(synthnet["best_acc"].mean()),
                      float(synth_s.mean()))
    return tree, mean


def _zoo_identity(path: Path, zoo: ZooTensors) -> dict:
    sha = hashlib.sha256((Path(path) / MANIFEST).read_bytes()).hexdigest()[:12]
    return {"path": str(path), "arch": str(zoo.spec), "runs": len(zoo.seeds), "epochs": zoo.val_acc.shape[1] - 1,
            "manifest_sha256": sha}


class _Phases:
    """Times each phase and advances one progress bar."""

    def __init__(self, bar, task):
        self.bar, self.task, self.seconds = bar, task, {}

    def __call__(self, name: str, fn: Callable, *args):
        self.bar.update(self.task, description=f"eval: {name}")
        t0 = time.perf_counter()
        out = fn(*args)
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0
        self.bar.advance(self.task)
        return out


def _check(seeds: list[int], zoo: ZooTensors, k_max: int, used: list[Record]) -> None:
    """Refuse seeds a model used (their records) or the zoo holds, naming the range."""
    if len(seeds) < 2:
        raise SynthNetError(f"evaluation needs at least 2 seeds (pairwise diversity, ensembles), got {len(seeds)}")
    if k_max < 1:
        raise SynthNetError(f"k_max must be >= 1, got {k_max}")
    shared = sorted(set(seeds) & set(zoo.seeds))
    if shared:
        raise SynthNetError(f"eval seeds {shared[:5]}{'...' if len(shared) > 5 else ''} are zoo seeds; "
                            "evaluate on seeds the zoo never used")
    clash = [c for record in used for c in clashes(record, seeds)]
    if clash:
        raise SynthNetError(f"eval seeds overlap seeds the model used ({'; '.join(clash)}); evaluate on seeds it "
                            "never saw")


def evaluate_model(synth, zoo_path: Path, dataset: str, spec: Spec | str, seeds: list[int], k_max: int,
                   out_dir: Path, flat_synth=None, orders: int = 1) -> dict:
    """Run the six sections for every seed; write results.json, the report and the heatmap weights to out_dir.
    orders: the zoo's minibatch orders the model trained on (baselines and novelty use every one of them).

    synth / flat_synth: objects with run(spec, params (N, *shape), k) -> k states, an `identity` dict and a `seeds`
    record (seeds.py).
    """
    spec = parse_spec(spec) if isinstance(spec, str) else spec
    zoo = load_zoo_orders(Path(zoo_path), str(spec), orders)
    _check(seeds, zoo, k_max, [m.seeds for m in (synth, flat_synth) if m is not None])
    data = load_dataset(dataset)
    data.check_arch(spec)
    x, y = data.split("test")
    recipe = zoo.recipe
    inits = stack_states([init_state(spec, s) for s in seeds])
    with progress() as bar:
        phase = _Phases(bar, bar.add_task("eval", total=len(PHASES) + (flat_synth is not None)))
        (teacher, t_extra), teachers = phase("teacher", _teacher, spec, seeds, data, recipe)
        runs, states = phase("synthnet", _synth_runs, synth, spec, inits, k_max, data)
        flat_runs = phase("flat_mlp", _synth_runs, flat_synth, spec, inits, k_max, data) if flat_synth else None
        synthnet = _synthnet(runs, teacher["final_acc"])
        k = synthnet[1]["best_k"]
        synthnet[1]["margin_sample_sd"] = margin_sample_sd(spec, states[k - 1], teachers, x, y)
        sections = {"teacher": (teacher, t_extra), "synthnet": synthnet,
                    "baselines": phase("baselines", _baselines, spec, zoo, inits, seeds, teachers, flat_runs, x, y),
                    "novelty": phase("novelty", _novelty, spec, zoo, states[k - 1], teachers, x, y),
                    "robustness": phase("robustness", _robustness, synth, spec, inits, seeds, k, states[k - 1], x, y),
                    "speed": _speed(teacher, synthnet[0], k)}
        results = {"schema": SCHEMA, "model": synth.identity,
                   "flat_model": flat_synth.identity if flat_synth else None, "zoo": _zoo_identity(zoo_path, zoo),
                   "dataset": dataset, "arch": str(spec), "seeds": list(seeds), "k_max": k_max, "best_k": k,
                   "k_chosen_on": "val", "val_acc_by_k": runs["val_acc"].mean(0).tolist(),
                   "recipe": {"epochs": recipe.epochs, "lr": recipe.lr, "batch": recipe.batch},
                   "seconds": phase.seconds,
                   "per_seed": [{"seed": s, **{name: _index(tree, i) for name, (tree, _) in sections.items()}}
                                for i, s in enumerate(seeds)],
                   "aggregate": {name: {"stats": _stats(tree), **extra} for name, (tree, extra) in sections.items()}}
        out = Path(out_dir)
        atomic_write_text(out / "results.json", json.dumps(_finite(results), indent=1, allow_nan=False))
        for name, params in (("init", inits), ("synthnet", states[k - 1]), ("teacher", teachers)):
            save_weights(out / "weights" / f"seed{seeds[0]}-{name}.safetensors", {n: v[0] for n, v in params.items()},
                         spec, seed=seeds[0], role=name)
        phase("report", report.write_report, out)
    return results
