"""Zero-shot classification with any retriever: labels become captions through a prompt
template, each clip gets a softmax over its similarities to them (CLIP/CLAP's protocol; the
ESC-50 zero-shot accuracy LAION-CLAP and MS-CLAP report is this, over all 2,000 clips)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from earshot.errors import DataError

DEFAULT_PROMPT = "This is a sound of {}."  # LAION-AI/CLAP's ESC-50 template
FALLBACK_LOGIT_SCALE = 100.0  # CLIP's clamp; for retrievers without a learnt scale (ensembles)


def prompts(labels: Sequence[str], template: str = DEFAULT_PROMPT) -> list[str]:
    """Captions for ``labels``; underscores read as spaces (ESC-50's ``chirping_birds``)."""
    if "{}" not in template:
        raise DataError(f"prompt template {template!r} has no {{}} for the label")
    return [template.format(label.replace("_", " ")) for label in labels]


def parse_labels(text: str, sep: str = ",") -> list[str]:
    """Labels separated by ``sep`` (a comma; a newline for a labels file), stripped, in order,
    each once."""
    labels = list(dict.fromkeys(s.strip() for s in text.split(sep) if s.strip()))
    if len(labels) < 2:
        raise DataError(f"need at least two labels, got {labels}")
    return labels


def probabilities(audio: np.ndarray, text: np.ndarray, logit_scale: float) -> np.ndarray:
    """Unit-norm audio ``(N, D)`` and label embeddings ``(C, D)`` -> ``(N, C)`` softmax of the
    scaled cosine similarities."""
    logits = logit_scale * (audio @ text.T)  # (N, C)
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


def logit_scale_of(retriever) -> float:
    """The retriever's own logit scale: ``exp`` of its learnt log scale, unclamped, as the
    publishers' inference computes it (MS-CLAP's similarity uses its ~333 as is; the clamp at
    100 is CLIP's guard while training); else its ``logit_scale()``, else CLIP's 100
    (ensembles, which have none)."""
    log = getattr(retriever, "log_logit_scale", None)
    if log is not None and hasattr(log, "exp"):
        return float(log.detach().exp())
    fn = getattr(retriever, "logit_scale", None)
    return float(fn().detach()) if callable(fn) else FALLBACK_LOGIT_SCALE


def top_labels(probs: np.ndarray, labels: Sequence[str], k: int) -> list[list[tuple[str, float]]]:
    """Each row's ``k`` most probable labels with their probabilities, best first (ties keep
    the labels' order)."""
    k = max(1, min(k, len(labels)))
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]  # (N, k)
    return [[(labels[i], float(p[i])) for i in row] for p, row in zip(probs, order)]


def accuracy(probs: np.ndarray, labels: Sequence[str], truth: Sequence[str]) -> tuple[float, int]:
    """(fraction of rows whose most probable label is ``truth``, number correct)."""
    if len(probs) != len(truth) or not len(truth):
        raise DataError(f"accuracy needs one true label per row, got {len(truth)} for {len(probs)}")
    pred = np.argmax(probs, axis=1)
    correct = int(sum(labels[i] == t for i, t in zip(pred, truth)))
    return correct / len(truth), correct


