"""Denoisers: the one interface, permutation equivariance, switch routing, and that each can learn at all."""

import pytest
import torch
from conftest import permute_units
from torch import nn

from synthnet.config import CHOICES, ModelConfig, compose
from synthnet.errors import SynthNetError
from synthnet.models import DENOISERS, SIZES, build_denoiser
from synthnet.models.moe import FeedForward, merge_stats
from synthnet.targets import parse_spec
from synthnet.tokens import from_tokens, layout, to_tokens

SMALL = {"dim": 32, "depth": 2, "heads": 4, "latents": 8, "ffn_mult": 2}
EQUIVARIANT = [(name, experts) for name in ("set", "perceiver") for experts in (0, 4)]


@pytest.fixture(autouse=True)
def one_thread():
    """The models here are tiny: a second intra-op thread only adds synchronisation, and on a busy 2-core
    machine its spin-waiting made training steps 10-30x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def denoiser(text: str, name: str, experts: int = 0, seed: int = 0, **over) -> nn.Module:
    """A small denoiser with every parameter redrawn, so FiLM, routers and the head are far from their
    near-identity init and a symmetry bug cannot hide behind near-zero outputs."""
    torch.manual_seed(seed)
    model = build_denoiser(ModelConfig(name=name, experts=experts, **{**SMALL, **over}), parse_spec(text))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    return model.eval()


def tokens_of(text: str, b: int, seed: int = 0) -> torch.Tensor:
    spec = parse_spec(text)
    g = torch.Generator().manual_seed(seed)
    return to_tokens(spec, {k: torch.randn((b, *s), generator=g) for k, s in spec.shapes().items()})


def levels(b: int) -> tuple[torch.Tensor, torch.Tensor]:
    level_in = torch.linspace(1.0, 0.3, b)
    return level_in, level_in * 0.5


@pytest.mark.parametrize("name,experts", EQUIVARIANT)
@pytest.mark.parametrize("text,layer", [("mlp:64-32-10", 0), ("mlp:64-64-32-10", 1), ("mlp:64-64-32-10", 0),
                                        ("cnn:1x8x8-8s-16s-10", 0), ("cnn:1x40-8-8-8-10", 1)])
def test_permuting_hidden_units_permutes_outputs(name, experts, text, layer):
    """Permuting a hidden layer's units leaves the network's function unchanged, so the denoiser's output must be
    permuted the same way: its tokens, and where a hidden layer follows, that layer's incoming weights."""
    spec = parse_spec(text)
    model, lay = denoiser(text, name, experts), layout(spec)
    g = torch.Generator().manual_seed(1)
    p = {k: torch.randn((3, *s), generator=g) for k, s in spec.shapes().items()}
    perm = torch.randperm(spec.hidden[layer], generator=g)
    with torch.no_grad():
        out, aux = model(to_tokens(spec, p), lay, *levels(3))
        out_p, aux_p = model(to_tokens(spec, permute_units(spec, p, layer, perm)), lay, *levels(3))
    assert out.abs().mean() > 0.1  # outputs are far from zero, so atol 1e-5 is a real check
    assert not torch.allclose(out_p, out, atol=1e-3)
    want = permute_units(spec, from_tokens(spec, out), layer, perm)
    got = from_tokens(spec, out_p)
    assert all(torch.allclose(got[k], want[k], atol=1e-5) for k in want)
    if experts:
        assert torch.allclose(aux_p["expert_util"], aux["expert_util"])


@pytest.mark.parametrize("name", ["set", "perceiver"])
def test_linked_slots_are_read_as_edges(name):
    """Each weight between two hidden layers reaches its end tokens: changing one changes the outputs of both."""
    spec = parse_spec("mlp:64-16-8-10")
    model, lay, x = denoiser("mlp:64-16-8-10", name), layout(spec), tokens_of("mlp:64-16-8-10", 1)
    link = lay.links[0]
    y = x.clone()
    y[0, link.dst + 2, link.col + 5] += 1.0  # the weight from first-layer unit 5 to second-layer unit 2
    with torch.no_grad():
        a, b = model(x, lay, *levels(1))[0], model(y, lay, *levels(1))[0]
    assert (a[0, 5] - b[0, 5]).abs().max() > 1e-3 and (a[0, link.dst + 2] - b[0, link.dst + 2]).abs().max() > 1e-3


