"""The 784-input fixture: scikit-learn's 8x8 digits upscaled to 28x28 and written as MNIST-format IDX files.

No MNIST copy exists offline, so the `idx-mlp` preset, its tests and the README's 784-input row read this
fixture through the same `idx:<dir>` path a user's own MNIST files take. Train = digits' train + val splits
(1,497 images; `idx:` holds out the last sixth of them for val), t10k = digits' test split (300 images).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from synthnet.data import load_dataset
from synthnet.weights import atomic_write

FIXTURE_DIR = "digits28-idx"  # `synthnet demo` writes the fixture when an idx: dataset names a missing dir of this name
SIDE = 28  # MNIST's image side


def idx_bytes(array: np.ndarray) -> bytes:
    """An unsigned-byte array (n,) or (n, rows, cols) as the bytes of one IDX file (magic, sizes, data)."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def upscale(x: torch.Tensor) -> np.ndarray:
    """x: (n, 64) digits pixels in [0, 1] -> (n, 28, 28) uint8 images, bilinear."""
    img = torch.nn.functional.interpolate(x.view(-1, 1, 8, 8), size=(SIDE, SIDE), mode="bilinear",
                                          align_corners=False)
    return (img.clamp(0, 1) * 255).round().to(torch.uint8).view(-1, SIDE, SIDE).numpy()


def write_digits_idx(root: Path) -> Path:
    """Write the four IDX files of the fixture under `root` (atomically, each); returns `root`."""
    d = load_dataset("digits")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    parts = {"train": (torch.cat([d.x_train, d.x_val]), torch.cat([d.y_train, d.y_val])),
             "t10k": (d.x_test, d.y_test)}
    for prefix, (x, y) in parts.items():
        for stem, array in ((f"{prefix}-images-idx3-ubyte", upscale(x)), (f"{prefix}-labels-idx1-ubyte",
                                                                            y.numpy().astype(np.uint8))):
            data = idx_bytes(array)
            atomic_write(root / stem, lambda tmp, data=data: Path(tmp).write_bytes(data))
    return root
