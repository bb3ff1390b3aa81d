"""Bad input through the real command (issue 23): one `error:` line on stderr, exit code 2, no traceback, no input
changed, no half-written or non-finite file. Each check runs `python -m synthnet` in a subprocess, as a user would."""

import errno
import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import synthnet
from synthnet.config import compose
from synthnet.runlog import save_checkpoint
from synthnet.synthesize import Synthesizer
from synthnet.targets import init_state, parse_spec
from synthnet.tokens import Normalizer
from synthnet.weights import save_weights, stack_states
from synthnet.zoo import Recipe, build_zoo, load_zoo

ARCH = "mlp:64-32-10"
SMALL = "mlp:64-8-10"
REPO = Path(__file__).resolve().parents[1]
SRC = Path(synthnet.__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(SRC), os.environ.get("PYTHONPATH")) if p)}


def synthnet_cmd(*args, cwd=None, env=ENV, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "synthnet", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300, **kwargs)


def assert_error(p: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exactly one `error:` line on stderr naming every fragment, exit code 2, no traceback anywhere."""
    assert "Traceback" not in p.stdout + p.stderr, p.stdout + p.stderr
    lines = p.stderr.splitlines()
    assert (p.returncode, len(lines)) == (2, 1) and lines[0].startswith("error: "), (p.returncode, p.stderr)
    assert all(f in lines[0] for f in fragments), lines[0]
    return lines[0]


def assert_ok(p: subprocess.CompletedProcess) -> None:
    assert p.returncode == 0 and "Traceback" not in p.stdout + p.stderr, p.stdout + p.stderr


def snapshot(root: Path) -> dict[Path, tuple[bytes, int]]:
    return {f: (f.read_bytes(), f.stat().st_mtime_ns) for f in sorted(root.rglob("*")) if f.is_file()}


def assert_nothing_written(before: dict[Path, tuple[bytes, int]], root: Path) -> None:
    """Every file as it was (bytes and mtime) and no file added: no output, no temp file."""
    assert snapshot(root) == before


def assert_all_finite(root: Path) -> None:
    for f in root.rglob("*.safetensors"):
        assert all(torch.isfinite(t).all() for t in load_file(f).values()), f


def write_idx_dir(root: Path, n_train: int, n_test: int = 4, top_label: int = 9) -> str:
    """An MNIST-format directory of 4x4 images (16 features), labels 0..9 and top_label last; returns idx:<root>."""
    root.mkdir()
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, size=(n, 4, 4), dtype=np.uint8)
        y = (np.arange(n) % 10).astype(np.uint8)
        y[-1] = top_label
        for kind, a, magic in (("images-idx3", x, 0x803), ("labels-idx1", y, 0x801)):
            head = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in a.shape)
            (root / f"{prefix}-{kind}-ubyte").write_bytes(head + a.tobytes())
    return f"idx:{root}"


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """A directory with two init files written by `synthnet init`: a.safetensors (ARCH) and small.safetensors."""
    root = tmp_path_factory.mktemp("inits")
    assert_ok(synthnet_cmd("init", "--arch", ARCH, "--seed", 1, "-o", root / "a.safetensors"))
    assert_ok(synthnet_cmd("init", "--arch", SMALL, "--seed", 2, "-o", root / "small.safetensors"))
    return root


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A run directory holding a real (untrained) synthesizer for SMALL, saved as the training loops save it."""
    spec = parse_spec(SMALL)
    normalizer = Normalizer.fit(spec, stack_states([init_state(spec, s) for s in range(4)]))
    synth = Synthesizer(compose("tiny", [f"data.arch={SMALL}"]), spec, normalizer)
    run = tmp_path_factory.mktemp("model")
    save_checkpoint(run / "best.pt", {"synth": synth.checkpoint()})
    return run


def copy_of(files: Path, tmp_path: Path, *names: str) -> list[Path]:
    out = []
    for name in names:
        shutil.copy2(files / name, tmp_path / name)
        out.append(tmp_path / name)
    return out


# 1: a wheel ships the presets

@pytest.mark.slow
def test_presets_ship_in_the_wheel(tmp_path):
    tree = tmp_path / "tree"  # build from a copy: setuptools writes build/ and *.egg-info beside the sources
    shutil.copytree(REPO / "src", tree / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, tree / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", tmp_path / "dist", tree],
                   check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("synthnet-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--no-index", "--target", tmp_path / "site", wheel], check=True,
                   capture_output=True, timeout=300)
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "PYTHONPATH": str(tmp_path / "site")}
    where = subprocess.run([sys.executable, "-c", "import synthnet; print(synthnet.__file__)"], env=env,
                           cwd=tmp_path, capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where).is_relative_to(tmp_path / "site"), where
    p = synthnet_cmd("config", "show", "tiny", env=env, cwd=tmp_path)
    assert_ok(p)
    assert "arch: mlp:64-32-10" in p.stdout


