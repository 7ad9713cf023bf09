"""``earshot moments ...``: audio moment retrieval (DCASE 2026): score, predict, evaluate."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from earshot.app.cli import app

moments_app = typer.Typer(
    help="Audio moment retrieval (DCASE 2026): find where in a long recording a text happens. "
    "Annotations and predictions use lighthouse's JSON Lines layout.",
    no_args_is_help=True)
app.add_typer(moments_app, name="moments")

_SHOWN = ("R1@0.5", "R1@0.7", "R1/avg", "mAP@0.5", "mAP@0.75", "mAP/avg")


def format_moment_scores(scores: dict[str, float], every: bool = False) -> str:
    """The scores (percent) as an aligned table: the headline metrics, or every threshold."""
    names = [k for k in scores if k != "n_queries"] if every else list(_SHOWN)
    lines = [f"{'metric':<10}{'value':>8}"]
    lines += [f"{n:<10}{scores[n]:>8.2f}" for n in names]
    lines.append(f"{int(scores['n_queries'])} queries")
    return "\n".join(lines)


@moments_app.command("score")
def score_cmd(
    ground_truth: Path = typer.Argument(..., help="Annotations (JSON Lines: qid, query, vid, "
                                        "duration, relevant_windows [[start, end], ...])."),
    predictions: Path = typer.Argument(..., help="Predictions (JSON Lines: qid, "
                                       "pred_relevant_windows [[start, end, score], ...], best first)."),
    as_json: bool = typer.Option(False, "--json", help="Print every score as JSON."),
    every: bool = typer.Option(False, "--all", help="Show every IoU threshold, not only the headline."),
    rounding: bool = typer.Option(False, "--lighthouse-rounding",
                                  help="Round to two decimals as lighthouse's eval.py prints them."),
) -> None:
    """Score moment predictions: R1@IoU and mAP@IoU (IoU 0.5:0.05:0.95, at most 10 windows per
    query) and their averages, in percent, as lighthouse's standalone_eval computes them."""
    from earshot.moments.metrics import score_files

    scores = score_files(ground_truth, predictions, lighthouse_rounding=rounding)
    typer.echo(json.dumps(scores, indent=2) if as_json else format_moment_scores(scores, every))
