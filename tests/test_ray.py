"""Ray: sweeps (grid and PBT) as Ray Tune trials over real tiny runs, zoo runs as Ray tasks (bit-identical to the
local path), and no Ray import anywhere else. Every test name contains `ray` (`pytest -k ray`)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file
from typer.testing import CliRunner

from synthnet.cli import app
from synthnet.config import from_yaml
from synthnet.errors import SynthNetError
from synthnet.jsonl import read_jsonl
from synthnet.orchestrate.sweep import plan, run_sweep, summarize
from synthnet.runlog import load_checkpoint
from synthnet.weights import read_metadata
from synthnet.zoo import MANIFEST, Recipe, build_zoo, read_manifest

from conftest import TINY_ARCH

pytestmark = pytest.mark.slow  # end to end (subprocesses, Ray, torchrun): `make test` runs it, -m "not slow" not

runner = CliRunner()


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray with 2 CPUs for the whole module (the commands reuse an initialised Ray)."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False)
    yield ray
    ray.shutdown()


def tiny(zoo: Path, *more: str) -> list[str]:
    return [f"zoo.path={zoo}", f"data.arch={TINY_ARCH}", *more]


def val_rows(run: Path, metric: str = "val_acc") -> list[dict]:
    return [r for r in read_jsonl(run / "metrics.jsonl") if metric in r]


def test_ray_is_imported_by_no_other_command(tmp_path):
    code = ("import sys\nfrom synthnet.cli import app\nassert 'ray' not in sys.modules\n"
            f"app(['zoo', '--out', {str(tmp_path / 'zoo')!r}, '--arch', {TINY_ARCH!r}, '--seeds', '0:2', "
            "'--epochs', '1'], standalone_mode=False)\n"
            "assert 'ray' not in sys.modules, 'synthnet zoo imported ray'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert len(read_manifest(tmp_path / "zoo")) == 4


def test_ray_missing_gives_one_line_install_hint(tiny_zoo, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    for args in (["zoo", "--out", str(tmp_path / "zoo"), "--ray"],
                 ["sweep", "tiny", "--grid", "train.lr=1e-3,3e-3", "--out", str(tmp_path / "sweep"), *tiny(tiny_zoo)]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2
        assert result.output.strip().splitlines() == [
            "error: this command needs Ray, which is not installed: pip install 'synthnet[ray]'"]
    assert not (tmp_path / "zoo" / MANIFEST).exists()


@pytest.mark.parametrize("grid, args, fragment", [
    (["train.lr"], {}, "--grid 'train.lr' is not key=a,b,c"),
    (["train.lr=1e-3", "train.lr=3e-3"], {}, "--grid train.lr is given twice"),
    (["train.lrr=1e-3,3e-3"], {}, "unknown config key 'train.lrr'"),
    (["train.lr=1e-3,0.001"], {}, "--grid values repeat (as train.lr=0.001)"),
    (["train.lr=1e-3,3e-3"], {"stage": "rl"}, "--stage 'rl' is not accepted; choose one of train, grpo"),
    (["grpo.lr=1e-4,1e-5"], {"stage": "grpo"}, "--stage grpo needs --model RUN"),
    (["model.dim=16,32"], {"pbt": True}, "model.dim is restart-only"),
    (["train.lr=1e-3,0.5"], {"pbt": True}, "train.lr=0.5 is not accepted; train.lr takes a float in [0, 0.1]"),
    (["train.lr=1e-3"], {"pbt": True}, "--pbt needs a population"),
    (["train.lr=1e-3,3e-3"], {"zoo": "nowhere"}, "nowhere: not a zoo (no manifest.jsonl)"),
])
def test_ray_sweep_plan_refuses_bad_input_before_starting_ray(tiny_zoo, tmp_path, grid, args, fragment):
    with pytest.raises(SynthNetError) as exc:
        plan("tiny", args.get("stage", "train"), grid, tiny(args.get("zoo", tiny_zoo)), tmp_path, None,
             args.get("pbt", False))
    assert fragment in str(exc.value)
    assert not tmp_path.joinpath("tune").exists()


def test_ray_grid_sweep_runs_every_point_and_ranks_by_metrics(tiny_zoo, ray_local, tmp_path):
    out = tmp_path / "sweep"
    result = runner.invoke(app, ["sweep", "tiny", "--grid", "train.lr=1e-3,3e-3", "--grid", "train.p_unroll=0,1",
                                 "--stage", "train", "--out", str(out), *tiny(tiny_zoo, "train.steps=2",
                                                                              "train.val_every=2")])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "sweep.json").read_text())
    assert summary["metric"] == "val_acc" and not summary["pbt"]
    points = [{"train.lr": lr, "train.p_unroll": p} for lr in (1e-3, 3e-3) for p in (0.0, 1.0)]
    assert sorted(map(json.dumps, (t["start"] for t in summary["trials"]))) == sorted(map(json.dumps, points))
    for t in summary["trials"]:
        run = Path(t["run"])
        cfg = from_yaml((run / "config.yaml").read_text(), "config.yaml")
        assert (cfg.train.lr, cfg.train.p_unroll, cfg.train.steps) == (t["start"]["train.lr"],
                                                                        t["start"]["train.p_unroll"], 2)
        assert run.name == f"train.lr={cfg.train.lr},train.p_unroll={cfg.train.p_unroll}"
        rows = val_rows(run)
        assert [r["step"] for r in rows] == [2] and t["final"] == t["best"] == rows[-1]["val_acc"]
        assert t["end"] == t["start"] and t["exploits"] == [] and (run / "final.pt").is_file()
    bests = [t["best"] for t in summary["trials"]]
    assert bests == sorted(bests, reverse=True)
    assert "rank" in result.output and f"sweep: {out / 'sweep.json'}" in result.output.replace("\n", "")

    # the ranking follows each run's own metrics.jsonl: make the last trial the best one
    last = Path(summary["trials"][-1]["run"])
    with open(last / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 3, "val_acc": 0.99}) + "\n")
    sweep = plan("tiny", "train", ["train.lr=1e-3,3e-3", "train.p_unroll=0,1"], tiny(tiny_zoo), out, None, False)
    ranked = summarize(sweep)["trials"]
    assert (ranked[0]["run"], ranked[0]["best"], ranked[0]["best_step"]) == (str(last), 0.99, 3)


def test_ray_pbt_exploit_restores_a_better_trial_and_patches_the_running_loop(tiny_zoo, ray_local, tmp_path):
    summary = run_sweep("tiny", "train", ["train.lr=1e-3,3e-3"], tiny(tiny_zoo, "train.steps=4", "train.val_every=2"),
                        tmp_path / "pbt", pbt=True)
    # synchronous PBT at the first validation (step 2): the worse trial (the first, on a tie) clones the better
    exploited = [t for t in summary["trials"] if t["exploits"]]
    assert len(exploited) == 1 and len(exploited[0]["exploits"]) == 1  # the last validation's exploit is ignored
    t = exploited[0]
    run, (ex,) = Path(t["run"]), t["exploits"]
    donor = tmp_path / "pbt" / ex["from"]
    assert ex["step"] == 2 and donor != run and set(ex["set"]) == {"train.lr"}
    # restored: the run's rows up to the exploit are the donor's own
    strip = lambda r: {k: v for k, v in r.items() if k != "steps_per_s"}  # noqa: E731
    mine, theirs = read_jsonl(run / "metrics.jsonl"), read_jsonl(donor / "metrics.jsonl")
    assert [strip(r) for r in mine[:2]] == [strip(r) for r in theirs[:2]]
    # patched: one live patch with the explored value, applied at step 2, its id on every later row
    (event,) = read_jsonl(run / "patches" / "history.jsonl")
    assert (event["event"], event["step"], event["key"], event["new"], event["request"]) == (
        "patch", 2, "train.lr", ex["set"]["train.lr"], ex["request"])
    assert [r["patch_id"] for r in mine] == [0, 0, event["id"], event["id"]]
    final = from_yaml(load_checkpoint(run / "final.pt")["synth"]["config"], "final.pt")
    assert final.train.lr == ex["set"]["train.lr"] == t["end"]["train.lr"]
    assert 0.0 < final.train.lr <= 0.1


def test_ray_zoo_tasks_match_the_local_zoo_bit_for_bit(ray_local, tmp_path):
    local, remote = tmp_path / "local", tmp_path / "ray"
    build_zoo(local, [TINY_ARCH], "digits", list(range(4)), Recipe(epochs=1))
    args = ["zoo", "--out", str(remote), "--arch", TINY_ARCH, "--seeds", "0:4", "--epochs", "1", "--ray"]
    result = runner.invoke(app, args)  # 2 CPUs: two tasks of 2 seeds; locally one chunk of 4
    assert result.exit_code == 0, result.output
    key = lambda r: (r["seed"], r["epoch"])  # noqa: E731
    rows = sorted(read_manifest(local), key=key)
    assert rows == sorted(read_manifest(remote), key=key) and len(rows) == 8
    for r in rows:  # every tensor bit for bit (file bytes differ: safetensors orders metadata by a hash seed)
        a, b = load_file(local / r["path"]), load_file(remote / r["path"])
        assert a.keys() == b.keys() and all(a[k].numpy().tobytes() == b[k].numpy().tobytes() for k in a)
        assert read_metadata(local / r["path"]) == read_metadata(remote / r["path"])
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "trained 0 runs, skipped 4 finished" in again.output
    assert len(read_manifest(remote)) == 8


def test_ray_grpo_sweep_starts_every_trial_from_the_model(tiny_zoo, tiny_run, ray_local, tmp_path):
    summary = run_sweep("tiny", "grpo", ["grpo.sigma=0.01,0.03"], tiny(tiny_zoo), tmp_path / "grpo", tiny_run)
    assert summary["metric"] == "heldout_acc" and len(summary["trials"]) == 2
    for t in summary["trials"]:
        run = Path(t["run"])
        assert from_yaml((run / "config.yaml").read_text(), "config.yaml").grpo.sigma == t["start"]["grpo.sigma"]
        rows = val_rows(run, "heldout_acc")
        assert [r["step"] for r in rows] == [0, 2, 3]  # the model's own score, then every grpo.eval_every=2
        assert t["best"] == max(r["heldout_acc"] for r in rows) and t["final"] == rows[-1]["heldout_acc"]
