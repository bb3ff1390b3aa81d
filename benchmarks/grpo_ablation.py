"""GRPO ablations and throughput, each variant a short real GRPO run from the same supervised model.

Variants (each differs from the default config by one setting): group mode steps / both, no std division (Dr. GRPO
advantages), KL beta 0, the auxiliary denoising loss on (default off), fixed K = k_max, the reward scored on val
alone or on train alone (default: train + val; with train alone the held-out accuracy is on the whole val split, not
its last third). For each it prints the held-out mean-policy val accuracy (best K) before, at the end and at its
best evaluation, against the teachers' on the same inits and samples; the throughput split into rollout, reward and
update time; the mean policy's accuracy on the reward's own samples and on train, before and after (a policy that
learns the reward's samples gains there, not on held-out).
Figures only: nothing is asserted. Run:
  .venv/bin/python benchmarks/grpo_ablation.py --model RUN [--out runs/ablation] [--iters 30] [key=value ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from synthnet.config import compose, rl_base
from synthnet.rl.grpo import grpo
from synthnet.synthesize import load_synthesizer

VARIANTS = {"default": [], "group_mode=steps": ["grpo.group_mode=steps"], "group_mode=both": ["grpo.group_mode=both"],
            "std_norm=off": ["grpo.std_norm=false"], "kl_beta=0": ["grpo.kl_beta=0"],
            "aux_weight=0.5": ["grpo.aux_weight=0.5"], "k_dist=fixed": ["grpo.k_dist=fixed"],
            "reward_split=val": ["grpo.reward_split=val"], "reward_split=train": ["grpo.reward_split=train"]}


def summarise(run: Path) -> dict:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    held = [r for r in rows if "heldout_acc" in r]
    steps = [r for r in rows if "time_update" in r]
    mean = lambda key: statistics.mean(r[key] for r in steps)  # noqa: E731
    total = mean("time_rollout") + mean("time_reward") + mean("time_update")
    return {"heldout_teacher": held[0].get("heldout_teacher_acc", float("nan")),  # nan: a run from before it was logged
            "heldout_before": held[0]["heldout_acc"], "heldout_after": held[-1]["heldout_acc"],
            "heldout_best": max(r["heldout_acc"] for r in held),
            **{f"{key}_{when}": held[i][key] for key in ("reward_set_acc", "train_acc")
               for when, i in (("before", 0), ("after", -1))},
            "rollout_steps_per_s": mean("rollout_steps_per_s"), "s_per_iter": total,
            "rollout_frac": mean("time_rollout") / total, "reward_frac": mean("time_reward") / total,
            "update_frac": mean("time_update") / total}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True, help="supervised run directory")
    ap.add_argument("--out", type=Path, default=Path("runs/ablation"), help="one GRPO run directory per variant")
    ap.add_argument("--iters", type=int, default=30, help="GRPO iterations per variant")
    ap.add_argument("--eval-every", type=int, default=10, help="iterations between held-out evaluations")
    ap.add_argument("overrides", nargs="*", help="config overrides applied to every variant")
    args = ap.parse_args()
    base = rl_base(load_synthesizer(args.model).cfg)
    table = {}
    for name, extra in VARIANTS.items():
        cfg = compose(None, [*args.overrides, f"grpo.iters={args.iters}", f"grpo.eval_every={args.eval_every}",
                             *extra], base=base)
        run = args.out / name.replace("=", "-")
        if not (run / "final.pt").is_file():
            grpo(cfg, args.model, run)
        table[name] = summarise(run)
        r = table[name]
        print(f"{name:18s} heldout {r['heldout_before']:.4f} -> {r['heldout_after']:.4f} "
              f"({r['heldout_after'] - r['heldout_before']:+.4f}, best {r['heldout_best']:.4f}); "
              f"teachers {r['heldout_teacher']:.4f}; {r['rollout_steps_per_s']:.0f} rollout-steps/s, "
              f"{r['s_per_iter']:.2f} s/iter = rollout {r['rollout_frac']:.0%} + reward {r['reward_frac']:.0%} "
              f"+ update {r['update_frac']:.0%}; reward's samples {r['reward_set_acc_before']:.4f} -> "
              f"{r['reward_set_acc_after']:.4f}, train {r['train_acc_before']:.4f} -> {r['train_acc_after']:.4f}",
              flush=True)
    (args.out / "ablation.json").write_text(json.dumps(table, indent=1))


if __name__ == "__main__":
    main()
