"""Thin commands: each parses its arguments and calls one function of the package."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from synthnet.errors import SynthNetError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="SynthNet: turn a random-init weight file into trained weights, without data.")
console = Console()


def command(fn):
    """Register a command whose SynthNetError (and bad-input OSError) becomes one line on stderr and exit 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SynthNetError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise typer.Exit(2) from None

    return app.command()(wrapper)


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
        console.print(f"[bold]{k}[/]: {v}")
    print_table(tensors, title=str(file))
    print_table(scores, title=f"on {dataset}")


@command
def zoo(
    out: Path = typer.Option(..., help="zoo directory (created; finished runs are skipped on re-run)"),
    arch: str = typer.Option("mlp:64-32-10", help="spec, or a comma list for a mixed-width zoo"),
    dataset: str = typer.Option("digits", help="digits|mnist1d|idx:<dir>"),
    seeds: str = typer.Option("0:512", help="A:B (half-open) or a comma list"),
    epochs: int = typer.Option(30, help="teacher recipe epochs"),
    lr: float = typer.Option(3e-3, help="teacher recipe Adam learning rate"),
    batch: int = typer.Option(32, help="teacher recipe batch size"),
    workers: int = typer.Option(1, help="parallel processes (1 = one process using every core)"),
    summary: bool = typer.Option(False, "--summary", help="only print the accuracy-by-epoch table of --out"),
):
    """Build a checkpoint zoo: one teacher-recipe run per seed, every epoch saved, plus manifest.jsonl."""
    from synthnet.zoo import Recipe, build_zoo, parse_seeds, summarize

    if not summary:
        stats = build_zoo(out, [a for a in arch.split(",") if a], dataset, parse_seeds(seeds),
                          Recipe(epochs, lr, batch), workers)
        console.print(f"trained {stats['trained']} runs, skipped {stats['skipped']} finished, "
                      f"{stats['seconds']:.1f} s")
    print_table(summarize(out), title=f"zoo {out}: test accuracy by epoch")


def main() -> None:
    app()
