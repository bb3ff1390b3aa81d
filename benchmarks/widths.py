"""Width and depth generalisation: SynthNet against the teacher on target archs, e.g. ones the model never saw.

For every arch and every unseen seed: the default init, the teacher recipe trained from it (epochs from the
model's zoo config), and SynthNet's K-step outputs for K = 1..k_max. K is chosen on the val split (mean over the
seeds); test is read at that K only. Prints, per arch, val per K, then test at the chosen K against the teacher's.
Run:
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
    (xv, yv), (xt, yt) = data.split("val"), data.split("test")
    print(f"model {args.model} (trained on {synth.cfg.data.arch}), {len(seeds)} seeds; K chosen on val, test at it")
    for arch in args.archs.split(","):
        spec = parse_spec(arch)
        inits = stack_states([init_state(spec, s) for s in seeds])
        teacher = train_many(spec, seeds, data, recipe(synth.cfg.zoo))
        outputs = synth.outputs(spec, inits, args.k_max)
        val = [evaluate(spec, state, xv, yv).acc.mean().item() for state in outputs]
        k = 1 + val.index(max(val))
        synth_test = evaluate(spec, outputs[k - 1], xt, yt).acc
        teacher_test = evaluate(spec, teacher, xt, yt).acc
        above = (synth_test > teacher_test).float().mean()
        print(f"{arch}: val by K {' / '.join(f'{v:.4f}' for v in val)} -> K={k}; test SynthNet "
              f"{synth_test.mean():.4f} against the teacher's {teacher_test.mean():.4f} "
              f"({synth_test.mean() / teacher_test.mean():.3f} x), above it on {above:.0%} of seeds")


if __name__ == "__main__":
    main()
