"""Thin commands: each parses its arguments and calls one function of the package."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

try:  # recent typer vendors click as typer._click
    from typer._click.exceptions import ClickException
except ImportError:
    from click.exceptions import ClickException

from synthnet.config import Config, presets
from synthnet.errors import SynthNetError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="SynthNet: turn a random-init weight file into trained weights, without data.")
console = Console(markup=False, soft_wrap=True)  # paths and metadata are printed as given: no [markup], no wrapping
DEFAULTS = Config()  # the one config schema's defaults, shown by the commands that take them as options


def command(fn=None, *, name: str | None = None):
    """Register a command whose SynthNetError (and bad-input OSError) becomes one line on stderr and exit 2."""
    if fn is None:
        return functools.partial(command, name=name)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (SynthNetError, OSError) as exc:  # OSError: an unwritable or vanished path the user gave
            print(f"error: {exc}", file=sys.stderr)
            raise typer.Exit(2) from None

    return app.command(name)(wrapper)


def print_table(rows: list[dict], title: str = "") -> None:
    if not rows:
        return
    table = Table(title=title)
    for key in rows[0]:
        table.add_column(key, justify="right")
    for r in rows:
        table.add_row(*(f"{v:.4f}" if isinstance(v, float) else str(v) for v in r.values()))
    console.print(table)


@command
def init(
    arch: str = typer.Option(..., help="target spec, e.g. mlp:64-32-10 or cnn:1x8x8-8-16-10"),
    seed: int = typer.Option(0, help="torch.manual_seed before construction"),
    out: Path = typer.Option(..., "-o", "--out", help="output .safetensors file"),
    init: str = typer.Option("default", "--init", help="default|kaiming_normal|xavier_uniform|xavier_normal|normal:<std>"),
):
    """Write a random init (the module's PyTorch default init after torch.manual_seed(seed), or --init)."""
    from synthnet.targets import init_state, parse_spec
    from synthnet.weights import save_weights

    spec = parse_spec(arch)
    save_weights(out, init_state(spec, seed, init), spec, seed=seed, init=init, epoch=0)
    console.print(f"wrote {out} ({spec}, seed {seed}, init {init}, {spec.n_params()} parameters)")


@command
def inspect(
    file: Path = typer.Argument(..., help="a .safetensors weight file"),
    arch: Optional[str] = typer.Option(None, help="spec for files without synthnet.arch metadata"),
    dataset: Optional[str] = typer.Option(None, help="also report accuracy/loss per split: digits|mnist1d|idx:<dir>"),
):
    """Print a weight file's metadata, a table of its tensors and, with --dataset, its accuracy per split."""
    from synthnet.inspect import describe

    meta, tensors, scores = describe(file, arch, dataset)
    for k, v in meta.items():
        console.print(Text.assemble((k, "bold"), f": {v}"))
    print_table(tensors, title=str(file))
    print_table(scores, title=f"on {dataset}")


RAY_ADDRESS = typer.Option(None, "--ray-address", help="Ray cluster to join: host:port, or auto for the one "
                           "`ray start --head` runs on this machine (default: start Ray here)")


@command
def zoo(
    out: Path = typer.Option(..., help="zoo directory (created; finished runs are skipped on re-run)"),
    arch: str = typer.Option(DEFAULTS.data.arch, help="spec, or a comma list for a mixed-width zoo"),
    dataset: str = typer.Option(DEFAULTS.data.dataset, help="digits|mnist1d|idx:<dir>"),
    seeds: str = typer.Option(DEFAULTS.zoo.seeds, help="A:B (half-open) or a comma list"),
    epochs: int = typer.Option(DEFAULTS.zoo.epochs, help="teacher recipe epochs"),
    lr: float = typer.Option(DEFAULTS.zoo.lr, help="teacher recipe learning rate"),
    batch: int = typer.Option(DEFAULTS.zoo.batch, help="teacher recipe batch size"),
    optimizer: str = typer.Option(DEFAULTS.zoo.optimizer, help="teacher recipe optimizer: adam | sgd (momentum 0.9)"),
    label_smoothing: float = typer.Option(DEFAULTS.zoo.label_smoothing, help="teacher recipe label smoothing"),
    orders: int = typer.Option(DEFAULTS.zoo.orders, help="minibatch orders per init (order 0 is the recipe's own; "
                               "more show the spread of runs one init allows)"),
    workers: Optional[int] = typer.Option(None, help="chunks of seeds trained at once: one-thread processes here "
                                          f"(default {DEFAULTS.zoo.workers}: one per core; 2 on 2 cores train 1.2-1.6x "
                                          "the runs/s of one 2-thread process), or with --ray tasks (default: its "
                                          "CPUs)"),
    summary: bool = typer.Option(False, "--summary", help="only print the accuracy-by-epoch table of --out"),
    ray: bool = typer.Option(False, "--ray", help="train the chunks as Ray tasks (needs synthnet[ray]; the same "
                             "files, bit for bit; on a cluster --out must be on a filesystem every node shares)"),
    ray_address: Optional[str] = RAY_ADDRESS,
):
    """Build a checkpoint zoo: one teacher-recipe run per seed, every epoch saved, plus manifest.jsonl."""
    from synthnet.zoo import Recipe, build_zoo, parse_seeds, summarize

    if not summary:
        pool, cpus = None, DEFAULTS.zoo.workers
        if ray or ray_address:
            from synthnet.orchestrate.cluster import ray_map

            pool, cpus = ray_map(ray_address)
        stats = build_zoo(out, [a for a in arch.split(",") if a], dataset, parse_seeds(seeds),
                          Recipe(epochs, lr, batch, optimizer, label_smoothing), cpus if workers is None else workers,
                          pool=pool, orders=orders)
        console.print(f"trained {stats['trained']} runs, skipped {stats['skipped']} finished, "
                      f"{stats['seconds']:.1f} s")
    print_table(summarize(out), title=f"zoo {out}: accuracy by epoch (test at the last)")


OVERRIDES = typer.Argument(None, help="config overrides key=value, e.g. train.steps=500 model.name=perceiver")
PRESET = typer.Option(None, "--preset", help=f"config preset: {' | '.join(presets())}")
RULE = typer.Option(None, "--rule", help="self-tuning rule (repeatable): sigma_up_on_zero_spread, lr_down_on_kl, "
                    "or NAME:METRIC>THRESHOLD:KEY*FACTOR:COOLDOWN")


@command
def train(
    out: Path = typer.Option(..., help="run directory (resumed exactly if it holds latest.pt)"),
    zoo: Optional[Path] = typer.Option(None, help="zoo directory (default: zoo.path of the config)"),
    preset: Optional[str] = PRESET,
    overrides: Optional[list[str]] = OVERRIDES,
    rule: Optional[list[str]] = RULE,
):
    """Supervised denoising stage on a zoo: writes config.yaml, metrics.jsonl, tb/, latest/best/final.pt."""
    from synthnet.config import compose, to_yaml
    from synthnet.patches import parse_rule
    from synthnet.train import train as run_train
    from synthnet.zoo import default_arch

    cfg = compose(preset, [*(overrides or []), *([f"zoo.path={zoo}"] if zoo else [])])
    if not any(o.startswith("data.arch=") for o in overrides or []):
        cfg.data.arch = default_arch(Path(cfg.zoo.path), cfg.data.arch)
    console.print(to_yaml(cfg))
    run_train(cfg, out, rules=[parse_rule(r) for r in rule or []])
    console.print(f"run saved in {out} (best.pt, final.pt)")


@command
def grpo(
    model: Path = typer.Option(..., help="supervised run directory to start from (its best.pt)"),
    out: Path = typer.Option(..., help="GRPO run directory (resumed exactly if it holds latest.pt)"),
    preset: Optional[str] = PRESET,
    overrides: Optional[list[str]] = OVERRIDES,
    rule: Optional[list[str]] = RULE,
):
    """GRPO stage: reinforce the denoiser on real accuracy (grpo.reward_split) from fresh random inits.

    Config: the supervised run's data, zoo, model and train settings; reward.* and grpo.* from the schema
    defaults, then --preset, then key=value overrides.
    """
    from synthnet.config import compose, rl_base, to_yaml
    from synthnet.patches import parse_rule
    from synthnet.rl.grpo import grpo as run_grpo
    from synthnet.synthesize import load_synthesizer

    cfg = compose(preset, overrides or [], base=rl_base(load_synthesizer(model).cfg))
    console.print(to_yaml(cfg))
    run_grpo(cfg, model, out, rules=[parse_rule(r) for r in rule or []])
    console.print(f"run saved in {out} (best.pt, final.pt)")


@command
def synthesize(
    inputs: list[Path] = typer.Argument(..., help="random-init .safetensors files or directories of them"),
    model: Path = typer.Option(..., help="run directory of a trained model (supervised or GRPO)"),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="output file (one input)"),
    out_dir: Optional[Path] = typer.Option(None, "--out-dir", help="output directory (keeps input file names)"),
    steps: Optional[int] = typer.Option(None, help="denoising steps K (default: the model's val-best K, recorded "
                                        "in its run)"),
    arch: Optional[str] = typer.Option(None, help="spec for inputs without synthnet.arch metadata"),
    sample_seed: int = typer.Option(0, min=0, help="seed of a bridge model's sampling noise: another seed, another "
                                    "trained network from the same init; the same seed, the same weights (a zoo "
                                    "model has no noise and ignores it)"),
):
    """Weights in, weights out: synthesize trained weights from random inits. Opens no dataset."""
    from synthnet.synthesize import synthesize_files

    rows = synthesize_files(inputs, model, steps, out, out_dir, arch, sample_seed)
    for r in rows:
        console.print(f"{r['input']} -> {r['output']}  ({r['arch']}, K={r['steps']}, {1000 * r['seconds']:.1f} ms)")


