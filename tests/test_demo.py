"""`synthnet demo` in its tiny form: every stage runs, the eval report is written, re-running reuses."""

import json
import subprocess
import sys

import pytest

from conftest import TINY_ARCH
from synthnet.config import compose
from synthnet.data import load_dataset
from synthnet.fixtures import FIXTURE_DIR
from synthnet.demo import headline_rows, run_demo

pytestmark = pytest.mark.slow  # end to end (subprocesses, Ray, torchrun): `make test` runs it, -m "not slow" not


def test_demo_runs_every_stage_and_reuses_finished_parts(tmp_path):
    cfg = compose("tiny", [f"zoo.path={tmp_path / 'zoo'}", f"data.arch={TINY_ARCH}", "zoo.seeds=0:8",
                           "zoo.epochs=2", "train.val_runs=2"])
    ev = run_demo(cfg, tmp_path / "demo")
    res = json.loads((ev / "results.json").read_text())
    assert res["model"]["run"].endswith("grpo") and res["seeds"] == list(range(100000, 100004))
    assert (ev / "report.html").is_file() and (ev / "report.md").is_file()
    rows = headline_rows(res)
    assert [r["model"] for r in rows] == ["teacher", "synthnet K=1", "synthnet K=2"]
    teacher = [s["teacher"]["final_acc"] for s in res["per_seed"]]
    assert rows[0]["test_acc_mean"] == sum(teacher) / 4 and rows[0]["test_acc_min"] == min(teacher)
    stamps = {p: p.stat().st_mtime_ns for p in [*(tmp_path / "demo").rglob("final.pt"), ev / "results.json"]}
    assert len(stamps) == 3
    run_demo(cfg, tmp_path / "demo")
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_demo_command_says_whether_it_beats_the_teacher_and_names_the_stronger_preset(tmp_path):
    r = subprocess.run([sys.executable, "-m", "synthnet", "demo", "--preset", "tiny", "--out", str(tmp_path / "d"),
                        f"zoo.path={tmp_path / 'zoo'}", f"data.arch={TINY_ARCH}", "zoo.seeds=0:8", "zoo.epochs=2",
                        "train.val_runs=2"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    out = " ".join(r.stdout.split())  # rich wraps long lines
    res = json.loads((tmp_path / "d" / "eval" / "results.json").read_text())
    agg = res["aggregate"]
    beats = agg["synthnet"]["beats_teacher_frac"] >= 0.6 and (
        agg["synthnet"]["stats"]["best_acc"]["mean"] >= agg["teacher"]["stats"]["final_acc"]["mean"])
    assert f"verdict: SynthNet {'beats' if beats else 'does not beat'} its teacher" in out
    assert ("synthnet demo --preset headline --out DIR" in out) == (not beats)


@pytest.mark.parametrize("preset", ["digits-cnn", "mnist1d-mlp", "idx-mlp"])
def test_cross_target_rows_run_end_to_end_in_tiny_form(tmp_path, preset):
    """Rows 2, 4 and 6 of the README's cross-target table: the row's dataset and arch at the tiny preset's sizes;
    the idx row's fixture (digits upscaled to 28x28) is written by the demo itself and read through idx:<dir>."""
    row = compose(preset)
    dataset = row.data.dataset
    if dataset.startswith("idx:"):
        dataset = f"idx:{tmp_path / FIXTURE_DIR}"
    cfg = compose("tiny", [f"zoo.path={tmp_path / 'zoo'}", f"data.dataset={dataset}", f"data.arch={row.data.arch}",
                           "zoo.seeds=0:8", "zoo.epochs=2", "train.val_runs=2"])
    ev = run_demo(cfg, tmp_path / "demo")
    res = json.loads((ev / "results.json").read_text())
    assert res["arch"] == row.data.arch and res["dataset"] == dataset
    teacher = [s["teacher"]["final_acc"] for s in res["per_seed"]]
    assert len(teacher) == 4 and all(0.0 <= a <= 1.0 for a in teacher)
    if dataset.startswith("idx:"):
        data = load_dataset(dataset)
        assert data.n_features == 784 and len(data.x_test) == 300 and len(data.x_train) + len(data.x_val) == 1497
