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
    seeds: str = typer.Option(None, "--seeds", help="Train one model per seed (e.g. 0,1,2) under "
                              "out_dir/seed<N> and report mean ± std of their validation metrics."),
) -> None:
    """Train a bi-encoder (Lightning: Adam, ReduceLROnPlateau on val mAP@10, top-k averaging)."""
    from earshot.config import load_yaml
    from earshot.train.run import load_config, train

    cfg = load_config(load_yaml(config), set_)
    from lightning.pytorch.utilities import rank_zero_only

    if seeds is not None:
        if resume:
            raise typer.BadParameter("--resume and --seeds do not combine; resume one seed's run")
        try:
            seed_list = [int(s) for s in seeds.split(",") if s.strip()]
        except ValueError:
            raise typer.BadParameter(f"--seeds takes comma-separated integers, got {seeds!r}") from None
        from earshot.train.run import train_seeds

        summary = train_seeds(cfg, seed_list, progress=progress)
        if rank_zero_only.rank == 0:
            typer.echo(format_seed_table(summary))
        return
    paths = train(cfg, resume=resume, progress=progress)

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