@command
def patch(
    run: Path = typer.Argument(..., help="run directory of a supervised or GRPO run (running or to be resumed)"),
    assignments: Optional[list[str]] = typer.Argument(None, help="live key=value pairs, e.g. grpo.lr=1e-4"),
    ramp: int = typer.Option(0, help="move each value linearly over N steps (0: at once)"),
    rollback: bool = typer.Option(False, "--rollback", help="restore the values from before the latest patch"),
    show: bool = typer.Option(False, "--list", help="print the patch history"),
):
    """Change live config keys of a run at its next step boundary, roll the latest patch back, or list them."""
    from synthnet.patches import list_patches, request_patch, request_rollback

    if bool(assignments) + rollback + show != 1:
        raise SynthNetError("give key=value pairs, or --rollback, or --list (one of them)")
    if show:
        rows = [{k: f"{v:g}" if isinstance(v, float) else v for k, v in r.items()} for r in list_patches(run)]
        print_table(rows, title=f"patches of {run}") if rows else console.print(f"no patches in {run}")
    elif rollback:
        console.print(f"rollback queued as {request_rollback(run)['request']}; the run applies it at its next step")
    else:
        req = request_patch(run, assignments, ramp)
        console.print(f"patch queued as {req['request']}: {req['set']}"
                      f"{f' over {ramp} steps' if ramp else ''}; the run applies it at its next step")


