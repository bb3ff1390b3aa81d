"""The batched evaluator against plain per-network forwards, the teacher recipe against a plain loop, the zoo."""

import json

import pytest
import torch
from torch import nn

from synthnet.data import load_dataset
from synthnet.errors import SynthNetError
from synthnet.scoring import evaluate
from synthnet.targets import build_module, init_state, parse_spec
from synthnet.weights import load_weights, stack_states
from synthnet.zoo import (MANIFEST, Recipe, build_zoo, checkpoint, load_zoo, parse_seeds, read_manifest, summarize,
                          train_many)

FIELDS = {"seed", "epoch", "path", "arch", "dataset", "init", "train_acc", "train_loss", "val_acc", "val_loss",
          "test_acc", "test_loss", "order", "recipe"}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def perturbed_states(arch: str, n: int) -> list[dict[str, torch.Tensor]]:
    """n weight sets far enough from a plain init that predictions and losses differ between them."""
    g = torch.Generator().manual_seed(0)
    return [{k: v + 0.3 * torch.randn(v.shape, generator=g) for k, v in init_state(arch, s).items()} for s in range(n)]


@pytest.mark.parametrize("arch", ["mlp:64-32-10", "mlp:64-16-16-10", "cnn:1x8x8-4-8-10", "cnn:1x64-4-10"])
def test_evaluate_matches_plain_forward(digits, arch):
    states = perturbed_states(arch, 5)
    x, y = digits.split("val")
    got = evaluate(parse_spec(arch), stack_states(states), x, y)
    width = parse_spec(arch).activation_size()
    blocks = [evaluate(parse_spec(arch), stack_states(states), x, y, floats=f) for f in (2 * len(x) * width, 7 * width)]
    for i, state in enumerate(states):
        model = build_module(arch)
        model.load_state_dict(state)
        with torch.no_grad():
            out = model(x)
        assert torch.equal(got.pred[i], out.argmax(1))
        assert got.acc[i].item() == pytest.approx((out.argmax(1) == y).float().mean().item(), abs=1e-7)
        assert got.loss[i].item() == pytest.approx(nn.functional.cross_entropy(out, y).item(), abs=1e-5)
    for b in blocks:  # 2 nets on all samples per call; 1 net on 7 samples per call
        assert torch.equal(b.pred, got.pred) and torch.allclose(b.loss, got.loss, atol=1e-6)
    assert got.acc.unique().numel() > 1  # the sets really differ, so a mix-up between them would show


