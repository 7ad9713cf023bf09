"""``earshot train CONFIG.yaml [--set key=value ...] [--resume | --overwrite]``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from earshot.app.cli import app


@app.command("train")
def train_command(
    config: Path = typer.Argument(..., help="Training config (YAML); see configs/ for the seed presets."),
    set_: list[str] = typer.Option([], "--set", help="Override a config key, e.g. --set epochs=5 "
                                   "--set data.train.table=runs/synth/clotho_captions_development.csv"),
    resume: bool = typer.Option(False, "--resume", help="Continue from out_dir/checkpoints/last.ckpt."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Delete the run already in out_dir "
                                   "and start again (without it, an existing run is refused)."),
    progress: Optional[bool] = typer.Option(
        None, "--progress/--no-progress", help="Progress bars (default: when stdout is a terminal; "
        "otherwise one line per epoch)."),
) -> None:
    """Train a bi-encoder (Lightning: Adam, ReduceLROnPlateau on val mAP@10, top-k averaging)."""
    from earshot.config import load_yaml

    data = load_yaml(config.expanduser())  # no torch yet: a missing file fails at once
    from earshot.train.config import load_config

    cfg = load_config(data, set_)
    # Everything that can be checked without a model, before Lightning is even imported.
    from earshot.train.checks import check_config, check_out_dir

    if not cfg.stages:  # a staged run checks each stage as it starts it
        check_out_dir(cfg.out_dir, resume, overwrite)
        check_config(cfg)
    from earshot.train.progress import EpochLines
    from earshot.train.run import train

    bars = sys.stdout.isatty() if progress is None else progress
    paths = train(cfg, resume=resume, progress=bars, overwrite=overwrite,
                  callbacks=[] if bars else [EpochLines()])
    for name, path in paths.items():
        typer.echo(f"{name}: {path}")
