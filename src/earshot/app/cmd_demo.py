"""``earshot demo``: the end-to-end demonstration run by ``make demo``."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console

from earshot.app.root import app


@app.command("demo")
def demo_cmd(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Working folder (corpus, models, "
                             "ensemble, index). Rerunning resumes: finished stages are kept."),
    clips: int = typer.Option(240, "--clips", min=12, help="Clips in the synthetic corpus."),
    seed: int = typer.Option(0, "--seed", help="Seed of the corpus and of training."),
    epochs: int = typer.Option(10, "--epochs", min=1, help="Training epochs of each demo model."),
    moments: bool = typer.Option(False, "--moments", help="Also run the audio moment retrieval "
                                 "section: one-minute recordings, sliding-window baseline, QD-DETR head."),
) -> None:
    """Run the demonstration end to end on a synthetic corpus, on the CPU.

    Generates a captioned corpus (Clotho layout) under OUT/synth, trains two small models
    (a log-mel CNN from scratch with the frozen MiniLM sentence encoder; InfoNCE and
    triplet-sum losses), prints their evaluation table and the top 10 for example captions,
    finds their ensemble, and indexes the evaluation clips to search them by text. Writes the
    evaluation table to OUT/results.md. Rerunning keeps what is still valid and redoes what
    changed (other --clips: a new corpus; other --epochs: new models).
    """
    from earshot.app.demo import run_demo
    from earshot.train.progress import quiet_third_party

    # Live bars only on a terminal (Lightning draws them on stdout); in a log, one line per epoch.
    tty = sys.stdout.isatty()
    with quiet_third_party():
        console = Console(width=None if tty else 120)
        run_demo(out.expanduser(), clips, seed, epochs, console, progress=tty, epoch_lines=not tty)
        if moments:
            from earshot.app.demo_moments import run_moments_demo

            run_moments_demo(out.expanduser(), seed, console, progress=tty)
