"""`synthnet eval` on a tiny model: results.json schema, report structure, and the report in headless Chromium."""

import dataclasses
import json
import shutil
import subprocess
import sys
from html.parser import HTMLParser

import matplotlib.image
import pytest

from conftest import TINY_ARCH
from synthnet.errors import SynthNetError
from synthnet.eval.report import PLOTS, SECTIONS, verdict_line
from synthnet.eval.run import evaluate_model, margin_sample_sd, time_to_reach
from synthnet.data import load_dataset
from synthnet.synthesize import load_synthesizer
from synthnet.scoring import evaluate
from synthnet.targets import init_state, parse_spec
from synthnet.weights import stack_states
from synthnet.zoo import Recipe, train_many

SEEDS = list(range(100000, 100005))
K_MAX = 2


@pytest.fixture(scope="module")
def evaluated(tiny_zoo, tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    res = evaluate_model(load_synthesizer(tiny_run), tiny_zoo, "digits", TINY_ARCH, SEEDS, K_MAX, out)
    return out, res


class Page(HTMLParser):
    """Collects section ids, image sources and any tag that would fetch or run something."""

    def __init__(self):
        super().__init__()
        self.sections, self.images, self.external = [], [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section":
            self.sections.append(a["id"])
        if tag == "img":
            self.images.append(a["src"])
        if tag in ("script", "link", "iframe") or any(v and v.startswith("http") for v in a.values()):
            self.external.append(tag)


def _is_fraction(v):
    return isinstance(v, float) and 0.0 <= v <= 1.0


def test_results_json_schema(evaluated, tiny_zoo):
    out, res = evaluated
    on_disk = json.loads((out / "results.json").read_text())  # strict JSON: NaN/Infinity would not parse back
    assert on_disk["seeds"] == SEEDS and on_disk["k_max"] == K_MAX and 1 <= on_disk["best_k"] <= K_MAX
    assert on_disk["zoo"]["runs"] == 12 and on_disk["zoo"]["epochs"] == 3 and on_disk["arch"] == TINY_ARCH
    assert on_disk["model"]["run"] == res["model"]["run"]
    sections = ("teacher", "synthnet", "baselines", "novelty", "robustness", "speed")
    assert [r["seed"] for r in on_disk["per_seed"]] == SEEDS
    for row in on_disk["per_seed"]:
        assert set(row) == {"seed", *sections}
        t, s = row["teacher"], row["synthnet"]
        assert len(t["acc"]) == len(t["seconds"]) == 4 and t["final_acc"] == t["acc"][-1]
        assert t["seconds"] == sorted(t["seconds"])  # cumulative training time
        assert len(s["acc"]) == len(s["loss"]) == K_MAX and all(map(_is_fraction, s["acc"]))
        assert {k: len(v) for k, v in s["chain_acc"].items()} == {"1": 1, "2": 2}
        assert s["best_acc"] == s["acc"][on_disk["best_k"] - 1]
        assert s["margin"] == pytest.approx(s["best_acc"] - t["final_acc"], abs=1e-6)
        assert s["beats_teacher"] == float(s["margin"] > 0)
        assert {"nearest_init_copy", "finals_average", "finals_gaussian"} <= set(row["baselines"])
        assert row["baselines"]["nearest_init_copy"]["d_final"] == 0.0  # it is a zoo final
        n = row["novelty"]
        assert n["ratio_ckpt"] == pytest.approx(n["d_teacher"] / n["d_ckpt"], rel=1e-5)
        assert n["d_ckpt"] <= n["d_final"] + 1e-5  # finals are among the checkpoints
        assert isinstance(n["ckpt_run"], int) and 0 <= n["ckpt_epoch"] <= 3
        assert set(row["robustness"]) == {"sigma_0.001", "sigma_0.01", "sigma_0.1", "init_kaiming_normal",
                                          "init_xavier_uniform", "init_xavier_normal"}
        assert row["speed"]["ratio"] == pytest.approx(row["speed"]["teacher_seconds"] / row["speed"]["synth_seconds"])
    agg = on_disk["aggregate"]
    assert set(agg) == set(sections)
    acc = [r["synthnet"]["best_acc"] for r in on_disk["per_seed"]]
    assert agg["synthnet"]["stats"]["best_acc"]["mean"] == pytest.approx(sum(acc) / len(acc))
    nov = agg["novelty"]
    assert on_disk["schema"] == 2 and on_disk["k_chosen_on"] == "val" and len(on_disk["val_acc_by_k"]) == K_MAX
    assert on_disk["best_k"] == 1 + on_disk["val_acc_by_k"].index(max(on_disk["val_acc_by_k"]))
    assert nov["stats"]["teacher_d_ckpt"]["mean"] > 0
    assert nov["copy_ratio"] == pytest.approx(nov["stats"]["d_ckpt"]["mean"] / nov["stats"]["teacher_d_ckpt"]["mean"],
                                              rel=1e-5)
    assert nov["derived"] == (nov["stats"]["ratio_ckpt"]["mean"] <= nov["ratio_threshold"] == 0.85)
    assert nov["not_copy"] == (nov["copy_ratio"] >= nov["copy_threshold"] == 0.85)
    assert nov["pass"] == (nov["derived"] and nov["not_copy"])


class SplitFitter:
    """A stand-in synthesizer whose K=1 output is a net trained on the val split and K=2 output one trained on the
    test split: val and test then disagree on the best K."""

    identity = {"run": "split-fitter"}
    seeds: dict = {}

    def __init__(self, spec, seeds):
        data = load_dataset("digits")
        on = lambda split: dataclasses.replace(data, x_train=data.split(split)[0], y_train=data.split(split)[1])  # noqa: E731
        self.nets = [train_many(spec, seeds, on(split), Recipe(epochs=80)) for split in ("val", "test")]

    def run(self, spec, params, k, draws_of=None):  # the interface of Synthesizer.run; draws nothing
        return [self.nets[k - 1]] * k


def test_k_is_chosen_on_val_when_val_and_test_disagree(tiny_zoo, tmp_path):
    spec = parse_spec(TINY_ARCH)
    res = evaluate_model(SplitFitter(spec, SEEDS), tiny_zoo, "digits", TINY_ARCH, SEEDS, 2, tmp_path)
    test_acc = res["aggregate"]["synthnet"]["stats"]["acc"]["mean"]
    assert res["val_acc_by_k"][0] > res["val_acc_by_k"][1] and test_acc[1] > test_acc[0]  # they disagree
    assert res["best_k"] == 1 and res["k_chosen_on"] == "val"
    assert res["aggregate"]["synthnet"]["stats"]["best_acc"]["mean"] == pytest.approx(test_acc[0])


def test_report_is_self_contained_with_every_section_and_plot(evaluated):
    out, _ = evaluated
    page = Page()
    page.feed((out / "report.html").read_text())
    assert page.sections == list(SECTIONS)
    assert page.external == [] and page.images and all(s.startswith("data:image/png;base64,") for s in page.images)
    for name in PLOTS:
        assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "report.md").read_text()
    assert md.count("\n## ") == len(SECTIONS) - 1


@pytest.mark.slow
def test_report_renders_in_headless_chromium(evaluated, tmp_path):
    if not shutil.which("chromium"):
        pytest.fail("chromium is missing: install Debian's chromium package (make test does)")
    out, _ = evaluated
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'u'}"]
    url = (out / "report.html").as_uri()
    dom = subprocess.run(["chromium", *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    page = Page()
    page.feed(dom.stdout)
    assert page.sections == list(SECTIONS), dom.stderr[-2000:]
    shot = tmp_path / "shot.png"
    subprocess.run(["chromium", *flags, "--window-size=1200,1600", f"--screenshot={shot}", url],
                   capture_output=True, timeout=120)
    img = matplotlib.image.imread(shot)  # (H, W, 3 or 4) floats in [0, 1]
    assert img.shape[:2] == (1600, 1200)
    ink = (img[..., :3].mean(-1) < 0.5).mean()  # dark pixels: text, table lines, plot marks
    assert 0.005 < ink < 0.5, ink


def test_time_to_reach_interpolates_between_epochs():
    import torch

    acc, secs = torch.tensor([0.1, 0.5, 0.9, 0.95]), torch.tensor([0.0, 1.0, 2.0, 3.0])
    assert time_to_reach(acc, secs, 0.7) == (1.5, 1.5, True)
    assert time_to_reach(acc, secs, 0.05) == (0.0, 0.0, True)
    assert time_to_reach(acc, secs, 0.99) == (3.0, 3.0, False)


@pytest.mark.slow
def test_eval_cli_refuses_zoo_seeds_with_one_line(tiny_zoo, tiny_run, tmp_path):
    r = subprocess.run([sys.executable, "-m", "synthnet", "eval", "--model", str(tiny_run), "--zoo", str(tiny_zoo),
                        "--arch", TINY_ARCH, "--seeds", "3:6", "--out", str(tmp_path / "e")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "error: eval seeds [3, 4, 5] are zoo seeds; evaluate on seeds the zoo never used"]
    assert not (tmp_path / "e").exists()
    synth = load_synthesizer(tiny_run)
    with pytest.raises(SynthNetError, match="probe 300000:300512"):
        evaluate_model(synth, tiny_zoo, "digits", TINY_ARCH, [100000, 300001], 1, tmp_path / "e")
    synth.seeds = {**synth.seeds, "grpo_heldout": [[500000, 500064]]}
    with pytest.raises(SynthNetError, match="grpo_heldout 500000:500064"):
        evaluate_model(synth, tiny_zoo, "digits", TINY_ARCH, [100000, 500001], 1, tmp_path / "e")
    assert not (tmp_path / "e").exists()


@pytest.mark.slow
def test_eval_cli_takes_seeds_no_model_used(tiny_zoo, tiny_run, tmp_path):
    """Seeds far above every range of the model's record (and GRPO's old blanket range) are accepted; K runs up to
    the model's own eval.k_max."""
    r = subprocess.run([sys.executable, "-m", "synthnet", "eval", "--model", str(tiny_run), "--zoo", str(tiny_zoo),
                        "--arch", TINY_ARCH, "--seeds", "600000:600003", "--out", str(tmp_path / "e")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads((tmp_path / "e" / "results.json").read_text())
    assert res["seeds"] == [600000, 600001, 600002]
    assert res["k_max"] == load_synthesizer(tiny_run).cfg.eval.k_max


@pytest.mark.parametrize("synth, beats, word", [(0.981, 0.70, "beats"), (0.981, 0.50, "does not beat"),
                                                 (0.979, 0.70, "does not beat")])
def test_verdict_needs_the_mean_and_the_share_of_seeds(synth, beats, word):
    line = verdict_line({"synth_acc": synth, "teacher_acc": 0.980, "beats": beats})
    assert line.startswith(f"verdict: SynthNet {word} its teacher (mean {synth - 0.980:+.4f}, above it on {beats:.0%}")


def test_verdict_states_the_split_noise_when_known():
    line = verdict_line({"synth_acc": 0.981, "teacher_acc": 0.980, "beats": 0.7, "margin_sd": 0.0065})
    assert "(mean +0.0010 +- 0.0065 from the test split's size alone, above it on 70%" in line


def test_margin_sample_sd_is_the_bootstrap_std_of_the_per_sample_margin():
    """Nets that agree everywhere have no split noise; otherwise the bootstrap std matches std(d) / sqrt(S) of
    the per-sample margins d, which a resample of S samples gives in theory."""
    spec = parse_spec("mlp:64-32-10")
    x, y = load_dataset("digits").split("test")
    nets = stack_states([init_state(spec, s) for s in range(6)])
    others = stack_states([init_state(spec, s) for s in range(6, 12)])
    assert margin_sample_sd(spec, nets, nets, x, y) == 0.0
    right = [(evaluate(spec, p, x, y).pred == y).float() for p in (nets, others)]
    d = (right[0] - right[1]).mean(0)
    expected = d.std(unbiased=False).item() / len(y) ** 0.5
    assert expected > 0
    assert margin_sample_sd(spec, nets, others, x, y) == pytest.approx(expected, rel=0.1)
