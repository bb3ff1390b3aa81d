"""Dataset contracts: the digits split, mnist1d shapes, and the IDX loader on files written here."""

import gzip
import struct

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from synthnet.data import load_dataset, read_idx
from synthnet.errors import SynthNetError

IMAGES, LABELS = 0x00000803, 0x00000801  # IDX magic numbers: unsigned byte, 3-D / 1-D


def idx_bytes(magic: int, dims: tuple[int, ...], body: bytes) -> bytes:
    return struct.pack(f">I{len(dims)}I", magic, *dims) + body


def write_idx(path, a: np.ndarray, gz: bool = False) -> None:
    """Write uint8 images (n, 28, 28) or labels (n,) as an IDX file, gzipped when `gz`."""
    raw = idx_bytes(IMAGES if a.ndim == 3 else LABELS, a.shape, a.astype(np.uint8).tobytes())
    path.write_bytes(gzip.compress(raw) if gz else raw)


def write_mnist(root, n_train: int = 60, n_test: int = 12, gz: bool = False) -> dict[str, np.ndarray]:
    """A tiny MNIST-format directory with random pixels (0 and 255 included) and labels 0..9."""
    rng = np.random.default_rng(1)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        x[0, 0, :2] = (0, 255)
        y = np.arange(n, dtype=np.uint8) % 10
        suffix = ".gz" if gz else ""
        write_idx(root / f"{prefix}-images-idx3-ubyte{suffix}", x, gz)
        write_idx(root / f"{prefix}-labels-idx1-ubyte{suffix}", y, gz)
        arrays[prefix] = (x, y)
    return arrays


@pytest.fixture(scope="module")
def mnist1d():
    return load_dataset("mnist1d")


def test_digits_split_contract():
    d = load_digits()
    p = np.random.default_rng(0).permutation(1797)
    x = torch.tensor(d.data / 16.0, dtype=torch.float32)
    y = torch.tensor(d.target, dtype=torch.int64)
    data = load_dataset("digits")
    for split, idx in (("train", p[:1197]), ("val", p[1197:1497]), ("test", p[1497:])):
        xs, ys = data.split(split)
        assert xs.dtype == torch.float32 and ys.dtype == torch.int64
        assert len(xs) == len(idx)
        assert torch.equal(xs, x[idx]) and torch.equal(ys, y[idx])
    assert (len(data.x_train), len(data.x_val), len(data.x_test)) == (1197, 300, 300)
    assert data.n_features == 64 and data.n_classes == 10


def test_unknown_split():
    with pytest.raises(SynthNetError) as exc:
        load_dataset("digits").split("dev")
    assert str(exc.value) == "unknown split 'dev'; accepted: train, val, test"


def test_mnist1d_shapes(mnist1d):
    assert mnist1d.x_train.shape == (3500, 40) and mnist1d.y_train.shape == (3500,)
    assert mnist1d.x_val.shape == (500, 40) and mnist1d.y_val.shape == (500,)
    assert mnist1d.x_test.shape == (1000, 40) and mnist1d.y_test.shape == (1000,)
    assert mnist1d.x_train.dtype == torch.float32 and mnist1d.n_classes == 10


@pytest.mark.parametrize("gz", [False, True])
def test_idx_loader(tmp_path, gz):
    arrays = write_mnist(tmp_path, gz=gz)
    data = load_dataset(f"idx:{tmp_path}")
    (x, y), (x_te, y_te) = arrays["train"], arrays["t10k"]
    flat = lambda a: torch.tensor(a.reshape(len(a), -1) / 255.0, dtype=torch.float32)  # noqa: E731
    labels = lambda a: torch.tensor(a, dtype=torch.int64)  # noqa: E731
    n_val = 60 // 6  # a sixth of train when train is under 30000 images
    assert data.n_features == 784 and data.n_classes == 10
    assert torch.equal(data.x_train, flat(x[:-n_val])) and torch.equal(data.y_train, labels(y[:-n_val]))
    assert torch.equal(data.x_val, flat(x[-n_val:])) and torch.equal(data.y_val, labels(y[-n_val:]))
    assert torch.equal(data.x_test, flat(x_te)) and torch.equal(data.y_test, labels(y_te))
    assert data.x_train.min() == 0.0 and data.x_train.max() == 1.0


def test_idx_missing_directory(tmp_path):
    root = tmp_path / "nope"
    with pytest.raises(SynthNetError) as exc:
        load_dataset(f"idx:{root}")
    assert str(exc.value) == f"idx dataset directory {root} does not exist"


