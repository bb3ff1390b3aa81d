"""EXR export: one lossless float32 image per tensor, by the documented reshaping rule."""

import OpenEXR
import pytest
import torch

from synthnet.errors import SynthNetError
from synthnet.eval.exr import export_exr, read_exr
from synthnet.targets import init_state, parse_spec
from synthnet.weights import save_weights


@pytest.mark.parametrize("arch", ["mlp:64-32-10", "cnn:1x8x8-4-6-10", "cnn:2x16-3-5"])
def test_export_round_trips_bit_exactly_with_the_documented_shapes(tmp_path, arch):
    spec = parse_spec(arch)
    state = init_state(spec, 3)
    state[next(iter(state))][0, 0] = 3.0e38  # full float32 range survives (a half-float file would overflow)
    save_weights(tmp_path / "w.safetensors", state, spec)
    paths = export_exr(tmp_path / "w.safetensors", tmp_path / "exr")
    assert [p.name for p in paths] == [f"{k}.exr" for k in state]
    for path, (key, t) in zip(paths, state.items()):
        img = read_exr(path)
        rows = 1 if t.dim() == 1 else t.shape[0]
        assert img.dtype == torch.float32 and tuple(img.shape) == (rows, t.numel() // rows)
        assert torch.equal(img.view(torch.int32), t.reshape(rows, -1).contiguous().view(torch.int32))
        with OpenEXR.File(str(path)) as f:
            assert f.header()["compression"] == OpenEXR.ZIP_COMPRESSION
            assert list(f.channels()) == ["Y"]


def test_conv_rows_are_output_channels(tmp_path):
    spec = parse_spec("cnn:1x8x8-4-6-10")
    state = init_state(spec, 0)
    save_weights(tmp_path / "w.safetensors", state, spec)
    export_exr(tmp_path / "w.safetensors", tmp_path)
    img = read_exr(tmp_path / "3.weight.exr")  # (6, 4, 3, 3) -> 6 rows x 36 cols
    assert torch.equal(img[5], state["3.weight"][5].flatten())


def test_plain_state_dict_needs_arch(tmp_path):
    from safetensors.torch import save_file

    spec = parse_spec("mlp:64-32-10")
    save_file(init_state(spec, 0), str(tmp_path / "plain.safetensors"))
    with pytest.raises(SynthNetError, match="--arch"):
        export_exr(tmp_path / "plain.safetensors", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert len(export_exr(tmp_path / "plain.safetensors", tmp_path / "out", arch="mlp:64-32-10")) == 4