# 2: user strings are printed as given, never read as rich markup

@pytest.mark.parametrize("name", ["x[/]y.safetensors", "[red]z[/red] " + "w" * 90 + ".safetensors"])
def test_paths_and_metadata_print_as_given(tmp_path, name):
    path = tmp_path / name
    p = synthnet_cmd("init", "--arch", SMALL, "-o", path)
    assert_ok(p)
    assert f"wrote {path} ({SMALL}," in p.stdout  # on one line: a long path is not wrapped either
    save_weights(path, init_state(SMALL, 0), SMALL, note="[red]kept[/red] [/]")
    p = synthnet_cmd("inspect", path)
    assert_ok(p)
    assert "note: [red]kept[/red] [/]" in p.stdout.splitlines()


# 3: absurd widths, and an allocation that fails

@pytest.mark.parametrize("width", ["100000000", "2000000000", "100000000000000000000", "9" * 5000])
def test_absurd_width_is_one_line(tmp_path, width):
    spec = f"mlp:64-{width}-10"
    assert_error(synthnet_cmd("init", "--arch", spec, "-o", tmp_path / "x.safetensors"), spec,
                 "at most 100,000,000 parameters")
    assert not any(tmp_path.iterdir())


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="measures the address space in /proc")
def test_failed_allocation_is_one_line(tmp_path):
    """With 200 MB of address space to spare after start-up, a small init works and a 390 MB one (under the
    parameter cap) cannot allocate."""
    probe = subprocess.run([sys.executable, "-c", "import synthnet.cli, synthnet.targets, synthnet.weights; "
                            "print(open('/proc/self/status').read())"], env=ENV, capture_output=True, text=True)
    peak_kb = next(int(line.split()[1]) for line in probe.stdout.splitlines() if line.startswith("VmPeak:"))
    room = (peak_kb + 200 * 1024) * 1024

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (room, room))

    assert_ok(synthnet_cmd("init", "--arch", SMALL, "-o", tmp_path / "small.safetensors", preexec_fn=limit))
    before = snapshot(tmp_path)
    big = "mlp:64-1300000-10"
    assert_error(synthnet_cmd("init", "--arch", big, "-o", tmp_path / "big.safetensors", preexec_fn=limit),
                 f"arch {big}: cannot allocate its 97,500,010 parameters")
    assert_nothing_written(before, tmp_path)


# 4, 5, 6: datasets against the arch

@pytest.mark.slow
def test_idx_with_too_few_training_images(tmp_path, files):
    (init,) = copy_of(files, tmp_path, "small.safetensors")
    five, six = write_idx_dir(tmp_path / "five", 5), write_idx_dir(tmp_path / "six", 6)
    assert_ok(synthnet_cmd("init", "--arch", "mlp:16-4-10", "-o", init))
    before = snapshot(tmp_path)
    assert_error(synthnet_cmd("inspect", init, "--dataset", five), str(tmp_path / "five"), "5 training",
                 "at least 6 training images")
    assert_ok(synthnet_cmd("inspect", init, "--dataset", six))
    assert_nothing_written(before, tmp_path)


