"""``earshot index / search / serve``: search your own sound folder by text."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import NoReturn, Optional

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

from earshot.app.root import PRECISION_HELP, app
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
    model: Optional[Path] = typer.Option(None, "--model", help="A model: an earshot checkpoint folder, an ensemble manifest (.json/.yaml), a name from `earshot weights list`, a Hugging Face CLAP folder or hub id (laion/clap-htsat-unfused), or a published model file; prefix path:, registry: or hf-hub: to break a tie."),
    out: Path = typer.Option(..., "--out", help="Index directory (created; rerun to update or resume)."),
    window: float = typer.Option(10.0, "--window", help="Window length in seconds for long recordings."),
    hop: float = typer.Option(5.0, "--hop", help="Hop between windows in seconds."),
    pooling: str = typer.Option("mean", "--pooling", help="Window embeddings -> clip: mean or max."),
    workers: int = typer.Option(2, "--workers", min=0, help="local engine: decoding processes (0: decode "
                                "inline); ray engine: embedding workers, each holding the model once."),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Windows per forward pass."),
    precision: str = typer.Option("auto", "--precision", help=PRECISION_HELP),
    index_type: str = typer.Option("auto", "--index-type",
                                   help="auto (exact below 100k files, IVF above, compressed IVF-PQ once the "
                                   "vectors pass 2 GB), flat, hnsw, ivf or ivfpq (re-ranked exactly from disk)."),
    shards: int = typer.Option(1, "--shards", min=1, help="Split the vectors into N shards searched in parallel."),
    max_hours: float = typer.Option(4.0, "--max-hours", min=0.001,
                                    help="Skip files whose header declares more audio than this."),
    links_outside: bool = typer.Option(False, "--links-outside",
                                       help="Also index symlinks pointing outside FOLDER (refused by default)."),
    watch: bool = typer.Option(False, "--watch", help="After indexing, keep watching FOLDER: new, changed, moved "
                               "and deleted files reach the index within seconds (Ctrl+C to stop)."),
    engine: str = typer.Option("local", "--engine", help="local (this machine) or ray (a Ray cluster: decode "
                               "as CPU tasks, embed in a pool of model workers, merge shards; same index)."),
    address: Optional[str] = typer.Option(None, "--address", help="ray engine: the cluster (auto = the one "
                                          "`ray start` runs here, ray://HOST:10001); default: a new local one."),
    gpus_per_worker: float = typer.Option(0.0, "--gpus-per-worker", min=0.0,
                                          help="ray engine: GPUs each embedding worker reserves."),
    files_per_shard: int = typer.Option(64, "--files-per-shard", min=1,
                                        help="ray engine: files per shard (the unit a rerun resumes)."),
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
    with _CtrlC(out.expanduser()) as guard:
        if folder is None or model is None:
            raise EarshotError("give the FOLDER of sounds and --model (or --verify --out IDX to check an index)")
        from earshot.audio.io import SUPPORTED_SUFFIXES
        from earshot.index import IndexConfig, VectorConfig
        from earshot.index.decode import Limits
        from earshot.index.indexer import check_index_request
        from earshot.index.run import run_index

        request = check_index_request(folder, model, out, engine, address, gpus_per_worker, watch)
        folder, out = request.folder, request.out
        if not request.has_audio:
            raise EarshotError(f"{folder}: no audio files to index ({', '.join(sorted(SUPPORTED_SUFFIXES))})")
        cfg = IndexConfig(window_s=window, hop_s=hop, pooling=pooling, workers=workers,  # type: ignore[arg-type]
                          batch_size=batch_size, vectors=VectorConfig(kind=index_type, shards=shards),  # type: ignore[arg-type]
                          limits=Limits(max_duration_s=max_hours * 3600), links_outside=links_outside)
        console = Console()
        columns = (TextColumn("indexing"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
                   TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"),
                   TimeRemainingColumn())
        with Progress(*columns, console=console, transient=True) as bar:
            guard.bar = bar
            task = bar.add_task("", total=None, rate="")

            def progress(p) -> None:
                elapsed = bar.tasks[0].elapsed or 0.0
                rate = f"{p.audio_s / elapsed:.0f}x real time" if elapsed > 0 and p.audio_s else ""
                bar.update(task, completed=p.done, total=p.total, rate=rate)

            try:
                ray_cfg = None
                if engine == "ray":  # --workers: embedding actors there (decode workers locally)
                    from earshot.index.engine_ray import RayConfig

                    ray_cfg = RayConfig(address=address, workers=max(1, workers), gpus_per_worker=gpus_per_worker,
                                        files_per_shard=files_per_shard)
                report, encoder = run_index(request, model, cfg, engine=engine, precision=precision, ray=ray_cfg,
                                            progress=progress)
            except KeyboardInterrupt:  # index_folder stopped at its next checkpoint and put what it kept in place
                guard.stop()
            guard.bar = None
        console.print(
            f"indexed {len(report.encoded)} new or changed file(s) ({_fmt_time(report.audio_s)} of audio, "
            f"{report.windows} windows), kept {report.unchanged} unchanged, removed {len(report.removed)}, "
            f"skipped {len(report.bad)}; {report.items} file(s) in {escape(str(report.index))} "
            f"({report.kind}) in {report.seconds:.1f} s"
        )
        if engine == "ray":
            console.print(f"ray: {report.shards} shard(s) this run, {report.shards_reused} reused from an "
                          f"interrupted run, {report.workers} embedding worker(s)")
        for note in report.repaired:
            console.print(f"repaired: {escape(note)}", highlight=False)
        for path, note in report.notes:
            console.print(f"note: {escape(path)}: {escape(note)}", highlight=False)
        if report.bad:
            console.print(report_table(report))
        if watch:
            from earshot.index.watch import watch_folder

            console.print(f"watching {escape(str(folder))} for changes (Ctrl+C to stop)", highlight=False)

            def updated(u) -> None:
                console.print(f"updated: {u.encoded} file(s) encoded, {u.removed} removed, {u.bad} skipped "
                              f"in {u.seconds:.1f} s" + (f" [red]{escape(u.error)}[/red]" if u.error else ""),
                              highlight=False)

            guard.uninstall()  # Ctrl-C is how a watch ends: watch_folder stops its updates itself
            try:
                watch_folder(folder, encoder, out, cfg, on_update=updated)
            except KeyboardInterrupt:
                pass


class _CtrlC:
    """Ctrl-C anywhere in ``earshot index``: one line saying what was kept, exit 130, at once.

    Installed before anything else the command does, so an interrupt while the model is resolved
    or loaded, during the run (index_folder defers it to its next checkpoint, puts what it
    finished in place and raises KeyboardInterrupt, which the command hands to :meth:`stop`) or
    while the summary is printed ends the same way. ``os._exit`` skips the interpreter's exit
    handlers, where multiprocessing can wait on a dead worker's pipe; nothing is left to write
    by then. After the command, :func:`earshot.app.cli.main` makes a late Ctrl-C end the exit
    quietly.
    """

    def __init__(self, out: Path):
        self.out = out
        self.bar: Progress | None = None  # the live progress display, cleared before the line
        self.previous = None  # the handler to restore; None off the main thread (nothing installed)

    def __enter__(self) -> "_CtrlC":
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, lambda signum, frame: self.stop())
        return self

    def __exit__(self, *exc) -> None:
        self.uninstall()

    def uninstall(self) -> None:
        """Give Ctrl-C back to the code that ran the command (the CLI's own exit handling)."""
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
            self.previous = None

    def stop(self) -> NoReturn:
        """Say how many files the index holds now and exit 130."""
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C cannot cut this short
        if self.bar is not None:
            with contextlib.suppress(Exception):
                self.bar.stop()
        from earshot.index.store import files_kept  # light: no model, no FAISS

        typer.echo(f"interrupted: {files_kept(self.out)} files kept; run the same command to continue", err=True)
        self._exit()

    @staticmethod
    def _exit() -> NoReturn:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(130)


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
    query: Optional[str] = typer.Argument(None, help='What the sound is like, in words; "quoted words" must '
                                          "appear (in names or tags), -word excludes."),
    k: int = typer.Option(10, "-k", "--top", min=1, max=1000, help="Number of results."),
    audio: Optional[Path] = typer.Option(None, "--audio", help="Query by example: rank by similarity to this clip."),
    like: Optional[str] = typer.Option(None, "--like", metavar="FILE[@START]",
                                       help="More like this indexed file (its window at START seconds or m:ss; "
                                            "without START the whole file). Nothing is re-encoded."),
    mode: str = typer.Option("hybrid", "--mode", help="hybrid (words and meaning fused by reciprocal rank), "
                             "meaning (the model only) or words (file names, folders, tags only)."),
    ranking: str = typer.Option("windows", "--ranking", help="windows: a file scores its best window, so a "
                                "moment in a long recording is found; pooled: one mean vector per file."),
    top_m: int = typer.Option(1, "--top-m", min=1, help="With --ranking windows: score = mean of the top m windows."),
    where: Optional[str] = typer.Option(None, "--where", help='Filters, e.g. "duration<2 and channels=2"; fields: '
                                        "duration, rate, channels, format, folder, modified, path, name, title, "
                                        "artist, album, genre, comment, description."),
    folder: Optional[str] = typer.Option(None, "--folder", help="Only files under this folder (relative to the "
                                         "indexed folder), e.g. Foley/Doors."),
    fmt: str = typer.Option("table", "--format", help="table, json, csv or m3u (a playlist)."),
    as_json: bool = typer.Option(False, "--json", help="Same as --format json."),
    copy_to: Optional[Path] = typer.Option(None, "--copy-to", help="Also copy the results' files into this folder."),
    model: Optional[Path] = typer.Option(None, "--model", help="A model: an earshot checkpoint folder, an ensemble manifest (.json/.yaml), a name from `earshot weights list`, a Hugging Face CLAP folder or hub id (laion/clap-htsat-unfused), or a published model file; prefix path:, registry: or hf-hub: to break a tie. Default: the one that built the index."),
) -> None:
    """Search an index by text (QUERY), by example (--audio clip.wav) or like an indexed file (--like).

    Results list each file's moments: where in it the query matches (spans of windows).
    """
    from earshot.index import export as E
    from earshot.index.search import search_index

    fmt = "json" if as_json else fmt
    if fmt not in E.FORMATS:
        raise EarshotError(f"--format {fmt!r}: expected one of {', '.join(E.FORMATS)}")
    found = search_index(index, query=query, audio=audio, like=like, k=k, model=model, mode=mode,
                         ranking=ranking, top_m=top_m, where=where, folder=folder)
    hits, root, partial = found.hits, found.root, found.partial
    if partial:
        Console(stderr=True).print(f"[yellow]{partial}[/yellow]", markup=True, highlight=False)
    for note in found.notes:
        Console(stderr=True).print(f"[yellow]{escape(note)}[/yellow]", markup=True, highlight=False)
    if copy_to is not None:
        copied = E.copy_hits(hits, root, copy_to)
        Console(stderr=True).print(f"copied {len(copied)} file(s) to {escape(str(copy_to))}", highlight=False)
    if fmt == "json":
        typer.echo(E.to_json(hits, root, query=query, audio=str(audio) if audio else None, like=like,
                             index=str(index), mode=mode if query is not None else "meaning", ranking=ranking,
                             partial=partial))
        return
    if fmt in ("csv", "m3u"):
        typer.echo(E.to_csv(hits, root) if fmt == "csv" else E.to_m3u(hits, root), nl=False)
        return
    table = Table(title=escape(found.title))
    for col, just in (("rank", "right"), ("score", "right"), ("file", "left"), ("best window", "left"),
                      ("moments", "left")):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    for h in hits:
        spans = ", ".join(f"{_fmt_time(m.start)}-{_fmt_time(m.end)}" for m in h.moments[:3])
        table.add_row(str(h.rank), f"{h.score:.3f}", Text(h.path),
                      f"{_fmt_time(h.window_start)}-{_fmt_time(h.window_end)}", spans)
    Console().print(table)


