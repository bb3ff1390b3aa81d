"""What the supervised and GRPO loops share: the run directory (config, metrics, checkpoints) and `Run`, the
scaffolding around their steps (exact resume, live patches, DDP replica, progress, best/latest/final)."""

from __future__ import annotations

import io
import json
import pickle
import re
import warnings
from pathlib import Path

from typing import Any, Iterator, Sequence

import torch

from synthnet.config import LIVE, Config, to_yaml
from synthnet.distributed import broadcast_config, check_replicas, finish, init, is_main, replicate
from synthnet.errors import SynthNetError
from synthnet.jsonl import read_jsonl
from synthnet.patches import LivePatches, Rule
from synthnet.progress import progress
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
            rows = [r for r in read_jsonl(path, torn_tail=True) if r["step"] <= step]
            atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))

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
                        patches, loop_state: dict) -> None:
    """Everything an exact resume needs: model, optimiser, RNG states, step, best metric, live-patch state and the
    loop's own counters."""
    synth.trained_steps = step
    save_checkpoint(path, {"synth": synth.checkpoint(), "optimizer": opt.state_dict(), "generator": g.get_state(),
                           "torch_rng": torch.get_rng_state(), "step": step, "best": best,
                           "patches": patches.state_dict(), "loop_state": loop_state})


def restore_training_state(ckpt: dict, synth, opt: torch.optim.Optimizer, g: torch.Generator) -> tuple[int, float]:
    """Load a save_training_state checkpoint into live objects; returns (step, best)."""
    synth.denoiser.load_state_dict(ckpt["synth"]["model"])
    synth.seeds, synth.best_k = ckpt["synth"]["seeds"], ckpt["synth"]["best_k"]
    opt.load_state_dict(ckpt["optimizer"])
    g.set_state(ckpt["generator"])
    torch.set_rng_state(ckpt["torch_rng"])
    return ckpt["step"], ckpt["best"]


class Run:
    """The scaffolding of a training loop over `synth` in run directory `out`:

        run = Run(out, cfg, synth, opt, g, rules, loop_state={...})   # resumes exactly from out/latest.pt
        for step in run.steps(total, stop_after, "label"):          # live patches applied at each boundary
            ... batch, loss, update (through run.replica for DDP) ...
            run.end_step(row, score)                                 # metrics; best/latest when score is given
        # after the loop: replicas checked, final.pt written when complete, the log closed

    Under torchrun (WORLD_SIZE > 1) rank 0 alone writes the run directory and reads the patch inbox; every rank takes
    the live values at the same step boundary.
    """

    def __init__(self, out: Path, cfg: Config, synth, opt: torch.optim.Optimizer, g: torch.Generator,
                 rules: Sequence[Rule] = (), loop_state: dict | None = None):
        init()
        self.out, self.cfg, self.synth, self.opt, self.g = Path(out), cfg, synth, opt, g
        self.main = is_main()  # rank 0: writes the run directory, reads patches
        latest = self.out / "latest.pt"
        ckpt = load_checkpoint(latest) if latest.is_file() else {}
        # rank 0 reads the patch inbox; every rank takes its live values (saved patched ones) before the config check
        self.patches = LivePatches(self.out, cfg, rules, ckpt.get("patches")) if self.main else None
        broadcast_config(cfg, LIVE)
        self.step, self.best, self.resumed = 0, -1.0, bool(ckpt)  # steps done, best score, resumed from latest.pt
        self.state: dict[str, Any] = dict(loop_state or {})  # the loop's counters, saved in every checkpoint
        self.patch_id = 0  # id of the live patch in force (0: none)
        if ckpt:
            if ckpt["synth"]["config"] != to_yaml(cfg):
                raise SynthNetError(f"{out} holds a run with another config; resume with the same one or use a new "
                                    "--out")
            self.step, self.best = restore_training_state(ckpt, synth, opt, g)
            self.state = ckpt["loop_state"]
        self.replica = replicate(synth, sparse=cfg.model.experts >= 2)  # DDP under torchrun, else the identity
        if self.main:
            self.log = RunLog(self.out, cfg)
            self.log.truncate_after(self.step if ckpt else -1)

    def checkpoint(self, name: str) -> None:
        save_training_state(self.out / f"{name}.pt", self.synth, self.opt, self.g, self.step, self.best,
                            self.patches, self.state)

    def start(self, row: dict, score: float) -> None:
        """Rank 0: the row of step 0 (before any update), which is also the first best."""
        self.log.log(0, row)
        self.best = score
        self.checkpoint("best")

    def steps(self, total: int, stop_after: int | None, label: str) -> Iterator[int]:
        """Steps done at each step boundary, live patches applied; stop_after ends early without `final` (a
        simulated kill). Then replicas are checked, `final` is written when all `total` steps are done."""
        end = total if stop_after is None else min(total, stop_after)
        with progress(show=self.main) as bar:
            self.bar, self.task = bar, bar.add_task(label, total=total, completed=self.step)
            while self.step < end:
                self.patch_id = self.patches.apply(self.step) if self.main else 0
                broadcast_config(self.cfg, LIVE)  # on every rank
                yield self.step
                bar.advance(self.task)
        check_replicas(self.synth)
        if self.main:
            if self.step >= total:
                self.checkpoint("final")
            self.log.close()
        finish()

    def end_step(self, row: dict, score: float | None = None, note: str = "") -> None:
        """Count the step; rank 0 runs the self-tuning rules on `row`, logs it and, when `score` is given (an
        evaluation), keeps `best` and `latest` and shows `note` on the progress bar."""
        self.step += 1
        if not self.main:
            return
        row["patch_id"] = self.patch_id
        self.patches.observe(self.step, row)  # before the checkpoint, so that a resume replays them
        self.log.log(self.step, row)  # before the checkpoint: a resume from this step must find its row
        if score is not None:
            if score > self.best:
                self.best = score
                self.checkpoint("best")
            self.checkpoint("latest")
            self.bar.update(self.task, description=note)
