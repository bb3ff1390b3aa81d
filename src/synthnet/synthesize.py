"""Weights in, weights out: the denoiser applied K times to random inits. Never opens a dataset.

Noise levels: a zoo checkpoint at epoch e of E has level 1 - log1p(e) / log1p(E) (1 = random init, 0 = trained);
a K-step synthesis walks the levels 1 -> (K-1)/K -> ... -> 0 evenly. A zoo model steps from checkpoint to
checkpoint (a mean over the runs an init allows); a bridge model (model.process=bridge) is a sampler: the state at
level l is l * init + (1 - l) * final + bridge_sigma * sqrt(l (1 - l)) * noise (a Brownian bridge from the init to
the final weights, as in image-to-image Schroedinger bridges), each step predicts the final weights and draws the
next state from the bridge given them, and the noise comes from a seeded generator (`--sample-seed`).
"""

from __future__ import annotations

import hashlib
import math
import time
from pathlib import Path

import torch
from torch import nn

from synthnet.config import Config, from_yaml, to_yaml
from synthnet.errors import SynthNetError
from synthnet.models import build_denoiser
from synthnet.runlog import load_checkpoint
from synthnet.seeds import Record
from synthnet.targets import Spec, parse_spec
from synthnet.tokens import Normalizer, from_tokens, layout, to_tokens
from synthnet.weights import check_finite, load_weights, save_weights, stack_states


def epoch_level(epoch: torch.Tensor | float, epochs: int) -> torch.Tensor:
    """Noise level of a checkpoint at `epoch` of `epochs` (log spacing: early epochs move weights most)."""
    return 1.0 - torch.log1p(torch.as_tensor(epoch, dtype=torch.float32)) / math.log1p(epochs)


def level_epoch(level: torch.Tensor, epochs: int) -> torch.Tensor:
    """Inverse of epoch_level (fractional epoch)."""
    return torch.expm1((1.0 - level) * math.log1p(epochs))


def schedule(k: int) -> torch.Tensor:
    """Levels visited by a K-step synthesis: (k + 1,) from 1 down to 0."""
    return torch.linspace(1.0, 0.0, k + 1)


def sample_noise(tokens: torch.Tensor, draws: int, sample_seed: int) -> torch.Tensor:
    """tokens: (B, N, F) inits -> (B, draws, N, F) unit Gaussian draws, each network's from a generator seeded by
    sample_seed and its init's bytes, so a network's draws do not depend on what else is in the batch."""
    out = []
    for init in tokens:
        digest = hashlib.sha256(str(sample_seed).encode() + init.cpu().numpy().tobytes()).digest()
        g = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)
        out.append(torch.randn((draws, *init.shape), generator=g))
    return torch.stack(out).to(tokens.device)


