"""Zoo build throughput: `build_zoo` (training, per-epoch scores, checkpoint files, manifest) against a bare batched
loop of the same training in the same run.

The bare loop trains the same networks with the same recipe (same minibatches, Adam, same FLOPs) as plain batched
matmuls on stacked tensors, and neither scores nor saves anything: the floor a zoo build could reach on this
machine for one process. build_zoo runs with the CLI's default workers (one one-thread process per core). Prints
runs/s of each, their ratio, and the projected time of a 2048-init x 4-order zoo. Figures only.
Run: .venv/bin/python benchmarks/zoo_throughput.py [--inits 256] [--orders 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from synthnet.config import ZooConfig
from synthnet.data import load_dataset
from synthnet.targets import init_state, parse_spec
from synthnet.weights import stack_states
from synthnet.zoo import Recipe, build_zoo, data_order_seed

ARCH = "mlp:64-32-10"


def bare_training(seeds: list[int], orders: int, recipe: Recipe) -> None:
    """The teacher recipe for every (seed, order) at once: w1 (R, 32, 64) ... as bare baddbmm + Adam."""
    data, spec = load_dataset("digits"), parse_spec(ARCH)
    runs = [(s, o) for s in seeds for o in range(orders)]
    start = stack_states([init_state(spec, s) for s, _ in runs])
    w1, b1, w2, b2 = (start[k].clone().requires_grad_() for k in ("0.weight", "0.bias", "2.weight", "2.bias"))
    opt = torch.optim.Adam([w1, b1, w2, b2], lr=recipe.lr)
    gens = [torch.Generator().manual_seed(data_order_seed(s, o)) for s, o in runs]
    x, y, n = data.x_train, data.y_train, len(data.x_train)
    for _ in range(recipe.epochs):
        order = torch.stack([torch.randperm(n, generator=g) for g in gens])
        for lo in range(0, n, recipe.batch):
            idx = order[:, lo:lo + recipe.batch]
            h = torch.baddbmm(b1[:, None], x[idx], w1.transpose(1, 2)).relu()
            out = torch.baddbmm(b2[:, None], h, w2.transpose(1, 2))
            loss = nn.functional.cross_entropy(out.transpose(1, 2), y[idx], reduction="none").mean(1).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--inits", type=int, default=256, help="inits (seeds 0..inits-1)")
    ap.add_argument("--orders", type=int, default=2, help="minibatch orders per init")
    ap.add_argument("--epochs", type=int, default=30, help="teacher recipe epochs")
    args = ap.parse_args()
    seeds, recipe = list(range(args.inits)), Recipe(epochs=args.epochs)
    runs = args.inits * args.orders
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        build_zoo(Path(tmp) / "zoo", [ARCH], "digits", seeds, recipe, ZooConfig().workers, orders=args.orders)
        zoo_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    bare_training(seeds, args.orders, recipe)
    bare_s = time.perf_counter() - t0
    print(f"{runs} runs of {ARCH} x {args.epochs} epochs, {torch.get_num_threads()} threads")
    print(f"build_zoo ({ZooConfig().workers} workers) {runs / zoo_s:8.1f} runs/s ({zoo_s:.1f} s): 2048 inits x 4 orders in "
          f"{2048 * 4 / (runs / zoo_s) / 60:.1f} min")
    print(f"bare loop   {runs / bare_s:8.1f} runs/s ({bare_s:.1f} s)")
    print(f"ratio build_zoo / bare: {bare_s / zoo_s:.2f}")


if __name__ == "__main__":
    main()
