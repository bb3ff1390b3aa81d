"""`synthnet demo`: zoo -> supervised stage -> GRPO -> headline table on unseen seeds; reuses finished parts."""

from __future__ import annotations

import json
import time
from pathlib import Path

from synthnet.config import Config
from synthnet.data import load_dataset
from synthnet.evaluate import evaluate
from synthnet.rl.grpo import grpo
from synthnet.synthesize import load_synthesizer
from synthnet.targets import init_state, parse_spec
from synthnet.train import train
from synthnet.weights import atomic_write_text, stack_states
from synthnet.zoo import Recipe, build_zoo, parse_seeds, train_many


def headline(model: Path, cfg: Config) -> dict:
    """Test accuracy of SynthNet at K = 1..k_max against the teacher trained from the same unseen inits."""
    spec, data = parse_spec(cfg.data.arch.split(",")[0]), load_dataset(cfg.data.dataset)
    seeds = parse_seeds(cfg.eval.seeds)
    inits = stack_states([init_state(spec, s) for s in seeds])
    t0 = time.perf_counter()
    states = load_synthesizer(model).run(spec, inits, cfg.eval.k_max)
    synth_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    teacher = evaluate(spec, train_many(spec, seeds, data, Recipe(cfg.zoo.epochs)), *data.split("test")).acc
    teacher_s = time.perf_counter() - t0
    rows = [{"model": "teacher", "test_acc_mean": teacher.mean().item(), "test_acc_min": teacher.min().item(),
             "beats_teacher": None, "seconds": teacher_s}]
    for k, state in enumerate(states, 1):
        acc = evaluate(spec, state, *data.split("test")).acc
        rows.append({"model": f"synthnet K={k}", "test_acc_mean": acc.mean().item(), "test_acc_min": acc.min().item(),
                     "beats_teacher": (acc > teacher).float().mean().item(), "seconds": synth_s})
    return {"model": str(model), "arch": str(spec), "dataset": cfg.data.dataset, "seeds": cfg.eval.seeds, "rows": rows}


def run_demo(cfg: Config, root: Path) -> dict:
    """Run (or reuse) every stage under `root`; writes and returns root/results.json."""
    root = Path(root)
    sup, rl = root / "supervised", root / "grpo"
    build_zoo(Path(cfg.zoo.path), [a for a in cfg.data.arch.split(",") if a], cfg.data.dataset,
              parse_seeds(cfg.zoo.seeds), Recipe(cfg.zoo.epochs), cfg.zoo.workers)
    if not (sup / "final.pt").is_file():
        train(cfg, sup)
    model = sup
    if cfg.grpo.iters > 0:
        if not (rl / "final.pt").is_file():
            grpo(cfg, sup, rl)
        model = rl
    results = headline(model, cfg)
    atomic_write_text(root / "results.json", json.dumps(results, indent=1))
    return results
