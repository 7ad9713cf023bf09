"""``earshot score`` / ``earshot evaluate``: DCASE scoring and model evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from earshot.app.cli import app

_METRICS = ("R@1", "R@5", "R@10", "mAP@10")


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
    official_duplicates: bool = typer.Option(
        False,
        "--official-duplicates",
        help="A caption shared by several files keeps only the last file, as the official "
        "DCASE 2022 script does (default: all its files are relevant).",
    ),
) -> None:
    """Score a DCASE retrieval submission: R@1, R@5, R@10, mAP@10 with 95% jackknife intervals."""
    from earshot.submission import score_submission

    scores = score_submission(
        ground_truth, submission, duplicate_captions="last" if official_duplicates else "union"
    )
    typer.echo(json.dumps(scores, indent=2) if as_json else format_score_table(scores))


def _load_split(data: Path, fmt: str, audio_dir: Path | None):
    from earshot.data.readers import read_table

    table = read_table(data, format=fmt)
    root = audio_dir if audio_dir is not None else data.parent
    return table, root


def format_eval_table(metrics: dict[str, float], name: str = "model") -> str:
    """A table shaped like the seeds' tables: one row, R@1 R@5 R@10 mAP@10 per direction."""
    cols = ("R@1", "R@5", "R@10", "mAP@10")
    head = f"{'':<24}" + "".join(f"{'t2a ' + c:>12}" for c in cols) + "".join(f"{'a2t ' + c:>12}" for c in cols)
    row = f"{name:<24}" + "".join(f"{metrics['t2a/' + c]:>12.4f}" for c in cols) + "".join(
        f"{metrics['a2t/' + c]:>12.4f}" for c in cols)
    ci = f"{'  95% CI ±':<24}" + "".join(f"{metrics['t2a/' + c + '/ci95']:>12.4f}" for c in cols) + "".join(
        f"{metrics['a2t/' + c + '/ci95']:>12.4f}" for c in cols)
    return "\n".join([head, row, ci])


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
    as_json: bool = typer.Option(False, "--json", help="Print metrics as JSON."),
    precision: str = typer.Option("auto", "--precision", help="auto (bf16 on CPUs with native bf16, else "
                                  "fp32) | fp32 | bf16: the audio tower's arithmetic."),
) -> None:
    """Evaluate text-to-audio and audio-to-text retrieval: R@1/5/10, mAP@10 (+mAP@k), 95% CIs."""
    import csv

    from earshot.evaluation import evaluate
    from earshot.models.loading import load_retriever
    from earshot.utils import atomic_write

    from earshot.models.inference import prepare_for_inference

    table, root = _load_split(data, fmt, audio_dir)
    retriever = prepare_for_inference(load_retriever(model), precision)
    result = evaluate(retriever, table, root, clip_seconds=seconds, num_workers=workers, extra_map_k=map_k)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        with atomic_write(out / "metrics.json", "w") as f:
            json.dump(result.metrics, f, indent=2)
        with atomic_write(out / "ranks.csv", "w") as f:
            w = csv.writer(f)
            w.writerow(["query", "caption", "file_name", "rank"])
            for q, (ci, k) in enumerate(table.caption_position(i) for i in range(table.num_captions)):
                w.writerow([q, table[ci].captions[k], table[ci].clip_id, int(result.t2a_ranks[q])])
    if submission is not None:
        write_ranked_submission(submission, table.captions(), [c.clip_id for c in table], result.similarity)
    typer.echo(json.dumps(result.metrics, indent=2) if as_json else format_eval_table(result.metrics, model.name))


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
    precision: str = typer.Option("auto", "--precision", help="auto (bf16 on CPUs with native bf16, else "
                                  "fp32) | fp32 | bf16: the audio tower's arithmetic."),
) -> None:
    """Write a DCASE retrieval submission: the 10 best audio files for each caption."""
    from earshot.evaluation import encode_clips, file_table, similarity
    from earshot.models.loading import load_retriever

    queries = _read_queries(captions)
    from earshot.models.inference import prepare_for_inference

    table = file_table(audio_dir)
    retriever = prepare_for_inference(load_retriever(model), precision)
    audio = encode_clips(retriever, table, audio_dir, seconds, num_workers=workers)
    sim = similarity(retriever, retriever.embed_text(queries), audio)
    write_ranked_submission(out, queries, [c.clip_id for c in table], sim)
    typer.echo(f"wrote {out}: {len(set(queries))} captions x top 10 of {len(table)} files")
