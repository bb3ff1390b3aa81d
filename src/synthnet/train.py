"""Supervised denoising stage: learn one-shot jumps and short chains from real training runs (the objective is
denoising.py). Validation = real accuracy of networks synthesized from held-out zoo seeds' inits.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from synthnet.allocator import freed_memory_kept
from synthnet.config import Config
from synthnet.data import Dataset, load_dataset
from synthnet.denoising import ZooTokens, bridge_batch, chain_batch, load_zoo_tokens, pair_batch, train_batch
from synthnet.distributed import mean_over_ranks, require_multiple
from synthnet.patches import Rule
from synthnet.runlog import Run
from synthnet.scoring import evaluate
from synthnet.seeds import supervised_record
from synthnet.synthesize import Synthesizer


@torch.no_grad()
def validate(synth: Synthesizer, zoos: list[ZooTokens], data: Dataset, k_max: int) -> dict:
    """Real val-split accuracy of networks synthesized from held-out inits, per arch and K, and the margin of the
    best K over those inits' own teachers (val_gain > 0: above the teacher)."""
    x, y = data.split("val")
    row = {}
    for zt in zoos:
        for k, state in enumerate(synth.outputs(zt.spec, zt.val_init, k_max), 1):
            row[f"val_acc/{zt.spec}/k{k}"] = evaluate(zt.spec, state, x, y).acc.mean().item()
    per_k = [sum(row[f"val_acc/{z.spec}/k{k}"] for z in zoos) / len(zoos) for k in range(1, k_max + 1)]
    row["val_acc"] = max(per_k)
    row["val_best_k"] = 1 + per_k.index(row["val_acc"])
    row["val_gain"] = row["val_acc"] - sum(z.val_teacher for z in zoos) / len(zoos)
    return row


def lr_factor(step: int, cfg) -> float:
    """Linear warm-up then cosine decay to 0."""
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))))


@freed_memory_kept()
def train(cfg: Config, out: Path, stop_after: int | None = None, rules: Sequence[Rule] = ()) -> Synthesizer:
    """Run (or exactly resume) the supervised stage into run directory `out`; returns the final synthesizer.

    stop_after: end after this many steps without writing `final` (tests use it to simulate a kill).
    rules: self-tuning rules applied as live patches. Under torchrun each rank runs its share of every batch (DDP).
    """
    t = cfg.train
    require_multiple("train.batch", t.batch)
    # ---- set-up: zoo tokens, model, optimiser, RNG; resume if a checkpoint is there ----
    zoos, normalizer = load_zoo_tokens(cfg)
    data = load_dataset(cfg.data.dataset)
    for z in zoos:
        data.check_arch(z.spec)
    torch.manual_seed(t.seed)
    synth = Synthesizer(cfg, zoos[0].spec, normalizer)
    synth.run_dir, synth.seeds = str(out), supervised_record([s for z in zoos for s in z.seeds])
    opt = torch.optim.AdamW(synth.denoiser.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    g = torch.Generator().manual_seed(t.seed)
    run = Run(out, cfg, synth, opt, g, rules)
    if run.main:
        n_params = sum(p.numel() for p in synth.denoiser.parameters())
        print(f"denoiser {cfg.model.name}: {n_params:,} parameters; zoo archs {[str(z.spec) for z in zoos]}, "
              f"{[len(z.tokens) for z in zoos]} training runs, tokens per network {[z.tokens.shape[2] for z in zoos]}")
    t0 = time.perf_counter()
    for step in run.steps(t.steps, stop_after, "supervised"):
        # ---- batch: pairs or a chain on the model's own outputs ----
        for group in opt.param_groups:
            group["lr"] = t.lr * lr_factor(step, t)
        zt = zoos[int(torch.randint(len(zoos), (1,), generator=g))]
        x, y = train_batch(data, g)
        single = bridge_batch if cfg.model.process == "bridge" else pair_batch
        make = chain_batch if torch.rand(1, generator=g).item() < t.p_unroll else single
        synth.train()
        loss, parts = run.replica(make, synth, zt, step, cfg, g, x, y)  # DDP: gradients averaged over ranks
        # ---- update ----
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(synth.denoiser.parameters(), t.grad_clip).item()
        opt.step()
        row = mean_over_ranks({"loss": loss.item(), **parts, "grad_norm": grad_norm,
                               "lr": opt.param_groups[0]["lr"]})
        # ---- validation (rank 0): real accuracy of synthesized held-out inits ----
        validating = run.main and ((step + 1) % t.val_every == 0 or step + 1 == t.steps)
        if validating:
            row.update(validate(synth, zoos, data, t.k_max), steps_per_s=(step + 1) / (time.perf_counter() - t0))
            synth.best_k = row["val_best_k"]
        run.end_step(row, row["val_acc"] if validating else None,
                     f"supervised val_acc {row.get('val_acc', 0):.3f} (k={row.get('val_best_k')}, "
                    f"{row.get('val_gain', 0):+.3f} vs teachers)")
    return synth
