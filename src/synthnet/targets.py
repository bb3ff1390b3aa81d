"""Target networks from a spec string, and the init schemes that make "a random init".

Grammar (documented in the README):
  mlp:<in>-<h1>-...-<classes>              Sequential(Linear(in,h1), ReLU(), ..., Linear(hk, classes))
  cnn:<C>x<H>x<W>-<c1>-...-<classes>       2-D convs on a flat input reshaped to (C, H, W)
  cnn:<C>x<L>-<c1>-...-<classes>           1-D convs on a flat input reshaped to (C, L)
A cnn is Sequential(Unflatten(1, shape), [Conv(c_prev, c, 3, padding=1, stride), ReLU()]*, AdaptiveAvgPool(1),
Flatten(), Linear(c_last, classes)); its state_dict keys are those of that module (e.g. `1.weight`). A channel
count followed by `s` (e.g. cnn:1x8x8-16s-32s-10) is a stride-2 conv: it halves the resolution, so the last conv
sees the whole input before the global pooling. Stride changes no weight shape, so tokens ignore it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
from torch import nn

from synthnet.errors import SynthNetError

GRAMMAR = ("mlp:<in>-<hidden>-...-<classes> (e.g. mlp:64-32-10) or cnn:<C>x<H>x<W>-<ch>[s]-...-<classes> / "
           "cnn:<C>x<L>-<ch>[s]-...-<classes> (e.g. cnn:1x8x8-8-16-10; `s`: stride 2)")
INITS = ("default", "kaiming_normal", "xavier_uniform", "xavier_normal", "normal:<std>")
MAX_PARAMS = 10**8  # 400 MB of float32 per network: far past any target SynthNet trains on, short of a crash
SEEDS = range(2**64)  # what torch.manual_seed takes without aliasing (a negative seed wraps onto a positive one)


@dataclass(frozen=True)
class Spec:
    """A parsed target-network spec: family, input shape, hidden widths, number of classes."""

    kind: str  # "mlp" or "cnn"
    in_shape: tuple[int, ...]  # (features,) for mlp; (C, H, W) or (C, L) for cnn
    hidden: tuple[int, ...]  # hidden widths (mlp) or conv channels (cnn)
    classes: int
    strides: tuple[int, ...] = ()  # cnn: stride (1 or 2) of each conv; () = all 1

    def __str__(self) -> str:
        head = "x".join(map(str, self.in_shape))
        hidden = [f"{h}{'s' if self.stride(i) == 2 else ''}" for i, h in enumerate(self.hidden)]
        return f"{self.kind}:{'-'.join([head, *hidden, str(self.classes)])}"

    def stride(self, layer: int) -> int:
        """Stride of conv `layer` (1 for an mlp or a plain conv)."""
        return self.strides[layer] if self.strides else 1

    @property
    def n_features(self) -> int:
        return math.prod(self.in_shape)

    def layer_keys(self) -> list[str]:
        """Module indices of the parametric layers, in order (e.g. ['0', '2'] for an mlp)."""
        if self.kind == "mlp":
            return [str(2 * i) for i in range(len(self.hidden) + 1)]
        convs = [str(1 + 2 * i) for i in range(len(self.hidden))]
        return convs + [str(1 + 2 * len(self.hidden) + 2)]

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """state_dict key -> shape, in module order."""
        widths = [self.in_shape[0] if self.kind == "cnn" else self.n_features, *self.hidden]
        ksize = (3,) * (len(self.in_shape) - 1)
        out: dict[str, tuple[int, ...]] = {}
        for i, key in enumerate(self.layer_keys()):
            fan_in, fan_out = widths[i], (widths[i + 1] if i < len(self.hidden) else self.classes)
            is_conv = self.kind == "cnn" and i < len(self.hidden)
            out[f"{key}.weight"] = (fan_out, fan_in, *ksize) if is_conv else (fan_out, fan_in)
            out[f"{key}.bias"] = (fan_out,)
        return out

    def activation_size(self) -> int:
        """Values in the widest layer output one input sample produces (what a batched forward holds per net)."""
        if self.kind == "mlp":
            return max(*self.hidden, self.classes)
        size, spatial = self.classes, self.in_shape[1:]
        for i, channels in enumerate(self.hidden):
            spatial = tuple(-(-d // self.stride(i)) for d in spatial)  # 3-wide kernel, padding 1: ceil(d / stride)
            size = max(size, channels * math.prod(spatial))
        return size

    def n_params(self) -> int:
        return sum(math.prod(s) for s in self.shapes().values())


def parse_spec(text: str) -> Spec:
    """Parse `mlp:64-32-10` / `cnn:1x8x8-8-16-10`; a bad spec raises a one-line error with the grammar."""
    m = re.fullmatch(r"(mlp|cnn):(\d+(?:x\d+)*)((?:-\d+s?)+)", str(text).strip())
    if not m:
        raise SynthNetError(f"bad arch spec {text!r}; grammar: {GRAMMAR}")
    kind, head, rest = m.group(1), m.group(2), m.group(3)
    too_big = f"accepted: at most {MAX_PARAMS:,} parameters"
    try:
        in_shape = tuple(int(v) for v in head.split("x"))
        sizes = [int(v.rstrip("s")) for v in rest[1:].split("-")]
    except ValueError:  # a size of thousands of digits
        raise SynthNetError(f"arch spec {text!r} has sizes too large; {too_big}") from None
    ok = len(sizes) >= 2 and all(v > 0 for v in (*in_shape, *sizes))
    ok = ok and ((kind == "mlp" and len(in_shape) == 1) or (kind == "cnn" and len(in_shape) in (2, 3)))
    if not ok:
        raise SynthNetError(f"bad arch spec {text!r}; need at least one hidden layer; grammar: {GRAMMAR}")
    strided = [v.endswith("s") for v in rest[1:].split("-")]
    if strided[-1] or (kind == "mlp" and any(strided)):
        raise SynthNetError(f"bad arch spec {text!r}: `s` (stride 2) marks a conv's channels only; grammar: {GRAMMAR}")
    strides = tuple(2 if st else 1 for st in strided[:-1]) if any(strided) else ()
    spec = Spec(kind, in_shape, tuple(sizes[:-1]), sizes[-1], strides)
    if spec.n_params() > MAX_PARAMS:
        raise SynthNetError(f"arch spec {text!r} has {spec.n_params():.3g} parameters; {too_big}")
    return spec


def check_seed(seed: int) -> int:
    """`seed` if torch.manual_seed takes it as itself, else a one-line error with the accepted range."""
    if seed not in SEEDS:
        raise SynthNetError(f"seed {seed} out of range; accepted: 0 to 2**64 - 1")
    return seed


def build_module(spec: Spec | str) -> nn.Sequential:
    """The plain torch module a spec documents; its parameters are PyTorch's default init."""
    spec = parse_spec(spec) if isinstance(spec, str) else spec
    layers: list[nn.Module] = []
    if spec.kind == "mlp":
        widths = [spec.n_features, *spec.hidden]
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        return nn.Sequential(*layers, nn.Linear(widths[-1], spec.classes))
    conv = nn.Conv2d if len(spec.in_shape) == 3 else nn.Conv1d
    pool = nn.AdaptiveAvgPool2d if len(spec.in_shape) == 3 else nn.AdaptiveAvgPool1d
    layers.append(nn.Unflatten(1, spec.in_shape))
    chans = [spec.in_shape[0], *spec.hidden]
    for i, (a, b) in enumerate(zip(chans[:-1], chans[1:])):
        layers += [conv(a, b, 3, padding=1, stride=spec.stride(i)), nn.ReLU()]
    return nn.Sequential(*layers, pool(1), nn.Flatten(), nn.Linear(chans[-1], spec.classes))


