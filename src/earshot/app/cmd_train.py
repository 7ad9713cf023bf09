"""``earshot train CONFIG.yaml [--set key=value ...] [--resume]``."""

from __future__ import annotations

from pathlib import Path

import typer

from earshot.app.cli import app


@app.command("train")
def train_command(
    config: Path = typer.Argument(..., help="Training config (YAML); see configs/ for the seed presets."),
    set_: list[str] = typer.Option([], "--set", help="Override a config key, e.g. --set epochs=5 "
                                   "--set data.train.table=runs/synth/clotho_captions_development.csv"),
    resume: bool = typer.Option(False, "--resume", help="Continue from out_dir/checkpoints/last.ckpt."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Train a bi-encoder (Lightning: Adam, ReduceLROnPlateau on val mAP@10, top-k averaging)."""
    from earshot.config import load_yaml
    from earshot.train.run import load_config, train

    cfg = load_config(load_yaml(config), set_)
    paths = train(cfg, resume=resume, progress=progress)
    from lightning.pytorch.utilities import rank_zero_only

    if rank_zero_only.rank == 0:  # under DDP every rank runs this command; one reports
        for name, path in paths.items():
            typer.echo(f"{name}: {path}")
