"""Supervised stage: one-step smoke, the label loss, exact resume, synthesize (weights in, weights out, no data)."""

import json
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from conftest import TINY_ARCH, tiny_cfg
from synthnet.data import load_dataset
from synthnet.denoising import denoise_loss
from synthnet.errors import SynthNetError
from synthnet.synthesize import epoch_level, level_epoch, load_synthesizer, schedule
from synthnet.targets import build_module, init_state, parse_spec
from synthnet.train import train
from synthnet.weights import save_weights
from synthnet.zoo import Recipe, build_zoo

VOLATILE = {"steps_per_s"}


def rows(run):
    out = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        out.append({k: v for k, v in r.items() if k not in VOLATILE})
    return out


def test_levels_are_a_noise_scale_not_epochs():
    lev = epoch_level(torch.arange(31), 30)
    assert lev[0] == 1.0 and abs(lev[-1].item()) < 1e-6 and (lev[1:] < lev[:-1]).all()
    torch.testing.assert_close(level_epoch(lev, 30), torch.arange(31).float(), atol=1e-3, rtol=0)
    torch.testing.assert_close(schedule(4), torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0]))


@pytest.mark.parametrize("model", [["model.name=set"], ["model.name=perceiver", "model.experts=2"],
                                   ["model.name=flat-mlp", "model.predict=delta"]])
def test_one_step_trains_and_writes_the_run_directory(tiny_zoo, tmp_path, model):
    cfg = tiny_cfg(tiny_zoo, "train.steps=1", "train.val_every=1", "train.p_unroll=0", *model)
    synth = train(cfg, tmp_path)
    for name in ("config.yaml", "metrics.jsonl", "best.pt", "latest.pt", "final.pt"):
        assert (tmp_path / name).is_file(), name
    assert list((tmp_path / "tb").iterdir()), "no TensorBoard event file"
    (row,) = rows(tmp_path)
    assert row["step"] == 1 and torch.isfinite(torch.tensor(row["loss"]))
    assert 0.0 <= row["val_acc"] <= 1.0 and row["val_best_k"] in (1, 2)
    if "model.experts=2" in model:
        assert abs(row["expert_util/0"] + row["expert_util/1"] - 1) < 1e-6
    loaded = load_synthesizer(tmp_path, "final")
    for a, b in zip(loaded.denoiser.state_dict().values(), synth.denoiser.state_dict().values()):
        assert torch.equal(a, b)


def test_label_loss_is_the_train_cross_entropy_of_final_states_only(tiny_run):
    """label_weight adds weight x the (label-smoothed) cross-entropy, on train labels, of the nets decoded from the
    rows marked final, averaged over all rows (the others count 0); checked against each net rebuilt as a plain
    torch module."""
    synth = load_synthesizer(tiny_run)
    spec = parse_spec(TINY_ARCH)
    data = load_dataset("digits")
    x, y = data.x_train[:40], data.y_train[:40]
    pred = synth.encode(spec, {k: torch.stack([init_state(spec, s)[k] for s in range(3)]) for k in init_state(spec, 0)})
    tgt = pred + 0.1 * torch.randn(pred.shape, generator=torch.Generator().manual_seed(0))
    final = torch.tensor([True, False, True])
    cfg = synth.cfg.train
    cfg.label_weight = 0.0
    base, _ = denoise_loss(synth, spec, pred, tgt, x, y, final, cfg)
    cfg.label_weight, cfg.label_smoothing = 2.0, 0.1
    with_labels, parts = denoise_loss(synth, spec, pred, tgt, x, y, final, cfg)
    nets = synth.decode(spec, pred)
    ce = []
    for row in (0, 2):
        module = build_module(spec)
        module.load_state_dict({k: v[row] for k, v in nets.items()})
        ce.append(torch.nn.functional.cross_entropy(module(x), y, label_smoothing=0.1))
    expected = torch.stack(ce).sum() / 3  # a mean over all 3 rows, the non-final one counting 0
    torch.testing.assert_close(with_labels - base, 2.0 * expected, rtol=1e-4, atol=1e-5)
    none_final, parts = denoise_loss(synth, spec, pred, tgt, x, y, torch.zeros(3, dtype=torch.bool), cfg)
    assert torch.equal(none_final, base) and parts["label_ce"] == 0


