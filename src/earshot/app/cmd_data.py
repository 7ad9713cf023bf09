"""``earshot data ...``: synthetic corpus, dataset summaries, feature caches."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from earshot.app.root import app
from earshot.data.synth import SPLITS, SynthSummary, generate_corpus

data_app = typer.Typer(help="Datasets: generate the synthetic captioned corpus.",
                       no_args_is_help=True)
app.add_typer(data_app, name="data")


def synth_table(summary: SynthSummary) -> Table:
    """A rich table of a synthetic corpus: clips, captions and audio per split."""
    table = Table(title=escape(f"synthetic corpus in {summary.out_dir}"))
    for col in ("split", "clips", "captions", "audio (min)"):
        table.add_column(col, justify="left" if col == "split" else "right")
    for split in SPLITS:
        table.add_row(split, str(summary.clips_per_split[split]),
                      str(summary.captions_per_split[split]),
                      f"{summary.duration_s[split] / 60:.1f}")
    table.add_row("total", str(summary.clips), str(sum(summary.captions_per_split.values())),
                  f"{summary.total_duration_s / 60:.1f}", style="bold")
    return table


def synth_details(summary: SynthSummary) -> str:
    """One line each for formats, sample rates, channels and what this run did."""
    fmt = ", ".join(f"{k} {v}" for k, v in summary.formats.items())
    rates = ", ".join(f"{k} Hz {v}" for k, v in summary.sample_rates.items())
    chans = ", ".join(f"{'mono' if k == 1 else 'stereo'} {v}" for k, v in summary.channels.items())
    return (f"formats: {fmt}\nsample rates: {rates}\nchannels: {chans}\n"
            f"written {summary.generated}, already present {summary.skipped}, "
            f"in {summary.seconds:.1f} s")


class _Bar:
    """A rich progress bar fed by ``progress(done, total)`` callbacks."""

    def __init__(self, console: Console, label: str):
        self.progress = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=console, transient=True)
        self.task = None

    def __enter__(self) -> "_Bar":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)

    def __call__(self, done: int, total: int) -> None:
        if self.task is None:
            self.task = self.progress.add_task("", total=total)
        self.progress.update(self.task, completed=done)


def make_synth(out: Path, clips: int, seed: int, console: Console,
               **kwargs: float) -> SynthSummary:
    """Generate (or finish) a synthetic corpus with a progress bar; print and return its summary."""
    with _Bar(console, "synthesising clips") as bar:
        summary = generate_corpus(out, clips=clips, seed=seed, progress=bar, **kwargs)
    console.print(synth_table(summary))
    console.print(synth_details(summary))
    return summary


@data_app.command("synth")
def synth_cmd(
    out: Path = typer.Option(..., "--out", help="Folder to write the corpus into (created). "
                             "Rerunning with the same arguments resumes and skips finished clips."),
    clips: int = typer.Option(300, "--clips", min=1,
                              help="Number of clips over all three splits."),
    seed: int = typer.Option(0, "--seed", help="Random seed: the same seed gives the same corpus."),
    sample_rate: int = typer.Option(32000, "--sample-rate",
                                    help="Most clips use this rate; some use 44.1 or 48 kHz."),
    min_duration: float = typer.Option(5.0, "--min-duration", help="Shortest clip, seconds."),
    max_duration: float = typer.Option(30.0, "--max-duration", help="Longest clip, seconds."),
) -> None:
    """Generate the synthetic captioned corpus (Clotho layout).

    Writes procedurally generated clips (beeps, chirps, clicks, noise bursts, hums, rhythmic
    pulses) with five paraphrased captions each, split into development / validation /
    evaluation: clotho_captions_<split>.csv, one audio folder per split, and metadata.jsonl
    with every clip's generation parameters. Files are written atomically, so an interrupted
    run can simply be started again.
    """
    make_synth(out, clips, seed, Console(), sample_rate=sample_rate,
               min_duration=min_duration, max_duration=max_duration)


@data_app.command("check")
def check_cmd(
    train: Path = typer.Argument(..., help="Training caption table."),
    evaluation: Path = typer.Argument(..., help="Evaluation (or validation) caption table."),
    fmt: str = typer.Option("clotho", "--format", help="Format of both tables: clotho | audiocaps | pairs."),
    eval_format: str = typer.Option(None, "--eval-format", help="Format of the evaluation table if it differs."),
    train_audio_dir: Path = typer.Option(None, "--train-audio-dir", help="Training audio (default: Clotho's "
                                         "<split>/ folder beside clotho_captions_<split>.csv, else the table's folder)."),
    eval_audio_dir: Path = typer.Option(None, "--eval-audio-dir", help="Evaluation audio (default: as for "
                                        "--train-audio-dir)."),
) -> None:
    """Leakage check: clips shared by a training and an evaluation table, by file name and by
    audio content (SHA-256 of files of equal size). Exits 1 when any are shared."""
    from earshot.data.leakage import check_leakage

    found = check_leakage(train, evaluation, fmt, eval_format, train_audio_dir, eval_audio_dir)
    overlap, train, evaluation = found.overlap, train.expanduser(), evaluation.expanduser()
    console = Console()
    if overlap.unreadable:
        console.print(f"{overlap.unreadable} audio file(s) could not be read; they were checked by name only",
                      markup=False)
    if not overlap:
        console.print(f"no clips shared between {train} ({found.train_clips} clips) and {evaluation} "
                      f"({found.eval_clips} clips)",
                      markup=False)
        return
    console.print("LEAKAGE: " + overlap.describe(str(train), str(evaluation)), markup=False, style="bold red")
    raise typer.Exit(1)
