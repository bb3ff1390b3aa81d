"""Width generalisation: SynthNet against the teacher on target widths, e.g. ones the model never saw.

For every arch and every unseen seed: the default init, the teacher recipe trained from it (epochs from the
model's zoo config), and SynthNet's K-step outputs for K = 1..k_max, all scored on the test split. Prints one
table per arch with mean test accuracy and the ratio to the teacher. Run:
  .venv/bin/python benchmarks/widths.py --model RUN --archs mlp:64-24-10,mlp:64-48-10 [--seeds 100000:100064]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from synthnet.data import load_dataset
from synthnet.scoring import evaluate
from synthnet.seeds import EVAL_SEEDS
from synthnet.synthesize import load_synthesizer
from synthnet.targets import init_state, parse_spec
from synthnet.weights import stack_states
from synthnet.zoo import parse_seeds, recipe, train_many


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True, help="run directory of a trained model")
    ap.add_argument("--archs", required=True, help="comma list of target specs")
    ap.add_argument("--seeds", default=EVAL_SEEDS, help="unseen init seeds, A:B or a comma list")
    ap.add_argument("--k-max", type=int, default=4, help="evaluate K = 1..k_max")
    args = ap.parse_args()
    synth = load_synthesizer(args.model)
    data, seeds = load_dataset(synth.cfg.data.dataset), parse_seeds(args.seeds)
    x, y = data.split("test")
    print(f"model {args.model} (trained on {synth.cfg.data.arch}), {len(seeds)} seeds, test split")
    for arch in args.archs.split(","):
        spec = parse_spec(arch)
        inits = stack_states([init_state(spec, s) for s in seeds])
        teacher = evaluate(spec, train_many(spec, seeds, data, recipe(synth.cfg.zoo)), x, y).acc.mean().item()
        print(f"{arch}: teacher {teacher:.4f}")
        for k, state in enumerate(synth.outputs(spec, inits, args.k_max), 1):
            acc = evaluate(spec, state, x, y).acc.mean().item()
            print(f"  SynthNet K={k}: {acc:.4f}  ({acc / teacher:.3f} x teacher)")


if __name__ == "__main__":
    main()
