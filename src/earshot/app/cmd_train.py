"""``earshot train CONFIG.yaml [--set key=value ...] [--resume | --overwrite]``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from earshot.app.root import app


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
    seeds: str = typer.Option(None, "--seeds", help="Train one model per seed (e.g. 0,1,2) under "
                              "out_dir/seed<N> and report mean ± std of their validation metrics."),
) -> None:
    """Train a bi-encoder (Lightning: Adam, ReduceLROnPlateau on val mAP@10, top-k averaging)."""
    from earshot.config import load_yaml

    data = load_yaml(config.expanduser())  # no torch yet: a missing file fails at once
    from earshot.train.config import load_config

    cfg = load_config(data, set_)
    # Everything that can be checked without a model, before Lightning is even imported.
    from earshot.train.checks import check_config, check_out_dir

    if not cfg.stages:  # a staged run checks each stage as it starts it
        if seeds is None:  # per-seed runs go to out_dir/seed<N>, each checked as it starts
            check_out_dir(cfg.out_dir, resume, overwrite)
        check_config(cfg)
    from lightning.pytorch.utilities import rank_zero_only

    from earshot.train.progress import EpochLines

    bars = sys.stdout.isatty() if progress is None else progress
    callbacks = [] if bars else [EpochLines()]
    if seeds is not None:
        if resume:
            raise typer.BadParameter("--resume and --seeds do not combine; resume one seed's run")
        try:
            seed_list = [int(s) for s in seeds.split(",") if s.strip()]
        except ValueError:
            raise typer.BadParameter(f"--seeds takes comma-separated integers, got {seeds!r}") from None
        from earshot.train.run import train_seeds

        summary = train_seeds(cfg, seed_list, progress=bars, overwrite=overwrite, callbacks=callbacks)
        if rank_zero_only.rank == 0:
            typer.echo(format_seed_table(summary))
        return
    from earshot.train.run import train

    paths = train(cfg, resume=resume, progress=bars, overwrite=overwrite, callbacks=callbacks)
    if rank_zero_only.rank == 0:  # under DDP every rank runs this command; one reports
        for name, path in paths.items():
            typer.echo(f"{name}: {path}")


def format_seed_table(summary: dict) -> str:
    """One row per seed and a mean ± std row (sample std over seeds)."""
    keys = list(summary["mean"])
    width = 14
    lines = [f"{'seed':<8}" + "".join(f"{k:>{width}}" for k in keys)]
    for seed, m in summary["seeds"].items():
        lines.append(f"{seed:<8}" + "".join(f"{m[k]:>{width}.4f}" for k in keys))
    lines.append(f"{'mean±std':<8}" + "".join(
        f"{summary['mean'][k]:>{width - 7}.4f}±{summary['std'][k]:.4f}" for k in keys))
    return "\n".join(lines)
