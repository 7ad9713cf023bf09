"""``earshot moments ...``: audio moment retrieval (DCASE 2026): score, predict, evaluate."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from earshot.app.root import PRECISION_HELP, app

moments_app = typer.Typer(
    help="Audio moment retrieval (DCASE 2026): find where in a long recording a text happens. "
    "Annotations and predictions use lighthouse's JSON Lines layout.",
    no_args_is_help=True)
app.add_typer(moments_app, name="moments")

_BAD_WINDOW_HELP = ("A relevant window past its recording's end (CASTELLA train line 656 has "
                    "[299, 4800]): error | clip (cut to the recording) | drop (leave it out). "
                    "Each change is reported with its file and line.")


def _policy(value: str) -> str:
    from earshot.moments.data import BAD_WINDOW_POLICIES

    if value not in BAD_WINDOW_POLICIES:
        raise typer.BadParameter(f"{value!r}: choose {' | '.join(BAD_WINDOW_POLICIES)}",
                                 param_hint="--on-bad-window")
    return value


def _report(message: str) -> None:
    typer.echo(f"note: {message}", err=True)


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
    on_bad_window: str = typer.Option("error", "--on-bad-window", help=_BAD_WINDOW_HELP),
) -> None:
    """Score moment predictions: R1@IoU and mAP@IoU (IoU 0.5:0.05:0.95, at most 10 windows per
    query) and their averages, in percent, as lighthouse's standalone_eval computes them."""
    from earshot.moments.metrics import score_files

    scores = score_files(ground_truth, predictions, lighthouse_rounding=rounding,
                         on_bad_window=_policy(on_bad_window), report=_report)
    typer.echo(json.dumps(scores, indent=2) if as_json else format_moment_scores(scores, every))


def _data_app() -> typer.Typer:
    from earshot.app.cmd_data import data_app

    return data_app


@_data_app().command("moments")
def data_moments_cmd(
    captions: Path = typer.Argument(..., help="Caption table with audio, Clotho layout "
                                    "(clotho_captions_<split>.csv; e.g. from `earshot data synth`)."),
    out: Path = typer.Option(..., "--out", help="Folder to write audio/<vid>.wav and moments.jsonl "
                             "into. Rerunning with the same arguments resumes."),
    audio_dir: Path = typer.Option(None, "--audio-dir", help="The clips' audio (default: the "
                                   "<split>/ folder beside the CSV)."),
    backgrounds: Path = typer.Option(None, "--backgrounds", help="Folder of background recordings "
                                     "(default: generated ambience)."),
    recordings: int = typer.Option(100, "--recordings", min=1, help="How many long recordings."),
    duration: float = typer.Option(60.0, "--duration", help="Length of each recording, seconds."),
    min_events: int = typer.Option(1, "--min-events", min=1, help="Fewest events per recording."),
    max_events: int = typer.Option(3, "--max-events", min=1, help="Most events per recording."),
    fg_db_low: float = typer.Option(-5.0, "--fg-db-low", help="Lowest event level over the background, dB."),
    fg_db_high: float = typer.Option(5.0, "--fg-db-high", help="Highest event level over the background, dB."),
    overlap: bool = typer.Option(False, "--overlap", help="Let events overlap (default: never)."),
    max_event: float = typer.Option(30.0, "--max-event", help="Cut longer clips to this many seconds."),
    sample_rate: int = typer.Option(32000, "--sample-rate", help="Sample rate of the recordings."),
    seed: int = typer.Option(0, "--seed", help="Random seed: the same seed gives the same recordings."),
) -> None:
    """Generate Clotho-Moment-style long recordings: captioned clips placed at random times on
    background recordings (or generated ambience), each at a level fg_dB drawn from a range
    relative to the background; writes the mixed audio and lighthouse's JSON Lines with fg_dB."""
    from rich.console import Console

    from earshot.app.cmd_data import _Bar
    from earshot.moments.generate import MomentGenConfig, generate_moments

    cfg = MomentGenConfig(recordings=recordings, duration_s=duration, min_events=min_events,
                          max_events=max_events, fg_db_range=(fg_db_low, fg_db_high),
                          overlap=overlap, max_event_s=max_event, sample_rate=sample_rate, seed=seed)
    console = Console(stderr=True)
    with _Bar(console, "mixing recordings") as bar:
        s = generate_moments(out.expanduser(), captions.expanduser(), audio_dir, backgrounds,
                             cfg, progress=bar)
    typer.echo(f"{s.out_dir / 'moments.jsonl'}: {s.queries} queries in {s.recordings} recordings "
               f"of {duration:g} s (written {s.generated}, already present {s.skipped}, "
               f"{s.seconds:.1f} s)")


def _recordings(data: Path, audio_dir: Path, require_windows: bool, on_bad_window: str):
    from earshot.moments.data import read_moments

    return read_moments(data.expanduser(), audio_dir.expanduser(), require_windows=require_windows,
                        on_bad_window=_policy(on_bad_window), report=_report)


def _window(window: float, hop: float):
    from earshot.moments.features import WindowConfig

    return WindowConfig(window_s=window, hop_s=hop, output="embedding")


def _open(model: str, precision: str, ranking: str | None = None):
    import dataclasses

    from earshot.errors import ConfigError
    from earshot.moments.head import MomentHead
    from earshot.moments.predict import open_moment_model

    opened = open_moment_model(model, precision)
    if ranking is not None:
        if not isinstance(opened, MomentHead):
            raise ConfigError(f"{model}: --ranking applies to a moment head; the sliding-window baseline "
                              f"ranks by window similarity")
        opened.qddetr.cfg = dataclasses.replace(opened.qddetr.cfg, ranking=ranking)  # validated there
    return opened


