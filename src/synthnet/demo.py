"""`synthnet demo`: zoo -> supervised stage -> GRPO -> evaluation on digits; re-running reuses finished parts."""

from __future__ import annotations

from pathlib import Path

from synthnet.config import Config
from synthnet.eval.run import evaluate_model
from synthnet.rl.grpo import grpo
from synthnet.synthesize import load_synthesizer
from synthnet.targets import parse_spec
from synthnet.train import train
from synthnet.zoo import Recipe, build_zoo, parse_seeds


def run_demo(cfg: Config, root: Path) -> tuple[dict, Path]:
    """Run (or reuse) every stage under `root`; returns (results, report.html path)."""
    root = Path(root)
    sup, rl, report = root / "supervised", root / "grpo", root / "report"
    archs = [a for a in cfg.data.arch.split(",") if a]
    build_zoo(Path(cfg.zoo.path), archs, cfg.data.dataset, parse_seeds(cfg.zoo.seeds), Recipe(cfg.zoo.epochs),
              cfg.zoo.workers)
    if not (sup / "final.pt").is_file():
        train(cfg, sup)
    if cfg.grpo.iters > 0 and not (rl / "final.pt").is_file():
        grpo(cfg, sup, rl)
    model = rl if cfg.grpo.iters > 0 else sup
    results = evaluate_model(load_synthesizer(model), Path(cfg.zoo.path), cfg.data.dataset, parse_spec(archs[0]),
                             parse_seeds(cfg.eval.seeds), cfg.eval.k_max, report)
    return results, report / "report.html"
