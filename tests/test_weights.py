"""Weight files: metadata round trip, plain-PyTorch compatibility, validation errors, atomic writes, `inspect`."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from typer.testing import CliRunner

from synthnet.cli import app
from synthnet.data import load_dataset
from synthnet.errors import SynthNetError
from synthnet.scoring import evaluate
from synthnet.targets import init_state, parse_spec
from synthnet.weights import load_weights, save_weights

ARCH = "mlp:64-32-10"
runner = CliRunner()


def plain_mlp() -> nn.Sequential:
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def cli(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert all(f in lines[0] for f in fragments), lines[0]
    assert "Traceback" not in result.output


def test_round_trip_with_metadata(tmp_path):
    path = tmp_path / "w.safetensors"
    state = init_state(ARCH, 3)
    save_weights(path, state, parse_spec(ARCH), dataset="digits", seed=3, epoch=5, init="default",
                 metrics={"val_acc": 0.5}, note=None)
    got, spec, meta = load_weights(path)
    assert spec == parse_spec(ARCH)
    assert list(got) == list(state) and all(torch.equal(got[k], state[k]) for k in state)
    assert meta == {"arch": ARCH, "dataset": "digits", "seed": 3, "epoch": 5, "init": "default",
                    "metrics": {"val_acc": 0.5}}
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata()["synthnet.arch"] == ARCH


@pytest.mark.parametrize("scheme", ["default", "xavier_uniform"])
def test_init_file_loads_into_plain_torch(tmp_path, scheme):
    path = tmp_path / "rand.safetensors"
    result = cli("init", "--arch", ARCH, "--seed", 7, "-o", path, "--init", scheme)
    assert result.exit_code == 0, result.output
    model = plain_mlp()
    model.load_state_dict(load_file(path), strict=True)
    want = init_state(ARCH, 7, scheme)
    assert all(torch.equal(model.state_dict()[k], want[k]) for k in want)
    meta = load_weights(path)[2]
    assert (meta["seed"], meta["init"], meta["epoch"]) == (7, scheme, 0)


def test_cnn_init_file_loads_into_plain_torch(tmp_path):
    path = tmp_path / "rand.safetensors"
    assert cli("init", "--arch", "cnn:1x8x8-4-10", "--seed", 1, "-o", path).exit_code == 0
    model = nn.Sequential(nn.Unflatten(1, (1, 8, 8)), nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
    model.load_state_dict(load_file(path), strict=True)


def test_init_bad_arch_is_one_line(tmp_path):
    assert_one_line_error(cli("init", "--arch", "mlp:64", "-o", tmp_path / "x.safetensors"), "grammar:")


def test_plain_state_dict_needs_arch(tmp_path):
    path = tmp_path / "plain.safetensors"
    torch.manual_seed(0)
    state = plain_mlp().state_dict()
    save_file(state, path)
    with pytest.raises(SynthNetError) as exc:
        load_weights(path)
    assert str(exc.value) == f"{path}: no synthnet.arch metadata; pass --arch (e.g. --arch mlp:64-32-10)"
    got, spec, meta = load_weights(path, ARCH)
    assert str(spec) == ARCH and meta == {}
    assert all(torch.equal(got[k], state[k]) for k in state)
    assert cli("inspect", path, "--arch", ARCH).exit_code == 0
    assert_one_line_error(cli("inspect", path), "no synthnet.arch metadata", "--arch")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_low_precision_upcast(tmp_path, dtype):
    path = tmp_path / "half.safetensors"
    state = {k: v.to(dtype) for k, v in init_state(ARCH, 0).items()}
    save_file(state, path)
    got = load_weights(path, ARCH)[0]
    assert all(v.dtype == torch.float32 for v in got.values())
    assert all(torch.equal(got[k], state[k].float()) for k in state)
    result = cli("inspect", path, "--arch", ARCH)
    assert result.exit_code == 0, result.output
    rows = [line for line in result.stdout.splitlines() if ".weight " in line or ".bias " in line]
    assert len(rows) == 4 and all(f" {str(dtype)[6:]} " in row for row in rows)


def broken(kind: str) -> tuple[dict[str, torch.Tensor], str]:
    """A state dict for ARCH with one defect, and the message load_weights must give (after '<path>: ')."""
    s = init_state(ARCH, 0)
    if kind == "missing":
        del s["2.bias"]
        return s, f"does not match arch {ARCH}: missing keys ['2.bias'], unexpected keys []"
    if kind == "extra":
        s["4.weight"] = torch.zeros(10, 10)
        return s, f"does not match arch {ARCH}: missing keys [], unexpected keys ['4.weight']"
    if kind == "shape":
        s["0.weight"] = torch.zeros(32, 63)
        return s, f"tensor 0.weight has shape (32, 63), arch {ARCH} needs (32, 64)"
    if kind == "int":
        s["2.bias"] = torch.zeros(10, dtype=torch.int64)
        return s, "tensor 2.bias has dtype torch.int64; accepted: float32, float64, float16, bfloat16"
    if kind == "nan":
        s["0.weight"][3, 4] = float("nan")
        return s, "tensor 0.weight contains NaN or Inf"
    s["2.bias"][1] = float("-inf")
    return s, "tensor 2.bias contains NaN or Inf"


@pytest.mark.parametrize("kind", ["missing", "extra", "shape", "int", "nan", "inf"])
def test_invalid_tensors(tmp_path, kind):
    path = tmp_path / "bad.safetensors"
    state, msg = broken(kind)
    save_file(state, path, metadata={"synthnet.arch": ARCH})
    with pytest.raises(SynthNetError) as exc:
        load_weights(path)
    assert str(exc.value) == f"{path}: {msg}"


def test_a_non_finite_value_past_the_first_chunk_stops_the_write(tmp_path):
    """save_weights checks big tensors (a zoo's pack) in chunks of 2^24 values: a NaN in the last one still counts."""
    big = torch.zeros((1 << 24) + 1)
    big[-1] = float("nan")
    with pytest.raises(SynthNetError, match="tensor big would contain NaN or Inf"):
        save_weights(tmp_path / "w.safetensors", {"big": big}, ARCH)
    assert not (tmp_path / "w.safetensors").exists()

def write_truncated(path: Path) -> None:
    save_weights(path, init_state(ARCH, 0), ARCH)
    path.write_bytes(path.read_bytes()[:-100])


@pytest.mark.parametrize("content", ["truncated", "text", "empty"])
def test_unreadable_file(tmp_path, content):
    path = tmp_path / "bad.safetensors"
    if content == "truncated":
        write_truncated(path)
    else:
        path.write_bytes(b"this is not a safetensors file" if content == "text" else b"")
    with pytest.raises(SynthNetError) as exc:
        load_weights(path)
    msg = str(exc.value)
    assert msg.startswith(f"{path}: not a readable safetensors file (") and "\n" not in msg


def test_missing_file(tmp_path):
    with pytest.raises(SynthNetError) as exc:
        load_weights(tmp_path / "none.safetensors")
    assert str(exc.value) == f"{tmp_path / 'none.safetensors'}: no such file"


def test_inspect_errors(tmp_path):
    trunc, nan, good = tmp_path / "trunc.safetensors", tmp_path / "nan.safetensors", tmp_path / "good.safetensors"
    write_truncated(trunc)
    save_file(broken("nan")[0], nan, metadata={"synthnet.arch": ARCH})
    save_weights(good, init_state(ARCH, 0), ARCH)
    assert_one_line_error(cli("inspect", trunc), str(trunc), "not a readable safetensors file")
    assert_one_line_error(cli("inspect", nan), "tensor 0.weight contains NaN or Inf")
    assert_one_line_error(cli("inspect", good, "--arch", "mlp:64-16-10"),
                          "tensor 0.weight has shape (32, 64), arch mlp:64-16-10 needs (16, 64)")
    cnn = tmp_path / "cnn.safetensors"
    save_weights(cnn, init_state("cnn:1x28x28-4-10", 0), "cnn:1x28x28-4-10")
    assert_one_line_error(cli("inspect", cnn, "--dataset", "digits"), "takes 784 features, digits has 64")


@pytest.mark.slow
def test_inspect_error_from_installed_command(tmp_path):
    path = tmp_path / "nan.safetensors"
    save_file(broken("nan")[0], path, metadata={"synthnet.arch": ARCH})
    p = subprocess.run([Path(sys.executable).parent / "synthnet", "inspect", path], capture_output=True, text=True)
    assert p.returncode == 2
    assert p.stderr == f"error: {path}: tensor 0.weight contains NaN or Inf\n"


def test_inspect_table_and_dataset(tmp_path):
    path = tmp_path / "w.safetensors"
    state = init_state(ARCH, 5)
    save_weights(path, state, ARCH, seed=5)
    result = cli("inspect", path, "--dataset", "digits")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert f"arch: {ARCH}" in lines and "seed: 5" in lines
    for key, v in state.items():
        row = next(line for line in lines if f" {key} " in line)
        assert "x".join(map(str, v.shape)) in row and f"{v.mean().item():.4f}" in row
    data = load_dataset("digits")
    for split in ("train", "val", "test"):
        s = evaluate(parse_spec(ARCH), {k: v[None] for k, v in state.items()}, *data.split(split))
        row = next(line for line in lines if f" {split} " in line)
        assert f"{s.acc.item():.4f}" in row and f"{s.loss.item():.4f}" in row


WRITER = """
import sys, time, torch
import synthnet.weights as w
from synthnet.targets import parse_spec
path, arch, moment = sys.argv[1:]
if moment == "after":  # every byte is in the temp file, but the write has not returned yet (no rename)
    real = w.save_file
    def save_then_hang(*args, **kwargs):
        real(*args, **kwargs)
        print("written", flush=True)
        time.sleep(600)
    w.save_file = save_then_hang
spec = parse_spec(arch)
w.save_weights(path, {k: torch.full(s, 0.5) for k, s in spec.shapes().items()}, spec)
"""


@pytest.mark.slow
@pytest.mark.parametrize("moment,existing", [("during", False), ("after", True)])
def test_killed_write_leaves_no_partial_file(tmp_path, moment, existing):
    """SIGKILL inside save_weights: no file under the final name, or the older one byte-identical."""
    path = tmp_path / "w.safetensors"
    if existing:
        save_weights(path, init_state(ARCH, 0), ARCH)
    before = path.read_bytes() if existing else None
    arch = "mlp:8192-8192-10" if moment == "during" else ARCH  # 268 MB: serialising it takes a good part of a second
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), arch, moment], stdout=subprocess.PIPE, text=True)
    if moment == "after":
        assert proc.stdout.readline() == "written\n"
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(f".{path.name}.*.tmp")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.001)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL  # killed inside atomic_write, before it could finish
    proc.stdout.close()
    leftovers = list(tmp_path.glob(f".{path.name}.*.tmp"))
    assert len(leftovers) == 1
    if moment == "after":
        assert leftovers[0].stat().st_size > 4 * parse_spec(arch).n_params()
    leftovers[0].unlink()
    if existing:
        assert path.read_bytes() == before
    else:
        assert not path.exists()


def test_a_bad_arch_in_a_files_metadata_names_the_file(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file(init_state(parse_spec("mlp:64-32-10"), 0), str(path), metadata={"synthnet.arch": "mlp:64-x-10"})
    with pytest.raises(SynthNetError, match=rf"^{path}: its synthnet.arch metadata: "):
        load_weights(path)
