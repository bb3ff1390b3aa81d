"""Choosing a new dataset's teacher recipe on val: a grid of conventional recipes, trained from probe inits.

For each recipe (Adam or SGD with momentum 0.9, three learning rates each, 30 and 60 epochs) it trains every probe
seed's default init twice (minibatch orders 0 and 1) and prints mean val accuracy, how far training moves the
weights (|W - W_0|, L2 over all weights), and how far a second minibatch order lands from the first, relative to
that move: the smaller, the more the init alone decides where training ends. The recipe with the best val accuracy
is the one to pin (`synthnet zoo --optimizer/--lr/--epochs`, the preset's `zoo` keys); the test split is never
read. Run:
  .venv/bin/python benchmarks/teacher_recipes.py --dataset mnist1d --arch mlp:40-128-10 [--seeds 300000:300032]
"""

from __future__ import annotations

import argparse
from dataclasses import replace

from synthnet.data import load_dataset
from synthnet.eval.novelty import flat
from synthnet.scoring import evaluate
from synthnet.seeds import PROBE
from synthnet.targets import init_state, parse_spec
from synthnet.weights import stack_states
from synthnet.zoo import Recipe, parse_seeds, train_many

GRID = [("adam", lr) for lr in (3e-3, 1e-3, 3e-4)] + [("sgd", lr) for lr in (0.05, 0.02, 0.01)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", required=True, help="digits | mnist1d | idx:<dir>")
    ap.add_argument("--arch", required=True, help="target spec, e.g. mlp:40-128-10")
    ap.add_argument("--seeds", default=f"{PROBE[0]}:{PROBE[0] + 32}", help="probe init seeds, A:B or a list")
    args = ap.parse_args()
    spec, data, seeds = parse_spec(args.arch), load_dataset(args.dataset), parse_seeds(args.seeds)
    inits = stack_states([init_state(spec, s) for s in seeds])
    start = flat(spec, inits)
    x, y = data.split("val")
    print(f"{len(seeds)} probe inits of {spec} on {args.dataset}, val split")
    print("| optimizer | lr | epochs | val acc | |W - W_0| | order 1 vs order 0, relative |")
    print("|---|---|---|---|---|---|")
    for (optimizer, lr), epochs in ((o, e) for o in GRID for e in (30, 60)):
        recipe = replace(Recipe(), optimizer=optimizer, lr=lr, epochs=epochs)
        first = train_many(spec, seeds, data, recipe, init=inits)
        second = train_many(spec, seeds, data, recipe, init=inits, orders=[1] * len(seeds))
        end = flat(spec, first)
        moved = (end - start).norm(dim=1)
        acc = evaluate(spec, first, x, y).acc.mean()
        print(f"| {optimizer} | {lr:g} | {epochs} | {acc:.4f} | {moved.mean():.2f} | "
              f"{((end - flat(spec, second)).norm(dim=1) / moved).mean():.2f} |", flush=True)


if __name__ == "__main__":
    main()