def plain_teacher(seed: int, x: torch.Tensor, y: torch.Tensor, epochs: int) -> dict[str, torch.Tensor]:
    """The documented recipe for mlp:64-32-10, one network, written out with plain PyTorch."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=g)
        for lo in range(0, len(x), 32):
            idx = order[lo:lo + 32]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.state_dict()


def test_train_many_follows_teacher_recipe(digits):
    seeds, spec = [0, 1, 2], parse_spec("mlp:64-32-10")
    seen = {}
    final = train_many(spec, seeds, digits, Recipe(epochs=2),
                       on_epoch=lambda e, p: seen.setdefault(e, {k: v.clone() for k, v in p.items()}))
    assert sorted(seen) == [0, 1, 2]
    for i, seed in enumerate(seeds):
        init = init_state(spec, seed)
        assert all(torch.equal(seen[0][k][i], init[k]) for k in init)
        want = plain_teacher(seed, digits.x_train, digits.y_train, epochs=2)
        for k, v in want.items():
            torch.testing.assert_close(final[k][i], v, rtol=0, atol=1e-5)
            torch.testing.assert_close(seen[2][k][i], v, rtol=0, atol=1e-5)
        assert not torch.allclose(final["0.weight"][i], init["0.weight"], atol=1e-3)


def test_parse_seeds():
    assert parse_seeds("3:6") == [3, 4, 5]
    assert parse_seeds("1,5,9") == [1, 5, 9]
    assert parse_seeds("7") == [7]
    for bad in ("a:b", "1,x", "1:2:3", "0.5"):
        with pytest.raises(SynthNetError) as exc:
            parse_seeds(bad)
        assert str(exc.value) == f"bad seeds {bad!r}; use A:B (half-open) or a comma list like 1,5,9"
    with pytest.raises(SynthNetError) as exc:
        parse_seeds("5:5")
    assert str(exc.value) == "seeds '5:5' is empty"


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    out = tmp_path_factory.mktemp("zoo")
    stats = build_zoo(out, ["mlp:64-32-10"], "digits", [0, 1, 2], Recipe(epochs=2))
    return out, stats


def test_zoo_manifest(zoo, digits):
    out, stats = zoo
    assert (stats["trained"], stats["skipped"]) == (3, 0)
    rows = read_manifest(out)
    assert sorted((r["seed"], r["epoch"]) for r in rows) == [(s, e) for s in range(3) for e in range(3)]
    spec = parse_spec("mlp:64-32-10")
    for r in rows:  # val every epoch, train and test at the last
        assert set(r) == (FIELDS if r["epoch"] == 2 else FIELDS - {"train_acc", "train_loss", "test_acc", "test_loss"})
        assert (r["arch"], r["dataset"], r["init"]) == ("mlp:64-32-10", "digits", "default")
        assert not r["path"].startswith("/") and (out / r["path"]).is_file()
        _, _, meta = load_weights(out / r["path"], stacked=True)  # one file per run, epochs stacked
        assert (meta["seed"], meta["order"], meta["epochs"], meta["dataset"]) == (r["seed"], 0, 2, "digits")
        state = checkpoint(out, r)
        if r["epoch"] == 0:
            init = init_state(spec, r["seed"])
            assert all(torch.equal(state[k], init[k]) for k in init)
        for split in ("train", "val", "test") if r["epoch"] == 2 else ("val",):
            s = evaluate(spec, {k: v[None] for k, v in state.items()}, *digits.split(split))
            assert 0 <= r[f"{split}_acc"] <= 1
            assert r[f"{split}_acc"] == pytest.approx(s.acc.item(), abs=1e-6)
            assert r[f"{split}_loss"] == pytest.approx(s.loss.item(), abs=1e-6)


def test_zoo_final_checkpoint_is_teacher(zoo, digits):
    out, _ = zoo
    row = next(r for r in read_manifest(out) if (r["seed"], r["epoch"]) == (1, 2))
    want = plain_teacher(1, digits.x_train, digits.y_train, epochs=2)
    state = checkpoint(out, row)
    for k, v in want.items():
        torch.testing.assert_close(state[k], v, rtol=0, atol=1e-5)


def test_summarize_and_load_zoo(zoo):
    out, _ = zoo
    rows = read_manifest(out)
    table = summarize(out)
    assert [(t["arch"], t["epoch"], t["runs"]) for t in table] == [("mlp:64-32-10", e, 3) for e in range(3)]
    for t in table:
        val = [r["val_acc"] for r in rows if r["epoch"] == t["epoch"]]
        assert t["val_mean"] == pytest.approx(sum(val) / 3, abs=1e-9)
        if t["epoch"] < 2:  # test is scored at the last epoch only
            assert (t["test_mean"], t["test_min"], t["test_max"]) == ("-", "-", "-")
            continue
        test = [r["test_acc"] for r in rows if r["epoch"] == t["epoch"]]
        assert t["test_mean"] == pytest.approx(sum(test) / 3, abs=1e-6)
        assert (t["test_min"], t["test_max"]) == pytest.approx((min(test), max(test)), abs=1e-6)
    z = load_zoo(out)
    assert z.seeds == [0, 1, 2] and str(z.spec) == "mlp:64-32-10"
    assert {k: tuple(v.shape) for k, v in z.params.items()} == {
        "0.weight": (3, 3, 32, 64), "0.bias": (3, 3, 32), "2.weight": (3, 3, 10, 32), "2.bias": (3, 3, 10)}
    assert z.val_acc.shape == (3, 3)
    row = next(r for r in rows if (r["seed"], r["epoch"]) == (2, 1))
    assert torch.equal(z.params["0.weight"][2, 1], checkpoint(out, row)["0.weight"])
    assert z.val_acc[2, 1].item() == pytest.approx(row["val_acc"])


def test_zoo_resume(tmp_path):
    out = tmp_path / "zoo"
    build_zoo(out, ["mlp:64-32-10"], "digits", [0, 1, 2], Recipe(epochs=1))
    rows = read_manifest(out)
    again = build_zoo(out, ["mlp:64-32-10"], "digits", [0, 1, 2], Recipe(epochs=1))
    assert (again["trained"], again["skipped"]) == (0, 3)
    assert read_manifest(out) == rows
    (out / MANIFEST).write_text("".join(json.dumps(r) + "\n" for r in rows if r["seed"] != 1))
    partial = build_zoo(out, ["mlp:64-32-10"], "digits", [0, 1, 2, 3], Recipe(epochs=1))
    assert (partial["trained"], partial["skipped"]) == (2, 2)
    key = lambda r: (r["seed"], r["epoch"])  # noqa: E731
    resumed = sorted(read_manifest(out), key=key)
    assert [key(r) for r in resumed] == [(s, e) for s in range(4) for e in range(2)]
    assert [r for r in resumed if r["seed"] < 3] == sorted(rows, key=key)


def test_a_zoo_holds_one_recipe_and_never_a_duplicate_row(tmp_path):
    """The recipe is recorded in every row and eval reads it back; a re-run with another --epochs or --lr is refused
    naming the option (it used to append duplicate rows or silently reuse every run)."""
    out = tmp_path / "zoo"
    build_zoo(out, ["mlp:64-8-10"], "digits", [0, 1], Recipe(epochs=2, lr=1e-3))
    rows = read_manifest(out)
    assert {json.dumps(r["recipe"]) for r in rows} == {json.dumps(
        {"epochs": 2, "lr": 1e-3, "batch": 32, "optimizer": "adam", "label_smoothing": 0.0})}
    assert load_zoo(out).recipe == Recipe(epochs=2, lr=1e-3)
    for other, option in ((Recipe(epochs=3, lr=1e-3), "--epochs 2; this run asks --epochs 3"),
                          (Recipe(epochs=2), "--lr 0.001; this run asks --lr 0.003")):
        with pytest.raises(SynthNetError, match=option):
            build_zoo(out, ["mlp:64-8-10"], "digits", [0, 1, 2], other)
    assert read_manifest(out) == rows


def test_orders_add_runs_from_the_same_inits_and_order_zero_is_the_recipe(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    build_zoo(one, ["mlp:64-8-10"], "digits", [0, 1], Recipe(epochs=1))
    build_zoo(two, ["mlp:64-8-10"], "digits", [0, 1], Recipe(epochs=1))
    stats = build_zoo(two, ["mlp:64-8-10"], "digits", [0, 1], Recipe(epochs=1), orders=3)
    assert (stats["trained"], stats["skipped"]) == (4, 2)  # orders 1 and 2 of both seeds; order 0 reused
    rows = read_manifest(two)
    assert sorted({(r["seed"], r["order"]) for r in rows}) == [(s, o) for s in (0, 1) for o in range(3)]
    assert len(rows) == len({(r["seed"], r["order"], r["epoch"]) for r in rows}) == 12
    final = {(r["seed"], r["order"]): checkpoint(two, r) for r in rows if r["epoch"] == 1}
    init = {(r["seed"], r["order"]): checkpoint(two, r) for r in rows if r["epoch"] == 0}
    w = "0.weight"
    assert torch.equal(init[0, 0][w], init[0, 2][w])  # the same init
    assert not torch.equal(final[0, 0][w], final[0, 1][w]) and not torch.equal(final[0, 1][w], final[0, 2][w])
    assert torch.equal(load_zoo(two).params[w], load_zoo(one).params[w])  # load_zoo: the recipe's own order


def test_mixed_arch_zoo(tmp_path):
    out = tmp_path / "zoo"
    archs = ["mlp:64-16-10", "mlp:64-32-10"]
    stats = build_zoo(out, archs, "digits", [0, 1], Recipe(epochs=1))
    assert (stats["trained"], stats["skipped"]) == (4, 0)
    rows = read_manifest(out)
    assert sorted((r["arch"], r["seed"], r["epoch"]) for r in rows) == [
        (a, s, e) for a in archs for s in range(2) for e in range(2)]
    for r in rows:
        assert load_weights(out / r["path"], stacked=True)[1] == parse_spec(r["arch"])
    with pytest.raises(SynthNetError) as exc:
        load_zoo(out)
    assert str(exc.value) == f"{out}: holds archs {archs}; choose one"
    assert load_zoo(out, "mlp:64-16-10").params["0.weight"].shape == (2, 2, 16, 64)
    assert [t["arch"] for t in summarize(out)] == [archs[0]] * 2 + [archs[1]] * 2
    with pytest.raises(SynthNetError) as exc:
        load_zoo(out, "mlp:64-8-10")
    assert str(exc.value) == f"{out}: no runs of arch mlp:64-8-10; it holds {archs}"


def test_parallel_workers_match_one_process(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    build_zoo(one, ["mlp:64-32-10"], "digits", [0, 1, 2, 3], Recipe(epochs=1))
    build_zoo(two, ["mlp:64-32-10"], "digits", [0, 1, 2, 3], Recipe(epochs=1), workers=2)
    key = lambda r: (r["seed"], r["epoch"])  # noqa: E731
    rows_one, rows_two = sorted(read_manifest(one), key=key), sorted(read_manifest(two), key=key)
    assert [key(r) for r in rows_two] == [key(r) for r in rows_one]
    for a, b in zip(rows_one, rows_two):
        wa, wb = checkpoint(one, a), checkpoint(two, b)
        assert all(torch.allclose(wa[k], wb[k], rtol=0, atol=1e-6) for k in wa)


def test_not_a_zoo(tmp_path):
    with pytest.raises(SynthNetError) as exc:
        read_manifest(tmp_path)
    assert str(exc.value) == f"{tmp_path}: not a zoo (no {MANIFEST}); build one with `synthnet zoo`"
