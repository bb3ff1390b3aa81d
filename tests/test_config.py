"""compose(): every value resolved and inside its field's range or choices, named sizes, and `config show`."""

import subprocess
import sys

import pytest

from synthnet.config import KNOBS, compose, presets
from synthnet.errors import SynthNetError


@pytest.mark.parametrize("override, fragment", [
    ("train.lr=${oops}", "bad value for config key 'train.lr'"),
    ("train.lr=nan", "train.lr=nan is not accepted; train.lr takes a float in [0, 0.1]"),
    ("train.lr=-1", "train.lr=-1.0 is not accepted"),
    ("train.steps=-5", "train.steps takes an int in [1, 1e+08]"),
    ("train.batch=0", "train.batch=0 is not accepted"),
    ("grpo.group=1", "grpo.group takes an int in [2, 256]"),
    ("zoo.lr=0", "zoo.lr=0.0 is not accepted"),
    ("model.predict=eps", "model.predict takes one of delta, x0"),
    ("model.size=set-XL", "model.size takes one of '', set-S"),
])
def test_out_of_range_or_unresolvable_values_are_one_line_errors_naming_the_key(override, fragment):
    with pytest.raises(SynthNetError) as exc:
        compose("tiny", [override])
    assert fragment in str(exc.value) and "\n" not in str(exc.value)


def test_every_numeric_key_has_a_range_and_every_preset_fits_it():
    for key, knob in KNOBS.items():
        assert knob.choices or knob.type in (str, bool) or knob.low <= knob.high, key
    for preset in presets():
        compose(preset)  # raises if a preset value is outside its key's range


def test_interpolation_to_an_existing_key_resolves():
    assert compose(None, ["grpo.lr=${train.lr}"]).grpo.lr == compose().train.lr


def test_config_show_takes_overrides_without_a_preset():
    r = subprocess.run([sys.executable, "-m", "synthnet", "config", "show", "train.lr=3e-4"], capture_output=True,
                       text=True)
    assert r.returncode == 0 and "lr: 0.0003" in r.stdout, r.stderr
