"""Run directory conventions shared by the supervised and GRPO loops: config, checkpoints, metrics."""

from __future__ import annotations

import io
import json
import pickle
import re
import warnings
from pathlib import Path

import torch

from synthnet.config import Config, to_yaml
from synthnet.errors import SynthNetError
from synthnet.weights import atomic_write, atomic_write_text


class RunLog:
    """metrics.jsonl + TensorBoard event files + resolved config in one run directory."""

    def __init__(self, run_dir: Path, cfg: Config):
        from torch.utils.tensorboard import SummaryWriter

        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.dir / "config.yaml", to_yaml(cfg))
        self.tb = SummaryWriter(str(self.dir / "tb"))

    def log(self, step: int, row: dict) -> None:
        row = {"step": step, **row}
        with open(self.dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        for k, v in row.items():
            if isinstance(v, (int, float)) and k != "step":
                self.tb.add_scalar(k, v, step)
        self.tb.flush()

    def truncate_after(self, step: int) -> None:
        """Drop metric rows beyond `step` (written after the checkpoint we resume from) and a last row cut short
        by a kill (it has no newline yet)."""
        path = self.dir / "metrics.jsonl"
        if path.is_file():
            complete = path.read_text().split("\n")[:-1]
            rows = [r for r in complete if r and json.loads(r)["step"] <= step]
            atomic_write_text(path, "".join(r + "\n" for r in rows))

    def close(self) -> None:
        self.tb.close()


def save_checkpoint(path: Path, payload: dict) -> None:
    """torch.save of tensors/primitives, atomically (loaded back with weights_only=True)."""
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write(Path(path), lambda tmp: Path(tmp).write_bytes(buf.getvalue()))


def load_checkpoint(path: Path) -> dict:
    """torch.load(weights_only=True) of a save_checkpoint file; any other file raises a SynthNetError naming it.

    torch's own errors are no use here: an empty file raises EOFError (which typer turns into a bare "Aborted."),
    and a blocked global comes with advice to pass weights_only=False, which SynthNet never does.
    """
    if not Path(path).is_file():
        raise SynthNetError(f"{path}: no such checkpoint file")
    try:
        with warnings.catch_warnings():  # random bytes can look like an unknown pickle protocol: a warning, then junk
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, ValueError, OSError) as exc:
        blocked = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        why = (f"it holds a {blocked.group(1)} object; checkpoints hold tensors and plain values only" if blocked
               else "truncated or corrupt")
        raise SynthNetError(f"{path}: not a SynthNet checkpoint ({why})") from None
    if not isinstance(ckpt, dict):
        raise SynthNetError(f"{path}: not a SynthNet checkpoint (it holds a {type(ckpt).__name__}, not a dict)")
    return ckpt


def save_training_state(path: Path, synth, opt: torch.optim.Optimizer, g: torch.Generator, step: int, best: float,
                        patches) -> None:
    """Everything an exact resume needs: model, optimiser, RNG states, step, best metric, live-patch state."""
    synth.trained_steps = step
    save_checkpoint(path, {"synth": synth.checkpoint(), "optimizer": opt.state_dict(), "generator": g.get_state(),
                           "torch_rng": torch.get_rng_state(), "step": step, "best": best,
                           "patches": patches.state_dict()})


def restore_training_state(ckpt: dict, synth, opt: torch.optim.Optimizer, g: torch.Generator) -> tuple[int, float]:
    """Load a save_training_state checkpoint into live objects; returns (step, best)."""
    synth.denoiser.load_state_dict(ckpt["synth"]["model"])
    opt.load_state_dict(ckpt["optimizer"])
    g.set_state(ckpt["generator"])
    torch.set_rng_state(ckpt["torch_rng"])
    return ckpt["step"], ckpt["best"]
