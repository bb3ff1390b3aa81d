"""Live patches: request validation, apply / ramp / rollback, malformed requests, exact resume, self-tuning
rules, and a loop running in a thread patched and rolled back while it runs."""

import dataclasses
import json
import threading
import time
from pathlib import Path

import pytest

from synthnet.config import CHOICES, KNOBS, LIVE, Config, compose, presets, to_yaml
from synthnet.errors import SynthNetError
from synthnet.patches import LivePatches, Rule, check_value, list_patches, parse_rule, request_patch, request_rollback
from synthnet.runlog import RunLog, load_checkpoint, save_checkpoint

LIVE_EXPECTED = {
    *(f"reward.{k}" for k in ("acc_weight", "gain_weight", "penalty_weight", "step_cost", "ce_weight", "norm_limit")),
    *(f"grpo.{k}" for k in ("group", "inits", "k_max", "k_dist", "kl_beta", "eps_low", "eps_high", "lr", "sigma",
                            "aux_weight", "label_weight", "label_smoothing", "eval_every", "adv_clip", "grad_clip")),
    *(f"train.{k}" for k in ("lr", "grad_clip", "p_unroll", "func_weight", "label_weight", "label_smoothing",
                             "val_every", "perturb_min", "perturb_max")),
}


@pytest.fixture
def run(tmp_path) -> Path:
    """A run directory as the loops leave it (config.yaml written at start)."""
    (tmp_path / "config.yaml").write_text(to_yaml(compose()))
    return tmp_path


def fields(obj, prefix="") -> list[str]:
    return [name for f in dataclasses.fields(obj) for name in
            (fields(getattr(obj, f.name), f"{prefix}{f.name}.") if dataclasses.is_dataclass(getattr(obj, f.name))
             else [prefix + f.name])]


def all_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_patch_knob_table_covers_every_config_field_and_presets_fit_the_bounds():
    assert sorted(KNOBS) == sorted(fields(Config()))
    assert set(LIVE) == LIVE_EXPECTED
    for key in LIVE:
        knob = KNOBS[key]
        assert (knob.low is None) == (key in CHOICES) and (key in CHOICES or knob.low < knob.high)
    for preset in presets():
        cfg = compose(preset)
        for key in LIVE:
            section, name = key.split(".")
            value = getattr(getattr(cfg, section), name)
            assert check_value(key, value) == value, (preset, key)


@pytest.mark.parametrize("assignments, ramp, fragments", [
    (["grpo.lrr=1e-4"], 0, ["unknown config key 'grpo.lrr'", "grpo.lr"]),
    (["grpo.lr=1e-4", "model.dim=64"], 0, ["model.dim is restart-only"]),
    (["grpo.lr=0.5"], 0, ["grpo.lr='0.5'", "a float in [0, 0.01]"]),
    (["grpo.lr=nan"], 0, ["a float in [0, 0.01]"]),
    (["grpo.group=abc"], 0, ["grpo.group='abc'", "an int in [2, 256]"]),
    (["grpo.group=8.5"], 0, ["an int in [2, 256]"]),
    (["grpo.group=1"], 0, ["an int in [2, 256]"]),
    (["grpo.k_dist=poisson"], 0, ["one of uniform, fixed"]),
    (["grpo.k_dist=fixed"], 10, ["a ramp needs numeric keys", "grpo.k_dist"]),
    (["grpo.lr=1e-4"], -1, ["ramp must be a whole number"]),
    (["grpo.lr"], 0, ["not key=value"]),
    (["grpo.lr=1e-4", "grpo.lr=2e-4"], 0, ["grpo.lr is given twice"]),
    ([], 0, ["nothing to patch"]),
])
def test_patch_request_errors_name_the_key_and_write_nothing(run, assignments, ramp, fragments):
    before = all_files(run)
    with pytest.raises(SynthNetError) as exc:
        request_patch(run, assignments, ramp)
    msg = str(exc.value)
    assert "\n" not in msg and all(f in msg for f in fragments), msg
    assert all_files(run) == before and not (run / "patches").exists()


def test_patch_request_needs_a_run_directory(tmp_path):
    for call in (lambda: request_patch(tmp_path / "nope", ["grpo.lr=1e-4"]), lambda: request_rollback(tmp_path)):
        with pytest.raises(SynthNetError, match="not a run directory"):
            call()
    assert list(tmp_path.iterdir()) == []


