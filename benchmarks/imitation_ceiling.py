"""How accurate can an imitator of the teacher be? The ceiling of predicting the mean, against drawing one run.

A teacher is a function of its init AND of its minibatch order (both from its seed); a denoiser sees only the init.
So the best it can do in squared error is the mean over minibatch orders of the runs from that init. This script
trains R more runs from each init with other shuffle seeds (the zoo's recipe, as its teachers) and scores, on the val
and train splits, one such run and the mean of 2, 4, ..., R of them: accuracy, aligned distance to the real teacher
and its ratio to the nearest zoo checkpoint (the novelty figure). With --model, the model's K = 1..4 outputs are
scored beside them.
Seeds default to 300000+ (never `synthnet eval`'s); the test split is not touched. Run:
  .venv/bin/python benchmarks/imitation_ceiling.py [--model RUN] [--zoo zoos/digits-mlp-2k] [--runs 8]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from synthnet.data import load_dataset
from synthnet.eval.novelty import aligned_distance, nearest_checkpoint
from synthnet.scoring import evaluate
from synthnet.seeds import PROBE
from synthnet.synthesize import load_synthesizer
from synthnet.targets import init_state, parse_spec
from synthnet.weights import stack_states
from synthnet.zoo import load_zoo, parse_seeds, train_many

SHUFFLE_SEED_BASE = 10**7  # generator seeds of the other minibatch orders, away from the inits' own seeds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="optional run directory: its K = 1..4 outputs are scored too")
    ap.add_argument("--zoo", type=Path, default=Path("zoos/digits-mlp-2k"), help="zoo for the nearest checkpoint")
    ap.add_argument("--arch", default="mlp:64-32-10", help="target spec")
    ap.add_argument("--dataset", default="digits", help="digits | mnist1d | idx:<dir>")
    ap.add_argument("--seeds", default=f"{PROBE[0]}:{PROBE[0] + 64}", help="unseen init seeds, A:B or list")
    ap.add_argument("--runs", type=int, default=8, help="runs per init with other minibatch orders")
    args = ap.parse_args()
    spec, seeds, data = parse_spec(args.arch), parse_seeds(args.seeds), load_dataset(args.dataset)
    inits = stack_states([init_state(spec, s) for s in seeds])
    zoo = load_zoo(args.zoo, str(spec))
    teachers = train_many(spec, seeds, data, zoo.recipe)  # the zoo's own recipe
    repeated = {k: v.repeat_interleave(args.runs, 0) for k, v in inits.items()}
    shuffles = [SHUFFLE_SEED_BASE + s * args.runs + r for s in seeds for r in range(args.runs)]
    others = train_many(spec, shuffles, data, zoo.recipe, init=repeated)
    others = {k: v.unflatten(0, (len(seeds), args.runs)) for k, v in others.items()}

    def report(name: str, nets: dict) -> None:
        acc = {split: evaluate(spec, nets, *data.split(split)).acc.mean().item() for split in ("val", "train")}
        d_teacher = aligned_distance(spec, teachers, nets)
        d_ckpt, _ = nearest_checkpoint(spec, nets, zoo.params)
        print(f"{name:34s} val {acc['val']:.4f}  train {acc['train']:.4f}  d_teacher {d_teacher.mean():.3f}  "
              f"d_ckpt {d_ckpt.mean():.3f}  ratio {(d_teacher / d_ckpt).mean():.3f}", flush=True)

    print(f"{len(seeds)} inits of {spec}, {args.dataset}; teachers: val "
          f"{evaluate(spec, teachers, *data.split('val')).acc.mean():.4f}  train "
          f"{evaluate(spec, teachers, *data.split('train')).acc.mean():.4f}")
    report("one run, another minibatch order", {k: v[:, 0] for k, v in others.items()})
    for r in (n for n in (2, 4, 8, 16, 32) if n <= args.runs):
        report(f"mean of {r} runs (the MSE ceiling)", {k: v[:, :r].mean(1) for k, v in others.items()})
    if args.model:
        for k, nets in enumerate(load_synthesizer(args.model).outputs(spec, inits, 4), 1):
            report(f"{args.model} K={k}", nets)


if __name__ == "__main__":
    main()
