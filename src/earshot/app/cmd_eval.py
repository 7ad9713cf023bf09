"""``earshot score`` / ``earshot evaluate``: DCASE scoring and model evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from earshot.app.cli import app

_METRICS = ("R@1", "R@5", "R@10", "mAP@10")
# the same text as earshot.relevance.RULE_HELP (not imported: the CLI starts without the core)
_RELEVANCE_HELP = ("Which clips a query finds relevant, the same rule in evaluate and score: clip "
                   "(each caption's own clip, DCASE 2022-2024) | caption (every clip with the identical "
                   "caption) | FILE (CSV query,audio_filenames as DCASE 2025's metadata_eval.csv).")


def format_score_table(scores: dict[str, float]) -> str:
    """The scores as an aligned text table, four decimals, with the jackknife 95% interval."""
    lines = [f"{'metric':<8}{'value':>8}  95% CI"]
    for name in _METRICS:
        value, half = scores[name], scores[f"{name}/ci95"]
        lines.append(f"{name:<8}{value:>8.4f}  [{value - half:.4f}, {value + half:.4f}]")
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


def _load_split(data: Path, fmt: str, audio_dir: Path | None):
    from earshot.data.readers import read_table

    table = read_table(data, format=fmt)
    root = audio_dir if audio_dir is not None else data.parent
    return table, root


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
    model: Path = typer.Argument(..., help="A checkpoint directory (earshot train writes best/ and "
                                 "averaged/) or an ensemble manifest."),
    data: Path = typer.Option(..., "--data", help="Caption table of the evaluation split."),
    fmt: str = typer.Option("clotho", "--format", help="clotho | audiocaps | pairs"),
    audio_dir: Path = typer.Option(None, "--audio-dir", help="Audio folder (default: the table's folder)."),
    seconds: float = typer.Option(None, "--seconds", help="Frame clips to this length (default: whole clips)."),
    map_k: int = typer.Option(16, "--map-k", help="Also report the multi-relevant mAP@k (DCASE 2025: 16)."),
    out: Path = typer.Option(None, "--out", help="Write metrics.json and ranks.csv (rank of each query's clip) here."),
    submission: Path = typer.Option(None, "--submission", help="Also write a DCASE submission CSV (top 10 per caption)."),
    workers: int = typer.Option(0, "--workers", help="Audio decoding processes."),
    relevance: str = typer.Option("clip", "--relevance", help=_RELEVANCE_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print metrics as JSON."),
) -> None:
    """Evaluate text-to-audio and audio-to-text retrieval: R@1/5/10, mAP@10 (+mAP@k), 95% CIs."""
    import csv

    from earshot.evaluation import evaluate
    from earshot.models.loading import load_retriever
    from earshot.utils import atomic_write

    table, root = _load_split(data, fmt, audio_dir)
    retriever = load_retriever(model)
    result = evaluate(retriever, table, root, clip_seconds=seconds, num_workers=workers, extra_map_k=map_k,
                      relevance=relevance)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        with atomic_write(out / "metrics.json", "w") as f:
            json.dump(result.metrics, f, indent=2)
        with atomic_write(out / "ranks.csv", "w") as f:
            w = csv.writer(f)
            w.writerow(["query", "caption", "file_name", "rank"])  # the best-ranked relevant file
            names = [c.clip_id for c in table]
            for q, text in enumerate(result.queries.texts):
                order = result.similarity[q].argsort(descending=True, stable=True).tolist()
                best = next(names[i] for i in order if names[i] in result.queries.relevant[q])
                w.writerow([q, text, best, int(result.t2a_ranks[q])])
    if submission is not None:
        write_ranked_submission(submission, list(result.queries.texts), [c.clip_id for c in table],
                                result.similarity)
    typer.echo(json.dumps(result.metrics, indent=2) if as_json
               else format_eval_table(result.metrics, run_label(model), map_k))


def write_ranked_submission(path: Path, captions: list[str], file_names: list[str], similarity) -> None:
    """Top-10 files per caption (rows of ``similarity``) as a DCASE submission CSV, each
    distinct caption once."""
    import torch

    from earshot.submission import write_submission

    top = torch.topk(torch.as_tensor(similarity), k=min(10, similarity.shape[1]), dim=1).indices
    kept, ranked, seen = [], [], set()
    for q, cap in enumerate(captions):
        if cap in seen:
            continue
        seen.add(cap)
        kept.append(cap)
        ranked.append([file_names[int(i)] for i in top[q]])
    write_submission(path, kept, ranked)


def _read_queries(path: Path) -> list[str]:
    """Captions to rank for: a CSV with a ``caption`` column (DCASE's retrieval captions file)
    or a Clotho-format table (every caption of every row)."""
    import csv

    from earshot.errors import DataError

    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        if "caption" in header:
            queries = [row["caption"] for row in reader]
        elif "caption_1" in header:
            queries = [row[c] for row in reader for c in header if c.startswith("caption_")]
        else:
            raise DataError(f"{path}: needs a 'caption' column (or Clotho's caption_1..); header is {header}")
    queries = [q for q in queries if q and q.strip()]
    if not queries:
        raise DataError(f"{path}: no captions")
    return queries


@app.command("submit")
def submit_command(
    model: Path = typer.Argument(..., help="A checkpoint directory or an ensemble manifest."),
    captions: Path = typer.Option(..., "--captions", help="CSV with a 'caption' column (the task's "
                                  "retrieval captions) or a Clotho-format table."),
    audio_dir: Path = typer.Option(..., "--audio-dir", help="Folder of the audio files to rank."),
    out: Path = typer.Option(Path("submission.csv"), "--out", help="Submission CSV to write."),
    seconds: float = typer.Option(None, "--seconds", help="Frame clips to this length (default: whole clips)."),
    workers: int = typer.Option(0, "--workers", help="Audio decoding processes."),
) -> None:
    """Write a DCASE retrieval submission: the 10 best audio files for each caption."""
    from earshot.evaluation import encode_clips, file_table, similarity
    from earshot.models.loading import load_retriever

    queries = _read_queries(captions)
    table = file_table(audio_dir)
    retriever = load_retriever(model)
    audio = encode_clips(retriever, table, audio_dir, seconds, num_workers=workers)
    sim = similarity(retriever, retriever.embed_text(queries), audio)
    write_ranked_submission(out, queries, [c.clip_id for c in table], sim)
    typer.echo(f"wrote {out}: {len(set(queries))} captions x top 10 of {len(table)} files")
