"""Data-parallel training under torchrun (gloo): process group, this rank's share, DDP, and the few collectives
the supervised and GRPO loops need.

Without torchrun (WORLD_SIZE unset or 1) every helper is the identity: no process group, no collective, and one
process computes exactly what it always did. Under `torchrun --nproc_per_node=W` every rank draws the same random
numbers from the same generators (what one process would draw) and keeps only its share of the work, so the ranks
never disagree about anything random and one checkpoint, written by rank 0, resumes every rank.
"""

from __future__ import annotations

import atexit
import hashlib
import os
from typing import Any, Callable, Iterable

import torch
import torch.distributed as tdist
from torch import nn

from synthnet.errors import SynthNetError


def init() -> None:
    """Join the gloo process group that torchrun's environment describes (WORLD_SIZE > 1); else do nothing."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not tdist.is_initialized():
        tdist.init_process_group("gloo")
        atexit.register(tdist.destroy_process_group)


def world() -> int:
    return tdist.get_world_size() if tdist.is_initialized() else 1


def rank() -> int:
    return tdist.get_rank() if tdist.is_initialized() else 0


def is_main() -> bool:
    """Rank 0 alone writes checkpoints, metrics.jsonl and TensorBoard, and reads the patch inbox."""
    return rank() == 0


def require_multiple(key: str, value: int) -> None:
    """A batch size every rank takes an equal share of (equal shares make DDP's mean of means the full mean)."""
    if value % world():
        raise SynthNetError(f"{key}={value} does not split over {world()} ranks; use a multiple of {world()}")


def share(n: int) -> range:
    """This rank's contiguous share of n items, as torch.tensor_split cuts them (sizes differ by at most one)."""
    w, r = world(), rank()
    if n < w:
        raise SynthNetError(f"{n} rollouts per iteration cannot feed {w} ranks; raise grpo.inits or grpo.group")
    start = r * (n // w) + min(r, n % w)
    return range(start, start + n // w + (r < n % w))


def shard(batch: torch.Tensor) -> torch.Tensor:
    """This rank's share of a batch (B, ...) that every rank drew whole."""
    mine = share(len(batch))
    return batch[mine.start:mine.stop]


class _Loss(nn.Module):
    """DDP wants one forward per backward; here one forward is a whole loss computation over `model`."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model  # the module whose parameters the loss trains

    def forward(self, fn: Callable, *args: Any) -> Any:
        return fn(*args)


def replicate(model: nn.Module, sparse: bool) -> Callable:
    """`run(fn, *args)` returns fn(*args), a loss (and diagnostics) computed with `model`. Under torchrun it is one
    DDP forward, so the backward of that loss leaves every rank with the mean gradient over ranks; in one process
    it is a plain call. sparse: some parameters may get no gradient (an MoE expert that no token chose)."""
    if world() == 1:
        return lambda fn, *args: fn(*args)
    return nn.parallel.DistributedDataParallel(_Loss(model), find_unused_parameters=sparse,
                                               forward_sync_buffers=False)  # buffers are constants


def broadcast(obj: Any) -> Any:
    """Rank 0's picklable `obj`, on every rank."""
    if world() == 1:
        return obj
    box = [obj]
    tdist.broadcast_object_list(box, src=0)
    return box[0]


def broadcast_config(cfg: Any, keys: Iterable[str]) -> None:
    """Give every rank rank 0's values of `keys` ("section.name"), in place: live patches and self-tuning rules
    change rank 0's config, and the other ranks must apply the same change at the same step."""
    if world() == 1:
        return
    values = broadcast({key: getattr(getattr(cfg, key.split(".")[0]), key.split(".")[1]) for key in keys})
    for key, value in values.items():
        section, name = key.split(".")
        setattr(getattr(cfg, section), name, value)


def gather_cat(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every rank's tensors (n_rank, ...) concatenated in rank order along dim 0, key by key (one collective)."""
    if world() == 1:
        return tensors
    parts: list[Any] = [None] * world()
    tdist.all_gather_object(parts, tensors)
    return {key: torch.cat([p[key] for p in parts]) for key in tensors}


def mean_over_ranks(values: dict[str, Any], weight: float = 1.0) -> dict[str, Any]:
    """`values` with every float replaced by its `weight`-weighted mean over ranks (other entries unchanged).
    Every rank must hold the same float keys."""
    if world() == 1:
        return values
    keys = sorted(k for k, v in values.items() if isinstance(v, float))
    sums = torch.tensor([weight * values[k] for k in keys] + [weight], dtype=torch.float64)
    tdist.all_reduce(sums)
    return {**values, **{k: (sums[i] / sums[-1]).item() for i, k in enumerate(keys)}}


def finish() -> None:
    """End of a successful run, after rank 0's last writes: every rank waits for the others here, so none starts
    tearing gloo down at exit while another is still working (an early rank's teardown once aborted it, SIGABRT)."""
    if tdist.is_initialized():
        tdist.barrier()


def check_replicas(model: nn.Module) -> None:
    """Raise unless every rank holds bit-identical parameters: DDP's invariant, which any rank-dependent change of
    the weights or of a config value would silently break."""
    if world() == 1:
        return
    digest = hashlib.sha256()
    for p in model.parameters():
        digest.update(p.detach().numpy().tobytes())
    digests: list[Any] = [None] * world()
    tdist.all_gather_object(digests, digest.hexdigest())
    if len(set(digests)) > 1:
        raise SynthNetError(f"ranks ended with different weights (sha256 {', '.join(d[:12] for d in digests)})")
