"""State dict <-> neuron tokens: exact, invertible, batched, any width.

One token per hidden unit (conv: per output channel) in layer order, then one token for the output bias.
Feature slots are fixed by meaning, not by fan-in, so a slot means the same thing at every width:

    slot 0                 the unit's bias
    slots 1 .. C           its outgoing column of the final Linear (last hidden layer only; C = classes)
    slots C+1 .. C+fan_in  its incoming weight row, flattened (conv: in_ch x kernel)

The output-bias token puts its C values in slots 1 .. C, next to the outgoing weights of the same class.
A hidden layer fed by hidden units (a second hidden layer, a second conv) orders its incoming slots by the feeding
layer's unit index (conv: in-channel blocks of kernel values); its `Link` names both token ranges, so a denoiser
can treat those slots as edges between tokens rather than as features of fixed meaning.
Unused slots are zero. mlp:64-32-10 -> N = 33 tokens of F = 75 features; F does not depend on the hidden width
of a single-hidden-layer network. Roles name a token's layer position, never its width, so one denoiser serves
every width: first / middle / last hidden layer, a single hidden layer (both first and last), output bias;
cnn roles are the mlp ones offset by 5.

Conversion is pure indexing (a gather into the concatenated parameters plus one trailing zero, and the inverse
gather), so `from_tokens(to_tokens(w)) == w` bit for bit.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass

import torch

from synthnet.errors import SynthNetError
from synthnet.targets import Spec

POSITIONS = ("first", "middle", "last", "single", "out_bias")  # layer positions a role can name
N_ROLES = 2 * len(POSITIONS)  # mlp roles 0-4, cnn roles 5-9
ROLE_NAMES = tuple(f"{kind}/{pos}" for kind in ("mlp", "cnn") for pos in POSITIONS)
SLOT_KINDS = ("in", "bias", "out")  # incoming weights, bias, outgoing weights
IN, BIAS, OUT, PAD = 0, 1, 2, -1


@dataclass(frozen=True)
class Link:
    """A hidden layer fed by hidden units: the weight from source unit j to fed unit i at kernel position p sits in
    token dst + i, column col + j * kernel + p."""

    dst: int  # first token row of the fed layer
    dst_units: int  # units (channels) of the fed layer
    src: int  # first token row of the feeding layer
    src_units: int  # units (channels) of the feeding layer
    col: int  # first feature column of the incoming weights (1 + classes)
    kernel: int  # kernel positions per (fed, source) pair: 1 for an mlp, 9 for a 3x3 conv

    def rows(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: (B, N, F) -> (B, dst_units, src_units, kernel) weights of this link."""
        block = tokens[:, self.dst:self.dst + self.dst_units, self.col:self.col + self.src_units * self.kernel]
        return block.unflatten(-1, (self.src_units, self.kernel))


@dataclass(frozen=True)
class Layout:
    """Where every parameter of a spec sits in its (N, F) token array."""

    n_tokens: int  # N: hidden units of all hidden layers + 1 output-bias token
    width: int  # F: 1 + classes + the widest flattened incoming row
    roles: torch.Tensor  # (N,) long role id per token, in [0, N_ROLES)
    mask: torch.Tensor  # (N, F) bool: True where the slot holds a parameter
    kind: torch.Tensor  # (N, F) long slot kind: IN / BIAS / OUT, PAD on padding
    gain: torch.Tensor  # (N, F) float sqrt(fan_in) of the layer the slot's parameter belongs to (1 on padding)
    gather: torch.Tensor  # (N*F,) long index into [flat params, 0]; padding points at the trailing 0
    scatter: torch.Tensor  # (P,) long index into the flat tokens for each parameter, in state-dict order
    links: tuple[Link, ...]  # one per hidden layer fed by hidden units, in layer order
    edge: torch.Tensor  # (N, F) bool: True where the slot belongs to a link


def _role(spec: Spec, layer: int) -> int:
    """Role id of hidden `layer` (or of the output-bias token for layer == len(hidden))."""
    last = len(spec.hidden) - 1
    if layer > last:
        pos = POSITIONS.index("out_bias")
    elif last == 0:
        pos = POSITIONS.index("single")
    else:
        pos = POSITIONS.index("first" if layer == 0 else "last" if layer == last else "middle")
    return pos + (len(POSITIONS) if spec.kind == "cnn" else 0)