@pytest.mark.parametrize("name,experts", [*EQUIVARIANT, ("flat-mlp", 0)])
def test_interface_shapes_padding_and_aux(name, experts):
    model, x = denoiser("cnn:1x8x8-8-16-10", name, experts), tokens_of("cnn:1x8x8-8-16-10", 2)
    lay = layout(parse_spec("cnn:1x8x8-8-16-10"))
    out, aux = model(x, lay, *levels(2))
    assert out.shape == x.shape
    assert (out[:, ~lay.mask] == 0).all()
    assert aux["moe_loss"].shape == aux["moe_z"].shape == ()
    if experts:
        assert aux["expert_util"].shape == (experts,)
        assert aux["expert_util"].sum().item() == pytest.approx(1.0)
        assert aux["moe_loss"] >= 1.0 - 1e-6 and aux["moe_z"] > 0
    else:
        assert aux["moe_loss"] == 0 and aux["moe_z"] == 0 and aux["expert_util"].numel() == 0


@pytest.mark.parametrize("name", ["set", "perceiver"])
def test_one_model_serves_other_widths_and_depths_given_their_layouts(name):
    model = denoiser("mlp:64-64-32-10", name)
    for text in ("mlp:64-48-10", "mlp:64-16-48-10"):
        lay = layout(parse_spec(text))
        out, _ = model(tokens_of(text, 2), lay, *levels(2))
        assert out.shape == (2, lay.n_tokens, 75) and (out[:, ~lay.mask] == 0).all()
    with pytest.raises(SynthNetError, match=r"\(N, F\) = \(97, 75\)"):
        model(tokens_of("mlp:64-48-10", 2), layout(parse_spec("mlp:64-64-32-10")), *levels(2))
    shallow, deep = denoiser("mlp:64-32-10", name), parse_spec("mlp:64-16-48-10")
    with pytest.raises(SynthNetError, match="no hidden layer fed by hidden units"):
        shallow(tokens_of("mlp:64-16-48-10", 2), layout(deep), *levels(2))


def test_levels_change_the_output():
    model, x = denoiser("mlp:64-16-10", "set"), tokens_of("mlp:64-16-10", 2)
    lay = layout(parse_spec("mlp:64-16-10"))
    a, _ = model(x, lay, torch.ones(2), torch.zeros(2))
    b, _ = model(x, lay, torch.ones(2), torch.full((2,), 0.5))
    assert not torch.allclose(a, b, atol=1e-3)


def test_flat_mlp_serves_only_its_spec():
    model = denoiser("mlp:64-32-10", "flat-mlp")
    wide = layout(parse_spec("mlp:64-48-10"))
    with pytest.raises(SynthNetError, match="flat-mlp was built for mlp:64-32-10"):
        model(tokens_of("mlp:64-48-10", 2), wide, *levels(2))


def switch(weight: list[list[float]]) -> FeedForward:
    ffn = FeedForward(dim=2, mult=2, experts=len(weight))
    with torch.no_grad():
        ffn.router.weight.copy_(torch.tensor(weight))
    return ffn


def test_balance_loss_is_one_when_routing_is_uniform():
    """Two mirrored pairs of tokens: each expert gets half the tokens and, on average, half the probability."""
    ffn = switch([[1.0, 0.0], [-1.0, 0.0]])
    x = torch.tensor([[[1.0, 0.3], [-1.0, 0.3], [2.0, -1.0], [-2.0, -1.0]]])
    _, stats = ffn(x)
    assert torch.equal(stats["util"], torch.tensor([0.5, 0.5]))
    assert stats["balance"].item() == pytest.approx(1.0, abs=1e-6)
    _, skewed = ffn(x.abs())  # every token prefers expert 0
    assert torch.equal(skewed["util"], torch.tensor([1.0, 0.0]))
    assert skewed["balance"].item() > 1.5


