"""Weight tensors as float32 OpenEXR images, for HDR viewers (lossless: ZIP compression, full float range).

Reshaping rule (one single-channel image per tensor, channel "Y", file `<tensor>.exr`):
  2-D weight (out, in)           -> rows = out, cols = in
  1-D bias (n,)                  -> 1 row x n cols
  conv weight (out, in, *kernel) -> rows = out, cols = in * prod(kernel), each row the C-order flattening of
                                    that output channel's (in, *kernel) block
Values are written as float32 exactly as stored (no scaling or clipping), so a round trip is bit-exact.
"""

from __future__ import annotations

from pathlib import Path

import OpenEXR
import torch

from synthnet.weights import atomic_write, load_weights


def as_image(t: torch.Tensor) -> torch.Tensor:
    """A weight tensor as a 2-D (rows, cols) float32 image by the rule in the module docstring."""
    return t.detach().to(torch.float32).reshape(1 if t.dim() == 1 else t.shape[0], -1)


def write_exr(path: Path, image: torch.Tensor) -> None:
    """Write one (rows, cols) image as a single-channel ZIP-compressed float32 EXR, atomically."""
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    pixels = image.contiguous().numpy()

    def write(tmp: str) -> None:
        with OpenEXR.File(header, {"Y": pixels}) as f:
            f.write(tmp)

    atomic_write(Path(path), write)


def read_exr(path: Path) -> torch.Tensor:
    """The (rows, cols) float32 channel "Y" of an EXR written by write_exr."""
    with OpenEXR.File(str(path)) as f:
        return torch.from_numpy(f.channels()["Y"].pixels.copy())


def export_exr(path_in: Path, out_dir: Path, arch: str | None = None) -> list[Path]:
    """Write every tensor of a weight file as out_dir/<tensor>.exr; returns the paths in state_dict order.

    arch: spec for files without synthnet.arch metadata (the file is validated against it).
    """
    state, _, _ = load_weights(Path(path_in), arch)
    paths = []
    for key, t in state.items():
        paths.append(Path(out_dir) / f"{key}.exr")
        write_exr(paths[-1], as_image(t))
    return paths