def test_slot_weight_scales_the_token_mse_of_bias_and_outgoing_slots_only(tiny_run):
    """An error in a bias or outgoing-weight slot costs slot_weight x what it costs in an incoming slot; decoded
    back to the net, those are the first Linear's bias and the output Linear's weight."""
    synth = load_synthesizer(tiny_run)
    spec = parse_spec(TINY_ARCH)
    nets = {k: v[None] for k, v in init_state(spec, 0).items()}
    cfg = synth.cfg.train
    cfg.func_weight = cfg.label_weight = 0.0
    x, y, final = torch.zeros(1, spec.n_features), torch.zeros(1, dtype=torch.long), torch.ones(1, dtype=torch.bool)
    costs = {}
    for name in nets:
        moved = {k: v + 0.1 * (k == name) for k, v in nets.items()}
        pred, tgt = synth.encode(spec, moved), synth.encode(spec, nets)
        costs[name] = []
        for weight in (1.0, 10.0):
            cfg.slot_weight = weight
            costs[name].append(denoise_loss(synth, spec, pred, tgt, x, y, final, cfg)[0].item())
    ratios = {name: hi / lo for name, (lo, hi) in costs.items()}
    first_weight, first_bias, out_weight, out_bias = (f"{i}.{p}" for i in (0, 2) for p in ("weight", "bias"))
    assert ratios[first_weight] == pytest.approx(1.0)
    assert [ratios[first_bias], ratios[out_weight], ratios[out_bias]] == pytest.approx([10.0] * 3)


def test_resume_matches_an_uninterrupted_run(tiny_zoo, tmp_path):
    cfg = tiny_cfg(tiny_zoo, "train.steps=12", "train.val_every=4")
    straight, split = tmp_path / "straight", tmp_path / "split"
    train(cfg, straight)
    train(cfg, split, stop_after=6)  # stops after the step-4 checkpoint plus 2 more steps (lost, redone)
    assert not (split / "final.pt").is_file()
    train(cfg, split)
    assert rows(split) == rows(straight)
    a = load_synthesizer(straight, "final").denoiser.state_dict()
    b = load_synthesizer(split, "final").denoiser.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_checkpoint_from_another_version_is_a_one_line_error(tiny_run, tmp_path):
    """A saved config with a key this version lacks names the file and the key instead of an OmegaConf trace."""
    ckpt = torch.load(tiny_run / "best.pt", weights_only=True)
    ckpt["synth"]["config"] = ckpt["synth"]["config"].replace("grpo:\n", "grpo:\n  retired_knob: 1\n")
    torch.save(ckpt, tmp_path / "best.pt")
    with pytest.raises(SynthNetError, match=r"best\.pt: unknown config key 'grpo\.retired_knob'"):
        load_synthesizer(tmp_path)


