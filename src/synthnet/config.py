"""One typed config for every stage: dataclass schema -> YAML preset (presets/*.yaml) -> key=value overrides.

Each field carries its facts (range or choices, live or restart-only: `opt`), and everything else derives from them:
compose()'s checks, the live-patch bounds, sweeps' clamps, `accepted()` in error messages. Unknown keys, wrongly
typed or out-of-range values are errors naming the key. Every run saves its resolved config.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError, OmegaConfBaseException

from synthnet.errors import SynthNetError
from synthnet.models import DENOISERS, SIZES
from synthnet.seeds import EVAL_SEEDS, ZOO_SEEDS

PRESET_DIR = Path(__file__).resolve().parent / "presets"
PRESET_ALIASES = {"digits-mlp": "headline"}  # the cross-target table's digits MLP row is the headline model


def opt(default: Any, low: float | None = None, high: float | None = None, *, choices: tuple = (),
        live: bool = False) -> Any:
    """A config field with its facts: the accepted range [low, high] or choices, and whether a live patch may change
    it while a run goes on (False: fixed for the life of a run). compose(), live patches and sweeps all read them."""
    return field(default=default, metadata={"low": low, "high": high, "choices": tuple(choices), "live": live})


BIG = 10**8  # upper bound of counts that only cost time (steps, iterations, ramp lengths)
SEED_MAX = 2**63 - 1  # torch.manual_seed takes seeds below 2**64; a signed int64 keeps every tensor of seeds exact


@dataclass
class DataConfig:
    dataset: str = "digits"  # digits | mnist1d | idx:<dir>
    arch: str = "mlp:64-32-10"  # target spec(s) the denoiser serves; comma list for a mixed-width zoo


@dataclass
class ZooConfig:
    path: str = "zoos/digits-mlp"  # zoo directory (built by `synthnet zoo`)
    seeds: str = ZOO_SEEDS  # zoo seeds (half-open A:B or a comma list); never used for evaluation
    epochs: int = opt(30, 1, 10**4)  # teacher recipe: passes over the train split
    lr: float = opt(3e-3, 1e-8, 10.0)  # teacher recipe: learning rate
    batch: int = opt(32, 1, 10**6)  # teacher recipe: minibatch size (the last partial batch is kept)
    optimizer: str = opt("adam", choices=("adam", "sgd"))  # teacher recipe: Adam | SGD with momentum 0.9
    label_smoothing: float = opt(0.0, 0.0, 0.99)  # teacher recipe: label smoothing of the cross-entropy
    orders: int = opt(1, 1, 64)  # minibatch orders per init, built by `zoo` and all read by `train` (0: the recipe's)
    workers: int = opt(os.cpu_count() or 1, 1, 1024)  # zoo processes at once, one thread each (default: one per core)


@dataclass
class ModelConfig:
    name: str = opt("set", choices=tuple(DENOISERS))  # denoiser family (models.DENOISERS)
    size: str = opt("", choices=("", *SIZES))  # named size (models.SIZES): defaults for the fields below
    dim: int = opt(64, 1, 4096)  # token width inside the denoiser
    depth: int = opt(3, 1, 64)  # attention blocks
    heads: int = opt(4, 1, 64)  # attention heads
    latents: int = opt(32, 1, 4096)  # perceiver latent array size
    experts: int = opt(0, 0, 64)  # MoE experts per feed-forward (0 = dense feed-forward; >= 2 for MoE)
    ffn_mult: int = opt(2, 1, 64)  # feed-forward hidden = ffn_mult * dim
    predict: str = opt("delta", choices=("delta", "x0"))  # delta (added to the input weights) | x0 (clean weights)
    process: str = opt("zoo", choices=("zoo", "bridge"))  # zoo: a step predicts the next zoo checkpoint (a mean);
    # bridge: a step predicts the final weights, the next state is drawn on a Brownian bridge to them (a sampler)
    bridge_sigma: float = opt(0.3, 0.0, 10.0)  # bridge noise, normalised units: std sigma*sqrt(l(1-l)) at level l


@dataclass
class TrainConfig:
    steps: int = opt(3000, 1, BIG)  # optimiser steps
    batch: int = opt(64, 1, 10**5)  # (W_src -> W_tgt) pairs per step
    lr: float = opt(2e-3, 0.0, 1e-1, live=True)  # AdamW peak learning rate; above 0.1 every denoiser diverges
    weight_decay: float = opt(0.0, 0.0, 10.0)  # AdamW weight decay
    warmup: int = opt(100, 0, BIG)  # linear warm-up steps, then cosine decay to 0
    grad_clip: float = opt(1.0, 1e-3, 1e3, live=True)  # max gradient norm; 0 would freeze the model
    gap: str = opt("mixed", choices=("mixed", "easy_to_hard", "hard_to_easy"))  # gap curriculum over training
    p_final: float = opt(0.5, 0.0, 1.0)  # probability a pair's target is the run's final checkpoint
    k_max: int = opt(4, 1, 16)  # longest synthesis chain trained (unrolled) and validated
    p_unroll: float = opt(0.5, 0.0, 1.0, live=True)  # probability a batch trains a K-step chain on its own outputs
    slot_weight: float = opt(1.0, 0.0, 100.0)  # token-MSE weight of bias and outgoing-weight slots (incoming: 1)
    func_weight: float = opt(1.0, 0.0, 100.0, live=True)  # functional loss: KL of outputs to the target net's
    label_weight: float = opt(0.0, 0.0, 100.0, live=True)  # train-label cross-entropy of synthesized final states
    label_smoothing: float = opt(0.0, 0.0, 1.0, live=True)  # label smoothing of that cross-entropy
    perturb_min: float = opt(1e-3, 0.0, 1.0, live=True)  # smallest centred input perturbation sigma, x init scale
    perturb_max: float = opt(5e-2, 0.0, 1.0, live=True)  # largest one (sigma is log-uniform in between)
    perturb_ramp: int = opt(1000, 0, BIG)  # steps over which the perturbation is ramped in
    moe_aux: float = opt(1e-2, 0.0, 100.0)  # weight of the MoE load-balancing loss
    moe_z: float = opt(1e-3, 0.0, 100.0)  # weight of the MoE router z-loss
    val_runs: int = opt(32, 1, 10**6)  # zoo runs (the last seeds) held out of training for validation
    val_every: int = opt(250, 1, 10**6, live=True)  # steps between validations (real accuracy of synthesized nets)
    seed: int = opt(0, 0, SEED_MAX)  # RNG seed of the run


@dataclass
class RewardConfig:
    acc_weight: float = opt(1.0, 0.0, 10.0, live=True)  # final accuracy (on grpo.reward_split)
    gain_weight: float = opt(0.1, 0.0, 10.0, live=True)  # sum of the positive accuracy gains between steps
    penalty_weight: float = opt(0.5, 0.0, 10.0, live=True)  # penalties: accuracy regressions, norm blow-up
    step_cost: float = opt(0.0, 0.0, 1.0, live=True)  # cost per denoising step; above 1 it outweighs any accuracy
    ce_weight: float = opt(0.1, 0.0, 10.0, live=True)  # negative cross-entropy (signal when accuracies tie)
    norm_limit: float = opt(8.0, 1.0, 100.0, live=True)  # weight-norm ratio to the init where blow-up starts (zoo ~4.2)


@dataclass
class GRPOConfig:
    iters: int = opt(100, 0, BIG)  # policy updates (0: no GRPO stage in `synthnet demo`)
    inits: int = opt(16, 1, 1024, live=True)  # fresh random inits (prompts) per iteration
    group: int = opt(8, 2, 256, live=True)  # rollouts per init; one rollout has no group-relative advantage
    k_max: int = opt(4, 1, 16, live=True)  # longest rollout
    k_dist: str = opt("uniform", choices=("uniform", "fixed"), live=True)  # K per group: uniform 1..k_max | k_max
    sigma: float = opt(0.02, 1e-4, 1.0, live=True)  # policy std in normalised weight space; 1 is pure noise
    explore: str = opt("weights", choices=("weights", "neurons"))  # noise on: every weight | a direction per neuron
    lr: float = opt(1e-4, 0.0, 1e-2, live=True)  # AdamW learning rate; above 1e-2 RL destroys the supervised model
    eps_low: float = opt(0.2, 0.0, 1.0, live=True)  # PPO clip below 1
    eps_high: float = opt(0.28, 0.0, 10.0, live=True)  # PPO clip above 1
    passes: int = opt(2, 1, 100)  # optimisation passes over each batch of rollouts
    kl_beta: float = opt(0.01, 0.0, 10.0, live=True)  # weight of KL to the frozen supervised model
    aux_weight: float = opt(0.0, 0.0, 100.0, live=True)  # auxiliary supervised denoising loss on zoo pairs (0 = off)
    label_weight: float = opt(0.0, 0.0, 100.0, live=True)  # exact gradient: prompts' label CE on reward samples
    label_smoothing: float = opt(0.0, 0.0, 0.99, live=True)  # label smoothing of that cross-entropy
    group_mode: str = opt("sequences", choices=("sequences", "steps", "both"))  # what a group compares
    std_norm: bool = True  # divide advantages by the group std (False = Dr. GRPO)
    loss_norm: str = opt("grpo", choices=("grpo", "bnpo", "dr_grpo"))  # how the surrogate is averaged
    adv_clip: float = opt(5.0, 1e-2, 100.0, live=True)  # clip advantages to +-adv_clip; 0 would zero them all
    grad_clip: float = opt(1.0, 1e-3, 1e3, live=True)  # max gradient norm; 0 would freeze the policy
    eval_every: int = opt(20, 1, 10**6, live=True)  # iterations between held-out evaluations
    eval_inits: int = opt(64, 1, 10**5)  # fixed unseen inits for held-out evaluation (seeds.HELDOUT_BASE up)
    reward_split: str = opt("train+val", choices=("train+val", "val", "train"))  # what the reward scores on
    heldout_frac: float = opt(0.34, 0.0, 1.0)  # last share of val the reward never sees (held-out accuracy)
    seed: int = opt(0, 0, 10**6)  # RNG seed; also picks the run's block of prompt seeds (seeds.prompt_seeds)


@dataclass
class EvalConfig:
    seeds: str = EVAL_SEEDS  # evaluation seeds (never used in training or for a design choice)
    k_max: int = opt(4, 1, 16)  # synthesis steps evaluated


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    zoo: ZooConfig = field(default_factory=ZooConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


@dataclass(frozen=True)
class Knob:
    """The facts of one config key, read from its field."""

    type: type  # int | float | str | bool
    low: float | None  # smallest accepted value (numeric keys)
    high: float | None  # largest accepted value
    choices: tuple  # accepted values (choice keys; empty otherwise)
    live: bool  # changeable while a run goes on


def _knobs() -> dict[str, Knob]:
    out = {}
    for section in fields(Config):
        for f in fields(section.default_factory()):
            md = f.metadata
            out[f"{section.name}.{f.name}"] = Knob(type(f.default), md.get("low"), md.get("high"),
                                                    md.get("choices", ()), md.get("live", False))
    return out


KNOBS = _knobs()  # every key of the schema -> its facts
CHOICES = {key: k.choices for key, k in KNOBS.items() if k.choices}
LIVE = [key for key, k in KNOBS.items() if k.live]


def accepted(key: str) -> str:
    """What a key accepts, in words: 'one of a, b' or 'an int in [low, high]'."""
    knob = KNOBS[key]
    if knob.choices:
        return "one of " + ", ".join(repr(c) if c == "" else str(c) for c in knob.choices)
    return f"{'an int' if knob.type is int else 'a float'} in [{knob.low:g}, {knob.high:g}]"


def check_key(key: str, value: Any, given: Any = None) -> None:
    """SynthNetError unless `value` is accepted for `key` (its choices or its range; NaN is never in a range; None,
    a value that did not convert, never is). The message shows `given`, what the user wrote, when there is one."""
    knob = KNOBS[key]
    ok = value in knob.choices if knob.choices else knob.low is None or (
        value is not None and knob.low <= value <= knob.high)
    if not ok:
        raise SynthNetError(f"{key}={value if given is None else given!r} is not accepted; {key} takes "
                            f"{accepted(key)}")


def presets() -> list[str]:
    return sorted([p.stem for p in PRESET_DIR.glob("*.yaml")] + list(PRESET_ALIASES))


def compose(preset: str | None = None, overrides: list[str] = (), base: Config | None = None) -> Config:
    """Schema defaults (or `base`) <- model.size's fields <- preset YAML <- key=value overrides; returns a typed
    config whose every value is resolved and inside its field's range or choices (else a one-line error)."""
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise SynthNetError(f"override {bad[0]!r} is not key=value (e.g. train.lr=3e-4)")
    try:
        layers = [_preset(preset), OmegaConf.from_dotlist(list(overrides))]
        start = OmegaConf.structured(Config) if base is None else OmegaConf.merge(OmegaConf.structured(Config), base)
        cfg = OmegaConf.merge(start, *layers)
        check_key("model.size", cfg.model.size)
        if cfg.model.size:
            cfg = OmegaConf.merge(start, {"model": SIZES[cfg.model.size]}, *layers)
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as exc:
        raise SynthNetError(config_error(exc)) from None
    for key in KNOBS:
        check_key(key, OmegaConf.select(cfg, key))
    return cfg  # type: ignore[return-value]


