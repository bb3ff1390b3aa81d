"""Conventional training from the same inits is not one point: the bars SynthNet is measured against.

Trains every seed's default init with the zoo's recipe (the teacher) and with stronger conventional recipes (another
minibatch order, twice the epochs, label smoothing 0.1, SGD with momentum 0.9), all at once per recipe, and prints
per recipe: mean test accuracy, the fraction of seeds above their own teacher, and the novelty ratio of
../shared/SYNTHNET.md (aligned distance to the teacher / to the nearest zoo checkpoint of any epoch) with the copy
check (distance to the nearest checkpoint, against the teachers'). The best row is the stretch bar of `synthnet eval`
on the same seeds; nothing is chosen from this table. Run:
  .venv/bin/python benchmarks/conventional.py [--zoo zoos/digits-mlp-2k] [--arch A] [--seeds 100000:100064]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

from synthnet.data import load_dataset
from synthnet.eval.novelty import aligned_distance, nearest_checkpoint
from synthnet.scoring import evaluate
from synthnet.seeds import EVAL_SEEDS
from synthnet.targets import init_state
from synthnet.weights import stack_states
from synthnet.zoo import load_zoo, parse_seeds, train_many


def recipes(teacher):
    """name -> (recipe, minibatch order) of every row, the teacher's first."""
    return {"zoo recipe (the teacher)": (teacher, 0),
            "same, another minibatch order": (teacher, 1),
            f"{2 * teacher.epochs} epochs": (replace(teacher, epochs=2 * teacher.epochs), 0),
            "label smoothing 0.1": (replace(teacher, label_smoothing=0.1), 0),
            "SGD momentum 0.9, lr 0.05": (replace(teacher, optimizer="sgd", lr=0.05), 0)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--zoo", type=Path, default=Path("zoos/digits-mlp-2k"), help="zoo: its recipe and checkpoints")
    ap.add_argument("--arch", default=None, help="the zoo's arch to measure, when it holds several")
    ap.add_argument("--dataset", default="digits", help="digits | mnist1d | idx:<dir>")
    ap.add_argument("--seeds", default=EVAL_SEEDS, help="init seeds (A:B or a list), e.g. `synthnet eval`'s")
    args = ap.parse_args()
    zoo, seeds, data = load_zoo(args.zoo, args.arch), parse_seeds(args.seeds), load_dataset(args.dataset)
    spec = zoo.spec
    inits = stack_states([init_state(spec, s) for s in seeds])
    x, y = data.split("test")
    teacher_acc = teachers = teacher_near = None
    print(f"{len(seeds)} inits of {spec}, zoo {args.zoo} ({len(zoo.seeds)} runs, recipe {zoo.recipe})")
    print(f"| recipe from the same init | test acc | above teacher | ratio | copy check | s per net |")
    print("|---|---|---|---|---|---|")
    for name, (recipe, order) in recipes(zoo.recipe).items():
        t0 = time.perf_counter()
        nets = train_many(spec, seeds, data, recipe, init=inits, orders=[order] * len(seeds))
        seconds = (time.perf_counter() - t0) / len(seeds)
        acc = evaluate(spec, nets, x, y).acc
        d_near, _ = nearest_checkpoint(spec, nets, zoo.params)
        if teachers is None:
            teacher_acc, teachers, teacher_near = acc, nets, d_near
        ratio = (aligned_distance(spec, nets, teachers) / d_near).mean()
        print(f"| {name} | {acc.mean():.4f} | {(acc > teacher_acc).float().mean():.0%} | {ratio:.2f} | "
              f"{d_near.mean() / teacher_near.mean():.2f} | {seconds * 1e3:.1f} ms |")


if __name__ == "__main__":
    main()