_MODEL_HELP = ("A moment head (folder from `earshot moments train`, or a lighthouse .ckpt), or any "
               "retriever earshot opens (checkpoint folder, Hugging Face CLAP folder, ensemble "
               "manifest, pretrained name such as msclap_2023) for the sliding-window baseline.")
_WINDOW_HELP = "Sliding-window length, seconds (the baseline compares each window with the text)."
_RANKING_HELP = ("A moment head's ranking instead of the one it was trained with: 'score' (p_foreground, "
                 "lighthouse's) or 'expected_iou' (each span's mean IoU with the head's predictions, "
                 "weighted by p_foreground).")


@moments_app.command("predict")
def predict_cmd(
    model: str = typer.Argument(..., help=_MODEL_HELP),
    data: Path = typer.Option(..., "--data", help="Queries (JSON Lines: qid, query, vid, duration; "
                              "relevant_windows optional)."),
    audio_dir: Path = typer.Option(..., "--audio-dir", help="Folder of the recordings (<vid>.wav, "
                                   ".flac, .ogg or .mp3)."),
    out: Path = typer.Option(Path("predictions.jsonl"), "--out", help="Predictions to write "
                             "(qid, query, vid, pred_relevant_windows [[start, end, score], ...])."),
    top: int = typer.Option(10, "--top", min=1, help="Moments per query (the scorer reads 10)."),
    window: float = typer.Option(2.0, "--window", help=_WINDOW_HELP),
    hop: float = typer.Option(1.0, "--hop", help="Sliding-window hop, seconds."),
    precision: str = typer.Option("auto", "--precision", help=PRECISION_HELP),
    on_bad_window: str = typer.Option("error", "--on-bad-window", help=_BAD_WINDOW_HELP),
    ranking: str = typer.Option(None, "--ranking", help=_RANKING_HELP),
) -> None:
    """Predict moments for every query (a moment head, or the zero-shot sliding-window baseline
    over a retriever) and write them in lighthouse's layout (what DCASE 2026 submissions carry)."""
    from rich.console import Console

    from earshot.app.cmd_data import _Bar
    from earshot.moments.data import write_predictions
    from earshot.moments.predict import predict_moments

    recs = _recordings(data, audio_dir, require_windows=False, on_bad_window=on_bad_window)
    retriever = _open(model, precision, ranking)
    with _Bar(Console(stderr=True), "predicting") as bar:
        rows = predict_moments(retriever, recs, top=top, window=_window(window, hop), progress=bar)
    n = write_predictions(out.expanduser(), rows)
    typer.echo(f"wrote {out}: {n} queries x up to {top} moments over {len(recs)} recordings")


@moments_app.command("evaluate")
def evaluate_cmd(
    model: str = typer.Argument(..., help=_MODEL_HELP),
    data: Path = typer.Option(..., "--data", help="Annotations (JSON Lines with relevant_windows)."),
    audio_dir: Path = typer.Option(..., "--audio-dir", help="Folder of the recordings."),
    window: float = typer.Option(2.0, "--window", help=_WINDOW_HELP),
    hop: float = typer.Option(1.0, "--hop", help="Sliding-window hop, seconds."),
    out: Path = typer.Option(None, "--out", help="Also write the predictions here."),
    as_json: bool = typer.Option(False, "--json", help="Print every score as JSON."),
    precision: str = typer.Option("auto", "--precision", help=PRECISION_HELP),
    on_bad_window: str = typer.Option("error", "--on-bad-window", help=_BAD_WINDOW_HELP),
    ranking: str = typer.Option(None, "--ranking", help=_RANKING_HELP),
) -> None:
    """Predict (moment head, or sliding-window baseline over a retriever) and score against the
    annotations (R1@IoU, mAP@IoU, their averages; lighthouse's standalone_eval)."""
    from rich.console import Console

    from earshot.app.cmd_data import _Bar
    from earshot.moments.data import windows_by_qid, write_predictions
    from earshot.moments.metrics import score_moments
    from earshot.moments.predict import predict_moments

    recs = _recordings(data, audio_dir, require_windows=True, on_bad_window=on_bad_window)
    retriever = _open(model, precision, ranking)
    with _Bar(Console(stderr=True), "predicting") as bar:
        rows = predict_moments(retriever, recs, window=_window(window, hop), progress=bar)
    if out is not None:
        write_predictions(out.expanduser(), rows)
    gt = windows_by_qid([q for r in recs for q in r.queries])
    scores = score_moments(gt, {str(r["qid"]): r["pred_relevant_windows"] for r in rows})
    scores["n_queries"] = float(len(gt))
    typer.echo(json.dumps(scores, indent=2) if as_json else format_moment_scores(scores))


@moments_app.command("train")
def train_cmd(
    config: Path = typer.Argument(..., help="Preset YAML (configs/amr_clotho_moment.yaml, "
                                  "configs/amr_castella.yaml)."),
    overrides: list[str] = typer.Option([], "--set", help="Override a key: --set n_epoch=50 "
                                        "--set data.train=..."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Lightning's progress bar."),
) -> None:
    """Train a QD-DETR moment head on frozen-tower features (lighthouse's recipe), save it to
    out_dir and score it on the validation annotations."""
    from earshot.train.moments import load_moment_config, train_moment_head

    cfg = load_moment_config(config.expanduser(), overrides)
    _, scores = train_moment_head(cfg, progress=progress, log=typer.echo)
    typer.echo(f"saved {cfg.out_dir}")
    if scores is not None:
        typer.echo(format_moment_scores(scores))
