"""Is a network derived from its init or copied from the zoo? Permutation-aligned distances and error overlap.

Hidden units (MLP neurons, conv channels) can be permuted without changing the function, so weights are compared
only after aligning them. Alignment is weight matching: unit i of layer l is described by its incoming row (with
the previous layer's permutation applied to its columns), its bias and its outgoing column; a forward pass solves
one Hungarian assignment per hidden layer using the features whose other side is already fixed (incoming rows,
and the outgoing columns of the last hidden layer, whose rows are the classes), then, for two or more hidden
layers, passes with all features repeat until no permutation changes. For one hidden layer the forward pass is
the exact minimiser of the distance.

`nearest` is exact with respect to that alignment but aligns few references: a lower bound on every reference's
aligned squared distance ranks them, candidates are aligned in that order, and a query stops once its next bound
exceeds the best aligned distance found (see `lower_bound`). `nearest_checkpoint` searches training runs' checkpoints
the same way and also lets each aligned checkpoint raise the bounds of its run's others by the triangle inequality:
where hidden layers feed each other the lower bound prunes almost nothing, and consecutive checkpoints are close.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from synthnet.targets import Spec

Params = dict[str, torch.Tensor]
MAX_PASSES = 10  # weight-matching passes for nets with >= 2 hidden layers (they converge in 2-3)
CANDIDATES = 128  # references aligned per live query in each round of `nearest`
PAIRS = 16384  # most (query, reference) pairs aligned at once in `nearest`
PAIR_FLOATS = 2**27  # and at most this many weights over those pairs (~6 such copies live at once: about 3 GB)
BOUND_BLOCK = (64, 32)  # (queries, references) per lower-bound block: memory is their product * width^2 floats


def _layers(spec: Spec) -> list[tuple[str, str]]:
    """(weight key, bias key) of every parametric layer, input to output."""
    return [(f"{k}.weight", f"{k}.bias") for k in spec.layer_keys()]


def _take(t: torch.Tensor, perm: torch.Tensor, dim: int) -> torch.Tensor:
    """Reorder dim `dim` of t (N, ...) by perm (N, h): out[n, ..., j, ...] = t[n, ..., perm[n, j], ...]."""
    shape = [len(perm)] + [1] * (t.dim() - 1)
    shape[dim] = perm.shape[1]
    return t.gather(dim, perm.view(shape).expand(*t.shape[:dim], perm.shape[1], *t.shape[dim + 1:]))


def permute(spec: Spec, params: Params, perms: list[torch.Tensor]) -> Params:
    """Apply one permutation per hidden layer (perms[l]: (N, h_l) long) to params key -> (N, *shape).

    Unit j of hidden layer l in the output is unit perms[l][:, j] of the input; the function is unchanged.
    """
    out = dict(params)
    layers = _layers(spec)
    for l, perm in enumerate(perms):
        w, b = layers[l]
        out[w], out[b] = _take(out[w], perm, 1), _take(out[b], perm, 1)
        out[layers[l + 1][0]] = _take(out[layers[l + 1][0]], perm, 2)
    return out


def _incoming(spec: Spec, params: Params, l: int) -> torch.Tensor:
    """(N, h_l, F_in): each unit's incoming weights, flattened (conv kernels included)."""
    w, b = _layers(spec)[l]
    return params[w].reshape(*params[b].shape, -1)


def _outgoing(spec: Spec, params: Params, l: int) -> torch.Tensor:
    """(N, h_l, F_out): each unit's outgoing weights (the next layer's column), flattened."""
    nxt = params[_layers(spec)[l + 1][0]]  # (N, out, h_l, *k)
    return nxt.transpose(1, 2).reshape(nxt.shape[0], nxt.shape[2], -1)