def _apply_scheme(module: nn.Module, scheme: str, gen: torch.Generator) -> None:
    """Redraw every weight with `scheme` (biases set to zero), drawing from `gen`."""
    std = None
    if scheme.startswith("normal:"):
        try:
            std = float(scheme[7:])
        except ValueError:
            std = math.nan
        if not 0.0 < std < math.inf:
            raise SynthNetError(f"bad init {scheme!r}: std must be a positive number; accepted: {', '.join(INITS)}")
    elif scheme not in ("kaiming_normal", "xavier_uniform", "xavier_normal"):
        raise SynthNetError(f"unknown init {scheme!r}; accepted: {', '.join(INITS)}")
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("bias"):
                p.zero_()
                continue
            fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(p)
            if std is not None:
                p.normal_(0.0, std, generator=gen)
            elif scheme == "kaiming_normal":
                p.normal_(0.0, math.sqrt(2.0 / fan_in), generator=gen)
            elif scheme == "xavier_normal":
                p.normal_(0.0, math.sqrt(2.0 / (fan_in + fan_out)), generator=gen)
            else:
                bound = math.sqrt(6.0 / (fan_in + fan_out))
                p.uniform_(-bound, bound, generator=gen)


def init_state(spec: Spec | str, seed: int, scheme: str = "default") -> dict[str, torch.Tensor]:
    """THE random init: torch.manual_seed(seed), construct the module (default), or redraw with `scheme`."""
    spec = parse_spec(spec) if isinstance(spec, str) else spec
    torch.manual_seed(check_seed(seed))
    try:
        module = build_module(spec)
        if scheme != "default":
            _apply_scheme(module, scheme, torch.Generator().manual_seed(seed))
        return {k: v.detach().clone() for k, v in module.state_dict().items()}
    except (RuntimeError, MemoryError) as exc:  # allocation failed: this machine has less memory than the arch needs
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SynthNetError(f"arch {spec}: cannot allocate its {spec.n_params():,} parameters ({reason})") from None

