"""Checkpoint zoo: many real training runs of a target family, every epoch saved, one manifest row each.

A run (arch, seed, minibatch order) is one safetensors file, `<arch>/seed<S>[-order<R>].safetensors`, whose tensors
stack epochs 0..E on dim 0 (key -> (E + 1, *shape); `checkpoint()` reads one epoch as a plain state_dict); its
manifest rows (one per epoch, with val accuracy and loss, and at the last epoch train and test ones too) all name that
file. Scoring only val in between keeps the build near the cost of training alone (three splits every epoch cost
about a third more).

The teacher recipe is a contract: torch.manual_seed(seed) + construct (= the default init), Adam (or SGD with
momentum 0.9), cross-entropy (optionally label-smoothed),
data order from torch.Generator().manual_seed(seed) with one randperm per epoch, consecutive batches, the last
partial batch kept. Many networks train at once as stacked tensors; their losses are summed (not averaged) so
each network's gradient, and therefore its Adam update, is exactly its own.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import signal
import sys
import threading
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable, Iterable

import torch
from safetensors.torch import load_file
from torch import nn

from synthnet.allocator import freed_memory_kept
from synthnet.data import Dataset, load_dataset
from synthnet.errors import SynthNetError
from synthnet.jsonl import read_jsonl
from synthnet.scoring import evaluate, logits_per_set
from synthnet.progress import progress
from synthnet.targets import Spec, check_seed, init_state, parse_spec
from synthnet.weights import atomic_write_text, load_weights, read_metadata, save_weights, stack_states

MANIFEST = "manifest.jsonl"
PR_SET_PDEATHSIG = 1  # linux/prctl.h: the signal a process gets when its parent dies
Pool = Callable[[Callable, list], Iterable]  # like map(fn, jobs): results in job order


@dataclass(frozen=True)
class Recipe:
    """The teacher recipe (defaults are the contract other tools reproduce)."""

    epochs: int = 30  # passes over the train split
    lr: float = 3e-3  # learning rate
    batch: int = 32  # minibatch size; the last partial batch is kept
    optimizer: str = "adam"  # adam | sgd (momentum 0.9)
    label_smoothing: float = 0.0  # label smoothing of the cross-entropy

    def __post_init__(self):
        """Refuse a recipe no run can follow, naming the `synthnet zoo` option and its accepted range (epochs = 0
        is a recipe, the init itself; build_zoo asks for more)."""
        if not self.batch >= 1:
            raise SynthNetError(f"--batch {self.batch}: accepted: an integer >= 1")
        if not 0 < self.lr < math.inf:
            raise SynthNetError(f"--lr {self.lr}: accepted: a finite number > 0")
        if self.optimizer not in OPTIMIZERS:
            raise SynthNetError(f"--optimizer {self.optimizer!r}: accepted: {', '.join(OPTIMIZERS)}")
        if not 0 <= self.label_smoothing < 1:
            raise SynthNetError(f"--label-smoothing {self.label_smoothing}: accepted: a number in [0, 1)")

    def optimizer_for(self, params) -> torch.optim.Optimizer:
        if self.optimizer == "sgd":
            return torch.optim.SGD(params, lr=self.lr, momentum=0.9)
        return torch.optim.Adam(params, lr=self.lr)


OPTIMIZERS = ("adam", "sgd")


def recipe(zoo_cfg) -> Recipe:
    """The teacher recipe a zoo config (config.ZooConfig) names."""
    return Recipe(zoo_cfg.epochs, zoo_cfg.lr, zoo_cfg.batch, zoo_cfg.optimizer, zoo_cfg.label_smoothing)


def parse_seeds(text: str) -> list[int]:
    """`A:B` (half-open range) or a comma list `1,5,9`."""
    try:
        if ":" in text:
            a, b = (int(v) for v in text.split(":"))
            ends = [a, b - 1] if b > a else []
        else:
            ends = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise SynthNetError(f"bad seeds {text!r}; use A:B (half-open) or a comma list like 1,5,9") from None
    if not ends:
        raise SynthNetError(f"seeds {text!r} is empty")
    for s in ends:  # before a range is listed: 0:10**30 would exhaust memory first
        check_seed(s)
    return list(range(a, b)) if ":" in text else ends


ORDER_STRIDE = 2**26  # torch's CPU generator keeps 32 bits of a seed: orders of seeds below this never collide


def data_order_seed(seed: int, order: int) -> int:
    """Seed of the minibatch-order generator of run (seed, order): order 0 is the seed itself (the recipe's
    contract), order r > 0 another order from the same init, distinct for seeds < ORDER_STRIDE and r < 64."""
    return seed if order == 0 else (seed + order * ORDER_STRIDE) % 2**32


def train_many(spec: Spec, seeds: list[int], data: Dataset, recipe: Recipe,
               on_epoch: Callable[[int, dict[str, torch.Tensor]], None] | None = None,
               init: dict[str, torch.Tensor] | None = None, orders: list[int] | None = None) -> dict[str, torch.Tensor]:
    """Train one network per seed with the teacher recipe, all at once.

    init: optional key -> (N, *shape) starting weights (default: each seed's default init).
    orders: each network's minibatch order (default 0: the recipe's own), see data_order_seed.
    on_epoch(epoch, params) is called with detached (N, *shape) tensors for epoch 0..epochs.
    Returns the final key -> (N, *shape) weights.
    """
    start = init if init is not None else stack_states([init_state(spec, s) for s in seeds])
    params = {k: v.detach().clone().requires_grad_() for k, v in start.items()}
    opt = recipe.optimizer_for(params.values())
    gens = [torch.Generator().manual_seed(data_order_seed(s, o)) for s, o in zip(seeds, orders or [0] * len(seeds))]
    x, y = data.x_train, data.y_train
    n = len(x)
    if on_epoch:
        on_epoch(0, {k: v.detach() for k, v in params.items()})
    for epoch in range(1, recipe.epochs + 1):
        order = torch.stack([torch.randperm(n, generator=g) for g in gens])  # (N, n)
        for lo in range(0, n, recipe.batch):
            idx = order[:, lo:lo + recipe.batch]  # (N, b)
            out = logits_per_set(spec, params, x[idx])  # (N, b, C)
            loss = nn.functional.cross_entropy(out.transpose(1, 2), y[idx], reduction="none",
                                               label_smoothing=recipe.label_smoothing).mean(1).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if on_epoch:
            on_epoch(epoch, {k: v.detach() for k, v in params.items()})
    return {k: v.detach() for k, v in params.items()}


def run_file(spec: Spec, seed: int, order: int) -> str:
    """Path of run (seed, order) of `spec` inside its zoo."""
    return f"{str(spec).replace(':', '_')}/seed{seed:05d}{f'-order{order}' if order else ''}.safetensors"


def load_run(path: Path, spec: Spec) -> dict[str, torch.Tensor]:
    """Every epoch of one run file: key -> (E + 1, *shape), float32, shapes checked against `spec`."""
    stacked, _, _ = load_weights(path, spec, stacked=True)
    return stacked


def checkpoint(zoo: Path, row: dict) -> dict[str, torch.Tensor]:
    """The plain state_dict of one manifest row (one epoch of one run)."""
    return {k: v[row["epoch"]] for k, v in load_run(Path(zoo) / row["path"], parse_spec(row["arch"])).items()}


def _die_with_parent(parent: int) -> None:
    """Pool-worker initializer: exit when the zoo process dies (a SIGKILL of it would leave us training on)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    else:  # no death signal: poll for the reparenting that the parent's death causes
        threading.Thread(target=_exit_when_orphaned, args=(parent,), daemon=True).start()
    if os.getppid() != parent:  # it died before the death signal was armed
        os._exit(1)


