"""``earshot classify``: zero-shot classification of audio files with text labels."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from earshot.app.cli import app


@app.command("classify")
def classify_command(
    files: Optional[List[Path]] = typer.Argument(None, help="Audio files to classify."),
    labels: Optional[str] = typer.Option(None, "--labels", help='Comma-separated labels, e.g. '
                                         '"dog barking,rain,car horn".'),
    labels_file: Optional[Path] = typer.Option(None, "--labels-file",
                                               help="One label per line."),
    model: str = typer.Option("laion_clap_general", "--model", help="Registry name (see "
                              "`earshot weights list`), checkpoint, CLAP folder or manifest."),
    prompt: Optional[str] = typer.Option(None, "--prompt", help="Template with {} for the label "
                                         "(default: the model's, else 'This is a sound of {}.')."),
    top_k: int = typer.Option(3, "--top-k", help="Labels printed per file."),
    data: Optional[Path] = typer.Option(None, "--data", help="Labelled CSV (ESC-50's "
                                        "meta/esc50.csv, or file/label columns): print accuracy."),
    audio_dir: Optional[Path] = typer.Option(None, "--audio-dir", help="Folder of --data's files "
                                             "(default: the CSV's folder)."),
    fold: Optional[List[int]] = typer.Option(None, "--fold", help="With --data: only rows of this fold "
                                             "(ESC-50's fold column; repeatable), e.g. --fold 1."),
    batch_size: int = typer.Option(16, "--batch-size", help="Clips per batch."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Zero-shot classification: each file's top-k labels with probabilities; with --data, the
    accuracy over the CSV (labels default to the CSV's classes)."""
    from earshot import zeroshot
    from earshot.errors import DataError

    rows = zeroshot.read_labelled_csv(data, audio_dir, fold) if data is not None else []
    if labels_file is not None:
        label_list = zeroshot.parse_labels(Path(labels_file).expanduser().read_text(), sep="\n")
    elif labels is not None:
        label_list = zeroshot.parse_labels(labels)
    elif rows:
        label_list = sorted({r.label for r in rows})
    else:
        raise DataError("give --labels, --labels-file or --data")
    paths = [Path(f).expanduser() for f in (files or [])] + [r.path for r in rows]
    if not paths:
        raise DataError("no audio: give FILES or --data")
    unknown = sorted({r.label for r in rows} - set(label_list))
    if unknown:
        raise DataError(f"{data}: labels {unknown[:5]} are not among the given labels")

    from earshot.models.loading import Model, load_retriever, prompt_template

    retriever = load_retriever(model)
    m = Model(retriever, model)
    template = prompt if prompt is not None else prompt_template(model)
    text = m.embed_text(zeroshot.prompts(label_list, template))
    audio = m.embed_audio_files(paths, batch_size=batch_size, progress=False)
    probs = zeroshot.probabilities(audio, text, zeroshot.logit_scale_of(retriever))
    k = max(1, min(top_k, len(label_list)))
    results = []
    for path, p in zip(paths, probs):
        order = p.argsort()[::-1][:k]
        results.append({"file": str(path), "top": [[label_list[i], float(p[i])] for i in order]})
    out: dict = {"model": model, "prompt": template, "results": results}
    if rows:
        pred = probs[len(paths) - len(rows):].argmax(axis=1)
        correct = sum(label_list[i] == r.label for i, r in zip(pred, rows))
        out["accuracy"] = correct / len(rows)
        out["n"] = len(rows)
    if as_json:
        typer.echo(json.dumps(out, indent=2))
        return
    for r in results:
        typer.echo(f"{r['file']}: " + ", ".join(f"{lab} {pr:.3f}" for lab, pr in r["top"]))
    if rows:
        typer.echo(f"accuracy: {out['accuracy']:.4f} ({correct}/{len(rows)})")
