"""Neuron tokens: exact round trip, the documented layout, permutation behaviour, and the normaliser."""

import math

import pytest
import torch
from conftest import permute_units

from synthnet.errors import SynthNetError
from synthnet.targets import init_state, parse_spec
from synthnet.tokens import N_ROLES, ROLE_NAMES, Normalizer, from_tokens, layout, to_tokens
from synthnet.weights import stack_states

# spec -> (N, F, roles in token order as (role name, count))
LAYOUTS = {
    "mlp:64-32-10": (33, 75, [("mlp/single", 32), ("mlp/out_bias", 1)]),
    "mlp:64-16-10": (17, 75, [("mlp/single", 16), ("mlp/out_bias", 1)]),
    "mlp:64-64-32-10": (97, 75, [("mlp/first", 64), ("mlp/last", 32), ("mlp/out_bias", 1)]),
    "cnn:1x8x8-8-16-10": (25, 83, [("cnn/first", 8), ("cnn/last", 16), ("cnn/out_bias", 1)]),
    "cnn:1x40-16-10": (17, 14, [("cnn/single", 16), ("cnn/out_bias", 1)]),
    # the cross-target table's rows (README): strided convs, mnist1d, 784 inputs
    "cnn:1x8x8-16s-32s-10": (49, 155, [("cnn/first", 16), ("cnn/last", 32), ("cnn/out_bias", 1)]),
    "mlp:40-128-10": (129, 51, [("mlp/single", 128), ("mlp/out_bias", 1)]),
    "cnn:1x40-32s-32s-32s-10": (97, 107, [("cnn/first", 32), ("cnn/middle", 32), ("cnn/last", 32),
                                          ("cnn/out_bias", 1)]),
    "mlp:784-64-10": (65, 795, [("mlp/single", 64), ("mlp/out_bias", 1)]),
}
# (spec, hidden layer permuted): last layers (tokens reorder), and layers feeding a hidden layer (its rows permute)
PERMUTED = [("mlp:64-32-10", 0), ("mlp:64-64-32-10", 1), ("mlp:64-64-32-10", 0), ("cnn:1x8x8-16s-32s-10", 0),
            ("cnn:1x8x8-16s-32s-10", 1), ("mlp:40-128-10", 0), ("cnn:1x40-32s-32s-32s-10", 1),
            ("mlp:784-64-10", 0)]


