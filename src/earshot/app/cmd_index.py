"""``earshot index / search / serve``: search your own sound folder by text."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from earshot.app.cli import app
from earshot.errors import EarshotError


def _fmt_time(seconds: float) -> str:
    m, s = divmod(seconds, 60)
    return f"{int(m)}:{s:04.1f}"


def report_table(report) -> Table:
    """Skipped files and why (rich table)."""
    table = Table(title=f"skipped {len(report.bad)} file(s)")
    table.add_column("file")
    table.add_column("reason")
    for path, reason in report.bad:
        table.add_row(Text(path), Text(reason))  # Text: a name like "dog [bark].wav" stays literal
    return table


@app.command("index")
def index_cmd(
    folder: Optional[Path] = typer.Argument(None, help="Folder of sounds, walked recursively."),
    model: Optional[Path] = typer.Option(None, "--model", help="Checkpoint directory or ensemble manifest."),
    out: Path = typer.Option(..., "--out", help="Index directory (created; rerun to update or resume)."),
    window: float = typer.Option(10.0, "--window", help="Window length in seconds for long recordings."),
    hop: float = typer.Option(5.0, "--hop", help="Hop between windows in seconds."),
    pooling: str = typer.Option("mean", "--pooling", help="Window embeddings -> clip: mean or max."),
    workers: int = typer.Option(2, "--workers", min=0, help="Decoding processes (0: decode inline)."),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Windows per forward pass."),
    precision: str = typer.Option("auto", "--precision", help="auto (bf16 on CPUs with native bf16, else "
                                  "fp32) | fp32 | bf16: the audio tower's arithmetic."),
    index_type: str = typer.Option("auto", "--index-type",
                                   help="auto (exact below 100k files, else IVF), flat, hnsw or ivf."),
    max_hours: float = typer.Option(4.0, "--max-hours", min=0.001,
                                    help="Skip files whose header declares more audio than this."),
    links_outside: bool = typer.Option(False, "--links-outside",
                                       help="Also index symlinks pointing outside FOLDER (refused by default)."),
    verify: bool = typer.Option(False, "--verify",
                                help="Only check the index at --out (database, vector digests, rows, left-over "
                                     "files) and report; changes nothing. Exit 1 if it is damaged."),
) -> None:
    """Index a folder of sounds so it can be searched by text or by example.

    Decodes in worker processes while the model encodes, keeps each file's per-window
    embeddings (so results can say where in a long file the match is), skips bad files and lists
    them, and resumes or updates incrementally: only new or changed files are encoded, deleted
    ones are dropped. A damaged vector file or damaged rows are rebuilt from the database and
    reported. ``--verify --out IDX`` checks an index without changing it.
    """
    if verify:
        _verify(out.expanduser())
        return
    if folder is None or model is None:
        raise EarshotError("give the FOLDER of sounds and --model (or --verify --out IDX to check an index)")
    folder, out = folder.expanduser(), out.expanduser()
    if not folder.is_dir():
        raise EarshotError(f"{folder}: no such folder")
    if out.exists() and not out.is_dir():
        raise EarshotError(f"--out {out}: is a file; give a folder for the index")
    from earshot.models.loading import is_pretrained_name

    if not model.expanduser().exists() and not is_pretrained_name(model):
        raise EarshotError(f"--model {model}: no such model (a checkpoint, an ensemble manifest, a "
                           f"CLAP folder or a name from `earshot weights list`)")
    from earshot.audio.io import SUPPORTED_SUFFIXES
    from earshot.index import IndexConfig, VectorConfig, index_folder, open_encoder
    from earshot.index.decode import Limits
    from earshot.index.indexer import walk

    if not (out / "meta.sqlite").is_file() and not any(
            p.suffix.lower() in SUPPORTED_SUFFIXES for p in walk(folder, out.resolve())):
        typer.echo(f"{folder}: no audio files to index ({', '.join(sorted(SUPPORTED_SUFFIXES))})", err=True)
        raise typer.Exit(1)
    cfg = IndexConfig(window_s=window, hop_s=hop, pooling=pooling, workers=workers,  # type: ignore[arg-type]
                      batch_size=batch_size, vectors=VectorConfig(kind=index_type),  # type: ignore[arg-type]
                      limits=Limits(max_duration_s=max_hours * 3600), links_outside=links_outside)
    console = Console()
    encoder = open_encoder(model, precision)  # ~ is expanded where the model is opened
    columns = (TextColumn("indexing"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
               TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"),
               TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("", total=None, rate="")

        def progress(p) -> None:
            elapsed = bar.tasks[0].elapsed or 0.0
            rate = f"{p.audio_s / elapsed:.0f}x real time" if elapsed > 0 and p.audio_s else ""
            bar.update(task, completed=p.done, total=p.total, rate=rate)

        try:
            report = index_folder(folder, encoder, out, cfg, progress)
        except KeyboardInterrupt:
            bar.stop()
            typer.echo(f"interrupted: {_files_kept(out)} files kept; run the same command to continue", err=True)
            # Everything is committed and the workers are gone; skip the interpreter's exit
            # handlers, where multiprocessing can wait for ever on a dead worker's pipe.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(130)
    console.print(
        f"indexed {len(report.encoded)} new or changed file(s) ({_fmt_time(report.audio_s)} of audio, "
        f"{report.windows} windows), kept {report.unchanged} unchanged, removed {len(report.removed)}, "
        f"skipped {len(report.bad)}; {report.items} file(s) in {escape(str(report.index))} "
        f"({report.kind}) in {report.seconds:.1f} s"
    )
    for note in report.repaired:
        console.print(f"repaired: {escape(note)}", highlight=False)
    for path, note in report.notes:
        console.print(f"note: {escape(path)}: {escape(note)}", highlight=False)
    if report.bad:
        console.print(report_table(report))


def _files_kept(out: Path) -> int | str:
    """How many files an interrupted run left in the index at ``out`` (or its building folder)."""
    from earshot.index.indexer import building_dir
    from earshot.index.store import DB_FILE, Store

    for where in (out, building_dir(out.resolve())):
        if (where / DB_FILE).is_file():
            try:
                store = Store.open(where, readonly=True, check=False)
                try:
                    return store.count()
                finally:
                    store.close()
            except Exception:  # noqa: BLE001 - interrupted before the first commit: nothing kept
                return 0
    return 0


def _verify(out: Path) -> None:
    """`earshot index --verify`: print what :func:`earshot.index.integrity.verify` found."""
    from earshot.index.integrity import verify

    report = verify(out)
    for note in report.notes:
        typer.echo(f"note: {note}")
    for problem in report.problems:
        typer.echo(f"problem: {problem}")
    if report.ok:
        typer.echo(f"ok: {out} ({report.files} file(s), {report.windows} window(s)) is sound")
        return
    typer.echo(f"damaged: {out}", err=True)
    raise typer.Exit(1)


@app.command("search")
def search_cmd(
    index: Path = typer.Argument(..., help="Index directory made by `earshot index`."),
    query: Optional[str] = typer.Argument(None, help="What the sound is like, in words."),
    k: int = typer.Option(10, "-k", "--top", min=1, max=1000, help="Number of results."),
    audio: Optional[Path] = typer.Option(None, "--audio", help="Query by example: rank by similarity to this clip."),
    model: Optional[Path] = typer.Option(None, "--model", help="Model (default: the one that built the index)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts instead of a table."),
) -> None:
    """Search an index by text (QUERY) or by example (--audio clip.wav)."""
    from earshot.index import Index

    if (query is None) == (audio is None):
        raise EarshotError("give either a text QUERY or --audio CLIP, not both or neither")
    with Index.open(index, model) as ix:
        partial = ix.partial()
        if partial:
            Console(stderr=True).print(f"[yellow]{partial}[/yellow]", markup=True, highlight=False)
        hits = ix.search(query, k) if query is not None else ix.search_audio(audio, k)  # type: ignore[arg-type]
    if as_json:
        doc = {"query": query, "audio": str(audio) if audio else None, "index": str(index), "partial": partial,
               "results": [h.to_dict() for h in hits]}
        typer.echo(json.dumps(doc, indent=2))
        return
    table = Table(title=escape(f"{query!r}" if query is not None else f"like {audio}"))
    for col, just in (("rank", "right"), ("score", "right"), ("file", "left"), ("best window", "left")):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    for h in hits:
        table.add_row(str(h.rank), f"{h.score:.3f}", Text(h.path),
                      f"{_fmt_time(h.window_start)}-{_fmt_time(h.window_end)}")
    Console().print(table)


@app.command("serve")
def serve_cmd(
    index: Path = typer.Argument(..., help="Index directory made by `earshot index`."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind (only this machine by default)."),
    port: int = typer.Option(8000, "--port", min=1, max=65535),
    model: Optional[Path] = typer.Option(None, "--model", help="Model (default: the one that built the index)."),
    allow_host: list[str] = typer.Option([], "--allow-host",
                                         help="Also answer requests for this Host name (repeatable; '*' for any)."),
    max_upload_mb: float = typer.Option(20.0, "--max-upload-mb", min=0.001, help="Largest upload, MiB."),
    max_upload_minutes: float = typer.Option(10.0, "--max-upload-minutes", min=0.01,
                                             help="Longest upload, by the duration its header declares."),
    docs: bool = typer.Option(False, "--docs", help="Also serve the interactive API docs at /docs and /redoc."),
    max_decoding: int = typer.Option(2, "--max-decoding", min=1,
                                     help="Uploads decoded at once; more are answered 503 with Retry-After."),
    max_connections: int = typer.Option(64, "--max-connections", min=1, help="Connections served at once."),
    log_level: str = typer.Option("warning", "--log-level",
                                  help="debug | info | warning | error: the server log (stderr); decoder "
                                       "notes on uploads are info records of earshot.decoder."),
) -> None:
    """Serve the search page and HTTP API (/health, /search, /search/audio, /audio/{id}).

    Only requests addressed to this machine's local names (and --host, --allow-host) are
    answered, and uploads only from the page itself, so other web pages cannot use the server.
    Slow clients are cut off: a request head must arrive within 10 s, an upload may stall 10 s
    (120 s in all), idle connections close after 5 s.
    """
    import logging

    import uvicorn

    from earshot.app.limits import ServeLimits, uvicorn_options
    from earshot.app.logs import route_native_stderr

    level = log_level.lower()
    if level not in ("debug", "info", "warning", "error"):
        raise EarshotError(f"--log-level {log_level!r}: expected debug, info, warning or error")
    route_native_stderr()
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    from earshot.app.server import LOCAL_NAMES, create_app

    hosts = [*LOCAL_NAMES, *([] if host in ("0.0.0.0", "::") else [host]), *allow_host]
    limits = ServeLimits(max_decoding=max_decoding, max_connections=max_connections)
    app_ = create_app(index, model=model, allowed_hosts=hosts, max_upload_bytes=int(max_upload_mb * 1024 * 1024),
                      max_upload_s=max_upload_minutes * 60, docs=docs,
                      serve_limits=limits)
    partial = app_.state.live.partial
    typer.echo(f"ready: serving {index} at http://{host}:{port}/  (Ctrl+C to stop)" + (f"; {partial}" if partial else ""))
    uvicorn.run(app_, host=host, port=port, log_level=level, **uvicorn_options(limits))
