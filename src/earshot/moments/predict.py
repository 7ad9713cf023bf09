"""Moment predictions for a data set, ``find_moments`` for one recording, and evaluation.

Any earshot retriever (checkpoint, CLAP, MS-CLAP, ensemble: what ``load_retriever`` opens)
predicts with the sliding-window baseline (:mod:`earshot.moments.sliding`): the recording's
window embeddings are computed once (cached) and compared with every query about it.
Predictions use lighthouse's layout: ``qid``, ``query``, ``vid``,
``pred_relevant_windows: [[start, end, score], ...]`` best first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from earshot.moments.data import MomentRecording
from earshot.moments.features import WindowConfig, window_features
from earshot.moments.find import DEFAULT_BASELINE_WINDOW, _curves, find_moments  # noqa: F401 (re-exported)
from earshot.moments.sliding import SlidingConfig, moments_from_curve

__all__ = ["DEFAULT_BASELINE_WINDOW", "evaluate_moments", "find_moments", "open_moment_model",
           "predict_moments"]

def open_moment_model(name_or_path: str | Path, precision: str = "auto") -> Any:
    """What ``earshot moments predict/evaluate MODEL`` means by MODEL, as the one resolver says:
    a moment head (a folder from ``earshot moments train``, lighthouse's checkpoint file or its
    registry name), or any retriever (then the sliding-window baseline predicts)."""
    from earshot.loading.resolve import open_ref, resolve

    ref = resolve(name_or_path)
    if ref.kind == "moment_head":
        return open_ref(ref)
    from earshot.models.inference import prepare_for_inference

    return prepare_for_inference(open_ref(ref), precision)


def predict_moments(model: Any, recordings: Sequence[MomentRecording], top: int = 10,
                    window: WindowConfig = DEFAULT_BASELINE_WINDOW,
                    sliding: SlidingConfig = SlidingConfig(),
                    progress: Callable[[int, int], None] | None = None) -> list[dict[str, Any]]:
    """One prediction row per query of ``recordings`` (lighthouse layout), in their order: by
    the moment head when ``model`` is a :class:`~earshot.moments.head.MomentHead`, else by the
    sliding-window baseline over the retriever."""
    from earshot.moments.head import MomentHead

    rows = []
    if isinstance(model, MomentHead):
        for i, rec in enumerate(recordings):
            feats = model.audio_features(rec.audio)
            for q, wins in zip(rec.queries, model.predict_texts(feats, [q.query for q in rec.queries], top)):
                rows.append({"qid": q.qid, "query": q.query, "vid": q.vid, "pred_relevant_windows": wins})
            if progress is not None:
                progress(i + 1, len(recordings))
        return rows
    for i, rec in enumerate(recordings):
        if rec.audio is None:
            raise ValueError(f"recording {rec.vid!r} has no audio file")
        feats = window_features(model, rec.audio, window)
        curves = _curves(model, feats, [q.query for q in rec.queries])
        for q, curve in zip(rec.queries, curves):
            wins = moments_from_curve(curve, window.window_s, window.hop_s, rec.duration, top, sliding)
            rows.append({"qid": q.qid, "query": q.query, "vid": q.vid,
                         "pred_relevant_windows": [[s, e, round(float(sc), 6)] for s, e, sc in wins]})
        if progress is not None:
            progress(i + 1, len(recordings))
    return rows


def evaluate_moments(model: Any, recordings: Sequence[MomentRecording], **kwargs: Any) -> dict[str, float]:
    """Predict for every query of ``recordings`` and score against their windows
    (:func:`earshot.moments.metrics.score_moments`); adds ``n_queries``."""
    from earshot.moments.metrics import score_moments

    rows = predict_moments(model, recordings, **kwargs)
    gt = {str(q.qid): [list(w) for w in q.windows] for r in recordings for q in r.queries}
    scores = score_moments(gt, {str(r["qid"]): r["pred_relevant_windows"] for r in rows})
    scores["n_queries"] = float(len(gt))
    return scores
