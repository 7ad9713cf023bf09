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
    """The retriever's learnt logit scale (CLAP's, after loading), or CLIP's 100."""
    fn = getattr(retriever, "logit_scale", None)
    return float(fn().detach()) if callable(fn) else FALLBACK_LOGIT_SCALE


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