def _block(rows: int, width: int, total: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """An all-padding (index, kind, gain) block of `rows` tokens; padding indexes the trailing zero."""
    return torch.full((rows, width), total), torch.full((rows, width), PAD), torch.ones(rows, width)


def _put(block: tuple[torch.Tensor, ...], cols: slice, index: torch.Tensor, kind: int, fan_in: int) -> None:
    """Fill columns `cols` of every token in `block` with parameter indices of one slot kind and its gain."""
    for tensor, value in zip(block, (index, kind, math.sqrt(fan_in))):
        tensor[:, cols] = value


@functools.lru_cache(maxsize=64)
def layout(spec: Spec) -> Layout:
    """The token layout of a spec (cached; treat its tensors as read-only)."""
    shapes = spec.shapes()
    start = dict(zip(shapes, itertools.accumulate([math.prod(s) for s in shapes.values()], initial=0)))
    total, keys, classes = spec.n_params(), spec.layer_keys(), spec.classes
    width = 1 + classes + max(math.prod(shapes[f"{k}.weight"][1:]) for k in keys[:-1])
    blocks, roles, links, row = [], [], [], 0
    for layer, key in enumerate(keys[:-1]):
        units, fan_in = shapes[f"{key}.weight"][0], math.prod(shapes[f"{key}.weight"][1:])
        if layer:
            prev = spec.hidden[layer - 1]
            links.append(Link(row, units, row - prev, prev, 1 + classes, fan_in // prev))
        row += units
        unit = torch.arange(units)[:, None]
        block = _block(units, width, total)
        _put(block, slice(0, 1), start[f"{key}.bias"] + unit, BIAS, fan_in)
        _put(block, slice(1 + classes, 1 + classes + fan_in),
             start[f"{key}.weight"] + unit * fan_in + torch.arange(fan_in), IN, fan_in)
        if layer == len(keys) - 2:  # the last hidden layer also carries its outgoing column
            _put(block, slice(1, 1 + classes), start[f"{keys[-1]}.weight"] + torch.arange(classes) * units + unit,
                 OUT, units)
        blocks, roles = blocks + [block], roles + [torch.full((units,), _role(spec, layer))]
    block = _block(1, width, total)
    _put(block, slice(1, 1 + classes), start[f"{keys[-1]}.bias"] + torch.arange(classes), BIAS, spec.hidden[-1])
    blocks, roles = blocks + [block], roles + [torch.tensor([_role(spec, len(keys))])]
    gather, kind, gain = (torch.cat(parts) for parts in zip(*blocks))
    gather = gather.flatten()
    valid = gather < total
    scatter = torch.empty(total, dtype=torch.long)
    scatter[gather[valid]] = torch.arange(gather.numel())[valid]
    edge = torch.zeros(len(kind), width, dtype=torch.bool)
    for link in links:
        edge[link.dst:link.dst + link.dst_units, link.col:link.col + link.src_units * link.kernel] = True
    return Layout(len(kind), width, torch.cat(roles), kind != PAD, kind, gain, gather, scatter, tuple(links), edge)


def _batch(spec: Spec, params: dict[str, torch.Tensor]) -> int:
    """Batch size of `params`, after checking every key and shape against the spec."""
    shapes = spec.shapes()
    if set(params) != set(shapes):
        raise SynthNetError(f"weights for {spec} need keys {sorted(shapes)}; got {sorted(params)}")
    b = params[next(iter(shapes))].shape[0]
    for key, shape in shapes.items():
        if tuple(params[key].shape) != (b, *shape):
            raise SynthNetError(f"{key}: expected shape {(b, *shape)} for {spec}; got {tuple(params[key].shape)}")
    return b


def to_tokens(spec: Spec, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """params: key -> (B, *shape) -> tokens (B, N, F), zeros on padding slots."""
    lay, b = layout(spec), _batch(spec, params)
    ref = params[next(iter(params))]
    flat = torch.cat([params[k].reshape(b, -1) for k in spec.shapes()] + [ref.new_zeros(b, 1)], dim=1)
    return flat[:, lay.gather.to(flat.device)].reshape(b, lay.n_tokens, lay.width)


def from_tokens(spec: Spec, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """tokens: (B, N, F) -> params key -> (B, *shape); padding slots are ignored."""
    lay = layout(spec)
    if tokens.dim() != 3 or tuple(tokens.shape[1:]) != (lay.n_tokens, lay.width):
        raise SynthNetError(f"tokens for {spec} must be (B, {lay.n_tokens}, {lay.width}); got {tuple(tokens.shape)}")
    flat = tokens.reshape(tokens.shape[0], -1)[:, lay.scatter.to(tokens.device)]
    shapes = spec.shapes()
    chunks = flat.split([math.prod(s) for s in shapes.values()], dim=1)
    return {k: c.reshape(-1, *s) for (k, s), c in zip(shapes.items(), chunks)}


class Normalizer:
    """Per-(role, slot kind) scaling to O(1): normalised = value * sqrt(fan_in) / scale[role, kind].

    The sqrt(fan_in) gain makes the scales width-agnostic (PyTorch's inits and trained weights both shrink like
    1/sqrt(fan_in)), so a normaliser fitted at one width applies at another with the same roles. Scale only, no
    shift: zero stays zero (padding, zero-initialised biases) and the map is linear, so deltas scale like weights.
    """

    def __init__(self, scale: torch.Tensor):
        self.scale = scale  # (N_ROLES, 3) RMS of gain-scaled values per (role, slot kind); NaN where never fitted

    @classmethod
    def fit(cls, spec: Spec, params: dict[str, torch.Tensor]) -> Normalizer:
        """Fit on a batch of trained weights (key -> (B, *shape)), e.g. zoo finals."""
        return cls.fit_archs([(spec, params)])

    @classmethod
    def fit_archs(cls, nets: list[tuple[Spec, dict[str, torch.Tensor]]]) -> Normalizer:
        """Fit on trained weights of one or more archs, [(spec, key -> (B, *shape))], e.g. each zoo arch's finals:
        a (role, slot kind) group several archs have pools their slots, one only some archs have is fitted on those
        (a zoo of one- and two-hidden-layer nets fits the roles of both)."""
        n_groups = N_ROLES * len(SLOT_KINDS)
        sums, counts = torch.zeros(n_groups, dtype=torch.double), torch.zeros(n_groups, dtype=torch.long)
        for spec, params in nets:
            lay = layout(spec)
            x = to_tokens(spec, params).detach().double() * lay.gain
            group = _groups(lay)[lay.mask]
            sums.index_add_(0, group, x.pow(2).mean(0)[lay.mask])
            counts += torch.bincount(group, minlength=n_groups)
        scale = torch.where(counts > 0, (sums / counts.clamp(min=1)).sqrt(), math.nan).float()
        if (scale == 0).any():
            dead = ", ".join(_group_name(g) for g in torch.nonzero(scale == 0).flatten().tolist())
            archs = ", ".join(str(spec) for spec, _ in nets)
            raise SynthNetError(f"cannot fit a normaliser for {archs}: all values are zero in {dead}")
        return cls(scale.view(N_ROLES, len(SLOT_KINDS)))

    def _factors(self, spec: Spec, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(gain / scale, scale / gain) maps, both (N, F) and 0 on padding; raises for a group never fitted."""
        lay = layout(spec)
        scale = self.scale.flatten()[_groups(lay).clamp(min=0)]
        missing = _groups(lay)[lay.mask & scale.isnan()].unique().tolist()
        if missing:
            names = ", ".join(_group_name(g) for g in missing)
            raise SynthNetError(f"normaliser was not fitted for {names} (needed by {spec})")
        fwd = torch.where(lay.mask, lay.gain / scale, 0.0)
        inv = torch.where(lay.mask, scale / lay.gain, 0.0)
        return fwd.to(device), inv.to(device)

    def normalize(self, spec: Spec, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: (B, N, F) raw weights -> (B, N, F) normalised; padding stays 0."""
        return tokens * self._factors(spec, tokens.device)[0]

    def unnormalize(self, spec: Spec, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: (B, N, F) normalised -> (B, N, F) raw weights; padding stays 0."""
        return tokens * self._factors(spec, tokens.device)[1]

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"scale": self.scale.clone()}

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> Normalizer:
        scale = state.get("scale")
        if scale is None or tuple(scale.shape) != (N_ROLES, len(SLOT_KINDS)):
            raise SynthNetError(f"normaliser state needs 'scale' of shape {(N_ROLES, len(SLOT_KINDS))}")
        return cls(scale.clone())


def _groups(lay: Layout) -> torch.Tensor:
    """(N, F) long flat (role, slot kind) group id of every slot; negative on padding."""
    return torch.where(lay.mask, lay.roles[:, None] * len(SLOT_KINDS) + lay.kind, -1)


def _group_name(group: int) -> str:
    """'mlp/single incoming' style name of a flat (role, slot kind) group id."""
    role, kind = divmod(group, len(SLOT_KINDS))
    return f"{ROLE_NAMES[role]} {SLOT_KINDS[kind]}"
