"""Batched functional evaluator: N weight sets of one architecture on one split in a single call.

Every consumer (zoo metrics, GRPO rewards, evaluation) goes through `evaluate` or `logits`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, vmap

from synthnet.targets import Spec, build_module


EVAL_FLOATS = 2**22  # most activation values one batched forward may hold (16 MB of float32)


@functools.lru_cache(maxsize=32)
def _skeleton(spec: Spec) -> nn.Module:
    """A parameter-free copy of the module (on the meta device) to call functionally."""
    with torch.device("meta"):
        return build_module(spec)


def logits(spec: Spec, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Forward N weight sets on shared inputs.

    params: key -> (N, *shape) float tensors; x: (S, n_features) -> returns (N, S, classes).
    """
    module = _skeleton(spec)
    return vmap(lambda p: functional_call(module, p, (x,)))(params)


def logits_per_set(spec: Spec, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Forward N weight sets, each on its own inputs: x (N, S, n_features) -> (N, S, classes)."""
    module = _skeleton(spec)
    return vmap(lambda p, xb: functional_call(module, p, (xb,)))(params, x)


@dataclass
class Scores:
    """Per-weight-set metrics on one split."""

    acc: torch.Tensor  # (N,) fraction correct in [0, 1]
    loss: torch.Tensor  # (N,) mean cross-entropy
    pred: torch.Tensor  # (N, S) int64 predicted classes


@torch.no_grad()
def evaluate(spec: Spec, params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor,
             floats: int = EVAL_FLOATS) -> Scores:
    """Accuracy, mean cross-entropy and predictions of N weight sets on (x (S, F), y (S,)).

    Forwards blocks of nets x samples whose widest activation holds at most `floats` values, so memory stays
    bounded however many nets and samples come in (128 CNNs of 3 states on 4000 samples held 10 GB in one call).
    """
    n, width = next(iter(params.values())).shape[0], spec.activation_size()
    samples = min(len(x), max(1, floats // width))
    nets = max(1, floats // (samples * width))
    accs, losses, preds = [], [], []
    for i in range(0, n, nets):
        part = {k: v[i:i + nets] for k, v in params.items()}
        ce, pred = [], []
        for j in range(0, len(x), samples):
            out = logits(spec, part, x[j:j + samples])  # (nets, samples, C)
            target = y[j:j + samples].expand(out.shape[0], -1)
            ce.append(nn.functional.cross_entropy(out.transpose(1, 2), target, reduction="none"))
            pred.append(out.argmax(-1))
        pred = torch.cat(pred, 1)
        accs.append((pred == y).float().mean(1))
        losses.append(torch.cat(ce, 1).mean(1))
        preds.append(pred)
    return Scores(torch.cat(accs), torch.cat(losses), torch.cat(preds))