@pytest.mark.slow
def test_labels_beyond_the_arch_classes(tmp_path, files):
    five_classes, idx16 = tmp_path / "five.safetensors", tmp_path / "idx16.safetensors"
    assert_ok(synthnet_cmd("init", "--arch", "mlp:64-8-5", "-o", five_classes))
    assert_ok(synthnet_cmd("init", "--arch", "mlp:16-8-10", "-o", idx16))
    label_255 = write_idx_dir(tmp_path / "idx", 12, top_label=255)
    before = snapshot(tmp_path)
    assert_error(synthnet_cmd("inspect", five_classes, "--dataset", "digits"), str(five_classes),
                 "arch mlp:64-8-5 has 5 classes, digits has labels 0 to 9")
    assert_error(synthnet_cmd("inspect", idx16, "--dataset", label_255), "has 10 classes", "labels 0 to 255")
    assert_error(synthnet_cmd("zoo", "--out", tmp_path / "zoo", "--arch", "mlp:64-8-5", "--seeds", "0:2"),
                 "arch mlp:64-8-5 has 5 classes, digits has labels 0 to 9")
    assert_nothing_written(before, tmp_path)
    assert not (tmp_path / "zoo").exists()


@pytest.mark.slow
def test_zoo_and_eval_check_features(tmp_path, model):
    zoo = tmp_path / "zoo"
    build_zoo(zoo, [SMALL], "digits", [0, 1], Recipe(epochs=1))
    load_zoo(zoo, SMALL)  # writes the zoo's pack cache, as eval's first read does
    idx = write_idx_dir(tmp_path / "idx", 12)
    before = snapshot(tmp_path)
    assert_error(synthnet_cmd("zoo", "--out", tmp_path / "zoo2", "--arch", "mlp:16-8-10", "--seeds", "0:2"),
                 "arch mlp:16-8-10 takes 16 features, digits has 64")
    assert not (tmp_path / "zoo2").exists()
    assert_error(synthnet_cmd("eval", "--model", model, "--zoo", zoo, "--arch", SMALL, "--dataset", idx, "--seeds",
                              "100000:100002", "--k-max", 1, "--out", tmp_path / "eval"),
                 f"arch {SMALL} takes 64 features, {idx} has 16")
    assert_nothing_written(before, tmp_path)


# 8: the zoo recipe (and --workers, the same kind of option)

@pytest.mark.parametrize("option,value,accepted", [("--batch", "0", "an integer >= 1"),
                                                   ("--epochs", "-1", "an integer >= 1"),
                                                   ("--epochs", "0", "an integer >= 1"),
                                                   ("--lr", "-1", "a finite number > 0"),
                                                   ("--lr", "nan", "a finite number > 0"),
                                                   ("--workers", "0", "an integer >= 1")])
def test_zoo_options(tmp_path, option, value, accepted):
    assert_error(synthnet_cmd("zoo", "--out", tmp_path / "zoo", "--seeds", "0:2", option, value), option, accepted)
    assert not (tmp_path / "zoo").exists()


# 9: run directories whose checkpoint is not one

