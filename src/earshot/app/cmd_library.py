"""``earshot duplicates``: exact and near-duplicate groups in an indexed library."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from earshot.app.root import app
from earshot.errors import EarshotError


@app.command("duplicates")
def duplicates_cmd(
    index: Path = typer.Argument(..., help="Index directory made by `earshot index`."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Cosine from which two files are near "
                                              "duplicates (default 0.99, measured: docs/LIBRARY.md; see --calibrate)."),
    exact_only: bool = typer.Option(False, "--exact-only", help="Only the same decoded audio (no model cosine)."),
    fmt: str = typer.Option("table", "--format", help="table, csv or json."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the csv/json here instead of printing it."),
    calibrate: bool = typer.Option(False, "--calibrate", help="Measure a threshold for this index's model "
                                   "(copies of 20 files: trimmed, -6 dB, resampled, mp3, vs. their nearest other sounds) and print it; "
                                   "loads the model."),
    model: Optional[Path] = typer.Option(None, "--model", help="Model (default: the one that built the index)."),
) -> None:
    """Find copies of the same sound: exact (same decoded audio, so WAV -> FLAC counts) and near
    (pooled embeddings with cosine >= --threshold and durations within 10% or 0.5 s)."""
    from earshot.index import Index
    from earshot.index import duplicates as D
    from earshot.utils import atomic_write

    if fmt not in ("table", "csv", "json"):
        raise EarshotError(f"--format {fmt!r}: expected table, csv or json")
    with Index.open(index, model) as ix:
        if calibrate:
            c = D.calibrate(ix)
            typer.echo(f"{c.files} files: copies score >= {c.variants_p05:.4f} (5th percentile; lowest by kind: "
                       + ", ".join(f"{k} {v:.4f}" for k, v in c.variants.items())
                       + f"); a file's nearest other sound {c.neighbours_p50:.4f} (median), "
                       f"{c.neighbours_p95:.4f} (95th percentile)")
            typer.echo(f"suggested --threshold {c.suggested}" if c.suggested is not None else
                       "this model scores nearest neighbours as high as copies: near duplicates cannot be told "
                       "apart by its cosine; use --exact-only")
            return
        report = D.find_duplicates(ix, D.NEAR_THRESHOLD if threshold is None else threshold, near=not exact_only)
    text = report.to_csv() if fmt == "csv" else report.to_json() if fmt == "json" else None
    if text is not None:
        if out is not None:
            with atomic_write(out.expanduser(), "w") as f:
                f.write(text)
            typer.echo(f"{len(report.groups)} group(s) written to {out}", err=True)
        else:
            typer.echo(text, nl=False)
        return
    table = Table(title=f"{len(report.groups)} duplicate group(s) among {report.files} files "
                        f"({report.decoded} decoded, {report.seconds:.1f} s)")
    for col in ("group", "kind", "similarity", "files"):
        table.add_column(col)
    for i, g in enumerate(report.groups, start=1):
        table.add_row(str(i), g.kind, f"{g.similarity:.4f}", Text("\n".join(g.paths)))
    Console().print(table)
