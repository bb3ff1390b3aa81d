"""Shared fixtures: a tiny real zoo and a tiny trained supervised run, built once per test session."""

from pathlib import Path

import pytest
import torch

from synthnet.config import compose
from synthnet.zoo import Recipe, build_zoo

TINY_ARCH = "mlp:64-8-10"


@pytest.fixture(scope="session")
def tiny_zoo(tmp_path_factory) -> Path:
    """12 real teacher-recipe runs of mlp:64-8-10 on digits, 3 epochs each."""
    path = tmp_path_factory.mktemp("zoo")
    build_zoo(path, [TINY_ARCH], "digits", list(range(12)), Recipe(epochs=3))
    return path


def tiny_cfg(zoo: Path, *overrides: str):
    return compose("tiny", [f"zoo.path={zoo}", f"data.arch={TINY_ARCH}", *overrides])


@pytest.fixture(scope="session")
def tiny_run(tiny_zoo, tmp_path_factory) -> Path:
    """A supervised run trained for the tiny preset's steps on the tiny zoo."""
    from synthnet.train import train

    out = tmp_path_factory.mktemp("run")
    train(tiny_cfg(tiny_zoo), out)
    return out


def permute_units(spec, params: dict, layer: int, perm: torch.Tensor) -> dict:
    """params (key -> (B, *shape)) of `spec` with the units (channels) of hidden `layer` reordered by `perm`: their
    incoming rows and biases, and the next layer's incoming columns. The network computes the same function."""
    keys = spec.layer_keys()
    w, b, nxt = f"{keys[layer]}.weight", f"{keys[layer]}.bias", f"{keys[layer + 1]}.weight"
    return dict(params, **{w: params[w][:, perm], b: params[b][:, perm], nxt: params[nxt][:, :, perm]})