def corrupt(kind: str, path: Path, good: Path) -> None:
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "random":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "truncated":
        data = good.read_bytes()
        path.write_bytes(data[:len(data) // 2])
    elif kind == "blocked global":
        torch.save({"synth": Path("x")}, path)
    else:  # a real torch file that holds no synthesizer
        torch.save({"step": torch.zeros(3)}, path)


@pytest.mark.parametrize("kind,why", [("empty", "truncated or corrupt"), ("random", "truncated or corrupt"),
                                      ("truncated", "truncated or corrupt"),
                                      ("blocked global", "holds a pathlib.PosixPath object"),
                                      ("no synthesizer", "no 'synth' entry")])
def test_corrupt_checkpoint_is_one_line(tmp_path, files, model, kind, why):
    (init,) = copy_of(files, tmp_path, "small.safetensors")
    run = tmp_path / "run"
    run.mkdir()
    corrupt(kind, run / "best.pt", model / "best.pt")
    before = snapshot(tmp_path)
    line = assert_error(synthnet_cmd("synthesize", init, "--model", run, "-o", tmp_path / "out.safetensors"),
                        f"{run / 'best.pt'}: not a SynthNet checkpoint", why)
    assert "weights_only" not in line
    assert_nothing_written(before, tmp_path)


# 10, 11, 12: synthesize

@pytest.mark.parametrize("steps", ["0", "-1"])
def test_synthesize_steps_at_least_one(tmp_path, files, model, steps):
    (init,) = copy_of(files, tmp_path, "small.safetensors")
    before = snapshot(tmp_path)
    assert_error(synthnet_cmd("synthesize", init, "--model", model, "--steps", steps, "-o", tmp_path / "o.safetensors"),
                 f"--steps {steps}", "an integer >= 1")
    assert_nothing_written(before, tmp_path)


def test_non_finite_outputs_are_never_written(tmp_path, files, model):
    (init,) = copy_of(files, tmp_path, "small.safetensors")
    huge = tmp_path / "huge.safetensors"  # finite, but far outside anything the model has seen
    save_weights(huge, {k: v * 1e30 for k, v in init_state(SMALL, 0).items()}, SMALL)
    before = snapshot(tmp_path)
    assert_error(synthnet_cmd("synthesize", init, huge, "--model", model, "--out-dir", tmp_path / "out"),
                 "NaN or Inf", "nothing written")  # not even the finite output of the first input
    assert_error(synthnet_cmd("init", "--arch", SMALL, "--init", "normal:1e300", "-o", tmp_path / "inf.safetensors"),
                 str(tmp_path / "inf.safetensors"), "tensor 0.weight", "NaN or Inf")
    assert_nothing_written(before, tmp_path)
    assert_all_finite(tmp_path)


@pytest.mark.slow
def test_synthesize_never_overwrites_or_merges_outputs(tmp_path, files, model):
    one, two = tmp_path / "one", tmp_path / "two"
    for d in (one, two):
        d.mkdir()
        copy_of(files, d, "small.safetensors")
    before = snapshot(tmp_path)
    x = one / "small.safetensors"
    assert_error(synthnet_cmd("synthesize", x, "--model", model, "-o", x), str(x), "refusing to overwrite an input")
    assert_error(synthnet_cmd("synthesize", "small.safetensors", "--model", model, "-o", x, cwd=one),
                 "refusing to overwrite an input")  # the same file under another name
    assert_error(synthnet_cmd("synthesize", one, "--model", model, "--out-dir", one), "refusing to overwrite an input")
    assert_error(synthnet_cmd("synthesize", one, two, "--model", model, "--out-dir", tmp_path / "out"),
                 str(one / "small.safetensors"), str(two / "small.safetensors"), "both be written to")
    assert_nothing_written(before, tmp_path)
    assert_ok(synthnet_cmd("synthesize", one, "--model", model, "--out-dir", tmp_path / "out"))
    assert_all_finite(tmp_path)


# 13: a full disk

def test_full_disk_is_one_line_and_keeps_the_old_file(tmp_path, monkeypatch, capsys):
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = bool(shutil.which("mount")) and subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", disk],
                                                             capture_output=True).returncode == 0
    try:
        target = disk / "w.safetensors"
        assert_ok(synthnet_cmd("init", "--arch", SMALL, "-o", target))  # 3 kB: fits
        before = snapshot(disk)
        big = ["init", "--arch", "mlp:64-400-10", "-o", target]  # 120 kB: more than the disk holds
        if mounted:
            line = assert_error(synthnet_cmd(*big), str(target), "No space left on device")
        else:  # no tmpfs (not root): the real write fails with ENOSPC after writing part of the temp file
            line = enospc_in_process(monkeypatch, capsys, big)
        assert ".tmp" not in line  # names the file asked for, not the temp file
        assert_nothing_written(before, disk)
    finally:
        if mounted:
            subprocess.run(["umount", disk], check=True)


def enospc_in_process(monkeypatch, capsys, args: list) -> str:
    import synthnet.weights as weights
    from synthnet.cli import main

    def full_disk(tensors, tmp, metadata=None):
        Path(tmp).write_bytes(b"\0" * 1000)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), tmp)

    monkeypatch.setattr(weights, "save_file", full_disk)
    monkeypatch.setattr(sys, "argv", ["synthnet", *map(str, args)])
    with pytest.raises(SystemExit) as exc:
        main()
    (line,) = capsys.readouterr().err.splitlines()
    assert exc.value.code == 2 and line.startswith("error: ") and "No space left on device" in line, line
    return line


