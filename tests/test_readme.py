"""The README does not lie: its plain-PyTorch example runs verbatim on a file `synthnet synthesize` wrote, and its
pipeline commands run as written with only their sizes made tiny."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # subprocesses of the installed command

README = Path(__file__).resolve().parents[1] / "README.md"
# the pipeline block's sizes -> tiny ones (each must be found, so the README cannot drift from this test)
TINY = {"--seeds 0:512": "--seeds 0:12 --epochs 3",
        "zoo.path=zoos/digits-mlp": "zoo.path=zoos/digits-mlp --preset tiny",
        "--out runs/grpo": "--out runs/grpo grpo.iters=2 grpo.inits=2 grpo.group=2 grpo.eval_inits=4 grpo.passes=1",
        "--seeds 600000:600064": "--seeds 600000:600003 --k-max 1"}


def block(heading: str, lang: str) -> str:
    """The first ```lang block after the README heading (or paragraph start) `heading`."""
    text = README.read_text()
    start = text.index(heading)
    m = re.compile(rf"```{lang}\n(.*?)```", re.S).search(text, start)
    return m.group(1)


def synthnet(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "synthnet", *args], cwd=cwd, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(README.parent / "src")})
    assert r.returncode == 0, (args, r.stderr[-2000:])
    return r


def test_plain_pytorch_example_runs_verbatim_on_a_synthesized_file(tiny_run, tmp_path):
    synthnet("init", "--arch", "mlp:64-32-10", "--seed", "7", "-o", "rand.safetensors", cwd=tmp_path)
    synthnet("synthesize", "rand.safetensors", "--model", str(tiny_run), "-o", "trained.safetensors", cwd=tmp_path)
    code = block("**Use a synthesized file**", "python")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    acc = float(r.stdout.split()[-1])
    assert 0.0 <= acc <= 1.0


def test_pipeline_commands_run_as_written_with_tiny_sizes(tmp_path):
    text = block("## The pipeline, one command per stage", "bash")
    for big, tiny in TINY.items():
        assert big in text, f"README pipeline no longer says {big!r}: update TINY"
        text = text.replace(big, tiny)
    commands = [line.split("#")[0].strip() for line in text.splitlines() if line.strip()]
    assert len(commands) == 8 and all(c.startswith(".venv/bin/synthnet ") for c in commands)
    for command in commands:
        synthnet(*shlex.split(command)[1:], cwd=tmp_path)
    assert (tmp_path / "runs/eval/results.json").is_file() and (tmp_path / "trained.safetensors").is_file()
    assert any((tmp_path / "exr").glob("*.exr"))