class Synthesizer(nn.Module):
    """A denoiser with its token normaliser: the whole learned part of SynthNet."""

    def __init__(self, cfg: Config, spec: Spec, normalizer: Normalizer):
        super().__init__()
        self.cfg = cfg  # resolved config the run was trained with
        self.spec = spec  # the spec the model was built for (a set model serves other widths too)
        self.normalizer = normalizer  # per-role token scaling fitted on the zoo
        self.denoiser = build_denoiser(cfg.model, spec)
        self.run_dir: str = ""
        self.trained_steps = 0
        self.best_k = 1  # the K with the best held-out val accuracy at the last validation: synthesize's default
        self.seeds: Record = {}  # every seed range the model has used (seeds.py); `synthnet eval` refuses them

    def encode(self, spec: Spec, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """key -> (B, *shape) weights -> (B, N, F) normalised tokens."""
        return self.normalizer.normalize(spec, to_tokens(spec, params))

    def decode(self, spec: Spec, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, N, F) normalised tokens -> key -> (B, *shape) weights."""
        return from_tokens(spec, self.normalizer.unnormalize(spec, tokens))

    def step(self, spec: Spec, tokens: torch.Tensor, level_in: torch.Tensor, level_out: torch.Tensor):
        """One denoising step. tokens: (B, N, F); levels: (B,). Returns ((B, N, F) next tokens, aux dict).

        A bridge model predicts the final weights (aux['final']) and returns the bridge's mean at level_out:
        tokens + (level_in - level_out) / level_in * (final - tokens), the final weights themselves at level 0."""
        bridge = self.cfg.model.process == "bridge"
        out, aux = self.denoiser(tokens, layout(spec), level_in, 0 * level_out if bridge else level_out)
        pred = tokens + out if self.cfg.model.predict == "delta" else out
        if not bridge:
            return pred, aux
        frac = ((level_in - level_out) / level_in.clamp_min(1e-6))[:, None, None]
        return tokens + frac * (pred - tokens), {**aux, "final": pred}

    def moe_penalty(self, aux: dict) -> torch.Tensor:
        """Weighted MoE auxiliary losses of one step (0 for a dense denoiser)."""
        return self.cfg.train.moe_aux * aux["moe_loss"] + self.cfg.train.moe_z * aux["moe_z"]

    def chain(self, spec: Spec, tokens: torch.Tensor, k: int,
              noise: torch.Tensor | None = None) -> tuple[list[torch.Tensor], torch.Tensor]:
        """K steps from level 1: (k (B, N, F) token states, summed MoE penalty), differentiable.

        A bridge model's states are its predictions of the final weights; between steps it adds the bridge's
        Gaussian (std bridge_sigma * sqrt(l' (l - l') / l) from level l to l') to its mean, drawn as
        noise (B, k - 1, N, F) of unit draws, or keeps to the mean when noise is None. A zoo model ignores noise."""
        levels, states, penalty = schedule(k), [], torch.zeros(())
        ones = torch.ones(tokens.shape[0])
        mask = layout(spec).mask.to(tokens.device)
        for i in range(k):
            l_in, l_out = levels[i].item(), levels[i + 1].item()
            tokens, aux = self.step(spec, tokens, ones * l_in, ones * l_out)
            states.append(aux.get("final", tokens))
            penalty = penalty + self.moe_penalty(aux)
            if "final" in aux and noise is not None and l_out > 0:
                std = self.cfg.model.bridge_sigma * math.sqrt(l_out * (l_in - l_out) / l_in)
                tokens = tokens + std * mask * noise[:, i]
        return states, penalty

    @torch.no_grad()
    def run(self, spec: Spec, params: dict[str, torch.Tensor], k: int, sample_seed: int = 0,
            draws_of: dict[str, torch.Tensor] | None = None) -> list[dict[str, torch.Tensor]]:
        """Synthesize from a batch of inits: key -> (N, *shape) in, k states key -> (N, *shape) out. A bridge
        model draws its path with sample_noise(sample_seed): the same init and seed give the same weights. draws_of
        (N, *shape) inits whose draws to use instead of params' own: a perturbed init on its init's path."""
        was_training = self.training
        self.eval()
        tokens = self.encode(spec, params)
        seeded = tokens if draws_of is None else self.encode(spec, draws_of)
        noise = sample_noise(seeded, k - 1, sample_seed) if self.cfg.model.process == "bridge" else None
        states = [self.decode(spec, t) for t in self.chain(spec, tokens, k, noise)[0]]
        self.train(was_training)
        return states

    def outputs(self, spec: Spec, params: dict[str, torch.Tensor], k_max: int,
                sample_seed: int = 0) -> list[dict[str, torch.Tensor]]:
        """What a user gets with K = 1..k_max steps (each a full K-step synthesis): k_max states (N, *shape)."""
        return [self.run(spec, params, k, sample_seed)[-1] for k in range(1, k_max + 1)]

    @property
    def identity(self) -> dict:
        text = to_yaml(self.cfg)
        return {"run": self.run_dir, "model": self.cfg.model.name, "steps": self.trained_steps,
                "config_sha": hashlib.sha256(text.encode()).hexdigest()[:12]}

    def checkpoint(self) -> dict:
        """Everything needed to rebuild this synthesizer (tensors and strings only: weights_only-loadable)."""
        return {"config": to_yaml(self.cfg), "spec": str(self.spec), "model": self.denoiser.state_dict(),
                "normalizer": self.normalizer.state_dict(), "trained_steps": self.trained_steps,
                "best_k": self.best_k, "seeds": self.seeds}

    @classmethod
    def from_checkpoint(cls, ckpt: dict, run_dir: str, source: str) -> "Synthesizer":
        """source: the file the checkpoint was read from (named in errors)."""
        cfg = from_yaml(ckpt["config"], source)
        try:
            spec = parse_spec(ckpt["spec"])
        except SynthNetError as exc:
            raise SynthNetError(f"{source}: {exc}") from None
        synth = cls(cfg, spec, Normalizer.from_state_dict(ckpt["normalizer"]))
        synth.denoiser.load_state_dict(ckpt["model"])
        synth.run_dir, synth.trained_steps = run_dir, int(ckpt["trained_steps"])
        synth.best_k, synth.seeds = int(ckpt["best_k"]), ckpt["seeds"]
        return synth.eval()


def load_synthesizer(run: Path, which: str = "best") -> Synthesizer:
    """Load `best`/`final`/`latest` from a run directory (supervised or GRPO)."""
    path = Path(run) / f"{which}.pt"
    if not path.is_file():
        have = sorted(p.stem for p in Path(run).glob("*.pt"))
        raise SynthNetError(f"{run}: no {which}.pt checkpoint (found: {', '.join(have) or 'none'}); "
                            "train one with `synthnet train`")
    ckpt = load_checkpoint(path)
    try:
        return Synthesizer.from_checkpoint(ckpt["synth"], str(run), str(path))
    except KeyError as exc:
        raise SynthNetError(f"{path}: not a SynthNet checkpoint (no {exc.args[0]!r} entry)") from None
    except RuntimeError:  # load_state_dict: the model weights do not fit the model its config builds
        raise SynthNetError(f"{path}: not a SynthNet checkpoint (its model weights do not fit its config)") from None


def _inputs(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for p in map(Path, paths):
        files += sorted(p.glob("*.safetensors")) if p.is_dir() else [p]
    if not files:
        raise SynthNetError(f"no .safetensors inputs in {', '.join(map(str, paths))}")
    return files


def _targets(files: list[Path], out: Path | None, out_dir: Path | None) -> list[Path]:
    """Each input's output path; refuses, before anything is written, an output that is an input or that two
    inputs share (compared as resolved paths)."""
    targets = [Path(out)] if out is not None else [Path(out_dir) / f.name for f in files]
    sources = {f.resolve(): f for f in files}
    seen: dict[Path, Path] = {}
    for f, t in zip(files, targets):
        if t.resolve() in sources:
            raise SynthNetError(f"output {t} is input {sources[t.resolve()]}; refusing to overwrite an input "
                                "(choose another -o or --out-dir)")
        if t.resolve() in seen:
            raise SynthNetError(f"inputs {seen[t.resolve()]} and {f} would both be written to {t}; give them "
                                "different file names or synthesize them into different --out-dir")
        seen[t.resolve()] = f
    return targets


def synthesize_files(inputs: list[Path], run: Path, steps: int | None = None, out: Path | None = None,
                     out_dir: Path | None = None, arch: str | None = None, sample_seed: int = 0) -> list[dict]:
    """Synthesize every input file (grouped by arch, one batch each) with `steps` denoising steps (default: the
    model's val-best K) and, for a bridge model, the path drawn by sample_seed; returns per-file rows with timing.

    Every output is computed and checked (finite, not an input, not shared) before the first is written.
    """
    if steps is not None and steps < 1:
        raise SynthNetError(f"--steps {steps}: accepted: an integer >= 1")
    files = _inputs(inputs)
    if (out is None) == (out_dir is None):
        raise SynthNetError("give exactly one of -o OUT (one input) or --out-dir DIR")
    if out is not None and len(files) != 1:
        raise SynthNetError(f"-o takes one input, got {len(files)}; use --out-dir for many")
    target_of = dict(zip(files, _targets(files, out, out_dir)))
    synth = load_synthesizer(run)
    steps = synth.best_k if steps is None else steps
    loaded = [(f, *load_weights(f, arch)[:2]) for f in files]
    results = []  # (input, output, spec, state, seconds)
    for spec_text in sorted({str(s) for _, _, s in loaded}):
        group = [(f, st, s) for f, st, s in loaded if str(s) == spec_text]
        spec = group[0][2]
        t0 = time.perf_counter()
        final = synth.run(spec, stack_states([st for _, st, _ in group]), steps, sample_seed)[-1]
        per_file = (time.perf_counter() - t0) / len(group)
        for i, (f, _, _) in enumerate(group):
            state = {k: v[i] for k, v in final.items()}
            check_finite(state, target_of[f])
            results.append((f, target_of[f], spec, state, per_file))
    for f, target, spec, state, _ in results:
        save_weights(target, state, spec, model_run=str(run), steps=steps, source=f.name,
                     sample_seed=sample_seed if synth.cfg.model.process == "bridge" else None,
                     synth=synth.identity)
    return [{"input": str(f), "output": str(t), "arch": str(spec), "seconds": sec, "steps": steps}
            for f, t, spec, _, sec in results]