def classify_files(model: str, files: Sequence[str | Path] = (), labels: Sequence[str] | None = None,
                   data: str | Path | None = None, audio_dir: str | Path | None = None,
                   prompt: str | None = None, top_k: int = 3, batch_size: int = 16,
                   folds: Sequence[int] | None = None) -> dict:
    """Zero-shot classification of audio files with ``model`` (anything ``load_retriever``
    opens): ``{"model", "prompt", "results": [{"file", "top": [[label, p], ...]}]}``, plus
    ``accuracy``, ``correct`` and ``n`` over a labelled CSV ``data`` (whose classes are the
    labels when none are given). The prompt defaults to the model's own template."""
    rows = read_labelled_csv(data, audio_dir, folds) if data is not None else []
    if labels is None:
        if not rows:
            raise DataError("give labels (--labels, --labels-file) or a labelled CSV (--data)")
        labels = sorted({r.label for r in rows})
    labels = list(labels)
    if len(labels) < 2:
        raise DataError(f"need at least two labels, got {labels}")
    paths = [Path(f).expanduser() for f in files] + [r.path for r in rows]
    if not paths:
        raise DataError("no audio: give FILES or --data")
    unknown = sorted({r.label for r in rows} - set(labels))
    if unknown:
        raise DataError(f"{data}: labels {unknown[:5]} are not among the given labels")
    from earshot.loading import retriever as loading

    retriever = loading.load_retriever(model)
    m = loading.Model(retriever, model)
    template = prompt if prompt is not None else prompt_template(model)
    text = m.embed_text(prompts(labels, template))
    audio = m.embed_audio_files(paths, batch_size=batch_size, progress=False)
    probs = probabilities(audio, text, logit_scale_of(retriever))
    out: dict = {"model": model, "prompt": template,
                 "results": [{"file": str(p), "top": [[lab, pr] for lab, pr in top]}
                             for p, top in zip(paths, top_labels(probs, labels, top_k))]}
    if rows:
        out["accuracy"], out["correct"] = accuracy(probs[len(paths) - len(rows):], labels,
                                                   [r.label for r in rows])
        out["n"] = len(rows)
    return out


@dataclass(frozen=True)
class Labelled:
    """One row of a labelled CSV."""

    path: Path  # audio file (joined with the audio folder)
    label: str  # its class


_FILE_COLUMNS = ("filename", "file_name", "file", "path")
_LABEL_COLUMNS = ("category", "label", "class")


def read_labelled_csv(path: str | Path, audio_dir: str | Path | None = None,
                      folds: Sequence[int] | None = None) -> list[Labelled]:
    """Rows of a labelled CSV: a file column (``filename``, ESC-50's ``meta/esc50.csv``, or
    ``file_name``/``file``/``path``) and a label column (``category``/``label``/``class``).
    Files are relative to ``audio_dir`` (default: the CSV's folder). ``folds`` keeps the rows
    of those folds only (ESC-50's ``fold`` column), so the official CSV works with one fold's
    audio. A byte-order mark (spreadsheet exports) is ignored."""
    path = Path(path).expanduser()
    base = Path(audio_dir).expanduser() if audio_dir is not None else path.parent
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            cols = reader.fieldnames or []
            fcol = next((c for c in _FILE_COLUMNS if c in cols), None)
            lcol = next((c for c in _LABEL_COLUMNS if c in cols), None)
            if fcol is None or lcol is None:
                raise DataError(f"{path}: needs a file column ({'/'.join(_FILE_COLUMNS)}) and a "
                                f"label column ({'/'.join(_LABEL_COLUMNS)}); found {cols}")
            if folds and "fold" not in cols:
                raise DataError(f"{path}: --fold needs a 'fold' column (as ESC-50's meta/esc50.csv); found {cols}")
            wanted = {str(int(k)) for k in folds} if folds else None
            rows = [Labelled(base / r[fcol], r[lcol].strip()) for r in reader
                    if wanted is None or str(r["fold"]).strip() in wanted]
        if wanted is not None and not rows:
            raise DataError(f"{path}: no rows in fold(s) {', '.join(sorted(wanted))}")
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    if not rows:
        raise DataError(f"{path}: no rows")
    missing = [str(r.path) for r in rows if not r.path.is_file()]
    if missing:
        raise DataError(f"{path}: {len(missing)} audio file(s) missing under {base}, e.g. "
                        f"{missing[0]}")
    return rows


def prompt_template(name_or_path: str | Path) -> str:
    """The zero-shot prompt of a registered model (its publisher's, as its registry entry
    states), else LAION's default."""
    from earshot.errors import WeightsError
    from earshot.loading.resolve import resolve

    try:
        entry = resolve(name_or_path).entry
    except WeightsError:  # opened by other means (a caller's own retriever): no publisher's prompt
        entry = None
    return entry.retriever.prompt if entry is not None and entry.retriever is not None else DEFAULT_PROMPT