def test_patch_apply_converts_values_assigns_increasing_ids_and_logs_history(run):
    cfg = compose()
    lp = LivePatches(run, cfg)
    assert lp.apply(0) == 0
    first = request_patch(run, ["grpo.lr=1e-4", "reward.acc_weight=0.8"])
    assert first["set"] == {"grpo.lr": 1e-4, "reward.acc_weight": 0.8}
    assert cfg.grpo.lr == compose().grpo.lr  # nothing changes before the next step boundary
    assert lp.apply(1) == 1 and (cfg.grpo.lr, cfg.reward.acc_weight) == (1e-4, 0.8)
    request_patch(run, ["grpo.group=16"])
    assert lp.apply(2) == 2 and cfg.grpo.group == 16 and isinstance(cfg.grpo.group, int)
    assert lp.apply(3) == 2
    assert [(r["id"], r["step"], r["key"], r["old"], r["new"], r["status"], r["source"]) for r in list_patches(run)] \
        == [(1, 1, "grpo.lr", compose().grpo.lr, 1e-4, "applied", "user"),
            (1, 1, "reward.acc_weight", compose().reward.acc_weight, 0.8, "applied", "user"),
            (2, 2, "grpo.group", compose().grpo.group, 16, "applied", "user")]
    assert not list((run / "patches" / "inbox").iterdir()) and len(list((run / "patches" / "done").iterdir())) == 2


def test_patch_ramp_moves_linearly_and_ends_exactly_at_the_target(run):
    cfg = compose()
    lp = LivePatches(run, cfg)
    lr0, group0 = cfg.grpo.lr, cfg.grpo.group
    request_patch(run, ["grpo.lr=1e-3", "grpo.group=16"], ramp=3)
    seen = []
    for step in range(5):
        assert lp.apply(step) == 1
        seen.append((cfg.grpo.lr, cfg.grpo.group))
        if step == 1:
            assert {r["status"] for r in list_patches(run)} == {"ramping"}
    for i, (lr, group) in enumerate(seen[:3], 1):
        assert lr == pytest.approx(lr0 + (1e-3 - lr0) * i / 3, rel=1e-12)
        assert group == round(group0 + (16 - group0) * i / 3) and isinstance(group, int)
    assert seen[2] == seen[3] == seen[4] == (1e-3, 16)  # exact, then held
    assert {r["status"] for r in list_patches(run)} == {"applied"}


def test_patch_rollback_restores_previous_values_and_ends_the_ramp(run):
    cfg = compose()
    lr0, weight0 = cfg.grpo.lr, cfg.reward.acc_weight
    lp = LivePatches(run, cfg)
    request_patch(run, ["grpo.lr=1e-4"])
    lp.apply(0)
    request_patch(run, ["grpo.lr=1e-3", "reward.acc_weight=0.5"], ramp=10)
    lp.apply(1)
    lp.apply(2)
    mid = cfg.grpo.lr
    assert 1e-4 < mid < 1e-3
    request_rollback(run)
    assert lp.apply(3) == 1 and (cfg.grpo.lr, cfg.reward.acc_weight) == (1e-4, weight0)
    assert lp.apply(4) == 1 and cfg.grpo.lr == 1e-4  # the ramp does not resume
    request_rollback(run)
    assert lp.apply(5) == 0 and cfg.grpo.lr == lr0
    request_rollback(run)
    assert lp.apply(6) == 0 and cfg.grpo.lr == lr0
    rows = list_patches(run)
    assert [r["status"] for r in rows] == ["rolled_back", "rolled_back", "rolled_back", "refused"]
    assert rows[-1]["reason"] == "nothing to roll back"


