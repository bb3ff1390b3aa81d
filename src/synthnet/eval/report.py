"""report.html, report.md and the PNG plots, rendered from an eval directory's results.json and heatmap weights.

report.html is self-contained: inline CSS, plots embedded as base64 PNG data URIs, no scripts, no external
resources. Every section carries a stable id (SECTIONS) so tests and links can rely on the structure.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from synthnet.eval.exr import as_image  # noqa: E402
from synthnet.weights import atomic_write, atomic_write_text, load_weights  # noqa: E402

SECTIONS = ("status", "beats-teacher", "teacher", "synthnet", "baselines", "novelty", "robustness", "speed",
            "heatmaps")
PLOTS = ("curves", "beats", "novelty", "heatmaps")  # <name>.png beside the report
ROLES = ("init", "synthnet", "teacher")  # heatmap columns: weights/seed<S>-<role>.safetensors
CSS = """body{font-family:system-ui,sans-serif;max-width:1180px;margin:24px auto;color:#222;padding:0 16px}
h1{font-size:22px}h2{font-size:18px;border-bottom:1px solid #ccc;padding-bottom:4px;margin-top:28px}
table{border-collapse:collapse;margin:8px 0;font-size:13px}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%;margin:8px 0}
.status{background:#f6f8fa;border:1px solid #ddd;padding:10px 14px;border-radius:6px;line-height:1.6}
.pass{color:#0a7d27;font-weight:bold}.fail{color:#b3261e;font-weight:bold}"""

Table = tuple[list[str], list[list[str]]]  # (header, rows of cell text)


def _f(v: float | None, digits: int = 4) -> str:
    """Fixed-point text; None (an infinite or undefined figure in results.json) reads 'n/a'."""
    return "n/a" if v is None else f"{v:.{digits}f}"


def _pm(stat: dict, i: int | None = None) -> str:
    """'mean ± std' of a stats leaf (element i of a list leaf)."""
    m, s = (stat[k] if i is None else stat[k][i] for k in ("mean", "std"))
    return f"{_f(m)} ± {_f(s)}"


def headline(res: dict) -> dict:
    """The figures of the status line: K (chosen on val), accuracies, beats-teacher fraction, the two novelty
    figures and the verdict."""
    agg = res["aggregate"]
    nov = agg["novelty"]
    return {"k": res["best_k"], "synth_acc": agg["synthnet"]["stats"]["best_acc"]["mean"],
            "teacher_acc": agg["teacher"]["stats"]["final_acc"]["mean"],
            "beats": agg["synthnet"]["beats_teacher_frac"], "margin_sd": agg["synthnet"].get("margin_sample_sd"),
            "ratio": nov["stats"]["ratio_ckpt"]["mean"],
            "ratio_threshold": nov["ratio_threshold"], "copy_ratio": nov["copy_ratio"],
            "copy_threshold": nov["copy_threshold"], "pass": nov["pass"]}


def novelty_line(h: dict) -> str:
    """The novelty verdict in words (SYNTHNET.md's two-part criterion)."""
    return (f"novelty: own teacher / nearest zoo checkpoint {h['ratio']:.3f} (<= {h['ratio_threshold']}: derived "
            f"from its init), nearest-zoo distance {h['copy_ratio']:.3f} x the teachers' (>= {h['copy_threshold']}: "
            f"not a copy) -> {'PASS' if h['pass'] else 'FAIL'}")


BEAT_SHARE = 0.6  # share of seeds SynthNet must be strictly above its own teacher on (with a mean >= the teacher's)


def beats_teacher(h: dict) -> bool:
    """SynthNet beats its teacher: a mean >= the teacher's and strictly above it on >= BEAT_SHARE of seeds."""
    return h["synth_acc"] >= h["teacher_acc"] and h["beats"] >= BEAT_SHARE


def verdict_line(h: dict) -> str:
    """Whether SynthNet beats its teacher, in words (beats_teacher)."""
    gap, beats, met = h["synth_acc"] - h["teacher_acc"], h["beats"], beats_teacher(h)
    noise = "" if h.get("margin_sd") is None else f" +- {h['margin_sd']:.4f} from the test split's size alone"
    return (f"verdict: SynthNet {'beats' if met else 'does not beat'} its teacher (mean {gap:+.4f}{noise}, above it "
            f"on {beats:.0%} of seeds; beating means a mean >= the teacher's and above it on >= {BEAT_SHARE:.0%})")


def _status_text(res: dict) -> list[str]:
    h, m, z = headline(res), res["model"], res["zoo"]
    seeds = res["seeds"]
    return [f"model: {m.get('run', '')} ({', '.join(f'{k}={v}' for k, v in m.items() if k != 'run')})",
            f"zoo: {z['path']} ({z['arch']}, {z['runs']} runs x {z['epochs']} epochs, manifest {z['manifest_sha256']})",
            f"dataset: {res['dataset']}; arch: {res['arch']}; {len(seeds)} seeds ({min(seeds)}..{max(seeds)})",
            f"SynthNet K={h['k']} (K chosen on the val split; test read only to report): {_f(h['synth_acc'])} mean "
            f"test accuracy vs teacher {_f(h['teacher_acc'])}; beats the teacher on {h['beats']:.0%} of seeds",
            verdict_line(h), novelty_line(h)]


def _beats_table(res: dict) -> Table:
    rows = [[str(r["seed"]), _f(r["teacher"]["final_acc"]), _f(r["synthnet"]["best_acc"]),
             f"{r['synthnet']['margin']:+.4f}", "yes" if r["synthnet"]["beats_teacher"] else "no"]
            for r in res["per_seed"]]
    return ["seed", "teacher acc", f"SynthNet acc (K={res['best_k']})", "margin", "beats teacher"], rows


def _teacher_table(res: dict) -> Table:
    agg = res["aggregate"]["teacher"]
    acc = agg["stats"]["final_acc"]
    return ["figure", "value"], [["epochs", str(agg["epochs"])], ["final test accuracy", _pm(acc)],
                                 ["min / max over seeds", f"{_f(acc['min'])} / {_f(acc['max'])}"],
                                 ["training seconds per net", _f(agg["seconds_per_net"], 3)]]


def _synth_table(res: dict) -> Table:
    st = res["aggregate"]["synthnet"]["stats"]
    rows = []
    for i in range(res["k_max"]):
        chain = " → ".join(_f(v, 3) for v in st["chain_acc"][str(i + 1)]["mean"])
        rows.append([str(i + 1), _pm(st["acc"], i), _f(st["acc"]["min"][i]), _f(st["loss"]["mean"][i]),
                     _f(st["seconds"]["mean"][i], 4), chain])
    return ["K", "test acc", "min", "cross-entropy", "seconds per net", "acc after each step"], rows


def _baselines_table(res: dict) -> Table:
    agg = res["aggregate"]
    nov = agg["novelty"]["stats"]
    rows = [["teacher (reference)", _pm(agg["teacher"]["stats"]["final_acc"]), "0", "—", "—"],
            [f"SynthNet K={res['best_k']}", _pm(agg["synthnet"]["stats"]["best_acc"]),
             _f(nov["d_teacher"]["mean"], 3), _f(nov["d_final"]["mean"], 3), _f(nov["ratio_final"]["mean"], 3)]]
    for name, st in agg["baselines"]["stats"].items():
        rows.append([name, _pm(st["acc"]), *(_f(st[k]["mean"], 3) for k in ("d_teacher", "d_final", "ratio_final"))])
    return ["method", "test acc", "distance to own teacher", "distance to nearest zoo final",
            "own teacher / nearest zoo final (n/a: a zoo final itself)"], rows


def _novelty_table(res: dict) -> Table:
    nov = res["aggregate"]["novelty"]
    st = nov["stats"]
    m = lambda key: _f(st[key]["mean"], 3)  # noqa: E731
    ok = lambda v: "PASS" if v else "FAIL"  # noqa: E731
    return ["figure (mean over seeds)", "SynthNet", "reference"], [
        ["aligned distance to own teacher", m("d_teacher"), "—"],
        ["distance to nearest zoo checkpoint (any epoch)", m("d_ckpt"),
         f"its teacher's: {m('teacher_d_ckpt')}"],
        ["own teacher / nearest checkpoint (derived from its init)", m("ratio_ckpt"),
         f"{ok(nov['derived'])}: mean <= {nov['ratio_threshold']}"],
        ["nearest-checkpoint distance / the teachers' (not a copy)", _f(nov["copy_ratio"], 3),
         f"{ok(nov['not_copy'])}: >= {nov['copy_threshold']}"],
        ["distance to nearest zoo final", m("d_final"),
         f"zoo final to nearest other final: {_f(nov['zoo_loo_distance']['mean'], 3)}"],
        ["own teacher / nearest zoo final", m("ratio_final"), "copying a zoo final scores >= 1"],
        ["error IoU with most similar zoo final", m("iou_zoo_max"),
         f"zoo final vs most similar other final: {_f(nov['zoo_loo_iou']['mean'], 3)}"],
        ["error IoU with own teacher", m("iou_teacher"), "—"],
        ["pairwise error IoU (diversity)", _f(nov["pairwise_iou_synth"], 3),
         f"among teachers: {_f(nov['pairwise_iou_teacher'], 3)}"],
        ["ensemble accuracy (average softmax)", _f(nov["ensemble_synth_acc"]),
         f"ensemble of teachers: {_f(nov['ensemble_teacher_acc'])}"]]


def _robust_table(res: dict) -> Table:
    ref = res["aggregate"]["synthnet"]["stats"]["best_acc"]
    rows = [["unperturbed default init", _pm(ref), _f(ref["min"]), "—"]]
    for name, st in res["aggregate"]["robustness"]["stats"].items():
        gain = _f(st["gain"]["mean"], 3) if "gain" in st else "—"
        rows.append([name, _pm(st["acc"]), _f(st["acc"]["min"]), gain])
    return ["init", f"test acc (K={res['best_k']})", "min", "output change / input change"], rows


def _speed_table(res: dict) -> Table:
    sp = res["aggregate"]["speed"]
    ratio = res["aggregate"]["speed"]["stats"]["ratio"]
    reached = "yes" if sp["reached"] else "no (ratio uses the teacher's full training time)"
    return ["figure (per net, measured in this run)", "value"], [
        [f"SynthNet synthesis seconds (K={res['best_k']})", _f(sp["synth_seconds"], 4)],
        ["teacher seconds to reach SynthNet's mean accuracy", _f(sp["teacher_seconds"], 3)],
        ["teacher epoch at that accuracy", _f(sp["teacher_epoch"], 2)],
        ["teacher reached it", reached],
        ["speed-up (teacher seconds / synthesis seconds)", _f(sp["ratio"], 1)],
        ["per-seed speed-up: min / mean / max", f"{_f(ratio['min'], 1)} / {_f(ratio['mean'], 1)} / {_f(ratio['max'], 1)}"]]


TABLES = {"beats-teacher": _beats_table, "teacher": _teacher_table, "synthnet": _synth_table,
          "baselines": _baselines_table, "novelty": _novelty_table, "robustness": _robust_table, "speed": _speed_table}
TITLES = {"status": "Status", "beats-teacher": "Beats the teacher? (per seed)", "teacher": "Teacher",
          "synthnet": "SynthNet", "baselines": "Baselines", "novelty": "Novelty (memorisation checks)",
          "robustness": "Robustness", "speed": "Speed", "heatmaps": "Weight heatmaps"}
SECTION_PLOTS = {"beats-teacher": "beats", "synthnet": "curves", "novelty": "novelty", "heatmaps": "heatmaps"}


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _plot_curves(res: dict, out: Path) -> bytes:
    """Teacher accuracy per epoch (mean, min-max band) beside SynthNet accuracy per step of each K."""
    st = res["aggregate"]
    acc = st["teacher"]["stats"]["acc"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    a.plot(range(len(acc["mean"])), acc["mean"], color="C0", label="teacher (mean)")
    a.fill_between(range(len(acc["mean"])), acc["min"], acc["max"], color="C0", alpha=0.2, label="min-max")
    a.set(xlabel="teacher epoch", ylabel="test accuracy", title="teacher: accuracy vs epoch")
    for k, chain in st["synthnet"]["stats"]["chain_acc"].items():
        b.plot(range(1, len(chain["mean"]) + 1), chain["mean"], marker="o", label=f"K={k}")
    for ax in (a, b):
        ax.axhline(st["teacher"]["stats"]["final_acc"]["mean"], color="gray", ls="--", lw=1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    b.set(xlabel="SynthNet step", title="SynthNet: accuracy vs step (dashed: teacher final)")
    return _png(fig)


def _plot_beats(res: dict, out: Path) -> bytes:
    """Per seed: teacher accuracy (x) against SynthNet's best-K accuracy (y); above the diagonal beats it."""
    t = [r["teacher"]["final_acc"] for r in res["per_seed"]]
    s = [r["synthnet"]["best_acc"] for r in res["per_seed"]]
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(t, s, s=18)
    lo, hi = min(t + s) - 0.01, max(t + s) + 0.01
    ax.plot([lo, hi], [lo, hi], color="gray", ls="--", lw=1)
    ax.set(xlabel="teacher test accuracy", ylabel=f"SynthNet test accuracy (K={res['best_k']})",
           title="per seed: above the line beats the teacher")
    ax.grid(alpha=0.3)
    return _png(fig)


def _plot_novelty(res: dict, out: Path) -> bytes:
    """Accuracy against distance ratio (own teacher / nearest zoo net) for SynthNet and every baseline."""
    rows = res["per_seed"]
    fig, ax = plt.subplots(figsize=(8, 5))
    acc = [r["synthnet"]["best_acc"] for r in rows]
    ax.scatter([r["novelty"]["ratio_ckpt"] for r in rows], acc, s=22, color="C3", label="SynthNet vs any checkpoint")
    ax.scatter([r["novelty"]["ratio_final"] for r in rows], acc, s=22, facecolors="none", edgecolors="C3",
               label="SynthNet vs zoo finals")
    for i, name in enumerate(rows[0]["baselines"]):
        ax.scatter([r["baselines"][name]["ratio_final"] for r in rows], [r["baselines"][name]["acc"] for r in rows],
                   s=12, marker="x", color=f"C{(i + 4) % 10}", label=f"{name} vs zoo finals")
    ax.axvline(res["aggregate"]["novelty"]["ratio_threshold"], color="k", ls="--", lw=1, label="threshold")
    ax.axvline(1.0, color="gray", ls=":", lw=1)
    ax.set(xscale="log", xlabel="distance to own teacher / distance to nearest zoo net (log)",
           ylabel="test accuracy", title="novelty vs accuracy (left of the threshold: derived from the init)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _png(fig)


def _plot_heatmaps(res: dict, out: Path) -> bytes:
    """Every tensor (rows) of one seed's init, synthesized net and teacher (columns), one colour scale per row."""
    seed = res["seeds"][0]
    states = [load_weights(out / "weights" / f"seed{seed}-{role}.safetensors", res["arch"])[0] for role in ROLES]
    keys = list(states[0])
    fig, axes = plt.subplots(len(keys), 3, figsize=(12, 1.2 + 1.6 * len(keys)), squeeze=False)
    for row, key in enumerate(keys):
        images = [as_image(s[key]).numpy() for s in states]
        lim = max(abs(im).max() for im in images)
        for col, (role, im) in enumerate(zip(ROLES, images)):
            ax = axes[row][col]
            shown = ax.imshow(im, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto", interpolation="nearest")
            ax.set_title(f"{role}: {key} {tuple(states[col][key].shape)}", fontsize=8)
            ax.set_xticks([]), ax.set_yticks([])
        fig.colorbar(shown, ax=axes[row].tolist(), fraction=0.02)
    fig.suptitle(f"seed {seed}: weights (red > 0 > blue)", fontsize=10)
    return _png(fig)


PLOTTERS = {"curves": _plot_curves, "beats": _plot_beats, "novelty": _plot_novelty, "heatmaps": _plot_heatmaps}


def _html_table(table: Table) -> str:
    head, rows = table
    cells = lambda tag, r: "".join(f"<{tag}>{html.escape(c)}</{tag}>" for c in r)  # noqa: E731
    body = "".join(f"<tr>{cells('td', r)}</tr>" for r in rows)
    return f"<table><tr>{cells('th', head)}</tr>{body}</table>"


def _html(res: dict, pngs: dict[str, bytes]) -> str:
    h = headline(res)
    status = "<br>".join(html.escape(line) for line in _status_text(res)[:-1])
    verdict = f"<span class='{'pass' if h['pass'] else 'fail'}'>{html.escape(_status_text(res)[-1])}</span>"
    parts = [f"<section id='status'><h1>SynthNet evaluation</h1><div class='status'>{status}<br>{verdict}</div></section>"]
    for sid in SECTIONS[1:]:
        body = _html_table(TABLES[sid](res)) if sid in TABLES else ""
        if sid in SECTION_PLOTS:
            data = base64.b64encode(pngs[SECTION_PLOTS[sid]]).decode()
            body += f"<img alt='{sid}' src='data:image/png;base64,{data}'>"
        parts.append(f"<section id='{sid}'><h2>{TITLES[sid]}</h2>{body}</section>")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>SynthNet evaluation</title>"
            f"<style>{CSS}</style></head><body>{''.join(parts)}</body></html>")


def _md_table(table: Table) -> str:
    head, rows = table
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def _markdown(res: dict) -> str:
    parts = ["# SynthNet evaluation", "\n".join(f"- {line}" for line in _status_text(res))]
    for sid in SECTIONS[1:]:
        parts.append(f"## {TITLES[sid]}")
        if sid in TABLES:
            parts.append(_md_table(TABLES[sid](res)))
        if sid in SECTION_PLOTS:
            parts.append(f"![{sid}]({SECTION_PLOTS[sid]}.png)")
    return "\n\n".join(parts) + "\n"


def write_report(out_dir: Path) -> Path:
    """Render out_dir/results.json into report.html, report.md and <plot>.png; returns the HTML path."""
    out = Path(out_dir)
    res = json.loads((out / "results.json").read_text())
    pngs = {name: PLOTTERS[name](res, out) for name in PLOTS}
    for name, data in pngs.items():
        atomic_write(out / f"{name}.png", lambda tmp, data=data: Path(tmp).write_bytes(data))
    atomic_write_text(out / "report.md", _markdown(res))
    atomic_write_text(out / "report.html", _html(res, pngs))
    return out / "report.html"