def test_each_token_goes_to_exactly_one_expert_scaled_by_its_gate():
    torch.manual_seed(0)
    ffn = FeedForward(dim=8, mult=2, experts=3)
    x = torch.randn(2, 50, 8)
    y, stats = ffn(x)
    probs = ffn.router(x).softmax(-1)
    gate, choice = probs.max(-1)
    every = torch.stack([expert(x) for expert in ffn.experts], -2)  # (2, 50, 3, 8)
    expected = every.gather(-2, choice[..., None, None].expand(-1, -1, 1, 8)).squeeze(-2) * gate[..., None]
    assert torch.allclose(y, expected, atol=1e-6)
    assert stats["util"].sum().item() == pytest.approx(1.0)
    assert torch.equal(stats["util"] * 100, torch.bincount(choice.flatten(), minlength=3).float())
    assert stats["z"].item() == pytest.approx(ffn.router(x).logsumexp(-1).pow(2).mean().item())
    (y.sum() + stats["balance"] + stats["z"]).backward()
    assert ffn.router.weight.grad.abs().sum() > 0
    assert all(e[0].weight.grad is not None for e in ffn.experts)


def test_merge_stats_averages_over_moe_layers_only():
    a = {"balance": torch.tensor(1.0), "z": torch.tensor(2.0), "util": torch.tensor([0.5, 0.5])}
    b = {"balance": torch.tensor(3.0), "z": torch.tensor(4.0), "util": torch.tensor([1.0, 0.0])}
    aux = merge_stats([a, {}, b], torch.device("cpu"))
    assert aux["moe_loss"].item() == 2.0 and aux["moe_z"].item() == 3.0
    assert torch.equal(aux["expert_util"], torch.tensor([0.75, 0.25]))


@pytest.mark.parametrize("name,experts", [("set", 0), ("set", 4), ("perceiver", 0), ("flat-mlp", 0)])
def test_each_model_overfits_one_batch(name, experts):
    text = "cnn:1x40-8-10"  # N = 9 tokens of F = 14 features: small, so 100 steps are enough
    torch.manual_seed(0)
    model = build_denoiser(ModelConfig(name=name, experts=experts, **SMALL), parse_spec(text))
    lay = layout(parse_spec(text))
    x, target = tokens_of(text, 8, seed=1), tokens_of(text, 8, seed=2)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(100):
        out, aux = model(x, lay, *levels(8))
        loss = (out - target).pow(2).sum() / (len(x) * lay.mask.sum())
        opt.zero_grad()
        (loss + 1e-2 * aux["moe_loss"]).backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10


def test_registry_names_and_errors():
    """Every named size is reachable as model.size=NAME and builds; choices come from the registries."""
    spec = parse_spec("mlp:64-16-10")
    for name in SIZES:
        cfg = compose(None, [f"model.size={name}"])
        assert all(getattr(cfg.model, k) == v for k, v in SIZES[name].items())
        model = build_denoiser(cfg.model, spec)
        assert sum(p.numel() for p in model.parameters()) > 0
    assert compose(None, ["model.size=set-B", "model.dim=48"]).model.dim == 48  # an explicit key wins
    assert CHOICES["model.name"] == tuple(DENOISERS)
    with pytest.raises(SynthNetError, match="set-S"):
        compose(None, ["model.size=set-XL"])
    with pytest.raises(SynthNetError, match="flat-mlp, set, perceiver"):
        build_denoiser(ModelConfig(name="resnet"), spec)
    with pytest.raises(SynthNetError, match="experts"):
        build_denoiser(ModelConfig(experts=1), spec)
    with pytest.raises(SynthNetError, match="heads"):
        build_denoiser(ModelConfig(dim=30, heads=4), spec)
