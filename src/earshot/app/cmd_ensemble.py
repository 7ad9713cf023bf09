"""``earshot ensemble search`` / ``earshot ensemble make``: find or write an ensemble manifest."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from earshot.app.root import PRECISION_HELP, app

ensemble_app = typer.Typer(help="Ensembles: search the best combination of trained models, write manifests.",
                           no_args_is_help=True)
app.add_typer(ensemble_app, name="ensemble")

_COLUMNS = ("t2a/mAP@10", "t2a/R@1", "t2a/R@5", "t2a/R@10", "a2t/mAP@10")


def _models(positional: Optional[list[Path]], option: Optional[list[Path]]) -> list[Path]:
    # `--models M1 M2 M3` parses as the option M1 followed by positional M2 M3; keep both.
    return [*(option or []), *(positional or [])]


def results_table(report, top: int = 0):
    """A rich table of every scored combination, best first (singles marked as such)."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"ensembles on {report.data or 'validation'} (rule {report.rule}), best first")
    table.add_column("#", justify="right")
    table.add_column("members", overflow="fold")  # long paths wrap whole, never cut to "…"
    table.add_column("n", justify="right")
    for col in _COLUMNS:
        table.add_column(col, justify="right")
    best = report.best
    rows = report.results if top <= 0 else report.results[:top]
    for i, r in enumerate(rows, 1):
        label = Text(" + ".join(report.names(r)) + (" (single)" if r.size == 1 else ""))
        style = "bold" if r is best else None
        table.add_row(str(i), label, str(r.size), *(f"{r.metrics[c]:.4f}" for c in _COLUMNS), style=style)
    return table


def best_line(report, path) -> str:
    """The closing ``best:`` line; says so when a single member beats the chosen ensemble."""
    best = report.best
    line = (f"best: {' + '.join(report.names(best))}  {report.metric} {best.metrics[report.metric]:.4f}"
            f"  -> {path}")
    singles = [r for r in report.results if r.size == 1 and best.size > 1]
    top = max(singles, key=lambda r: r.metrics[report.metric], default=None)
    if top is not None and top.metrics[report.metric] > best.metrics[report.metric]:
        line += (f"\nnote: {report.names(top)[0]} alone scores {report.metric} {top.metrics[report.metric]:.4f}, "
                 "more than any ensemble tried; on this validation set it is better used by itself")
    return line


@ensemble_app.command("search")
def search_command(
    models: Optional[list[Path]] = typer.Argument(None, help="Checkpoint directories to combine."),
    models_opt: Optional[list[Path]] = typer.Option(
        None, "--models", "-m", help="Checkpoint directories (`--models M1 M2 ...` or positional)."),
    data: Path = typer.Option(..., "--data", help="Caption table of the validation split."),
    fmt: str = typer.Option("clotho", "--format", help="clotho | audiocaps | pairs"),
    audio_dir: Path = typer.Option(None, "--audio-dir", help="Audio folder (default: the table's folder)."),
    rule: str = typer.Option("zmean", "--rule", help="mean | zmean (per-query standardised mean) | rrf"),
    rrf_k: float = typer.Option(60.0, "--rrf-k", help="Constant k of reciprocal-rank fusion."),
    max_size: int = typer.Option(5, "--max-size", help="Largest ensemble tried."),
    greedy: Optional[bool] = typer.Option(
        None, "--greedy/--exhaustive", help="Greedy forward selection or all subsets "
        "(default: greedy above 8 models)."),
    seconds: float = typer.Option(None, "--seconds", help="Frame clips to this length (default: whole clips)."),
    out: Path = typer.Option(Path("ensemble.json"), "--out", help="Where to write the best ensemble's manifest."),
    cache_dir: Path = typer.Option(None, "--cache-dir", help="Similarity-matrix cache (default: user cache)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Encode every model again; store nothing."),
    top: int = typer.Option(0, "--top", help="Print only the best N rows (0: all)."),
    workers: int = typer.Option(0, "--workers", help="Audio decoding processes."),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
    precision: str = typer.Option("auto", "--precision", help=PRECISION_HELP),
    progress: Optional[bool] = typer.Option(
        None, "--progress/--no-progress", help="Progress bars (default: when stderr is a terminal)."),
) -> None:
    """Score every combination of 2..max-size models by fused validation mAP@10 and save the best."""
    from rich.console import Console
    from rich.markup import escape

    from earshot.ensemble.search import search_and_save

    report, path = search_and_save(
        _models(models, models_opt), data, out, fmt, audio_dir, cache_dir, no_cache, rule=rule,
        max_size=max_size, greedy=greedy, rrf_k=rrf_k, clip_seconds=seconds, num_workers=workers,
        precision=precision, progress=(sys.stderr.isatty() and not as_json) if progress is None else progress)
    if as_json:
        doc = {"manifest": str(path), "rule": rule,
               "results": [{"members": report.names(r), "metrics": r.metrics} for r in report.results]}
        typer.echo(json.dumps(doc, indent=2))
        return
    # Into a file or a pipe: no 80-column wrapping in the middle of a path or sentence.
    console = Console() if sys.stdout.isatty() else Console(width=1000, soft_wrap=True)
    console.print(results_table(report, top))
    console.print(escape(best_line(report, path)), highlight=False)


@ensemble_app.command("make")
def make_command(
    models: list[Path] = typer.Argument(..., help="Checkpoint directories."),
    out: Path = typer.Option(..., "--out", help="Manifest to write (.json or .yaml)."),
    weights: Optional[list[float]] = typer.Option(None, "--weight", "-w", help="One per model, in order (default equal)."),
    rule: str = typer.Option("zmean", "--rule", help="mean | zmean | rrf"),
    rrf_k: float = typer.Option(60.0, "--rrf-k", help="Constant k of reciprocal-rank fusion."),
) -> None:
    """Write an ensemble manifest by hand (no search); it opens like the members do."""
    from earshot.ensemble.manifest import make_manifest

    ensemble, path = make_manifest(models, out, weights, rule, rrf_k)
    typer.echo(f"{ensemble!r} -> {path}")
