"""Permutation-aligned distance, exact nearest search, error IoU and ensemble accuracy."""

import pytest
import torch

from synthnet.eval import novelty as nv, run
from synthnet.scoring import logits
from synthnet.targets import init_state, parse_spec
from synthnet.weights import stack_states

ARCHS = ["mlp:12-7-4", "mlp:12-6-5-4", "cnn:1x4x4-3-5-4"]


def _nets(spec, seeds):
    return stack_states([init_state(spec, s) for s in seeds])


def _shuffled(spec, params, seed=0):
    """params with every hidden layer's units randomly permuted (a different permutation per net)."""
    gen = torch.Generator().manual_seed(seed)
    n = next(iter(params.values())).shape[0]
    perms = [torch.stack([torch.randperm(h, generator=gen) for _ in range(n)]) for h in spec.hidden]
    return nv.permute(spec, params, perms)


@pytest.mark.parametrize("arch", ARCHS)
def test_permuted_copy_is_the_same_function_at_aligned_distance_zero(arch):
    spec = parse_spec(arch)
    a = _nets(spec, range(6))
    b = _shuffled(spec, a)
    x = torch.randn(9, spec.n_features)
    assert torch.allclose(logits(spec, a, x), logits(spec, b, x), atol=1e-5)
    assert (nv.flat(spec, a) - nv.flat(spec, b)).norm(dim=1).min() > 0.1
    assert torch.allclose(nv.aligned_distance(spec, a, b), torch.zeros(6), atol=1e-5)


def test_one_net_against_many_broadcasts():
    spec = parse_spec("mlp:12-6-5-4")
    refs = _nets(spec, range(10, 15))
    one = {k: v[2:3] for k, v in refs.items()}
    d = nv.aligned_distance(spec, one, _shuffled(spec, refs))
    assert d[2] < 1e-5 and (d[[0, 1, 3, 4]] > 0.1).all()


@pytest.mark.parametrize("arch", ["mlp:12-16-12-4", "mlp:12-16-16-16-4"])
def test_a_pair_aligns_the_same_alone_as_in_a_batch(arch):
    """Pairs leave the weight-matching loop at their own pass: a batch must give each pair its solo result."""
    spec = parse_spec(arch)
    a, b = _nets(spec, range(8)), _nets(spec, range(20, 28))
    batch = nv.aligned_distance(spec, a, b)
    alone = [nv.aligned_distance(spec, {k: v[i:i + 1] for k, v in a.items()}, {k: v[i:i + 1] for k, v in b.items()})
             for i in range(8)]
    assert torch.equal(batch, torch.cat(alone))


