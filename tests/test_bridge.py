"""The bridge sampler (model.process=bridge): each step moves to the Brownian bridge's mean given the predicted final
weights, its noise is fixed by the sample seed and the init alone, it trains and synthesizes files, and it can learn
from several minibatch orders per init."""

import pytest
import torch
from safetensors.torch import load_file

from conftest import TINY_ARCH, tiny_cfg
from synthnet.data import load_dataset
from synthnet.denoising import load_zoo_tokens
from synthnet.errors import SynthNetError
from synthnet.eval.run import SIGMAS, _robustness
from synthnet.synthesize import load_synthesizer, synthesize_files
from synthnet.targets import init_state, parse_spec
from synthnet.train import train
from synthnet.weights import read_metadata, save_weights, stack_states
from synthnet.zoo import Recipe, build_zoo, load_zoo_orders

SPEC = parse_spec(TINY_ARCH)


@pytest.fixture(scope="module")
def bridge_run(tiny_zoo, tmp_path_factory):
    out = tmp_path_factory.mktemp("bridge")
    train(tiny_cfg(tiny_zoo, "model.process=bridge", "model.bridge_sigma=0.5"), out)
    return out


def inits(*seeds):
    return stack_states([init_state(SPEC, s) for s in seeds])


def test_a_step_moves_to_the_bridge_mean_and_reaches_the_predicted_final_weights_at_level_zero(bridge_run):
    synth = load_synthesizer(bridge_run)
    tokens = synth.encode(SPEC, inits(1, 2, 3))
    level_in = torch.full((3,), 0.75)
    with torch.no_grad():
        mid, aux = synth.step(SPEC, tokens, level_in, torch.full((3,), 0.5))
        end, aux0 = synth.step(SPEC, tokens, level_in, torch.zeros(3))
    assert torch.equal(aux["final"], aux0["final"])  # the prediction is of the final weights, whatever the target level
    assert torch.equal(end, aux0["final"])
    torch.testing.assert_close(mid, tokens + (0.25 / 0.75) * (aux["final"] - tokens))


def test_the_sample_seed_fixes_the_weights_and_another_seed_draws_others(bridge_run):
    synth = load_synthesizer(bridge_run)
    batch = inits(1, 2, 3)
    first, again, other = (synth.run(SPEC, batch, 3, seed)[-1] for seed in (0, 0, 1))
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)
    one_step = [synth.run(SPEC, batch, 1, seed)[-1] for seed in (0, 1)]  # a 1-step path draws nothing
    assert all(torch.equal(one_step[0][k], one_step[1][k]) for k in first)
    alone = synth.run(SPEC, inits(2), 3, 0)[-1]  # a network's draws do not depend on the rest of its batch
    for k in first:
        torch.testing.assert_close(alone[k][0], first[k][1], rtol=1e-5, atol=1e-6)
    synth.cfg.model.bridge_sigma = 0.0  # the seeds' difference is the bridge's noise and nothing else
    quiet = [synth.run(SPEC, batch, 3, seed)[-1] for seed in (0, 1)]
    assert all(torch.equal(quiet[0][k], quiet[1][k]) for k in first)


def test_robustness_keeps_a_perturbed_init_on_its_init_draws_so_the_gain_does_not_grow_as_one_over_sigma(bridge_run):
    synth, seeds = load_synthesizer(bridge_run), [1, 2, 3]
    batch, (x, y) = inits(*seeds), load_dataset("digits").split("test")
    base = synth.run(SPEC, batch, 3)[-1]
    tree, _ = _robustness(synth, SPEC, batch, seeds, 3, base, x, y)
    gains = [tree[f"sigma_{s:g}"]["gain"] for s in SIGMAS]  # each (3,), over SIGMAS 100x apart
    assert (gains[0] < 3 * gains[-1]).all() and (gains[0] > gains[-1] / 3).all()
    fresh = synth.run(SPEC, {k: v * (1 + SIGMAS[0]) for k, v in batch.items()}, 3)[-1]  # its own draws: a new path
    assert sum((fresh[k] - base[k]).norm() for k in base) > 10 * sum(SIGMAS[0] * v.norm() for v in batch.values())


def test_synthesize_records_the_sample_seed_and_draws_by_it(bridge_run, tmp_path):
    save_weights(tmp_path / "init.safetensors", init_state(SPEC, 7), SPEC, seed=7)
    written = {}
    for seed in (3, 4):
        path = tmp_path / f"s{seed}.safetensors"
        synthesize_files([tmp_path / "init.safetensors"], bridge_run, 3, out=path, sample_seed=seed)
        assert read_metadata(path)["sample_seed"] == seed
        written[seed] = load_file(path)
        expected = load_synthesizer(bridge_run).run(SPEC, inits(7), 3, seed)[-1]
        assert all(torch.equal(v, expected[k][0]) for k, v in written[seed].items())
    assert not all(torch.equal(written[3][k], written[4][k]) for k in written[3])


def test_training_reads_every_minibatch_order_as_more_runs_of_the_same_inits(tmp_path):
    """zoo.orders=R: R runs per init (the spread a sampler learns), the same held-out inits in every order."""
    zoo = tmp_path / "zoo"
    build_zoo(zoo, [TINY_ARCH], "digits", list(range(5)), Recipe(epochs=1), orders=2)
    cfg = tiny_cfg(zoo, "train.val_runs=2")
    (one,), norm = load_zoo_tokens(cfg)
    (two,), _ = load_zoo_tokens(tiny_cfg(zoo, "train.val_runs=2", "zoo.orders=2"), norm)
    assert two.tokens.shape == (6, *one.tokens.shape[1:]) and torch.equal(two.tokens[:3], one.tokens)
    assert torch.equal(two.tokens[3:, 0], one.tokens[:, 0])  # order 1 starts from the same inits ...
    assert not torch.equal(two.tokens[3:, -1], one.tokens[:, -1])  # ... and ends elsewhere
    assert all(torch.equal(two.val_init[k], one.val_init[k]) for k in one.val_init)
    both = load_zoo_orders(zoo, TINY_ARCH, 2)  # what novelty searches for such a model: every order's checkpoints
    assert both.seeds == [*range(5), *range(5)] and both.params["0.weight"].shape[0] == 10
    with pytest.raises(SynthNetError, match="minibatch order 2.*--orders"):
        load_zoo_tokens(tiny_cfg(zoo, "train.val_runs=2", "zoo.orders=3"))


def test_a_bridge_reads_only_each_runs_init_and_final_checkpoint(tiny_zoo):
    """All a bridge trains on, so the memory-mapped zoo's other epochs stay unread (row 6's zoo is 6 GB)."""
    (every,), norm = load_zoo_tokens(tiny_cfg(tiny_zoo))
    (ends,), _ = load_zoo_tokens(tiny_cfg(tiny_zoo, "model.process=bridge"), norm)
    assert every.epochs == 3 and ends.epochs == 1
    assert torch.equal(ends.tokens, every.tokens[:, [0, -1]])