@pytest.mark.slow
def test_synthesize_writes_plain_loadable_weights_for_any_width(tiny_run, tmp_path):
    spec = parse_spec("mlp:64-12-10")  # a width the tiny model never saw
    for seed in (1, 2):
        save_weights(tmp_path / "in" / f"s{seed}.safetensors", init_state(spec, seed), spec, seed=seed)
    plain = tmp_path / "plain.safetensors"
    from safetensors.torch import save_file
    save_file(init_state(spec, 3), str(plain))  # a plain state_dict: needs --arch
    cli = [sys.executable, "-m", "synthnet", "synthesize"]
    r = subprocess.run([*cli, str(tmp_path / "in"), "--model", str(tiny_run), "--out-dir", str(tmp_path / "out"),
                        "--steps", "2"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    for seed in (1, 2):
        module = build_module(spec)
        module.load_state_dict(load_file(tmp_path / "out" / f"s{seed}.safetensors"), strict=True)
    r = subprocess.run([*cli, str(plain), "--model", str(tiny_run), "-o", str(tmp_path / "p.safetensors")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "--arch" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([*cli, str(plain), "--model", str(tiny_run), "-o", str(tmp_path / "p.safetensors"),
                        "--arch", str(spec)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.mark.slow
def test_synthesize_never_opens_a_dataset(tiny_run, tmp_path):
    spec = parse_spec(TINY_ARCH)
    src = tmp_path / "init.safetensors"
    save_weights(src, init_state(spec, 5), spec)
    probe = f"""
import sys
opened = []
sys.addaudithook(lambda ev, args: opened.append(str(args[0])) if ev == "open" else None)
from synthnet.synthesize import synthesize_files
synthesize_files([{str(src)!r}], {str(tiny_run)!r}, 2, out={str(tmp_path / 'out.safetensors')!r})
data_modules = [m for m in sys.modules if m.startswith(("sklearn", "mnist1d", "synthnet.data"))]
data_files = [p for p in opened if "digits" in p or "idx" in p.lower() or p.endswith((".csv", ".gz", ".pkl"))]
print(data_modules, data_files)
assert not data_modules and not data_files
"""
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_train_takes_the_arch_of_a_single_arch_zoo_and_names_the_choices_of_a_mixed_one(tiny_zoo, tmp_path):
    """The tiny zoo holds only mlp:64-8-10, not the config's mlp:64-32-10: `synthnet train` takes it; with two archs
    held and the config's not among them, the error names both."""
    from typer.testing import CliRunner

    from synthnet.cli import app

    runner = CliRunner()
    r = runner.invoke(app, ["train", "--out", str(tmp_path / "run"), "--zoo", str(tiny_zoo), "--preset", "tiny",
                            "train.steps=2", "train.val_every=2"])
    assert r.exit_code == 0, r.output
    assert load_synthesizer(tmp_path / "run").cfg.data.arch == TINY_ARCH
    mixed = tmp_path / "mixed"
    shutil.copytree(tiny_zoo, mixed)
    build_zoo(mixed, ["mlp:64-4-10"], "digits", [0, 1], Recipe(epochs=3))
    r = runner.invoke(app, ["train", "--out", str(tmp_path / "run2"), "--zoo", str(mixed), "--preset", "tiny"])
    assert r.exit_code == 2 and "holds archs mlp:64-4-10, mlp:64-8-10; choose with data.arch=" in r.stderr


def test_synthesize_defaults_to_the_models_val_best_k(tiny_run, tmp_path):
    """best.pt records the K its validation chose; synthesize without steps uses it (here forced to each K in turn,
    so the default cannot pass by coincidence)."""
    from synthnet.runlog import load_checkpoint, save_checkpoint
    from synthnet.synthesize import synthesize_files

    best_row = max((r for r in rows(tiny_run) if "val_acc" in r), key=lambda r: r["val_acc"])
    assert load_synthesizer(tiny_run).best_k == best_row["val_best_k"]
    spec = parse_spec(TINY_ARCH)
    save_weights(tmp_path / "init.safetensors", init_state(spec, 5), spec, seed=5)
    for k in (1, 2, 3):
        run = tmp_path / f"k{k}"
        run.mkdir()
        ckpt = load_checkpoint(tiny_run / "best.pt")
        ckpt["synth"]["best_k"] = k
        save_checkpoint(run / "best.pt", ckpt)
        (row,) = synthesize_files([tmp_path / "init.safetensors"], run, out=tmp_path / f"out{k}.safetensors")
        assert row["steps"] == k
        expected = load_synthesizer(run).run(spec, {n: v[None] for n, v in init_state(spec, 5).items()}, k)[-1]
        got = load_file(tmp_path / f"out{k}.safetensors")
        assert all(torch.equal(got[n], expected[n][0]) for n in got)