@pytest.mark.parametrize("arch", ARCHS)
def test_each_block_of_nets_aligns_to_its_own_query(arch):
    """b's nets in blocks of c per query (how `nearest` aligns candidates): each as if aligned to its query alone."""
    spec = parse_spec(arch)
    q, b = _nets(spec, range(3)), _shuffled(spec, _nets(spec, range(30, 42)))
    blocks = nv.aligned_distance(spec, q, b)
    alone = [nv.aligned_distance(spec, {k: v[i // 4:i // 4 + 1] for k, v in q.items()},
                                 {k: v[i:i + 1] for k, v in b.items()}) for i in range(12)]
    assert torch.allclose(blocks, torch.cat(alone), atol=1e-6)
    with pytest.raises(ValueError, match="blocks"):
        nv.aligned_distance(spec, {k: v[:2] for k, v in q.items()}, {k: v[:5] for k, v in b.items()})


@pytest.mark.parametrize("arch", ARCHS)
def test_lower_bound_never_exceeds_the_aligned_distance(arch):
    spec = parse_spec(arch)
    q, refs = _nets(spec, range(3)), _nets(spec, range(50, 90))
    exact = torch.stack([nv.aligned_distance(spec, {k: v[i:i + 1] for k, v in q.items()}, refs) for i in range(3)])
    assert (nv.lower_bound(spec, q, refs) <= exact.square() * (1 + 1e-5) + 1e-6).all()


@pytest.mark.parametrize("arch", ARCHS)
def test_nearest_matches_exhaustive_search_and_finds_a_permuted_copy(arch):
    spec = parse_spec(arch)
    refs = _nets(spec, range(100, 400))
    q = _shuffled(spec, {k: v[[7, 250]] for k, v in refs.items()}, seed=1)
    dist, idx = nv.nearest(spec, q, refs)
    assert idx.tolist() == [7, 250] and (dist < 1e-5).all()
    others = _nets(spec, range(3))
    exact = torch.stack([nv.aligned_distance(spec, {k: v[i:i + 1] for k, v in others.items()}, refs) for i in range(3)])
    dist, idx = nv.nearest(spec, others, refs)
    assert torch.allclose(dist, exact.min(1).values) and idx.tolist() == exact.argmin(1).tolist()


def _runs(spec, n_runs, per_run):
    """(n_runs, per_run, *shape) training-run-like checkpoints: each run walks from its init towards another net."""
    start, end = _nets(spec, range(500, 500 + n_runs)), _nets(spec, range(600, 600 + n_runs))
    t = torch.linspace(0, 1, per_run)
    return {k: start[k][:, None] + t.view(1, -1, *[1] * (start[k].dim() - 1)) * (end[k] - start[k])[:, None]
            for k in start}


@pytest.mark.parametrize("arch", ARCHS)
def test_nearest_checkpoint_matches_exhaustive_search_and_aligns_fewer_pairs(arch, monkeypatch):
    spec = parse_spec(arch)
    runs = _runs(spec, 40, 12)
    ckpts = {k: v.flatten(0, 1) for k, v in runs.items()}
    q = _nets(spec, range(4))
    q = {k: torch.cat([v, _shuffled(spec, {k2: c[[100, 333]] for k2, c in ckpts.items()}, seed=2)[k]])
         for k, v in q.items()}  # two random nets and two permuted checkpoints
    exact = torch.stack([nv.aligned_distance(spec, {k: v[i:i + 1] for k, v in q.items()}, ckpts) for i in range(6)])
    monkeypatch.setattr(nv, "CANDIDATES", 8)  # rounds fine enough for 480 checkpoints
    aligned, counted = [], nv.aligned_distance  # references aligned per call

    def counting(spec, a, b):
        aligned.append(len(next(iter(b.values()))))
        return counted(spec, a, b)
    monkeypatch.setattr(nv, "aligned_distance", counting)
    dist, idx = nv.nearest_checkpoint(spec, q, runs)
    assert torch.allclose(dist, exact.min(1).values) and idx.tolist() == exact.argmin(1).tolist()
    assert idx[4:].tolist() == [100, 333] and (dist[4:] < 1e-5).all()
    with_runs, aligned[:] = sum(aligned), []
    nv.nearest(spec, q, ckpts)
    # the runs' checkpoints bound each other; one hidden layer's own bound can leave them nothing to prune
    assert with_runs < sum(aligned) or (len(spec.hidden) == 1 and with_runs == sum(aligned))


# aligned at once: as many pairs as allowed, two queries' candidates, one query's (a cap on weights: big nets)
@pytest.mark.parametrize("pairs, floats", [(nv.PAIRS, nv.PAIR_FLOATS), (2 * nv.CANDIDATES, nv.PAIR_FLOATS),
                                           (nv.PAIRS, 130 * nv.CANDIDATES)])
def test_nearest_leave_one_out_skips_the_excluded_reference(pairs, floats, monkeypatch):
    monkeypatch.setattr(nv, "PAIRS", pairs)
    monkeypatch.setattr(nv, "PAIR_FLOATS", floats)
    spec = parse_spec("mlp:12-7-4")  # 12*7 + 7 + 7*4 + 4 = 123 weights
    refs = _nets(spec, range(40))
    dist, idx = nv.nearest(spec, refs, refs, exclude=torch.arange(40))
    assert (idx != torch.arange(40)).all() and (dist > 0.1).all()
    full = torch.stack([nv.aligned_distance(spec, {k: v[i:i + 1] for k, v in refs.items()}, refs) for i in range(40)])
    full.fill_diagonal_(float("inf"))
    assert torch.allclose(dist, full.min(1).values)


def test_error_iou_on_hand_made_predictions():
    y = torch.tensor([0, 1, 2, 3, 4, 5])
    a = torch.tensor([0, 0, 0, 3, 4, 5])  # errors at 1, 2
    b = torch.tensor([0, 1, 0, 0, 4, 5])  # errors at 2, 3
    assert nv.error_iou(a, b, y).item() == pytest.approx(1 / 3)
    assert nv.error_iou(a, a, y).item() == 1.0
    assert nv.error_iou(a, y, y).item() == 0.0  # one net perfect, the other not: nothing shared
    assert nv.error_iou(y, y, y).item() == 1.0  # both perfect: equal (empty) error sets


def test_pairwise_iou_and_its_off_diagonal_mean():
    y = torch.tensor([0, 1, 2, 3])
    pred = torch.tensor([[1, 1, 2, 3], [1, 0, 2, 3], [0, 1, 2, 3]])  # errors {0}, {0, 1}, {}
    m = nv.pairwise_iou(pred, y)
    want = torch.tensor([[1.0, 0.5, 0.0], [0.5, 1.0, 0.0], [0.0, 0.0, 1.0]])
    assert torch.allclose(m, want)
    assert nv.mean_off_diagonal(m) == pytest.approx(1.0 / 6)
    g = torch.Generator().manual_seed(0)
    y, pred = torch.randint(3, (50,), generator=g), torch.randint(3, (20, 50), generator=g)  # matmul vs definition
    assert torch.allclose(nv.pairwise_iou(pred, y), nv.error_iou(pred[:, None], pred[None], y))


def test_ensemble_accuracy_averages_softmax_not_votes():
    y = torch.tensor([0, 1])
    # net 0 is confidently right on example 0 and mildly wrong on 1; nets 1 and 2 mildly wrong on 0, right on 1
    logits = torch.tensor([[[9.0, 0.0], [0.1, 0.0]],
                           [[0.0, 0.5], [0.0, 3.0]],
                           [[0.0, 0.5], [0.0, 3.0]]])
    assert nv.ensemble_accuracy(logits, y) == 1.0  # a majority vote would miss example 0
    assert nv.ensemble_accuracy(logits[:1], y) == 0.5


def test_zoo_spacing_is_each_sampled_final_to_its_nearest_other_final(monkeypatch):
    monkeypatch.setattr(run, "LOO_FINALS", 8)
    spec = parse_spec("mlp:12-7-4")
    finals = _nets(spec, range(20))
    loo = run.zoo_loo_distance(spec, finals)
    full, _ = nv.nearest(spec, finals, finals, exclude=torch.arange(20))
    sample = torch.randperm(20, generator=torch.Generator().manual_seed(0))[:8]
    assert len(loo) == 8 and len(sample.unique()) == 8
    assert torch.allclose(loo, full[sample])
    assert torch.equal(loo, run.zoo_loo_distance(spec, finals))  # the same sample every time