def _preset(name: str | None) -> DictConfig:
    if not name:
        return OmegaConf.create()
    path = PRESET_DIR / f"{PRESET_ALIASES.get(name, name)}.yaml"
    if not path.is_file():
        raise SynthNetError(f"unknown preset {name!r}; accepted: {', '.join(presets())}")
    return OmegaConf.load(path)


def rl_base(model_cfg: Config) -> Config:
    """The config a GRPO run starts from: its supervised run's data, zoo, model, train and eval settings, with the
    reward and grpo sections back at schema defaults (a supervised run never used them, and a copy saved with an
    older run would silently carry stale GRPO settings forward)."""
    cfg = OmegaConf.merge(OmegaConf.structured(Config), model_cfg)
    for section in ("reward", "grpo"):
        cfg[section] = OmegaConf.structured(Config)[section]
    return cfg  # type: ignore[return-value]


def config_error(exc: OmegaConfBaseException) -> str:
    """One line naming the key at fault and, for an unknown key, the keys its section accepts."""
    key = getattr(exc, "full_key", "") or ""
    msg = str(exc).splitlines()[0]
    if isinstance(exc, InterpolationResolutionError):
        return f"bad value for config key {key!r}: {msg} (interpolations must name an existing key)"
    if "not in struct" in msg or "Key" in type(exc).__name__:
        section = key.rsplit(".", 1)[0] if "." in key else ""
        node = OmegaConf.select(OmegaConf.structured(Config), section) if section else OmegaConf.structured(Config)
        accepted = ", ".join(node.keys()) if isinstance(node, DictConfig) else ""
        return f"unknown config key {key!r}; accepted in {section or 'top level'}: {accepted}"
    return f"bad value for config key {key!r}: {msg}"


def to_yaml(cfg: Config) -> str:
    return OmegaConf.to_yaml(cfg)


def from_yaml(text: str, source: str) -> Config:
    """A saved config back into the schema; a key this version does not know (a run written by another version)
    is a one-line error naming `source`, the file it came from."""
    try:
        return OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.create(text))  # type: ignore[return-value]
    except OmegaConfBaseException as exc:
        raise SynthNetError(f"{source}: {config_error(exc)} (written by another version of SynthNet?)") from None