@app.command("serve")
def serve_cmd(
    index: Path = typer.Argument(..., help="Index directory made by `earshot index`."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind (only this machine by default)."),
    port: int = typer.Option(8000, "--port", min=1, max=65535),
    model: Optional[Path] = typer.Option(None, "--model", help="A model: an earshot checkpoint folder, an ensemble manifest (.json/.yaml), a name from `earshot weights list`, a Hugging Face CLAP folder or hub id (laion/clap-htsat-unfused), or a published model file; prefix path:, registry: or hf-hub: to break a tie. Default: the one that built the index."),
    allow_host: list[str] = typer.Option([], "--allow-host",
                                         help="Also answer requests for this Host name (repeatable; '*' for any)."),
    max_upload_mb: float = typer.Option(20.0, "--max-upload-mb", min=0.001, help="Largest upload, MiB."),
    max_upload_minutes: float = typer.Option(10.0, "--max-upload-minutes", min=0.01,
                                             help="Longest upload, by the duration its header declares."),
    watch: bool = typer.Option(False, "--watch", help="Also keep the index up to date with its folder while "
                               "serving (new, changed, moved, deleted files); searches are answered throughout."),
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
                      max_upload_s=max_upload_minutes * 60, watch=watch, docs=docs,
                      serve_limits=limits)
    partial = app_.state.live.partial
    typer.echo(f"ready: serving {index} at http://{host}:{port}/  (Ctrl+C to stop)" + (f"; {partial}" if partial else ""))
    uvicorn.run(app_, host=host, port=port, log_level=level, **uvicorn_options(limits))
