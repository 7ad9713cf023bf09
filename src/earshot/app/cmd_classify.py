"""``earshot classify``: zero-shot classification of audio files with text labels."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from earshot.app.root import app


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

    if labels_file is not None:
        label_list = zeroshot.parse_labels(Path(labels_file).expanduser().read_text(), sep="\n")
    else:
        label_list = zeroshot.parse_labels(labels) if labels is not None else None
    out = zeroshot.classify_files(model, files or [], label_list, data=data, audio_dir=audio_dir,
                                  prompt=prompt, top_k=top_k, batch_size=batch_size, folds=fold)
    if as_json:
        typer.echo(json.dumps(out, indent=2))
        return
    for r in out["results"]:
        typer.echo(f"{r['file']}: " + ", ".join(f"{lab} {pr:.3f}" for lab, pr in r["top"]))
    if "accuracy" in out:
        typer.echo(f"accuracy: {out['accuracy']:.4f} ({out['correct']}/{out['n']})")