# 14: file modes

def test_outputs_respect_the_umask_and_keep_an_overwritten_mode(tmp_path):
    old = os.umask(0o027)
    try:
        path = tmp_path / "w.safetensors"
        assert_ok(synthnet_cmd("init", "--arch", SMALL, "-o", path))
        assert stat.S_IMODE(path.stat().st_mode) == 0o640
        os.chmod(path, 0o604)
        assert_ok(synthnet_cmd("init", "--arch", SMALL, "--seed", 1, "-o", path))
        assert stat.S_IMODE(path.stat().st_mode) == 0o604
    finally:
        os.umask(old)


# 16: zoo workers die with the zoo

def descendants(pid: int) -> list[int]:
    parent_of = {}
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent_of[int(stat_file.parent.name)] = int(stat_file.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    out, todo = [], [pid]
    while todo:
        parent = todo.pop()
        kids = [c for c, p in parent_of.items() if p == parent]
        out += kids
        todo += kids
    return out


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads the process table from /proc")
def test_zoo_workers_exit_when_the_zoo_is_killed(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "synthnet", "zoo", "--out", tmp_path / "zoo", "--arch", SMALL,
                             "--seeds", "0:64", "--epochs", "30", "--workers", "2"], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while len(workers) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
            workers = descendants(proc.pid)
        assert len(workers) >= 2 and proc.poll() is None, "the zoo never started its 2 workers"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 5
        while any(map(alive, workers)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [w for w in workers if alive(w)], "workers outlived the zoo process"
    finally:
        proc.kill()
        for w in workers:
            if alive(w):
                os.kill(w, signal.SIGKILL)


# 19: usage errors

@pytest.mark.parametrize("args,fragment", [(["synthesize", "--steps", "abc", "x.safetensors", "--model", "m"],
                                            "'--steps'"),
                                           (["init", "--arch", SMALL, "--bogus"], "--bogus"),
                                           (["init", "-o", "x.safetensors"], "'--arch'")])
def test_usage_errors_are_one_line(tmp_path, args, fragment):
    assert_error(synthnet_cmd(*args, cwd=tmp_path), fragment)
    assert not any(tmp_path.iterdir())


def test_help_still_works():
    p = synthnet_cmd("init", "--help")
    assert_ok(p)
    assert "--arch" in p.stdout
    p = synthnet_cmd()  # no arguments: the help, as typer's no_args_is_help gives it
    assert p.returncode == 2 and "Usage" in p.stdout and "Traceback" not in p.stdout + p.stderr


# 20: seeds

@pytest.mark.parametrize("seed", [str(2**64), "-1", str(10**30)])
def test_seed_out_of_range(tmp_path, seed):
    assert_error(synthnet_cmd("init", "--arch", SMALL, "--seed", seed, "-o", tmp_path / "x.safetensors"),
                 f"seed {seed} out of range", "accepted: 0 to 2**64 - 1")
    assert_error(synthnet_cmd("zoo", "--out", tmp_path / "zoo", "--seeds", f"0,{seed}"), f"seed {seed} out of range")
    assert not any(tmp_path.iterdir())


def test_largest_seed_works(tmp_path):
    assert_ok(synthnet_cmd("init", "--arch", SMALL, "--seed", str(2**64 - 1), "-o", tmp_path / "x.safetensors"))


@pytest.mark.parametrize("override,fragment", [
    ("train.lr=${oops}", "bad value for config key 'train.lr'"),
    ("train.lr=nan", "train.lr=nan is not accepted; train.lr takes a float in [0, 0.1]"),
    ("train.lr=-1", "train.lr=-1.0 is not accepted"),
    ("train.steps=-5", "train.steps=-5 is not accepted; train.steps takes an int in [1, 1e+08]"),
    ("train.batch=0", "train.batch=0 is not accepted"),  # it used to blame grpo.inits / grpo.group (18)
])
def test_config_values_are_resolved_and_range_checked_before_anything_runs(tmp_path, override, fragment):
    """Item 7: out-of-range or unresolvable values stop `synthnet train` before it reads a zoo or writes a file."""
    assert_error(synthnet_cmd("train", "--out", tmp_path / "run", "--preset", "tiny", override), fragment)
    assert not (tmp_path / "run").exists()


def test_config_show_takes_overrides_without_a_preset():
    """Item 18: `config show train.lr=3e-4` is an override, not an unknown preset."""
    p = synthnet_cmd("config", "show", "train.lr=3e-4")
    assert_ok(p)
    assert "lr: 0.0003" in p.stdout


def test_zoo_rerun_with_another_recipe_is_refused_and_appends_nothing(tmp_path):
    """Item 15: another --epochs or --lr on an existing zoo is one line naming the option; the manifest is kept."""
    zoo = tmp_path / "zoo"
    assert_ok(synthnet_cmd("zoo", "--out", zoo, "--arch", SMALL, "--seeds", "0:2", "--epochs", 1))
    before = snapshot(zoo)
    assert_error(synthnet_cmd("zoo", "--out", zoo, "--arch", SMALL, "--seeds", "0:2", "--epochs", 2),
                 "--epochs 1; this run asks --epochs 2")
    assert_error(synthnet_cmd("zoo", "--out", zoo, "--arch", SMALL, "--seeds", "0:2", "--epochs", 1, "--lr", 0.01),
                 "--lr 0.003; this run asks --lr 0.01")
    assert_nothing_written(before, zoo)


def test_patch_list_on_a_corrupt_history_names_the_line(tmp_path):
    """Item 17: a corrupt history.jsonl is one line naming path:line."""
    (tmp_path / "config.yaml").write_text("{}\n")
    (tmp_path / "patches").mkdir()
    (tmp_path / "patches" / "history.jsonl").write_text('{"event": "patch"}\nnot json\n')
    assert_error(synthnet_cmd("patch", tmp_path, "--list"), f"{tmp_path / 'patches' / 'history.jsonl'}:2: not a JSON")


@pytest.mark.slow
def test_train_on_a_zoo_of_one_other_arch_takes_that_arch(tmp_path):
    """Item 21: a zoo holding only SMALL trains without data.arch=; a zoo of two archs names both."""
    zoo = tmp_path / "zoo"
    assert_ok(synthnet_cmd("zoo", "--out", zoo, "--arch", SMALL, "--seeds", "0:6", "--epochs", 1))
    assert_ok(synthnet_cmd("train", "--out", tmp_path / "run", "--zoo", zoo, "--preset", "tiny", "train.steps=2",
                           "train.val_every=2", "train.val_runs=2"))
    assert_ok(synthnet_cmd("zoo", "--out", zoo, "--arch", "mlp:64-4-10", "--seeds", "0:6", "--epochs", 1))
    assert_error(synthnet_cmd("train", "--out", tmp_path / "run2", "--zoo", zoo, "--preset", "tiny"),
                 "holds archs mlp:64-4-10, mlp:64-8-10; choose with data.arch=")