def test_idx_missing_file(tmp_path):
    write_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(SynthNetError) as exc:
        load_dataset(f"idx:{tmp_path}")
    assert str(exc.value) == f"{tmp_path}: missing IDX file t10k-labels-idx1-ubyte[.gz]"


def test_idx_truncated_data(tmp_path):
    write_mnist(tmp_path)
    f = tmp_path / "train-images-idx3-ubyte"
    f.write_bytes(f.read_bytes()[:-100])
    with pytest.raises(SynthNetError) as exc:
        load_dataset(f"idx:{tmp_path}")
    n = 60 * 28 * 28
    assert str(exc.value) == (f"{f}: truncated or oversized IDX data: header says (60, 28, 28) ({n} bytes), "
                              f"file has {n - 100}")


def test_idx_truncated_header(tmp_path):
    f = tmp_path / "x-idx3-ubyte"
    f.write_bytes(struct.pack(">II", IMAGES, 60))
    with pytest.raises(SynthNetError) as exc:
        read_idx(f)
    assert str(exc.value) == f"{f}: truncated IDX header"


def test_idx_truncated_gzip(tmp_path):
    write_mnist(tmp_path, gz=True)
    f = tmp_path / "train-images-idx3-ubyte.gz"
    f.write_bytes(f.read_bytes()[:-50])
    with pytest.raises(SynthNetError) as exc:
        load_dataset(f"idx:{tmp_path}")
    assert str(exc.value).startswith(f"{f}: truncated or corrupt gzip file (")
    assert "\n" not in str(exc.value)


def test_idx_not_idx(tmp_path):
    f = tmp_path / "x-idx3-ubyte"
    f.write_bytes(b"PK\x03\x04 a zip file, not IDX")
    with pytest.raises(SynthNetError) as exc:
        read_idx(f)
    assert str(exc.value) == f"{f}: not an IDX file (bad magic number)"


def test_idx_wrong_element_type(tmp_path):
    write_mnist(tmp_path)
    f = tmp_path / "train-images-idx3-ubyte"
    f.write_bytes(idx_bytes(0x00000D03, (60, 28, 28), np.zeros((60, 28, 28), ">f4").tobytes()))  # 0x0D = float32
    with pytest.raises(SynthNetError) as exc:
        load_dataset(f"idx:{tmp_path}")
    assert str(exc.value) == f"{f}: IDX element type 0x0d is not unsigned byte (0x08)"


def test_idx_wrong_rank(tmp_path):
    write_mnist(tmp_path)
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros(60, np.uint8))
    with pytest.raises(SynthNetError) as exc:
        load_dataset(f"idx:{tmp_path}")
    assert str(exc.value) == f"{tmp_path}: train images must be 3-D and labels 1-D, got (60,) and (60,)"


def test_idx_count_mismatch(tmp_path):
    write_mnist(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(11, np.uint8))
    with pytest.raises(SynthNetError) as exc:
        load_dataset(f"idx:{tmp_path}")
    assert str(exc.value) == f"{tmp_path}: t10k has 12 images but 11 labels"


def test_unknown_dataset():
    with pytest.raises(SynthNetError) as exc:
        load_dataset("cifar10")
    assert str(exc.value) == "unknown dataset 'cifar10'; accepted: digits, mnist1d, idx:<dir>"


def test_digits_idx_fixture_reads_back_through_idx(tmp_path):
    """The 784-input fixture: digits' labels in digits' order, images that average-pool back to the 8x8 digits."""
    from synthnet.fixtures import write_digits_idx

    data = load_dataset(f"idx:{write_digits_idx(tmp_path / 'fx')}")
    digits = load_dataset("digits")
    assert data.n_features == 784 and data.n_classes == 10
    assert torch.equal(torch.cat([data.y_train, data.y_val]), torch.cat([digits.y_train, digits.y_val]))
    assert torch.equal(data.y_test, digits.y_test)
    assert 0.0 <= float(data.x_test.min()) and float(data.x_test.max()) <= 1.0
    pooled = torch.nn.functional.adaptive_avg_pool2d(data.x_test.view(-1, 1, 28, 28), 8).flatten(1)
    corr = torch.corrcoef(torch.stack([pooled.flatten(), digits.x_test.flatten()]))[0, 1]
    assert corr > 0.95
