"""Throughput of the batched evaluator and of batched zoo training, each against a bare baseline in the same run.

1. synthnet.scoring.evaluate on N weight sets of mlp:64-32-10 over the digits val split, vs the same forward written
   as bare baddbmm on pre-stacked tensors (same FLOPs, no functional_call / vmap / dict plumbing).
2. synthnet.zoo.train_many (many networks at once) vs a plain one-network-at-a-time PyTorch loop of the teacher recipe.
3. evaluate's blocks (at most EVAL_FLOATS activation values per forward) vs one block of every net and sample, on row
   5's GRPO reward call: 384 states of cnn:1x40-32s-32s-32s-10 on mnist1d's 4000 train and val samples (one block
   holds about 10 GB).

Prints figures only; timings are never asserted. Run: .venv/bin/python benchmarks/evaluator.py [--help]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from synthnet.data import load_dataset
from synthnet.scoring import EVAL_FLOATS, evaluate
from synthnet.targets import init_state, parse_spec
from synthnet.weights import stack_states
from synthnet.zoo import Recipe, train_many

ARCH = "mlp:64-32-10"
CNN = "cnn:1x40-32s-32s-32s-10"  # row 5's target, whose GRPO rewards once held 10 GB in one forward


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up (allocator, vmap tracing, lazy init)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


@torch.no_grad()
def bare_forward(w1, b1, w2, b2, x, y):
    """The same evaluation as evaluate(): w1 (N, 32, 64), b1 (N, 32), w2 (N, 10, 32), b2 (N, 10); x (S, 64)."""
    xs = x.expand(w1.shape[0], *x.shape)  # (N, S, 64), a view
    h = torch.baddbmm(b1[:, None], xs, w1.transpose(1, 2)).relu_()  # (N, S, 32)
    out = torch.baddbmm(b2[:, None], h, w2.transpose(1, 2))  # (N, S, 10)
    ce = nn.functional.cross_entropy(out.transpose(1, 2), y.expand(out.shape[0], -1), reduction="none").mean(1)
    return (out.argmax(-1) == y).float().mean(1), ce


def plain_teacher(seed: int, x: torch.Tensor, y: torch.Tensor, recipe: Recipe) -> None:
    """The teacher recipe for one mlp:64-32-10, written with plain PyTorch (the baseline train_many replaces)."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    opt = torch.optim.Adam(model.parameters(), lr=recipe.lr)
    g = torch.Generator().manual_seed(seed)
    for _ in range(recipe.epochs):
        order = torch.randperm(len(x), generator=g)
        for lo in range(0, len(x), recipe.batch):
            idx = order[lo:lo + recipe.batch]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", type=int, default=320, help="weight sets evaluated per call")
    ap.add_argument("--repeats", type=int, default=9, help="timed repeats (median reported) after one warm-up")
    ap.add_argument("--train-seeds", type=int, default=64, help="networks trained at once by train_many")
    ap.add_argument("--plain-seeds", type=int, default=4, help="networks trained one at a time by the plain loop")
    ap.add_argument("--epochs", type=int, default=2, help="teacher-recipe epochs per network in the training part")
    ap.add_argument("--cnn-sets", type=int, default=384, help="row 5 CNN states per call in part 3 (0: skip it)")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch intra-op threads")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    spec, data = parse_spec(ARCH), load_dataset("digits")
    x, y = data.split("val")
    params = stack_states([init_state(spec, s) for s in range(args.sets)])
    print(f"torch {torch.__version__}, {args.threads} threads; {args.sets} x {ARCH} on {len(x)} digits val samples")

    # --- evaluator vs bare batched matmul ---
    ours = evaluate(spec, params, x, y)
    bare_acc, bare_loss = bare_forward(params["0.weight"], params["0.bias"], params["2.weight"], params["2.bias"], x, y)
    assert torch.equal(ours.acc, bare_acc) and torch.allclose(ours.loss, bare_loss, atol=1e-5)  # same computation
    t_ours = median_seconds(lambda: evaluate(spec, params, x, y), args.repeats)
    stacked = [params[k].contiguous() for k in ("0.weight", "0.bias", "2.weight", "2.bias")]
    t_bare = median_seconds(lambda: bare_forward(*stacked, x, y), args.repeats)
    print(f"evaluate:     {args.sets / t_ours:12,.0f} evaluations/s  ({t_ours * 1e3:.2f} ms per call)")
    print(f"bare baddbmm: {args.sets / t_bare:12,.0f} evaluations/s  ({t_bare * 1e3:.2f} ms per call)")
    print(f"ratio evaluate / bare: {t_bare / t_ours:.2f}")

    # --- train_many vs a plain one-network loop ---
    recipe = Recipe(epochs=args.epochs)
    seeds = list(range(args.train_seeds))
    t0 = time.perf_counter()
    train_many(spec, seeds, data, recipe)
    t_many = time.perf_counter() - t0
    t0 = time.perf_counter()
    for s in range(args.plain_seeds):
        plain_teacher(s, data.x_train, data.y_train, recipe)
    t_plain = time.perf_counter() - t0
    many, plain = len(seeds) * args.epochs / t_many, args.plain_seeds * args.epochs / t_plain
    print(f"train_many ({len(seeds)} nets): {many:8.1f} network-epochs/s  ({t_many:.2f} s)")
    print(f"plain loop ({args.plain_seeds} nets):  {plain:8.1f} network-epochs/s  ({t_plain:.2f} s)")
    print(f"ratio train_many / plain: {many / plain:.1f}")
    if args.cnn_sets:
        blocks_vs_one_call(args.cnn_sets)


def blocks_vs_one_call(sets: int) -> None:
    """Part 3: seconds per evaluate call on row 5's GRPO reward, in blocks and in one block (medians of 3)."""
    spec, data = parse_spec(CNN), load_dataset("mnist1d")
    x, y = (torch.cat(pair) for pair in zip(data.split("train"), data.split("val")))
    params = stack_states([init_state(spec, s) for s in range(sets)])
    one_block = sets * len(x) * spec.activation_size()
    t_blocks = median_seconds(lambda: evaluate(spec, params, x, y), 3)
    t_one = median_seconds(lambda: evaluate(spec, params, x, y, floats=one_block), 3)
    print(f"{sets} x {CNN} on {len(x)} mnist1d samples: blocks of <= {EVAL_FLOATS * 4 / 2**20:.0f} MB "
          f"{t_blocks:.2f} s per call, one block of {one_block * 4 / 2**30:.1f} GB {t_one:.2f} s; "
          f"ratio one block / blocks: {t_one / t_blocks:.2f}")


if __name__ == "__main__":
    main()
