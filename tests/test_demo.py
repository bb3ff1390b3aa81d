"""`synthnet demo` in its tiny form: every stage runs, results.json holds the headline, re-running reuses."""

import json

from conftest import TINY_ARCH
from synthnet.config import compose
from synthnet.demo import run_demo


def test_demo_runs_every_stage_and_reuses_finished_parts(tmp_path):
    cfg = compose("tiny", [f"zoo.path={tmp_path / 'zoo'}", f"data.arch={TINY_ARCH}", "zoo.seeds=0:8",
                           "zoo.epochs=2", "train.val_seeds=2"])
    results = run_demo(cfg, tmp_path / "demo")
    on_disk = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert on_disk == results
    names = [r["model"] for r in results["rows"]]
    assert names == ["teacher", "synthnet K=1", "synthnet K=2"]
    assert all(0.0 <= r["test_acc_mean"] <= 1.0 for r in results["rows"])
    assert results["model"].endswith("grpo")
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "demo").rglob("final.pt")}
    assert len(stamps) == 2
    run_demo(cfg, tmp_path / "demo")
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
