"""The one JSON-lines reader and the files it reads: corrupt lines are named path:line, torn tails are repaired."""

import pytest

from conftest import tiny_cfg
from synthnet.errors import SynthNetError
from synthnet.jsonl import read_jsonl
from synthnet.train import train
from synthnet.zoo import MANIFEST, Recipe, build_zoo, read_manifest


def test_a_corrupt_line_is_named_and_a_torn_tail_is_dropped_only_when_allowed(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}\n{"st')
    assert read_jsonl(path, torn_tail=True) == [{"step": 1}, {"step": 2}]
    with pytest.raises(SynthNetError, match=r"m.jsonl:3: not a JSON object line"):
        read_jsonl(path)
    path.write_text('{"step": 1}\n[1, 2]\n{"step": 3}\n')
    with pytest.raises(SynthNetError, match=r"m.jsonl:2: not a JSON object line"):
        read_jsonl(path, torn_tail=True)
    assert read_jsonl(tmp_path / "absent.jsonl") == []


def test_resume_with_a_corrupt_metrics_file_names_the_line(tiny_zoo, tmp_path):
    cfg = tiny_cfg(tiny_zoo)
    train(cfg, tmp_path, stop_after=10)
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("garbage\n" + metrics.read_text())
    with pytest.raises(SynthNetError, match=r"metrics.jsonl:1: not a JSON object line"):
        train(tiny_cfg(tiny_zoo), tmp_path)


def test_a_torn_manifest_row_is_left_out_then_repaired_without_duplicates(tmp_path):
    build_zoo(tmp_path, ["mlp:64-4-10"], "digits", [0, 1], Recipe(epochs=1))
    rows = read_manifest(tmp_path)
    with open(tmp_path / MANIFEST, "a") as f:
        f.write('{"seed": 2, "epo')  # a kill in the middle of a write
    assert read_manifest(tmp_path) == rows
    stats = build_zoo(tmp_path, ["mlp:64-4-10"], "digits", [0, 1, 2], Recipe(epochs=1))
    assert stats["trained"] == 1 and stats["skipped"] == 2
    again = read_manifest(tmp_path)
    assert (tmp_path / MANIFEST).read_text().endswith("\n") and again[:len(rows)] == rows
    assert sorted((r["seed"], r["epoch"]) for r in again) == [(s, e) for s in range(3) for e in range(2)]