def _features(spec: Spec, params: Params, l: int, outgoing: bool) -> torch.Tensor:
    """Per-unit features of hidden layer l: (N, h_l, F) = [bias, incoming row, outgoing column if asked]."""
    parts = [params[_layers(spec)[l][1]].unsqueeze(-1), _incoming(spec, params, l)]
    return torch.cat(parts + [_outgoing(spec, params, l)] if outgoing else parts, -1)


def _columns(spec: Spec, l: int, perms: list[torch.Tensor], full: bool) -> torch.Tensor:
    """(n, F) long: the column of hidden layer l's unpermuted features (`_features` with the outgoing side) that each
    column of its features with the neighbouring layers' permutations perms[l - 1], perms[l + 1] (n, h) applied
    reads; the outgoing side only if `full`. Gathering by it replaces permuting the weights themselves."""
    shapes, n = spec.shapes(), len(perms[0])
    (w, _), nxt = _layers(spec)[l], _layers(spec)[l + 1][0]
    k_in, k_out = (math.prod(shapes[key][2:]) for key in (w, nxt))
    n_in, n_out = shapes[w][1] * k_in, shapes[nxt][0] * k_out
    parts = [torch.zeros(n, 1, dtype=torch.long)]  # the bias
    parts.append(1 + (perms[l - 1][:, :, None] * k_in + torch.arange(k_in)).flatten(1) if l > 0
                 else torch.arange(1, 1 + n_in).expand(n, -1))
    if full:
        parts.append(1 + n_in + (perms[l + 1][:, :, None] * k_out + torch.arange(k_out)).flatten(1)
                     if l + 1 < len(perms) else torch.arange(1 + n_in, 1 + n_in + n_out).expand(n, -1))
    return torch.cat(parts, 1)


