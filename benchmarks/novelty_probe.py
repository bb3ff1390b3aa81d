"""Design probe: per-K val accuracy and novelty ratio of a model, on seeds that `synthnet eval` never uses.

Choosing between training settings by `synthnet eval`'s figures would tune them to the evaluation seeds and the
test split. This probe scores a model on other unseen seeds (default 300000+) and on the val split instead: for
every K = 1..k_max, mean val accuracy, the share of seeds above their teacher, the permutation-aligned distance to each seed's own teacher, and the ratio
of that distance to the nearest zoo checkpoint (any epoch of any run), as in `synthnet eval`. Run:
  .venv/bin/python benchmarks/novelty_probe.py --model RUN [--which best|final] [--seeds 300000:300048]
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
from synthnet.zoo import load_zoo_orders, parse_seeds, train_many


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True, help="run directory of a trained model")
    ap.add_argument("--which", default="best", help="checkpoint: best | final | latest")
    ap.add_argument("--seeds", default=f"{PROBE[0]}:{PROBE[0] + 48}", help="unseen init seeds, A:B or list")
    ap.add_argument("--k-max", type=int, default=4, help="probe K = 1..k_max")
    args = ap.parse_args()
    synth = load_synthesizer(args.model, args.which)
    spec, seeds = parse_spec(synth.cfg.data.arch), parse_seeds(args.seeds)
    data = load_dataset(synth.cfg.data.dataset)
    zoo = load_zoo_orders(Path(synth.cfg.zoo.path), str(spec), synth.cfg.zoo.orders)
    teachers = train_many(spec, seeds, data, zoo.recipe)  # the zoo's own recipe, as `synthnet eval` trains them
    x, y = data.split("val")
    inits = stack_states([init_state(spec, s) for s in seeds])
    teacher_acc = evaluate(spec, teachers, x, y).acc
    print(f"model {args.model} ({args.which}), {len(seeds)} seeds, val split; teacher val acc {teacher_acc.mean():.4f}")
    for k, state in enumerate(synth.outputs(spec, inits, args.k_max), 1):
        d_teacher = aligned_distance(spec, teachers, state)
        d_ckpt, _ = nearest_checkpoint(spec, state, zoo.params)
        acc = evaluate(spec, state, x, y).acc
        print(f"  K={k}: val acc {acc.mean():.4f}  above teacher {(acc > teacher_acc).float().mean():.0%}  "
              f"d_teacher {d_teacher.mean():.3f}  d_ckpt {d_ckpt.mean():.3f}  ratio {(d_teacher / d_ckpt).mean():.3f}")


if __name__ == "__main__":
    main()
