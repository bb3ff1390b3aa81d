"""784-input targets: synthesis time and memory against the number of neurons, and against conventional training.

Tokens of mlp:784-W-10 have F = 1 + 10 + 784 features and N = W + 1 tokens. For each W, in a fresh process (so its
peak resident memory is its own): a denoiser of the default config (untrained: the timing does not depend on its
weights), its normaliser fitted on 8 inits, then K-step syntheses from unseen inits: of one network (the median of
5 runs) and of a batch of --batch networks at once (time per network, and the peak memory the batch added over
everything before it). Last, the teacher recipe trains one mlp:784-128-10 on the 28x28 digits fixture in the same
run. Run:
  .venv/bin/python benchmarks/wide_inputs.py [--widths 32,64,128,256] [--k 4] [--batch 64]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from synthnet.config import compose
from synthnet.data import load_dataset
from synthnet.fixtures import write_digits_idx
from synthnet.synthesize import Synthesizer
from synthnet.targets import init_state, parse_spec
from synthnet.tokens import Normalizer, layout
from synthnet.weights import stack_states
from synthnet.zoo import Recipe, train_many


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def one_width(width: int, k: int, batch: int) -> None:
    """Print 'N seconds seconds_per_net_in_batch MiB' for syntheses of mlp:784-<width>-10."""
    torch.manual_seed(0)
    arch = f"mlp:784-{width}-10"
    spec = parse_spec(arch)
    synth = Synthesizer(compose(None, [f"data.arch={arch}"]), spec,
                        Normalizer.fit(spec, stack_states([init_state(spec, s) for s in range(8)])))
    init = stack_states([init_state(spec, 100000)])
    many = stack_states([init_state(spec, 100000 + i) for i in range(batch)])
    times = []
    with torch.no_grad():
        for _ in range(6):
            start = time.perf_counter()
            synth.run(spec, init, k)
            times.append(time.perf_counter() - start)
        before, start = peak_mib(), time.perf_counter()
        synth.run(spec, many, k)
        per_net = (time.perf_counter() - start) / batch
    print(layout(spec).n_tokens, sorted(times[1:])[2], per_net, peak_mib() - before)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--widths", default="32,64,128,256", help="comma list of hidden widths W of mlp:784-W-10")
    ap.add_argument("--k", type=int, default=4, help="denoising steps per synthesis")
    ap.add_argument("--batch", type=int, default=64, help="networks synthesized at once for the scaling columns")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: measure one width in this process
    args = ap.parse_args()
    if args.one:
        return one_width(args.one, args.k, args.batch)
    print(f"K={args.k}; one network, then {args.batch} at once (per network, per token, peak MiB added)")
    print(f"{'target':>16} {'tokens':>6} {'one net s':>9} {'batch s/net':>11} {'s/token':>9} {'MiB':>7} {'MiB/token':>9}")
    for width in map(int, args.widths.split(",")):
        out = subprocess.run([sys.executable, __file__, "--one", str(width), "--k", str(args.k), "--batch",
                              str(args.batch)], check=True, capture_output=True, text=True).stdout.split()
        n, one, per_net, mib = int(out[0]), float(out[1]), float(out[2]), float(out[3])
        print(f"{f'mlp:784-{width}-10':>16} {n:>6} {one:>9.4f} {per_net:>11.5f} {per_net / n:>9.2e} {mib:>7.1f} "
              f"{mib / n:>9.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        data = load_dataset(f"idx:{write_digits_idx(Path(tmp) / 'digits28-idx')}")
        spec, start = parse_spec("mlp:784-128-10"), time.perf_counter()
        train_many(spec, [100000], data, Recipe())
        print(f"teacher recipe ({Recipe().epochs} epochs), one mlp:784-128-10 on the 28x28 digits fixture: "
              f"{time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
