"""``earshot score`` / ``earshot evaluate``: DCASE scoring and model evaluation."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from earshot.app.root import PRECISION_HELP, app

_METRICS = ("R@1", "R@5", "R@10", "mAP@10")
# the same text as earshot.relevance.RULE_HELP (not imported: the CLI starts without the core)
_RELEVANCE_HELP = ("Which clips a query finds relevant, the same rule in evaluate and score: clip "
                   "(each caption's own clip, DCASE 2022-2024) | caption (every clip with the identical "
                   "caption) | FILE (CSV query,audio_filenames as DCASE 2025's metadata_eval.csv).")


def format_score_table(scores: dict[str, float]) -> str:
    """The scores as an aligned text table, four decimals, with the jackknife 95% interval
    clipped to [0, 1] (every metric here is a proportion; the normal interval of a small mean
    can reach below 0, which no score can). The JSON keeps the unclipped half-width."""
    lines = [f"{'metric':<8}{'value':>8}  95% CI"]
    for name in _METRICS:
        value, half = scores[name], scores[f"{name}/ci95"]
        lo, hi = max(0.0, value - half), min(1.0, value + half)
        lines.append(f"{name:<8}{value:>8.4f}  [{lo:.4f}, {hi:.4f}]")
    lines.append(f"{int(scores['n_queries'])} queries")
    return "\n".join(lines)


@app.command("score")
def score(
    ground_truth: Path = typer.Argument(
        ..., help="Clotho-format CSV: file_name,caption_1..caption_5."
    ),
    submission: Path = typer.Argument(
        ..., help="DCASE submission CSV: caption,file_name_1..file_name_10."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the scores as JSON."),
    relevance: str = typer.Option("clip", "--relevance", help=_RELEVANCE_HELP),
    official_duplicates: bool = typer.Option(
        False,
        "--official-duplicates",
        help="Each distinct caption once, and a caption shared by several files keeps only the "
        "last file, as the official DCASE 2022 script does (overrides --relevance).",
    ),
) -> None:
    """Score a DCASE retrieval submission: R@1, R@5, R@10, mAP@10 with 95% jackknife intervals."""
    from earshot.submission import score_submission

    scores = score_submission(
        ground_truth, submission, duplicate_captions="last" if official_duplicates else "union",
        relevance=relevance,
    )
    typer.echo(json.dumps(scores, indent=2) if as_json else format_score_table(scores))


def format_eval_table(metrics: dict[str, float], name: str = "model", map_k: int | None = None) -> str:
    """A table shaped like the seeds' tables: one row, R@1 R@5 R@10 mAP@10 (and mAP@k when
    asked for) per direction, the 95% interval below."""
    cols = ["R@1", "R@5", "R@10", "mAP@10"] + ([f"mAP@{map_k}"] if map_k and map_k != 10 else [])
    keys = [f"{d}/{c}" for d in ("t2a", "a2t") for c in cols if f"{d}/{c}" in metrics]
    width = max(24, len(name) + 2)
    head = f"{'':<{width}}" + "".join(f"{k.replace('/', ' '):>12}" for k in keys)
    row = f"{name:<{width}}" + "".join(f"{metrics[k]:>12.4f}" for k in keys)
    ci = f"{'  95% CI ±':<{width}}" + "".join(
        f"{metrics[k + '/ci95']:>12.4f}" if k + "/ci95" in metrics else f"{'':>12}" for k in keys)
    return "\n".join([head, row, ci])


def run_label(model: Path) -> str:
    """How a model is named in tables: its run and which model of it (``infonce/averaged``)
    for the best/ and averaged/ folders that ``earshot train`` writes, else its own name."""
    model = Path(model)
    if model.name in ("best", "averaged") and model.parent.name:
        return f"{model.parent.name}/{model.name}"
    return model.stem if model.is_file() else model.name


@app.command("evaluate")
def evaluate_command(
    model: Path = typer.Argument(..., help="A model: an earshot checkpoint folder, an ensemble manifest (.json/.yaml), a name from `earshot weights list`, a Hugging Face CLAP folder or hub id (laion/clap-htsat-unfused), or a published model file; prefix path:, registry: or hf-hub: to break a tie. (earshot train writes best/ and averaged/.)"),
    data: Path = typer.Option(..., "--data", help="Caption table of the evaluation split."),
    fmt: str = typer.Option("clotho", "--format", help="clotho | audiocaps | pairs"),
    audio_dir: Path = typer.Option(None, "--audio-dir", help="Audio folder (default: the table's folder)."),
    seconds: float = typer.Option(None, "--seconds", help="Frame clips to this length; 0 = whole clips "
                                  "(default: the framing the checkpoint was validated with, else whole clips)."),
    map_k: int = typer.Option(16, "--map-k", help="Also report the multi-relevant mAP@k (DCASE 2025: 16)."),
    out: Path = typer.Option(None, "--out", help="Write metrics.json and ranks.csv (rank of each query's clip) here."),
    submission: Path = typer.Option(None, "--submission", help="Also write a DCASE submission CSV (top 10 per caption)."),
    workers: int = typer.Option(0, "--workers", help="Audio decoding processes."),
    relevance: str = typer.Option("clip", "--relevance", help=_RELEVANCE_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print metrics as JSON."),
    progress: Optional[bool] = typer.Option(
        None, "--progress/--no-progress", help="Progress bar (default: when stderr is a terminal)."),
    precision: str = typer.Option("auto", "--precision", help=PRECISION_HELP),
) -> None:
    """Evaluate text-to-audio and audio-to-text retrieval: R@1/5/10, mAP@10 (+mAP@k), 95% CIs."""
    from earshot.evaluation import evaluate_model

    run = evaluate_model(model, data, fmt=fmt, audio_dir=audio_dir, seconds=seconds, map_k=map_k, out=out,
                         submission=submission, workers=workers, relevance=relevance,
                         progress=sys.stderr.isatty() if progress is None else progress, precision=precision,
                         log=lambda line: typer.echo(line, err=True))
    typer.echo(json.dumps(run.result.metrics, indent=2) if as_json
               else format_eval_table(run.result.metrics, run_label(model), map_k))


@app.command("submit")
def submit_command(
    model: Path = typer.Argument(..., help="A model: an earshot checkpoint folder, an ensemble manifest (.json/.yaml), a name from `earshot weights list`, a Hugging Face CLAP folder or hub id (laion/clap-htsat-unfused), or a published model file; prefix path:, registry: or hf-hub: to break a tie."),
    captions: Path = typer.Option(..., "--captions", help="CSV with a 'caption' column (the task's "
                                  "retrieval captions) or a Clotho-format table."),
    audio_dir: Optional[Path] = typer.Option(
        None, "--audio-dir", help="Folder of the audio files to rank (default for "
        "clotho_captions_<split>.csv: the <split>/ folder beside it)."),
    out: Path = typer.Option(Path("submission.csv"), "--out", help="Submission CSV to write."),
    seconds: float = typer.Option(None, "--seconds", help="Frame clips to this length (default: whole clips)."),
    workers: int = typer.Option(0, "--workers", help="Audio decoding processes."),
    progress: Optional[bool] = typer.Option(
        None, "--progress/--no-progress", help="Progress bar (default: when stderr is a terminal)."),
    precision: str = typer.Option("auto", "--precision", help=PRECISION_HELP),
) -> None:
    """Write a DCASE retrieval submission: the 10 best audio files for each caption."""
    from earshot.evaluation import submit_model

    run = submit_model(model, captions, audio_dir, out, seconds, workers,
                       progress=sys.stderr.isatty() if progress is None else progress, precision=precision)
    typer.echo(f"wrote {run.path}: {run.captions} captions x top 10 of {run.files} files")
