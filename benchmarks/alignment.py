"""Aligned-distance throughput on a zoo's own checkpoints, against the bare Hungarian solves it is built on.

`synthnet eval`'s novelty figures align every (query, zoo checkpoint) pair that neither the lower bound nor the
checkpoints of the same run rule out; for nets with two or more hidden layers that is about a third of the pairs
(README, "Eval on nets with two hidden layers"), so this rate sets the eval's time. Times `aligned_distance` of one
zoo final against `--pairs` checkpoints of other runs, and in the same run scipy's `linear_sum_assignment` alone on
as many random cost matrices per hidden layer (one solve per layer per pair, one thread: the floor of a single
weight-matching pass). Prints pairs/s of each and the novelty search of a 64-seed `synthnet eval` projected at that
rate if nothing were pruned (the checkpoint searches of the outputs and of their teachers, and the zoo's
leave-one-out over a sample of its finals). Figures only; close other jobs first.
Run: .venv/bin/python benchmarks/alignment.py --zoo zoos/digits-mlp2 [--pairs 2048]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from synthnet.eval.novelty import aligned_distance
from synthnet.eval.run import LOO_FINALS
from synthnet.zoo import load_zoo

EVAL_SEEDS = 64  # `synthnet eval`'s default number of seeds, for the projection


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--zoo", type=Path, default=Path("zoos/digits-mlp2"), help="zoo whose checkpoints are aligned")
    ap.add_argument("--pairs", type=int, default=2048, help="(query, checkpoint) pairs timed")
    args = ap.parse_args()
    zoo = load_zoo(args.zoo)
    runs, per_run = zoo.val_acc.shape
    gen = torch.Generator().manual_seed(0)
    pick = torch.randint((runs - 1) * per_run, (args.pairs,), generator=gen)  # checkpoints of runs other than the last
    query = {k: v[-1:, -1] for k, v in zoo.params.items()}
    refs = {k: v.flatten(0, 1)[pick] for k, v in zoo.params.items()}
    t0 = time.perf_counter()
    aligned_distance(zoo.spec, query, refs)
    aligned = args.pairs / (time.perf_counter() - t0)
    rng = np.random.default_rng(0)
    costs = [rng.standard_normal((args.pairs, h, h)) for h in zoo.spec.hidden]
    t0 = time.perf_counter()
    for per_layer in costs:
        for c in per_layer:
            linear_sum_assignment(c)
    bare = args.pairs / (time.perf_counter() - t0)
    searched = 2 * EVAL_SEEDS * runs * per_run + min(runs, LOO_FINALS) * (runs - 1)
    print(f"{zoo.spec} ({runs} runs x {per_run} checkpoints), {args.pairs} pairs, {torch.get_num_threads()} threads")
    print(f"aligned_distance: {aligned:,.0f} pairs/s; bare assignments (one per hidden layer, one thread): "
          f"{bare:,.0f} pairs/s; ratio {aligned / bare:.2f}")
    print(f"a {EVAL_SEEDS}-seed eval's novelty search if nothing were pruned: {searched:,} pairs, "
          f"{searched / aligned / 60:.1f} min")


if __name__ == "__main__":
    main()
