"""``earshot weights ...``: the pretrained-weights registry (list, download with checksum)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from earshot.app.root import app

weights_app = typer.Typer(help="Pretrained weights: list what is known and present, download.",
                          no_args_is_help=True)
app.add_typer(weights_app, name="weights")


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return "?"  # unreachable


@weights_app.command("list")
def list_cmd(
    cache: Optional[Path] = typer.Option(
        None, "--cache", help="earshot cache root (files live in CACHE/weights); "
        "default: $EARSHOT_CACHE or the user cache directory."),
    verify: bool = typer.Option(
        False, "--verify", help="Re-hash present files against their published checksums."),
) -> None:
    """List known pretrained files: architecture, size, checksum algorithm, present or not."""
    from rich.console import Console
    from rich.table import Table

    from rich.markup import escape

    from earshot.weights import status, weights_dir

    table = Table(title="earshot pretrained weights")
    for col in ("name", "architecture", "size", "checksum", "present"):
        table.add_column(col)
    rows = status(cache, verify_checksum=verify)
    for row in rows:
        present = "no"
        if row.present:
            present = {None: "yes", True: "yes (verified)", False: "CORRUPT"}[row.verified]
        table.add_row(row.name + (" (!)" if row.caveat else ""), ", ".join(row.architectures) or "-",
                      _size(row.size_bytes), row.algorithm or "none published/found", present)
    console = Console()
    console.print(table)
    for row in rows:
        if row.caveat:
            console.print(f"(!) {escape(row.name)}: {escape(row.caveat)}", highlight=False)
    console.print(f"cache folder: {escape(str(weights_dir(cache)))}  "
                  f"($EARSHOT_CACHE or --cache moves it)", highlight=False)


@weights_app.command("download")
def download_cmd(
    name: str = typer.Argument(..., help="Registry name, e.g. panns_cnn14 (see `earshot weights "
                               "list`)."),
    cache: Optional[Path] = typer.Option(
        None, "--cache", help="earshot cache root (the file goes to CACHE/weights); "
        "default: $EARSHOT_CACHE or the user cache directory."),
    url: Optional[str] = typer.Option(
        None, "--url", help="Download from this URL instead of the official ones (a mirror, or "
        "file:///path); the file is still verified against the published checksum."),
    allow_unverified: bool = typer.Option(
        False, "--allow-unverified", help="Accept a file whose source publishes no checksum "
        "(its SHA-256 is printed so you can pin it)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Download a pretrained file into the cache, resuming a partial download, and verify it.

    The file is checked against the checksum its source publishes (SHA-256, or MD5 for
    Zenodo) before it is moved into place; a corrupt download is deleted. A verified copy that
    is already present is not downloaded again.
    """
    from earshot.weights import fetch_weights

    report = fetch_weights(name, cache, progress=not quiet, url_override=url,
                           allow_unverified=allow_unverified)
    state = "downloaded" if report.downloaded else "already present"
    check = "verified" if report.verified else "UNVERIFIED (no published checksum)"
    typer.echo(f"{name}: {state}, {check}: {report.path}")
    typer.echo(f"sha256: {report.sha256}")


@weights_app.command("add")
def add_cmd(
    name: str = typer.Argument(..., help="Registry name, e.g. panns_cnn14 (see `earshot weights list`)."),
    file: Path = typer.Argument(..., help="The file, fetched another way (a browser, another machine)."),
    cache: Optional[Path] = typer.Option(
        None, "--cache", help="earshot cache root (the file goes to CACHE/weights); "
        "default: $EARSHOT_CACHE or the user cache directory."),
    allow_unverified: bool = typer.Option(
        False, "--allow-unverified", help="Accept a file whose source publishes no checksum."),
) -> None:
    """Install a pretrained file fetched elsewhere: verified against the published checksum
    like a download (a mismatch installs nothing), then copied into the cache."""
    from earshot.weights import add_weights, get_weights

    get_weights(name)  # an unknown name fails before the file is read
    report = add_weights(name, file, cache, allow_unverified=allow_unverified)
    check = "verified" if report.verified else "UNVERIFIED (no published checksum)"
    state = "installed" if report.downloaded else "already present"
    typer.echo(f"{name}: {state}, {check}: {report.path}")
    typer.echo(f"sha256: {report.sha256}")
