"""One typed config for every stage: dataclass schema -> YAML preset (configs/*.yaml) -> key=value overrides.

Unknown keys and wrongly-typed values are errors naming the key. Every run saves its resolved config.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from synthnet.errors import SynthNetError

PRESET_DIR = Path(__file__).resolve().parent / "presets"


@dataclass
class DataConfig:
    dataset: str = "digits"  # digits | mnist1d | idx:<dir>
    arch: str = "mlp:64-32-10"  # target spec(s) the denoiser serves; comma list for a mixed-width zoo


@dataclass
class ZooConfig:
    path: str = "zoos/digits-mlp"  # zoo directory (built by `synthnet zoo`)
    seeds: str = "0:512"  # zoo seeds (half-open A:B); never used for evaluation
    epochs: int = 30  # teacher recipe epochs
    workers: int = 1  # parallel zoo processes


@dataclass
class ModelConfig:
    name: str = "set"  # denoiser family: flat-mlp | set | perceiver
    dim: int = 64  # token width inside the denoiser
    depth: int = 3  # attention blocks
    heads: int = 4  # attention heads
    latents: int = 32  # perceiver latent array size
    experts: int = 0  # MoE experts per feed-forward (0 = dense feed-forward; >= 2 for MoE)
    ffn_mult: int = 2  # feed-forward hidden = ffn_mult * dim
    predict: str = "delta"  # delta (added to the input weights) | x0 (clean weights)


@dataclass
class TrainConfig:
    steps: int = 3000  # optimiser steps
    batch: int = 64  # (W_src -> W_tgt) pairs per step
    lr: float = 2e-3  # AdamW peak learning rate (live)
    weight_decay: float = 0.0  # AdamW weight decay
    warmup: int = 100  # linear warm-up steps, then cosine decay to 0
    grad_clip: float = 1.0  # max gradient norm
    gap: str = "mixed"  # gap schedule: mixed | easy_to_hard | hard_to_easy
    p_final: float = 0.5  # probability a pair's target is the run's final checkpoint
    k_max: int = 4  # longest synthesis chain trained (unrolled) and validated
    p_unroll: float = 0.5  # probability a batch trains a K-step chain on the model's own outputs
    func_weight: float = 1.0  # weight of the functional loss (KL of outputs to the target net on train inputs)
    label_weight: float = 0.0  # weight of the train-label cross-entropy of synthesized final states
    label_smoothing: float = 0.0  # label smoothing of that cross-entropy (caps how far it sharpens the logits)
    perturb_min: float = 1e-3  # smallest centred input perturbation sigma (log-uniform), x init scale
    perturb_max: float = 5e-2  # largest centred input perturbation sigma
    perturb_ramp: int = 1000  # steps over which the perturbation is ramped in
    moe_aux: float = 1e-2  # weight of the MoE load-balancing loss
    moe_z: float = 1e-3  # weight of the MoE router z-loss
    val_seeds: int = 32  # zoo seeds held out of training for validation (the last ones)
    val_every: int = 250  # steps between validations (real accuracy of synthesized nets)
    seed: int = 0  # RNG seed of the run


@dataclass
class RewardConfig:
    alpha: float = 1.0  # weight of the final accuracy (on grpo.reward_split)
    beta: float = 0.1  # weight of the sum of positive accuracy gains between steps
    gamma: float = 0.5  # weight of the penalties (norm blow-up, regressions)
    lam: float = 0.0  # cost per denoising step
    ce: float = 0.1  # weight of negative cross-entropy (signal when accuracies tie)
    norm_limit: float = 8.0  # weight-norm ratio to the init above which the blow-up penalty starts (zoo finals: ~4.2)


@dataclass
class GRPOConfig:
    iters: int = 100  # policy updates
    inits: int = 16  # fresh random inits (prompts) per iteration
    group: int = 8  # rollouts per init
    k_max: int = 4  # longest rollout
    k_dist: str = "uniform"  # K per group of rollouts: uniform over 1..k_max | fixed (always k_max)
    sigma: float = 0.02  # policy std in normalised weight space (live)
    lr: float = 1e-4  # AdamW learning rate (live)
    eps_low: float = 0.2  # PPO clip below 1
    eps_high: float = 0.28  # PPO clip above 1
    mu: int = 2  # optimisation passes per batch of rollouts
    kl_beta: float = 0.01  # weight of KL to the frozen supervised model
    aux_weight: float = 0.0  # weight of the auxiliary supervised denoising loss on zoo pairs (0 = off)
    group_mode: str = "sequences"  # sequences | steps | both
    std_norm: bool = True  # divide advantages by the group std (False = Dr. GRPO)
    loss_norm: str = "grpo"  # grpo | bnpo | dr_grpo
    adv_clip: float = 5.0  # clip advantages to +-adv_clip
    grad_clip: float = 1.0  # max gradient norm
    eval_every: int = 20  # iterations between held-out evaluations
    eval_inits: int = 64  # fixed unseen inits for held-out evaluation
    reward_split: str = "train+val"  # splits the reward scores on: train+val | val | train, never the held-out val
    heldout_frac: float = 0.34  # last share of val kept out of the reward for held-out accuracy (reward on train: all)
    seed: int = 0  # RNG seed (fresh init seeds are drawn from 10**6 upward)


@dataclass
class EvalConfig:
    seeds: str = "100000:100064"  # evaluation seeds (never used in training)
    k_max: int = 4  # synthesis steps evaluated


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    zoo: ZooConfig = field(default_factory=ZooConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


CHOICES = {"model.name": ("flat-mlp", "set", "perceiver"), "model.predict": ("x0", "delta"),
           "train.gap": ("mixed", "easy_to_hard", "hard_to_easy"), "grpo.k_dist": ("uniform", "fixed"),
           "grpo.group_mode": ("sequences", "steps", "both"), "grpo.loss_norm": ("grpo", "bnpo", "dr_grpo"),
           "grpo.reward_split": ("val", "train", "train+val")}


def presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def _check_choices(cfg: DictConfig) -> None:
    for key, allowed in CHOICES.items():
        value = OmegaConf.select(cfg, key)
        if value not in allowed:
            raise SynthNetError(f"{key}={value!r} is not accepted; choose one of {', '.join(allowed)}")


def compose(preset: str | None = None, overrides: list[str] = (), base: Config | None = None) -> Config:
    """Schema defaults (or `base`) <- preset YAML <- key=value overrides; returns a typed config."""
    cfg = OmegaConf.structured(Config) if base is None else OmegaConf.merge(OmegaConf.structured(Config), base)
    try:
        if preset:
            path = PRESET_DIR / f"{preset}.yaml"
            if not path.is_file():
                raise SynthNetError(f"unknown preset {preset!r}; accepted: {', '.join(presets())}")
            cfg = OmegaConf.merge(cfg, OmegaConf.load(path))
        bad = [o for o in overrides if "=" not in o]
        if bad:
            raise SynthNetError(f"override {bad[0]!r} is not key=value (e.g. train.lr=3e-4)")
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
    except OmegaConfBaseException as exc:
        raise SynthNetError(config_error(exc)) from None
    _check_choices(cfg)
    return cfg  # type: ignore[return-value]


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