@command
def sweep(
    preset: str = typer.Argument(..., help=f"config preset of every trial: {' | '.join(presets())}"),
    grid: list[str] = typer.Option(..., "--grid", help="KEY=A,B,C (repeatable); one trial per combination"),
    stage: str = typer.Option("train", help="train (supervised) | grpo (from --model)"),
    out: Path = typer.Option(..., help="sweep directory: one run directory per trial, sweep.json, tune/"),
    model: Optional[Path] = typer.Option(None, help="supervised run the GRPO trials start from (--stage grpo)"),
    pbt: bool = typer.Option(False, "--pbt", help="population-based training: at every validation the worst "
                             "trials clone the best and mutate the grid's (live) keys"),
    ray_address: Optional[str] = RAY_ADDRESS,
    overrides: Optional[list[str]] = OVERRIDES,
):
    """Run a grid of configs (or a PBT population) over one stage as Ray Tune trials; rank them by validation."""
    from synthnet.orchestrate.sweep import run_sweep, table

    summary = run_sweep(preset, stage, grid, overrides or [], out, model, pbt, ray_address)
    print_table(table(summary), title=f"{summary['stage']} sweep: final and best {summary['metric']}, best first")
    console.print(f"sweep: {out / 'sweep.json'}")


@command
def demo(
    out: Path = typer.Option(Path("demo"), help="where the runs and the eval report go (finished parts are reused)"),
    preset: str = typer.Option("demo", help=f"config preset: {' | '.join(presets())}"),
    overrides: Optional[list[str]] = OVERRIDES,
):
    """zoo -> supervised stage -> GRPO -> eval on unseen seeds, with an HTML report (digits, 3-5 min on 2 cores)."""
    import json

    from synthnet.config import compose
    from synthnet.demo import headline_rows, run_demo
    from synthnet.eval.report import beats_teacher, headline

    ev = run_demo(compose(preset, overrides or []), out)
    res = json.loads((ev / "results.json").read_text())
    print_table(headline_rows(res), title=f"{res['arch']} on {res['dataset']}, {len(res['seeds'])} unseen seeds "
                f"({min(res['seeds'])}..{max(res['seeds'])}), test accuracy")
    print_headline(ev)
    if preset in ("demo", "tiny") and not beats_teacher(headline(res)):  # small models of the headline's target
        console.print("this preset's model is small so that it runs in minutes; the strongest one, `synthnet demo "
                      "--preset headline --out DIR` (about 11 minutes), is the README's headline row")


