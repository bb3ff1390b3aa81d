"""`synthnet demo`: zoo -> supervised stage -> GRPO -> `synthnet eval` on unseen seeds; reuses finished parts."""

from __future__ import annotations

import json
from pathlib import Path

from synthnet.config import Config
from synthnet.eval.run import evaluate_model
from synthnet.fixtures import FIXTURE_DIR, write_digits_idx
from synthnet.rl.grpo import grpo
from synthnet.synthesize import load_synthesizer
from synthnet.train import train
from synthnet.zoo import build_zoo, parse_seeds, recipe


def headline_rows(res: dict) -> list[dict]:
    """Teacher and SynthNet K = 1..k_max rows of an eval's results.json: mean/min test accuracy, beats-teacher."""
    teacher = [s["teacher"]["final_acc"] for s in res["per_seed"]]
    rows = [{"model": "teacher", "test_acc_mean": sum(teacher) / len(teacher), "test_acc_min": min(teacher),
             "beats_teacher": "—"}]
    for k in range(res["k_max"]):
        acc = [s["synthnet"]["acc"][k] for s in res["per_seed"]]
        beats = sum(a > t for a, t in zip(acc, teacher)) / len(acc)
        rows.append({"model": f"synthnet K={k + 1}", "test_acc_mean": sum(acc) / len(acc), "test_acc_min": min(acc),
                     "beats_teacher": f"{beats:.0%}"})
    return rows


def run_demo(cfg: Config, root: Path) -> Path:
    """Run (or reuse) every stage under `root`; returns the eval directory (results.json, report.html)."""
    root = Path(root)
    sup, rl, ev = root / "supervised", root / "grpo", root / "eval"
    arch = cfg.data.arch.split(",")[0]
    fixture = Path(cfg.data.dataset[4:]) if cfg.data.dataset.startswith("idx:") else None
    if fixture and fixture.name == FIXTURE_DIR and not fixture.exists():
        print(f"writing the 28x28 digits IDX fixture to {write_digits_idx(fixture)}")
    build_zoo(Path(cfg.zoo.path), [a for a in cfg.data.arch.split(",") if a], cfg.data.dataset,
              parse_seeds(cfg.zoo.seeds), recipe(cfg.zoo), cfg.zoo.workers, orders=cfg.zoo.orders)
    if not (sup / "final.pt").is_file():
        train(cfg, sup)
    model = sup
    if cfg.grpo.iters > 0:
        if not (rl / "final.pt").is_file():
            grpo(cfg, sup, rl)
        model = rl
    done = ev / "results.json"
    if not (done.is_file() and json.loads(done.read_text())["model"]["run"] == str(model)):
        evaluate_model(load_synthesizer(model), Path(cfg.zoo.path), cfg.data.dataset, arch,
                       parse_seeds(cfg.eval.seeds), cfg.eval.k_max, ev, orders=cfg.zoo.orders)
    return ev
