"""`synthnet inspect`: metadata, per-tensor statistics and (optionally) accuracy per split of one file."""

from __future__ import annotations

from pathlib import Path

from safetensors import safe_open

from synthnet.data import load_dataset
from synthnet.scoring import evaluate
from synthnet.weights import load_weights

DTYPE_NAMES = {"F32": "float32", "F64": "float64", "F16": "float16", "BF16": "bfloat16"}  # the floats load accepts


def describe(path: Path, arch: str | None = None, dataset: str | None = None) -> tuple[dict, list[dict], list[dict]]:
    """(metadata, one row per tensor with shape/dtype/mean/std/min/max, one row per split if dataset)."""
    state, spec, meta = load_weights(path, arch)
    with safe_open(str(path), framework="pt") as f:  # the dtypes as stored; load_weights has upcast to float32
        stored = {k: DTYPE_NAMES[f.get_slice(k).get_dtype()] for k in f.keys()}
    meta = {"arch": str(spec), **{k: v for k, v in meta.items() if k != "arch"}}
    tensors = [{"tensor": k, "shape": "x".join(map(str, v.shape)), "dtype": stored[k], "mean": v.mean().item(),
                "std": v.std().item() if v.numel() > 1 else 0.0, "min": v.min().item(), "max": v.max().item()}
               for k, v in state.items()]
    scores = []
    if dataset:
        data = load_dataset(dataset)
        data.check_arch(spec, str(path))
        batch = {k: v[None] for k, v in state.items()}
        for split in ("train", "val", "test"):
            s = evaluate(spec, batch, *data.split(split))
            scores.append({"split": split, "accuracy": s.acc.item(), "loss": s.loss.item()})
    return meta, tensors, scores