@command(name="eval")
def evaluate(
    model: Path = typer.Option(..., help="run directory of the model to evaluate (its best.pt)"),
    out: Path = typer.Option(..., help="directory for results.json, report.md, report.html and the PNG plots"),
    seeds: str = typer.Option(DEFAULTS.eval.seeds, help="unseen init seeds, A:B (half-open) or a comma list"),
    dataset: Optional[str] = typer.Option(None, help="digits|mnist1d|idx:<dir> (default: the model's dataset)"),
    arch: Optional[str] = typer.Option(None, help="target spec (default: the model's first zoo arch)"),
    zoo: Optional[Path] = typer.Option(None, help="zoo for baselines and novelty (default: the model's zoo)"),
    k_max: Optional[int] = typer.Option(None, help="evaluate SynthNet with K = 1..k_max steps (the reported K is the "
                                        "one with the best val accuracy; default: the model's eval.k_max)"),
    flat: Optional[Path] = typer.Option(None, help="run directory of a flat-mlp model to compare with"),
):
    """SynthNet vs its teacher, zoo baselines, novelty, robustness and speed on unseen seeds, with an HTML report."""
    from synthnet.eval.run import evaluate_model
    from synthnet.synthesize import load_synthesizer
    from synthnet.zoo import parse_seeds

    synth = load_synthesizer(model)
    cfg = synth.cfg
    evaluate_model(synth, zoo or Path(cfg.zoo.path), dataset or cfg.data.dataset, arch or cfg.data.arch.split(",")[0],
                   parse_seeds(seeds), k_max or cfg.eval.k_max, out, load_synthesizer(flat) if flat else None,
                   cfg.zoo.orders)
    print_headline(out)


def print_headline(out: Path) -> None:
    """The status line of an eval directory and where its report is."""
    import json

    from synthnet.eval.report import headline, novelty_line, verdict_line

    h = headline(json.loads((out / "results.json").read_text()))
    console.print(f"SynthNet K={h['k']} (chosen on val): test acc {h['synth_acc']:.4f} vs teacher "
                  f"{h['teacher_acc']:.4f}; beats its teacher on {100 * h['beats']:.0f}% of seeds")
    console.print(verdict_line(h))
    console.print(novelty_line(h))
    console.print(f"report: {out / 'report.html'}")


@command(name="export-exr")
def export_exr(
    file: Path = typer.Argument(..., help="a .safetensors weight file"),
    out: Path = typer.Option(..., "-o", "--out", help="output directory: one <tensor>.exr per tensor"),
    arch: Optional[str] = typer.Option(None, help="spec for files without synthnet.arch metadata"),
):
    """Write each tensor as a lossless float32 OpenEXR image (2-D: out x in; bias: 1 row; conv: out x in*kh*kw)."""
    from synthnet.eval.exr import export_exr as run_export

    for path in run_export(file, out, arch):
        console.print(str(path))


config_app = typer.Typer(help="Show resolved configs.", no_args_is_help=True)
app.add_typer(config_app, name="config")


@config_app.command("show")
def config_show(preset: Optional[str] = typer.Argument(None, help=f"{' | '.join(presets())} (default: none)"),
                overrides: Optional[list[str]] = OVERRIDES):
    """Print a resolved config as YAML, overrides applied."""
    from synthnet.config import compose, to_yaml

    if preset and "=" in preset:  # no preset, only overrides
        preset, overrides = None, [preset, *(overrides or [])]
    try:
        print(to_yaml(compose(preset, overrides or [])))
    except SynthNetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(2) from None


def main() -> None:
    """The `synthnet` command: a usage error (bad option value, unknown option, missing argument) is one
    `error:` line and exit 2, like every other bad input, instead of typer's boxed panel."""
    try:
        code = app(standalone_mode=False)
    except ClickException as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # the help is already printed (no_args_is_help)
            sys.exit(2)
        ctx = getattr(exc, "ctx", None)
        hint = f" (see {ctx.command_path} --help)" if ctx is not None else ""
        print(f"error: {exc.format_message()}{hint}", file=sys.stderr)
        sys.exit(2)
    except typer.Abort:
        print("error: aborted", file=sys.stderr)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
