"""Spec grammar -> the documented torch module, and the init schemes that define "a random init"."""

import math

import pytest
import torch
from torch import nn

from synthnet.errors import SynthNetError
from synthnet.targets import GRAMMAR, build_module, init_state, parse_spec

SCHEMES = ("kaiming_normal", "xavier_uniform", "xavier_normal", "normal:0.02")


def by_hand(text: str) -> nn.Sequential:
    """The modules targets.py's docstring documents, written out for the specs these tests use."""
    return {
        "mlp:64-32-10": lambda: nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)),
        "mlp:64-64-32-16-10": lambda: nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(),
                                                    nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 10)),
        "cnn:1x8x8-8-16-10": lambda: nn.Sequential(nn.Unflatten(1, (1, 8, 8)), nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(),
                                                   nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                                   nn.Flatten(), nn.Linear(16, 10)),
        "cnn:1x8x8-16s-32s-10": lambda: nn.Sequential(nn.Unflatten(1, (1, 8, 8)),
                                                      nn.Conv2d(1, 16, 3, padding=1, stride=2), nn.ReLU(),
                                                      nn.Conv2d(16, 32, 3, padding=1, stride=2), nn.ReLU(),
                                                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10)),
        "cnn:2x20-4-10": lambda: nn.Sequential(nn.Unflatten(1, (2, 20)), nn.Conv1d(2, 4, 3, padding=1), nn.ReLU(),
                                               nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(4, 10)),
    }[text]()


SPECS = ("mlp:64-32-10", "mlp:64-64-32-16-10", "cnn:1x8x8-8-16-10", "cnn:1x8x8-16s-32s-10", "cnn:2x20-4-10")


@pytest.mark.parametrize("text,kind,in_shape,hidden,classes", [
    ("mlp:64-32-10", "mlp", (64,), (32,), 10),
    ("mlp:40-128-64-32-16-3", "mlp", (40,), (128, 64, 32, 16), 3),
    ("cnn:1x8x8-8-16-10", "cnn", (1, 8, 8), (8, 16), 10),
    ("cnn:1x28x28-4-10", "cnn", (1, 28, 28), (4,), 10),
    ("cnn:1x40-8-8-10", "cnn", (1, 40), (8, 8), 10),
    ("cnn:1x40-32s-32s-32-10", "cnn", (1, 40), (32, 32, 32), 10),
])
def test_parse_and_round_trip(text, kind, in_shape, hidden, classes):
    spec = parse_spec(text)
    assert (spec.kind, spec.in_shape, spec.hidden, spec.classes) == (kind, in_shape, hidden, classes)
    assert str(spec) == text and parse_spec(str(spec)) == spec
    assert spec.n_features == math.prod(in_shape)


@pytest.mark.parametrize("text", SPECS)
def test_state_dict_matches_documented_module(text):
    spec = parse_spec(text)
    want = {k: tuple(v.shape) for k, v in by_hand(text).state_dict().items()}
    assert list(spec.shapes().items()) == list(want.items())
    assert {k: tuple(v.shape) for k, v in build_module(spec).state_dict().items()} == want
    assert spec.n_params() == sum(p.numel() for p in by_hand(text).parameters())
    x = torch.rand(5, spec.n_features)
    built, ref = build_module(spec), by_hand(text)
    ref.load_state_dict(built.state_dict())
    assert built(x).shape == (5, spec.classes)
    assert torch.allclose(built(x), ref(x))  # same computation (e.g. the strides), not just the same shapes


@pytest.mark.parametrize("text", [*SPECS, "cnn:1x40-32s-32s-32s-10", "cnn:1x7x5-4s-3-10"])
def test_activation_size_is_the_widest_layer_output(text):
    """The evaluator sizes its blocks by it: the largest per-sample output of any layer after the input."""
    outputs = []
    module = build_module(text)
    for layer in module:
        layer.register_forward_hook(lambda m, i, o: outputs.append(o[0].numel()))
    module(torch.rand(2, parse_spec(text).n_features))
    assert parse_spec(text).activation_size() == max(outputs[1:] if text.startswith("cnn") else outputs)


@pytest.mark.parametrize("text", ["mlp:64", "mlp:64-10", "mlp:64-0-10", "mlp:8x8-32-10", "cnn:64-8-10",
                                  "cnn:1x2x3x4-8-10", "rnn:64-32-10", "mlp:64-32-10-", "mlp 64-32-10", "",
                                  "mlp:64-32s-10", "cnn:1x8x8-8-10s"])
def test_bad_spec(text):
    with pytest.raises(SynthNetError) as exc:
        parse_spec(text)
    msg = str(exc.value)
    assert GRAMMAR in msg and repr(text) in msg and "\n" not in msg


@pytest.mark.parametrize("text", SPECS)
@pytest.mark.parametrize("seed", [0, 7])
def test_default_init_is_manual_seed_then_construct(text, seed):
    torch.manual_seed(seed)
    want = by_hand(text).state_dict()
    got = init_state(text, seed)
    assert list(got) == list(want)
    assert all(torch.equal(got[k], want[k]) for k in want)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_schemes_deterministic_and_seeded(scheme):
    a, b, c = (init_state("mlp:64-64-10", s, scheme) for s in (3, 3, 4))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["0.weight"], c["0.weight"])
    assert all(not v.any() for k, v in a.items() if k.endswith("bias"))
    default = init_state("mlp:64-64-10", 3)
    assert not torch.equal(a["0.weight"], default["0.weight"])


@pytest.mark.parametrize("scheme,std", [("kaiming_normal", math.sqrt(2 / 64)), ("xavier_normal", math.sqrt(2 / 128)),
                                        ("xavier_uniform", math.sqrt(2 / 128)), ("normal:0.02", 0.02)])
def test_scheme_std(scheme, std):
    w = init_state("mlp:64-64-10", 0, scheme)["0.weight"]  # a 64x64 layer
    assert abs(w.std().item() / std - 1) < 0.1
    assert abs(w.mean().item()) < 0.1 * std
    if scheme == "xavier_uniform":
        assert w.abs().max().item() <= math.sqrt(6 / 128)


def test_scheme_on_conv():
    w = init_state("cnn:1x8x8-64-64-10", 0, "kaiming_normal")["3.weight"]  # fan_in = 64 * 3 * 3
    assert abs(w.std().item() / math.sqrt(2 / (64 * 9)) - 1) < 0.1


@pytest.mark.parametrize("scheme,start", [("orthogonal", "unknown init 'orthogonal'"),
                                          ("normal:abc", "bad init 'normal:abc'"),
                                          ("normal:-1", "bad init 'normal:-1'"),
                                          ("normal:nan", "bad init 'normal:nan'")])
def test_bad_scheme(scheme, start):
    with pytest.raises(SynthNetError) as exc:
        init_state("mlp:64-32-10", 0, scheme)
    msg = str(exc.value)
    assert msg.startswith(start) and msg.endswith(
        "accepted: default, kaiming_normal, xavier_uniform, xavier_normal, normal:<std>")
