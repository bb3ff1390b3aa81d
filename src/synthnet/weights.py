"""Weight files: safetensors only, validated on read, written atomically, with `synthnet.*` metadata."""

from __future__ import annotations

import json
import os
import secrets
import stat
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from synthnet.errors import SynthNetError
from synthnet.targets import Spec, parse_spec

FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def _temp_beside(path: Path) -> tuple[Path, int]:
    """Create an empty temp file beside `path`; return it and the mode `path` should get: the mode of the file it
    replaces, or the one a plain open() gives a new file (0666 less the umask; mkstemp would give 0600)."""
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the kernel applies the umask
            break
        except FileExistsError:
            continue
    try:
        return tmp, stat.S_IMODE(path.stat().st_mode if path.exists() else os.fstat(fd).st_mode)
    finally:
        os.close(fd)


def atomic_write(path: Path, write) -> None:
    """Call write(tmp_path) on a temp file beside `path`, then rename it over `path` (never half-written).

    A failed write (a full disk, say) removes the temp file and raises a SynthNetError naming `path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp, mode = _temp_beside(path)
    try:
        write(str(tmp))  # a str, as mkstemp gave: some writers (OpenEXR) take no Path
        os.chmod(tmp, mode)  # after the write: safetensors' save_file replaces the file with a 0600 one
        os.replace(tmp, path)
    except (OSError, SafetensorError) as exc:
        tmp.unlink(missing_ok=True)
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0]
        raise SynthNetError(f"{path}: cannot write ({reason}); the previous file, if any, is unchanged") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def check_finite(state: dict[str, torch.Tensor], target: Path) -> None:
    """Refuse a state_dict with a NaN or Inf (as float32) before anything is written to `target`; checked in
    chunks, since isfinite's temporaries are about twice its input (a zoo's pack is gigabytes)."""
    for k, v in state.items():
        chunks = v.detach().reshape(-1).split(1 << 24)
        if not all(torch.isfinite(c.to(torch.float32)).all() for c in chunks):
            raise SynthNetError(f"{target}: tensor {k} would contain NaN or Inf (as float32); nothing written")


def save_weights(path: Path, state: dict[str, torch.Tensor], spec: Spec | str, **meta: Any) -> None:
    """Write a plain state_dict as safetensors with metadata synthnet.arch and synthnet.<key> (JSON values).

    The one writer of weight files: a non-finite tensor raises a SynthNetError and nothing is written.
    """
    metadata = {"synthnet.arch": str(spec)}
    metadata.update({f"synthnet.{k}": json.dumps(v) for k, v in meta.items() if v is not None})
    tensors = {k: v.detach().to(torch.float32).contiguous().cpu() for k, v in state.items()}
    check_finite(tensors, Path(path))
    atomic_write(Path(path), lambda tmp: save_file(tensors, tmp, metadata=metadata))


def read_metadata(path: Path) -> dict[str, Any]:
    """The synthnet.* metadata of a file (JSON-decoded, prefix stripped); arch stays a string."""
    _, meta = _read_raw(Path(path))
    out: dict[str, Any] = {}
    for k, v in meta.items():
        if k.startswith("synthnet."):
            name = k[len("synthnet."):]
            try:
                out[name] = v if name == "arch" else json.loads(v)
            except json.JSONDecodeError:
                out[name] = v
    return out


def _read_raw(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if not path.is_file():
        raise SynthNetError(f"{path}: no such file")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            return {k: f.get_tensor(k) for k in f.keys()}, meta
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SynthNetError(f"{path}: not a readable safetensors file ({msg})") from None


def validate(state: dict[str, torch.Tensor], spec: Spec, source: str, stacked: bool = False) -> dict[str, torch.Tensor]:
    """Check keys, shapes (stacked: of each tensor's rows, e.g. a zoo run's epochs), dtypes and finiteness against
    `spec`; return float32 copies."""
    expected = spec.shapes()
    missing = [k for k in expected if k not in state]
    extra = [k for k in state if k not in expected]
    if missing or extra:
        raise SynthNetError(f"{source}: does not match arch {spec}: missing keys {missing}, unexpected keys {extra}")
    out = {}
    for k, shape in expected.items():
        t = state[k]
        if tuple(t.shape)[stacked:] != shape:
            need = f"(rows, {', '.join(map(str, shape))})" if stacked else str(shape)
            raise SynthNetError(f"{source}: tensor {k} has shape {tuple(t.shape)}, arch {spec} needs {need}")
        if t.dtype not in FLOAT_DTYPES:
            raise SynthNetError(f"{source}: tensor {k} has dtype {t.dtype}; accepted: float32, float64, float16, bfloat16")
        t = t.to(torch.float32)
        if not torch.isfinite(t).all():
            raise SynthNetError(f"{source}: tensor {k} contains NaN or Inf")
        out[k] = t
    return out


def load_weights(path: Path, arch: Spec | str | None = None, stacked: bool = False,
                 ) -> tuple[dict[str, torch.Tensor], Spec, dict]:
    """Read and validate a weight file: (float32 state_dict, spec, metadata). `arch` overrides metadata; stacked:
    every tensor holds rows of the arch's shape (key -> (rows, *shape))."""
    path = Path(path)
    state, _ = _read_raw(path)
    meta = read_metadata(path)
    if arch is None and "arch" not in meta:
        raise SynthNetError(f"{path}: no synthnet.arch metadata; pass --arch (e.g. --arch mlp:64-32-10)")
    if isinstance(arch, Spec):
        spec = arch
    else:
        try:
            spec = parse_spec(arch if arch is not None else meta["arch"])
        except SynthNetError as exc:
            where = "--arch" if arch is not None else f"{path}: its synthnet.arch metadata"
            raise SynthNetError(f"{where}: {exc}") from None
    return validate(state, spec, str(path), stacked), spec, meta


def stack_states(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """List of state_dicts -> key -> (N, *shape)."""
    return {k: torch.stack([s[k] for s in states]) for k in states[0]}


def unstack_state(stacked: dict[str, torch.Tensor], i: int) -> dict[str, torch.Tensor]:
    return {k: v[i] for k, v in stacked.items()}