def _exit_when_orphaned(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(1)


def _train_chunk(args: tuple) -> list[dict]:
    """Train and save one chunk of (seed, order) runs; return its manifest rows (written by the parent)."""
    out, arch, dataset, runs, recipe, threads = args
    seeds, orders = [s for s, _ in runs], [o for _, o in runs]
    if threads:
        torch.set_num_threads(threads)
    spec, data, rows = parse_spec(arch), load_dataset(dataset), []
    states, scores = [], []

    def record(epoch: int, params: dict[str, torch.Tensor]) -> None:
        states.append({k: v.clone() for k, v in params.items()})
        splits = ("train", "val", "test") if epoch == recipe.epochs else ("val",)
        scores.append({s: evaluate(spec, params, *data.split(s)) for s in splits})

    train_many(spec, seeds, data, recipe, on_epoch=record, orders=orders)
    stacked = {k: torch.stack([st[k] for st in states], 1) for k in states[0]}  # key -> (runs, E + 1, *shape)
    for i, (seed, order) in enumerate(runs):
        rel = run_file(spec, seed, order)
        save_weights(Path(out) / rel, {k: v[i] for k, v in stacked.items()}, spec, dataset=dataset, seed=seed,
                     order=order, epochs=recipe.epochs, init="default", recipe=asdict(recipe))
        for epoch, split_scores in enumerate(scores):
            metrics = {f"{s}_{m}": round(float(getattr(sc, m)[i]), 6) for s, sc in split_scores.items()
                       for m in ("acc", "loss")}
            rows.append({"seed": seed, "order": order, "epoch": epoch, "path": rel, "arch": str(spec),
                         "dataset": dataset, "init": "default", "recipe": asdict(recipe), **metrics})
    return rows


def read_manifest(zoo: Path) -> list[dict]:
    """The zoo's rows; a last row torn by a kill is left out (the next `synthnet zoo` run rewrites the file)."""
    path = Path(zoo) / MANIFEST
    if not path.is_file():
        raise SynthNetError(f"{zoo}: not a zoo (no {MANIFEST}); build one with `synthnet zoo`")
    return read_jsonl(path, torn_tail=True)


def zoo_recipe(zoo: Path, rows: list[dict]) -> Recipe | None:
    """The one recipe every run of the zoo was trained with (None for an empty zoo). A zoo holds one recipe: a
    run is identified by (arch, seed, order) within it."""
    if any(r.get("recipe") is None for r in rows):
        raise SynthNetError(f"{zoo}: its runs record no recipe (built by an older SynthNet?); build the zoo again in "
                            "a new directory")
    recorded = {Recipe(**r["recipe"]) for r in rows}  # fields added since a row was written take their defaults
    if len(recorded) > 1:
        raise SynthNetError(f"{zoo}: its runs record several recipes; build the zoo again in a new directory")
    return recorded.pop() if recorded else None


@freed_memory_kept()
def build_zoo(out: Path, archs: list[str], dataset: str, seeds: list[int], recipe: Recipe = Recipe(),
              workers: int = 1, chunk: int = 512, pool: Pool | None = None, orders: int = 1) -> dict:
    """Train every (arch, seed, order) run not already finished in `out`; append their manifest rows. A zoo holds
    one recipe (recorded in every row): a re-run with another is refused, naming the option that differs.

    orders: minibatch orders per init (order 0 is the recipe's own, so a 1-order zoo is a prefix of a larger one).
    workers: chunks of runs trained at once. pool(fn, jobs) -> results in job order runs the chunks elsewhere (Ray
    tasks: orchestrate.cluster.ray_map); by default they run here, in `workers` processes.
    """
    if recipe.epochs < 1:  # epoch 0 alone gives the denoiser nothing to learn (and epoch_level divides by 0)
        raise SynthNetError(f"--epochs {recipe.epochs}: accepted: an integer >= 1")
    if workers < 1:
        raise SynthNetError(f"--workers {workers}: accepted: an integer >= 1")
    if not 1 <= orders <= 64 or (orders > 1 and max(seeds) >= ORDER_STRIDE):
        raise SynthNetError(f"--orders {orders}: accepted: 1 to 64, and above 1 only for seeds below {ORDER_STRIDE}")
    out = Path(out).resolve()  # chunks may run in another working directory
    specs, data = [parse_spec(a) for a in archs], load_dataset(dataset)  # fail fast, before anything is written
    for spec in specs:
        data.check_arch(spec)
    out.mkdir(parents=True, exist_ok=True)
    done = defaultdict(set)
    if (out / MANIFEST).is_file():
        rows = read_manifest(out)
        _same_recipe(out, zoo_recipe(out, rows), recipe)
        if not (out / MANIFEST).read_text().endswith("\n"):  # a torn last row (killed mid-write): drop it
            atomic_write_text(out / MANIFEST, "".join(json.dumps(r) + "\n" for r in rows))
        for r in rows:
            done[(r["arch"], r["seed"], r["order"])].add(r["epoch"])
    jobs = []
    for spec in specs:
        todo = [(s, o) for s in seeds for o in range(orders) if len(done[(str(spec), s, o)]) < recipe.epochs + 1]
        per = max(1, min(chunk, -(-len(todo) // max(workers, 1))))
        jobs += [(str(out), str(spec), dataset, todo[i:i + per], recipe, 1 if workers > 1 else 0)
                 for i in range(0, len(todo), per)]
    total = sum(len(j[3]) for j in jobs)
    t0 = time.perf_counter()
    # the worker pool is shut down when the build ends or fails, not at interpreter exit, whose teardown of an
    # unreferenced pool can write to an already closed pipe
    own_pool = pool is None and workers > 1 and len(jobs) > 1
    with (ProcessPoolExecutor(workers, initializer=_die_with_parent, initargs=(os.getpid(),)) if own_pool
          else nullcontext()) as executor, progress() as bar:
        task = bar.add_task("zoo runs", total=total)
        for job, rows in zip(jobs, (executor.map if own_pool else pool or map)(_train_chunk, jobs)):
            with open(out / MANIFEST, "a") as f:  # rows of a finished chunk only: a crash loses no finished run
                f.write("".join(json.dumps(r) + "\n" for r in rows))
            bar.advance(task, len(job[3]))
    return {"trained": total, "skipped": len(archs) * len(seeds) * orders - total,
            "seconds": time.perf_counter() - t0}


def _same_recipe(zoo: Path, held: Recipe | None, asked: Recipe) -> None:
    """Refuse to add runs of another recipe to a zoo, naming the option."""
    for f in fields(Recipe):
        if held is not None and getattr(held, f.name) != getattr(asked, f.name):
            option = "--" + f.name.replace("_", "-")
            raise SynthNetError(f"{zoo} holds runs trained with {option} {getattr(held, f.name)}; this run asks "
                                f"{option} {getattr(asked, f.name)} (a zoo holds one recipe: use another --out)")


def default_arch(zoo: Path, arch: str) -> str:
    """`arch` (a spec or comma list) when the zoo holds all of it; else the zoo's only arch; else an error naming
    the archs it holds (for `synthnet train` without data.arch=)."""
    held = sorted({r["arch"] for r in read_manifest(zoo)})
    if all(str(parse_spec(a)) in held for a in arch.split(",") if a):
        return arch
    if len(held) == 1:
        return held[0]
    raise SynthNetError(f"{zoo} holds archs {', '.join(held)}; choose with data.arch=ARCH (a comma list for several)")


def summarize(zoo: Path) -> list[dict]:
    """Per (arch, epoch): runs, mean val accuracy, and mean/min/max test accuracy where the rows have it (the last
    epoch; "-" elsewhere)."""
    groups = defaultdict(list)
    for r in read_manifest(zoo):
        groups[(r["arch"], r["epoch"])].append(r)
    table = []
    for (arch, epoch), rs in sorted(groups.items()):
        row = {"arch": arch, "epoch": epoch, "runs": len(rs), "val_mean": sum(r["val_acc"] for r in rs) / len(rs)}
        acc = torch.tensor([r["test_acc"] for r in rs if "test_acc" in r])
        stats = (float(acc.mean()), float(acc.min()), float(acc.max())) if len(acc) else ("-",) * 3
        table.append({**row, **dict(zip(("test_mean", "test_min", "test_max"), stats))})
    return table


@dataclass
class ZooTensors:
    """All checkpoints of one arch in a zoo, stacked: key -> (runs, epochs + 1, *shape)."""

    spec: Spec
    seeds: list[int]
    params: dict[str, torch.Tensor]
    val_acc: torch.Tensor  # (runs, epochs + 1)
    recipe: Recipe  # what every run was trained with (the teacher recipe `synthnet eval` reproduces)


def load_zoo(zoo: Path, arch: str | None = None, order: int = 0) -> ZooTensors:
    """Every finished run of minibatch `order` (0: the recipe's own) of `arch` (default: the zoo's only arch) as
    stacked tensors, memory-mapped: a stage reads only the checkpoints it indexes.

    The first load packs them into `pack-<arch>[-order<R>].safetensors` beside the manifest (rebuilt when the
    manifest changes), so later loads map one file instead of reading one per run.
    """
    rows = read_manifest(zoo)
    archs = sorted({r["arch"] for r in rows})
    if arch is None and len(archs) != 1:
        raise SynthNetError(f"{zoo}: holds archs {archs}; choose one")
    spec = parse_spec(arch or archs[0])
    recipe = zoo_recipe(zoo, rows)
    rows = [r for r in rows if r["arch"] == str(spec) and r["order"] == order]
    if not rows:
        raise SynthNetError(f"{zoo}: no runs of arch {spec}{f' in minibatch order {order}' if order else ''}; it "
                            f"holds {archs}{' (build more orders with `synthnet zoo --orders R`)' if order else ''}")
    pack = Path(zoo) / f"pack-{str(spec).replace(':', '_')}{f'-order{order}' if order else ''}.safetensors"
    if not (pack.is_file() and read_metadata(pack).get("rows") == str(len(rows))):
        _write_pack(Path(zoo), rows, spec, pack)
    tensors = load_file(pack)
    seeds = [int(s) for s in tensors.pop("seeds").tolist()]
    val = tensors.pop("val_acc")
    return ZooTensors(spec, seeds, tensors, val, recipe)


def _write_pack(zoo: Path, rows: list[dict], spec: Spec, pack: Path) -> None:
    """Stack the runs of `rows` that have every epoch into `pack`, one run at a time into tensors allocated once
    (one copy of the zoo in memory, not a list of runs beside their stack)."""
    by_seed = defaultdict(dict)
    for r in rows:
        by_seed[r["seed"]][r["epoch"]] = r
    n_ep = max(len(v) for v in by_seed.values())
    seeds = sorted(s for s, v in by_seed.items() if len(v) == n_ep)
    params: dict[str, torch.Tensor] = {}
    for i, seed in enumerate(seeds):
        for k, v in load_run(zoo / by_seed[seed][0]["path"], spec).items():
            if k not in params:
                params[k] = torch.empty((len(seeds), *v.shape))
            params[k][i] = v
    val = torch.tensor([[by_seed[s][e]["val_acc"] for e in range(n_ep)] for s in seeds])
    save_weights(pack, {**params, "seeds": torch.tensor(seeds, dtype=torch.float32), "val_acc": val}, spec,
                 rows=str(len(rows)))


def load_zoo_orders(zoo: Path, arch: str | None = None, orders: int = 1) -> ZooTensors:
    """Minibatch orders 0 .. orders - 1 of `arch` as one ZooTensors whose runs are every order's runs in turn (seeds
    repeat): every checkpoint a model trained on them has seen (its novelty is measured against them all)."""
    parts = [load_zoo(zoo, arch, order) for order in range(orders)]
    if orders == 1:
        return parts[0]
    params = {k: torch.cat([p.params[k] for p in parts]) for k in parts[0].params}
    return ZooTensors(parts[0].spec, [s for p in parts for s in p.seeds], params,
                      torch.cat([p.val_acc for p in parts]), parts[0].recipe)