def random_params(spec, b: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights with no two values alike, so a misplaced parameter cannot go unnoticed."""
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn((b, *s), generator=g) for k, s in spec.shapes().items()}


def inits(text: str, seeds) -> dict[str, torch.Tensor]:
    return stack_states([init_state(text, s) for s in seeds])


@pytest.mark.parametrize("text", LAYOUTS)
def test_round_trip_is_bit_exact(text):
    spec = parse_spec(text)
    params = random_params(spec, 3)
    tokens = to_tokens(spec, params)
    back = from_tokens(spec, tokens)
    assert list(back) == list(spec.shapes())
    assert all(torch.equal(back[k], params[k]) for k in params)
    lay = layout(spec)
    assert (tokens[:, ~lay.mask] == 0).all()
    assert int(lay.mask.sum()) == spec.n_params()
    # every parameter value appears exactly once among the valid slots
    assert torch.equal(tokens[:, lay.mask].sort(1).values, torch.cat([p.flatten(1) for p in params.values()], 1)
                       .sort(1).values)


@pytest.mark.parametrize("text", LAYOUTS)
def test_layout_is_the_documented_one(text):
    n, f, roles = LAYOUTS[text]
    lay = layout(parse_spec(text))
    assert (lay.n_tokens, lay.width) == (n, f)
    expected = [ROLE_NAMES.index(name) for name, count in roles for _ in range(count)]
    assert lay.roles.tolist() == expected
    assert lay.roles.max() < N_ROLES


def test_single_hidden_token_slots():
    """Slot 0 = bias, 1..10 = outgoing column, 11..74 = incoming row; the output-bias token uses slots 1..10."""
    spec = parse_spec("mlp:64-32-10")
    p = random_params(spec, 2)
    tokens = to_tokens(spec, p)
    unit = 5
    assert torch.equal(tokens[:, unit, 0], p["0.bias"][:, unit])
    assert torch.equal(tokens[:, unit, 1:11], p["2.weight"][:, :, unit])
    assert torch.equal(tokens[:, unit, 11:75], p["0.weight"][:, unit])
    assert torch.equal(tokens[:, -1, 1:11], p["2.bias"])


@pytest.mark.parametrize("text", LAYOUTS)
def test_links_name_every_hidden_to_hidden_weight(text):
    """Each hidden layer fed by hidden units has a Link whose rows() are exactly its weight tensor, and the edge
    mask covers those slots and nothing else."""
    spec = parse_spec(text)
    p, lay = random_params(spec, 2), layout(spec)
    keys = spec.layer_keys()[1:len(spec.hidden)]
    assert len(lay.links) == len(keys)
    for link, key in zip(lay.links, keys):
        assert torch.equal(link.rows(to_tokens(spec, p)), p[f"{key}.weight"].flatten(3) if spec.kind == "cnn"
                           else p[f"{key}.weight"][..., None])
    assert int(lay.edge.sum()) == sum(p[f"{k}.weight"][0].numel() for k in keys)
    assert not (lay.edge & ~lay.mask).any()


def test_width_does_not_change_features_or_roles():
    a, b = layout(parse_spec("mlp:64-16-10")), layout(parse_spec("mlp:64-48-10"))
    assert a.width == b.width
    assert torch.equal(a.mask[0], b.mask[0]) and torch.equal(a.mask[-1], b.mask[-1])
    assert set(a.roles.tolist()) == set(b.roles.tolist())


@pytest.mark.parametrize("text,layer", PERMUTED)
def test_permuting_hidden_units_permutes_tokens(text, layer):
    """Permuting the units (channels) of hidden `layer` reorders its tokens and, where a hidden layer follows,
    that layer's incoming slots unit by unit (a conv's in-channel blocks of kernel values)."""
    spec = parse_spec(text)
    p = random_params(spec, 2)
    nxt = f"{spec.layer_keys()[layer + 1]}.weight"
    perm = torch.randperm(spec.hidden[layer], generator=torch.Generator().manual_seed(1))
    q = permute_units(spec, p, layer, perm)
    want = to_tokens(spec, p)
    offset = sum(spec.hidden[:layer])
    order = torch.arange(layout(spec).n_tokens)
    order[offset:offset + len(perm)] = offset + perm
    want = want[:, order]
    if layer + 1 < len(spec.hidden):  # the next hidden layer's tokens: incoming row = (in units, kernel) blocks
        rows = slice(offset + len(perm), offset + len(perm) + spec.hidden[layer + 1])
        kernel = math.prod(spec.shapes()[nxt][2:])
        cols = slice(1 + spec.classes, 1 + spec.classes + len(perm) * kernel)
        block = want[:, rows, cols].unflatten(-1, (len(perm), kernel))[:, :, perm].flatten(-2)
        want[:, rows, cols] = block
    assert torch.equal(to_tokens(spec, q), want)


def test_bad_inputs_raise():
    spec = parse_spec("mlp:64-32-10")
    p = random_params(spec, 2)
    with pytest.raises(SynthNetError, match="2.bias"):
        to_tokens(spec, {k: v for k, v in p.items() if k != "2.bias"})
    with pytest.raises(SynthNetError, match="0.weight"):
        to_tokens(spec, dict(p, **{"0.weight": p["0.weight"][:, :, :10]}))
    with pytest.raises(SynthNetError, match=r"\(B, 33, 75\)"):
        from_tokens(spec, torch.zeros(2, 17, 75))


def test_normalizer_round_trip_and_state_dict():
    spec = parse_spec("cnn:1x8x8-8-16-10")
    norm = Normalizer.fit(spec, random_params(spec, 8, seed=1))
    tokens = to_tokens(spec, random_params(spec, 4, seed=2))
    z = norm.normalize(spec, tokens)
    assert (z[:, ~layout(spec).mask] == 0).all()
    assert torch.allclose(norm.unnormalize(spec, z), tokens, atol=1e-6, rtol=1e-6)
    again = Normalizer.from_state_dict(norm.state_dict())
    assert torch.equal(again.normalize(spec, tokens), z)
    with pytest.raises(SynthNetError, match="scale"):
        Normalizer.from_state_dict({"scale": torch.ones(3)})


def test_normalizer_gives_unit_rms_per_group_on_its_fit_data():
    spec = parse_spec("mlp:64-64-32-10")
    params = inits("mlp:64-64-32-10", range(4))
    lay = layout(spec)
    z = Normalizer.fit(spec, params).normalize(spec, to_tokens(spec, params))
    for role in lay.roles.unique():
        for kind in lay.kind[lay.roles == role].unique():
            if kind < 0:
                continue
            sel = (lay.roles[:, None] == role) & (lay.kind == kind)
            assert z[:, sel].pow(2).mean().sqrt().item() == pytest.approx(1.0, rel=1e-4)


def test_normalizer_applies_to_an_unseen_width():
    """Fitted on width 32, the fan-in gain keeps every group at unit RMS at width 48 (outgoing weights of a wider
    layer are smaller by sqrt(32/48), which a plain per-group std would miss by 18%)."""
    narrow, wide = parse_spec("mlp:64-32-10"), parse_spec("mlp:64-48-10")
    norm = Normalizer.fit(narrow, inits("mlp:64-32-10", range(16)))
    z = norm.normalize(wide, to_tokens(wide, inits("mlp:64-48-10", range(100, 116))))
    lay = layout(wide)
    for kind in (0, 1, 2):
        sel = (lay.roles[:, None] == lay.roles[0]) & (lay.kind == kind)
        assert z[:, sel].pow(2).mean().sqrt().item() == pytest.approx(1.0, abs=0.08)


def test_normalizer_fits_the_roles_of_every_arch():
    """Fitted on one- and two-hidden-layer nets together, it serves both depths at unit RMS per group (their roles
    differ: mlp/single against mlp/first and mlp/last; mlp/out_bias pools both), and still refuses the middle role of
    a depth it never saw."""
    archs = ("mlp:64-32-10", "mlp:64-64-32-10")
    norm = Normalizer.fit_archs([(parse_spec(a), inits(a, range(16))) for a in archs])
    for arch in archs:
        spec = parse_spec(arch)
        z, lay = norm.normalize(spec, to_tokens(spec, inits(arch, range(16)))), layout(spec)
        for role in lay.roles.unique().tolist()[:-1]:  # hidden roles; the pooled out_bias role is checked below
            sel = (lay.roles[:, None] == role) & (lay.kind == 0)
            assert z[:, sel].pow(2).mean().sqrt().item() == pytest.approx(1.0, rel=1e-4)
    pooled = norm.scale[ROLE_NAMES.index("mlp/out_bias")]
    one = Normalizer.fit(parse_spec(archs[0]), inits(archs[0], range(16))).scale[ROLE_NAMES.index("mlp/out_bias")]
    assert torch.isfinite(pooled[1]) and pooled[1] != one[1]
    deeper = parse_spec("mlp:64-32-32-32-10")
    with pytest.raises(SynthNetError, match="mlp/middle"):
        norm.normalize(deeper, to_tokens(deeper, inits("mlp:64-32-32-32-10", range(2))))


def test_normalizer_refuses_roles_it_never_saw():
    norm = Normalizer.fit(parse_spec("mlp:64-32-10"), inits("mlp:64-32-10", range(2)))
    cnn = parse_spec("cnn:1x40-16-10")
    with pytest.raises(SynthNetError, match="cnn/single"):
        norm.normalize(cnn, torch.zeros(1, 17, 14))


def test_normalizer_refuses_an_all_zero_group():
    spec = parse_spec("mlp:64-32-10")
    params = dict(inits("mlp:64-32-10", range(2)), **{"0.bias": torch.zeros(2, 32)})
    with pytest.raises(SynthNetError, match="mlp/single bias"):
        Normalizer.fit(spec, params)