def test_patch_garbage_in_the_inbox_is_refused_without_touching_the_config(run):
    cfg = compose()
    lp = LivePatches(run, cfg)
    inbox = run / "patches" / "inbox"
    bad = {"a-binary.json": b"\xff\x00garbage", "b-list.json": b"[1, 2]", "c-notes.txt": b"grpo.lr=1e-4",
           "d-restart.json": json.dumps({"kind": "patch", "set": {"model.dim": 8}}).encode(),
           "e-range.json": json.dumps({"kind": "patch", "set": {"grpo.lr": 1e-4, "grpo.sigma": 5.0}}).encode(),
           "f-kind.json": json.dumps({"kind": "explode"}).encode(),
           "g-ramp.json": json.dumps({"kind": "patch", "set": {"grpo.lr": 1e-4}, "ramp": "x"}).encode()}
    for name, data in bad.items():
        (inbox / name).write_bytes(data)
    (inbox / "h-dir").mkdir()
    before = to_yaml(cfg)
    assert lp.apply(0) == 0
    assert to_yaml(cfg) == before
    assert sorted(p.name for p in (run / "patches" / "refused").iterdir()) == [*sorted(bad), "h-dir"]
    rows = list_patches(run)
    assert [r["status"] for r in rows] == ["refused"] * 8
    assert "model.dim is restart-only" in rows[3]["reason"] and "grpo.sigma" in rows[4]["reason"]
    request_patch(run, ["grpo.lr=1e-4"])
    assert lp.apply(1) == 1 and cfg.grpo.lr == 1e-4  # the run goes on taking patches


def drive(run: Path, lp: LivePatches, cfg, steps, submit: dict, trace: list, snapshot_at=None) -> dict | None:
    """A simulated loop: requests due at a step are submitted just before its boundary; returns the state a
    checkpoint taken after `snapshot_at`'s step would hold."""
    snapshot = None
    for step in steps:
        submit.pop(step, lambda: None)()
        trace.append((step, lp.apply(step), cfg.grpo.lr, cfg.grpo.group, cfg.reward.acc_weight))
        if step == snapshot_at:
            save_checkpoint(run / "latest.pt", {"patches": lp.state_dict()})
            snapshot = load_checkpoint(run / "latest.pt")["patches"]  # torch.load(weights_only=True)
    return snapshot


def submissions(run: Path) -> dict:
    return {1: lambda: request_patch(run, ["grpo.lr=1e-3"], ramp=6),
            5: lambda: (request_patch(run, ["grpo.group=16", "reward.acc_weight=0.5"], ramp=2),
                        (run / "patches" / "inbox" / "x.json").write_text('{"kind": "patch", "set": {"a.b": 1}}')),
            8: lambda: request_rollback(run)}


def test_patch_state_round_trip_mid_ramp_resumes_identically(tmp_path):
    runs = [tmp_path / "a", tmp_path / "b"]
    for r in runs:
        r.mkdir()
        (r / "config.yaml").write_text(to_yaml(compose()))
    straight = []
    cfg = compose()
    drive(runs[0], LivePatches(runs[0], cfg), cfg, range(12), submissions(runs[0]), straight)
    # killed after step 6 (a patch and a refusal consumed after the checkpoint of step 3), resumed from step 4
    resumed, cfg = [], compose()
    due = submissions(runs[1])
    state = drive(runs[1], LivePatches(runs[1], cfg), cfg, range(7), due, resumed, snapshot_at=3)
    assert state["ramps"], "the checkpoint must be taken mid-ramp"
    cfg, resumed = compose(), resumed[:4]
    patches = LivePatches(runs[1], cfg, state=state)
    assert cfg.grpo.lr == resumed[-1][2] != compose().grpo.lr  # restored before the loop reads cfg
    drive(runs[1], patches, cfg, range(4, 12), due, resumed)
    assert resumed == straight
    strip = [[{k: v for k, v in r.items() if k != "request"} for r in list_patches(d)] for d in runs]
    assert strip[0] == strip[1]
    assert [r["status"] for r in strip[0]] == ["applied", "rolled_back", "rolled_back", "refused"]


def test_patch_rule_fires_respects_cooldown_and_bounds(run):
    rule = Rule("sigma_up", "zero_spread_groups", ">", 0.5, "grpo.sigma", 1.5, 3)
    cfg = compose(overrides=["grpo.sigma=0.5"])
    lp = LivePatches(run, cfg, [rule])
    fired = []
    for step, spread in [(1, 0.9), (2, 0.9), (3, 0.9), (4, 0.9), (5, 0.1), (8, 0.9), (9, None)]:
        lp.observe(step, {} if spread is None else {"zero_spread_groups": spread})
        fired.append((lp.apply(step), cfg.grpo.sigma))
    top = KNOBS["grpo.sigma"].high
    assert fired == [(1, 0.75), (1, 0.75), (1, 0.75), (2, top), (2, top), (2, top), (2, top)]
    rows = list_patches(run)
    assert [(r["step"], r["old"], r["new"], r["source"]) for r in rows] == [(1, 0.5, 0.75, "sigma_up"),
                                                                          (4, 0.75, top, "sigma_up")]