def _assign(fa: torch.Tensor, fb: torch.Tensor) -> torch.Tensor:
    """Hungarian matching of units: fa (..., h, F), fb (..., h, F) broadcastable, their batch dims N in all
    -> (N, h) long, a's unit i <-> b's unit out[i].

    Minimising the summed squared distance equals maximising the summed inner product (norms are fixed). The
    assignments run in one thread per torch thread (scipy releases the GIL while it solves, and widens each float32
    matrix to float64 itself).
    """
    cost = torch.matmul(fa, fb.transpose(-1, -2)).neg_().flatten(0, -3).numpy()
    chunks = np.array_split(cost, max(1, min(torch.get_num_threads(), len(cost) // 64)))
    parts = map(_solve, chunks) if len(chunks) == 1 else _solvers(len(chunks)).map(_solve, chunks)
    return torch.from_numpy(np.stack([c for part in parts for c in part])).long()


def _solve(costs: np.ndarray) -> list[np.ndarray]:
    """costs (n, h, h) -> n column assignments (h,) minimising each matrix's summed cost."""
    return [linear_sum_assignment(c)[1] for c in costs]


@functools.lru_cache(maxsize=1)
def _solvers(workers: int) -> ThreadPoolExecutor:
    """The process's Hungarian solver threads, kept: starting them per call took 16% of a 1024-run eval."""
    return ThreadPoolExecutor(workers, thread_name_prefix="hungarian")


def align(spec: Spec, a: Params, b: Params) -> Params:
    """Permute the hidden units of b (key -> (Q * c, *shape)) to best match a (key -> (Q, *shape)): b's nets
    i * c .. (i + 1) * c - 1 are matched to a's net i (Q = 1: all to one; Q = N: pairwise).

    Each layer's assignment depends only on its neighbours' permutations, so a pair's layer is solved again only
    when one of them moved since its last solve (or its last solve lacked the outgoing side); a pair is done when
    none of its layers is stale, after its own number of passes, not the slowest pair's. Each side's unit features
    are built once; a solve gathers b's by its neighbours' permutations (`_columns`).
    """
    n_hidden = len(spec.hidden)
    feats_a = [_features(spec, a, l, True) for l in range(n_hidden)]  # (Q, h_l, F_l)
    feats_b = [_features(spec, b, l, True) for l in range(n_hidden)]
    n, q = len(feats_b[0]), len(feats_a[0])
    if n % q:
        raise ValueError(f"align: {n} nets to match cannot be split into blocks for {q} queries")
    per_query = n // q  # c
    perms = [torch.arange(h).repeat(n, 1) for h in spec.hidden]
    stale = torch.ones(n_hidden, n, dtype=torch.bool)  # stale[l, i]: pair i's layer l may still change
    for p in range(MAX_PASSES):
        for l in range(n_hidden):
            live = torch.nonzero(stale[l]).squeeze(1)
            if len(live) == 0:
                continue
            full = p > 0 or l == n_hidden - 1
            every = len(live) == n
            rows = (lambda t: t) if every else (lambda t: t.index_select(0, live))  # copy only a subset
            cols = _columns(spec, l, [rows(perm) for perm in perms], full)  # (n_live, F)
            fa = feats_a[l][..., :cols.shape[1]]  # (Q, h, F)
            fb = rows(feats_b[l]).gather(2, cols[:, None].expand(-1, spec.hidden[l], -1))  # (n_live, h, F)
            if every:  # every pair: b's nets in blocks of c per query, a broadcast over its block
                new = _assign(fa[:, None], fb.view(q, per_query, *fb.shape[1:]))
            else:
                new = _assign(fa if q == 1 else fa.index_select(0, live // per_query), fb)
            moved = live[(new != perms[l][live]).any(1)]
            perms[l][live] = new
            stale[l, live] = not full
            for m in (l - 1, l + 1):
                if 0 <= m < n_hidden:
                    stale[m, moved] = True
        if not stale.any():
            break
    return permute(spec, b, perms)


def flat(spec: Spec, params: Params) -> torch.Tensor:
    """key -> (N, *shape) -> (N, P): all weights of each net, in the spec's key order."""
    return torch.cat([params[k].reshape(params[k].shape[0], -1) for k in spec.shapes()], 1)


def aligned_distance(spec: Spec, a: Params, b: Params) -> torch.Tensor:
    """(Q * c,) L2 distance of each of b's nets (Q * c, *shape) to its net of a (Q, *shape), as `align` pairs
    them, after aligning it."""
    fa, fb = flat(spec, a), flat(spec, align(spec, a, b))
    return (fa[:, None] - fb.view(len(fa), -1, fb.shape[1])).norm(dim=-1).flatten()


def lower_bound(spec: Spec, query: Params, refs: Params) -> torch.Tensor:
    """(N, R) lower bound on the aligned squared distance of every query (N, *shape) to every ref (R, *shape).

    Each weight tensor is charged to one hidden layer's units (rows of a layer's incoming weights, plus the
    outgoing columns of the last hidden layer); rows fed by another hidden layer are sorted, which no permutation
    of that layer can beat. Per layer, the Hungarian cost matrix is bounded by its row and column reductions.
    """
    layers, n_hidden = _layers(spec), len(spec.hidden)
    out_b = layers[-1][1]
    bound = torch.cdist(query[out_b], refs[out_b]).square()
    for l in range(n_hidden):
        fa, fb = (_bound_features(spec, p, l) for p in (query, refs))  # (N, h, F), (R, h, F)
        n, h, f = fa.shape
        # one matmul gives m_ij = |b_j|^2 - 2 a_i.b_j, i.e. the squared distance less |a_i|^2 (constant per row)
        ones, sq_b = torch.ones(n, h, 1), fb.square().sum(-1, keepdim=True)
        m = (torch.cat([-2 * fa, ones], -1).reshape(n * h, f + 1) @ torch.cat([fb, sq_b], -1).reshape(-1, f + 1).T)
        m = m.view(n, h, -1, h)  # (N, h_a, R, h_b)
        rows = m.amin(-1, keepdim=True)  # (N, h_a, R, 1)
        cols = m.sub_(rows).amin(1)  # (N, R, h_b): column reduction after the row reduction
        bound += (rows.squeeze(-1) + fa.square().sum(-1)[:, :, None]).clamp_min(0).sum(1) + cols.sum(-1)
    return bound


def _bound_features(spec: Spec, params: Params, l: int) -> torch.Tensor:
    """Unit features of hidden layer l for the lower bound: (N, h_l, F), each weight charged once."""
    last = l == len(spec.hidden) - 1
    if l == 0:
        return _features(spec, params, l, last)
    parts = [params[_layers(spec)[l][1]].unsqueeze(-1), _incoming(spec, params, l).sort(-1).values]
    return torch.cat(parts + [_outgoing(spec, params, l)] if last else parts, -1)


def _bounds(spec: Spec, query: Params, refs: Params) -> torch.Tensor:
    """lower_bound in blocks of (queries, references): (N, R)."""
    (n, r), (cn, cr) = (len(next(iter(p.values()))) for p in (query, refs)), BOUND_BLOCK
    return torch.cat([torch.cat([lower_bound(spec, {k: v[i:i + cn] for k, v in query.items()},
                                             {k: v[j:j + cr] for k, v in refs.items()}) for j in range(0, r, cr)], 1)
                      for i in range(0, n, cn)], 0)


@torch.no_grad()
def nearest(spec: Spec, query: Params, refs: Params, exclude: torch.Tensor | None = None,
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest reference of each query by aligned distance: query (N, *shape), refs (R, *shape).

    exclude: optional (N,) reference index each query must skip (-1: none), for leave-one-out.
    Returns (dist (N,) float, index (N,) long).
    """
    bounds = _bounds(spec, query, refs)  # (N, R) squared lower bounds; inf: never to align
    if exclude is not None:
        rows = torch.nonzero(exclude >= 0).squeeze(1)
        bounds[rows, exclude[rows]] = float("inf")
    return _search(spec, query, refs, bounds)


@torch.no_grad()
def nearest_checkpoint(spec: Spec, query: Params, runs: Params) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest checkpoint of any training run to each query (N, *shape) by aligned distance: runs (R, P, *shape),
    P checkpoints per run in training order.

    Each aligned checkpoint bounds its run's others through the triangle inequality, d(q, c_e) >= d(q, c_a) -
    |c_a - c_e| (the plain distance bounds the aligned one), which the aligned distances' lower bound cannot do
    well for nets whose hidden layers feed each other. Exact for one hidden layer; for more, weight matching only
    approaches the aligned distance, and on row 2 the search found what aligning every checkpoint finds.
    Returns (dist (N,) float, index (N,) long into the R * P checkpoints, run-major).
    """
    ckpts = {k: v.flatten(0, 1) for k, v in runs.items()}
    bounds = _bounds(spec, query, ckpts)  # (N, R * P)
    return _search(spec, query, ckpts, bounds, functools.partial(_triangle, bounds, _run_spans(spec, runs)))


def _search(spec: Spec, query: Params, refs: Params, bounds: torch.Tensor,
            aligned: Callable | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Align each query (N, *shape) to references (R, *shape) in rounds of the CANDIDATES lowest squared lower
    bounds (N, R) until its lowest exceeds the best squared distance found; an aligned pair's bound becomes inf, in
    place. aligned(rows (A,), refs (A, c), dist (A, c)) may raise the bounds after each round.
    Returns (dist (N,), index (N,)) of the nearest."""
    n_weights = _weights(refs)
    best, best_i = torch.full((len(bounds),), float("inf")), torch.full((len(bounds),), -1)
    while True:
        live = torch.nonzero(bounds.amin(1) < best.square() * (1 + 1e-5)).squeeze(1)  # tolerance: rounding
        if len(live) == 0:
            return best, best_i
        for part in live.split(max(1, min(PAIRS, PAIR_FLOATS // n_weights) // CANDIDATES)):
            low, cand = bounds[part].topk(min(CANDIDATES, bounds.shape[1]), 1, largest=False)  # (A, c)
            a = {k: v[part] for k, v in query.items()}
            d = aligned_distance(spec, a, {k: v[cand.reshape(-1)] for k, v in refs.items()}).view(cand.shape)
            d[low.isinf()] = float("inf")  # an excluded or finished reference never wins
            bounds[part[:, None], cand] = float("inf")
            dmin, j = d.min(1)
            better = dmin < best[part]
            best[part[better]], best_i[part[better]] = dmin[better], cand[better, j[better]]
            if aligned is not None:
                aligned(part, cand, d)


def _run_spans(spec: Spec, runs: Params) -> torch.Tensor:
    """(R, P, P) plain distance between every two checkpoints of one run; runs (R, P, *shape). Built a block of
    runs at a time: a flat copy of every checkpoint can take gigabytes."""
    n_runs, per_run = next(iter(runs.values())).shape[:2]
    block = max(1, PAIR_FLOATS // _weights(runs))  # runs per block; _weights counts a whole run here
    spans = []
    for lo in range(0, n_runs, block):
        chunk = flat(spec, {k: v[lo:lo + block].flatten(0, 1) for k, v in runs.items()})
        spans.append(torch.cdist(*[chunk.view(-1, per_run, chunk.shape[1])] * 2))
    return torch.cat(spans)


def _weights(params: Params) -> int:
    """Weights of one net in params key -> (N, *shape)."""
    return sum(v[0].numel() for v in params.values())


def _triangle(bounds: torch.Tensor, spans: torch.Tensor, rows: torch.Tensor, cand: torch.Tensor,
              d: torch.Tensor) -> None:
    """Raise bounds (N, R) in place from aligned distances d (A, c) of queries rows (A,) to references cand (A, c):
    every checkpoint e of the run of checkpoint a is at least d - spans[run, a, e] away (squared, when positive)."""
    per_run = spans.shape[1]
    run, a = cand.div(per_run, rounding_mode="floor"), cand % per_run
    tri = (d[..., None] - spans[run, a]).clamp_min(0).square().nan_to_num(posinf=0.0)  # (A, c, per_run)
    cols = (run * per_run)[..., None] + torch.arange(per_run)  # (A, c, per_run)
    bounds[rows] = bounds[rows].scatter_reduce(1, cols.flatten(1), tri.flatten(1), "amax")


def error_iou(pred_a: torch.Tensor, pred_b: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """IoU of misclassified-example sets: pred_a, pred_b (..., S) broadcastable, y (S,) -> (...).

    |E_a & E_b| / |E_a | E_b|; when both nets make no error the sets are equal and the IoU is 1.0.
    """
    ea, eb = pred_a != y, pred_b != y
    return _iou((ea & eb).sum(-1), (ea | eb).sum(-1))


def pairwise_iou(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(N, N) error IoU between every pair of nets' predictions pred (N, S), by one matmul of the error
    indicators: the (N, N, S) intersections error_iou would build take 10 GB for a 2048-run zoo."""
    errors = (pred != y).float()  # (N, S)
    inter, count = errors @ errors.T, errors.sum(1)  # counts up to S: exact in float32
    return _iou(inter, count[:, None] + count[None] - inter)


def _iou(inter: torch.Tensor, union: torch.Tensor) -> torch.Tensor:
    """inter / union, and 1.0 where the union is empty (both error sets empty, hence equal)."""
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(inter, dtype=torch.float))


def mean_off_diagonal(m: torch.Tensor) -> float:
    """Mean of an (N, N) matrix without its diagonal (N >= 2)."""
    n = m.shape[0]
    return float((m.sum() - m.diagonal().sum()) / (n * n - n))


def ensemble_accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Accuracy of the average softmax of N nets: logits (N, S, C), y (S,)."""
    return float((logits.softmax(-1).mean(0).argmax(-1) == y).float().mean())