def test_patch_rules_are_off_unless_given_and_parse_from_the_registry_or_written_out(run):
    cfg = compose()
    lp = LivePatches(run, cfg)
    lp.observe(1, {"zero_spread_groups": 1.0, "kl": 10.0})
    assert lp.apply(1) == 0 and to_yaml(cfg) == to_yaml(compose())
    rule = parse_rule("k_up:heldout_acc<0.2:grpo.k_max*2.5:0")
    assert rule == Rule("k_up", "heldout_acc", "<", 0.2, "grpo.k_max", 2.5, 0)
    assert parse_rule("lr_down_on_kl").key == "grpo.lr"
    lp = LivePatches(run, cfg, [rule])
    for step in range(3):
        lp.observe(step, {"heldout_acc": 0.1})
    assert cfg.grpo.k_max == KNOBS["grpo.k_max"].high and isinstance(cfg.grpo.k_max, int)
    for text in ("nonsense", "x:m>1:model.dim*2:1", "x:m>1:grpo.k_dist*2:1", "x:m>1:grpo.lr*0:1"):
        with pytest.raises(SynthNetError, match="rule"):
            parse_rule(text)
    state = lp.state_dict()
    with pytest.raises(SynthNetError, match="same or none"):
        LivePatches(run, compose(), [parse_rule("lr_down_on_kl")], state=state)
    cfg = compose()
    assert LivePatches(run, cfg, state=state).rules == [rule] and cfg.grpo.k_max == KNOBS["grpo.k_max"].high


def read_rows(path: Path) -> list[dict]:
    text = path.read_text() if path.is_file() else ""
    return [json.loads(line) for line in text.split("\n")[:-1]]  # the last piece may be a half-written row


def wait_for(cond, what: str, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.005)


def test_patch_a_running_loop_sees_patches_and_rollback_at_step_boundaries(tmp_path):
    cfg, stop, errors = compose(), threading.Event(), []
    log = RunLog(tmp_path, cfg)
    defaults = (cfg.grpo.lr, cfg.reward.acc_weight)

    def loop():
        try:
            patches, step = LivePatches(tmp_path, cfg), 0
            while not stop.is_set() and step < 5000:
                patch_id = patches.apply(step)
                time.sleep(0.002)  # the step's work reads cfg
                step += 1
                log.log(step, {"patch_id": patch_id, "lr": cfg.grpo.lr, "acc_weight": cfg.reward.acc_weight})
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    thread = threading.Thread(target=loop)
    thread.start()
    try:
        metrics = tmp_path / "metrics.jsonl"
        wait_for(lambda: len(read_rows(metrics)) >= 3, "the loop to start")
        request_patch(tmp_path, ["grpo.lr=1e-4", "reward.acc_weight=0.8"])
        wait_for(lambda: any(r["patch_id"] == 1 for r in read_rows(metrics)), "the patch")
        with pytest.raises(SynthNetError, match="restart-only"):
            request_patch(tmp_path, ["grpo.lr=1e-3", "model.depth=2"])
        request_rollback(tmp_path)
        wait_for(lambda: read_rows(metrics)[-1]["patch_id"] == 0 and
                 any(r["patch_id"] == 1 for r in read_rows(metrics)), "the rollback")
    finally:
        stop.set()
        thread.join()
        log.close()
    assert not errors
    rows = read_rows(metrics)
    ids = [r["patch_id"] for r in rows]
    first, last = ids.index(1), len(ids) - ids[::-1].index(1) - 1
    assert first > 0 and set(ids[first:last + 1]) == {1} and set(ids[:first]) == set(ids[last + 1:]) == {0}
    assert all((r["lr"], r["acc_weight"]) == ((1e-4, 0.8) if r["patch_id"] else defaults) for r in rows)
    assert [r["step"] for r in rows] == list(range(1, len(rows) + 1))
    assert [(r["key"], r["status"]) for r in list_patches(tmp_path)] == [("grpo.lr", "rolled_back"),
                                                                          ("reward.acc_weight", "rolled_back")]
