"""``find_moments``: where a text happens in one recording, for any retriever.

The sliding-window baseline (:mod:`earshot.moments.sliding`) over a model's window embeddings
(:mod:`earshot.moments.features`). It takes an opened model and never opens one, so
``earshot.loading``'s numpy :class:`~earshot.loading.retriever.Model` can offer it as a method.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from earshot.moments.features import WindowConfig, window_features
from earshot.moments.sliding import SlidingConfig, moments_from_curve


# The baseline compares windows with text in the joint space; a clip retriever wants a few
# seconds of context, so the default is 2 s windows at a 1 s hop.
DEFAULT_BASELINE_WINDOW = WindowConfig(window_s=2.0, hop_s=1.0, output="embedding")


def _curves(model: Any, feats: np.ndarray, texts: Sequence[str]) -> np.ndarray:
    t = np.asarray(model.embed_text(list(texts)), dtype=np.float32)  # (Q, D)
    t = t / np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-12)
    a = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
    return t @ a.T  # (Q, W) cosine similarity


def find_moments(model: Any, audio: str | Path | np.ndarray, text: str, top: int = 5,
                 window: WindowConfig = DEFAULT_BASELINE_WINDOW,
                 sliding: SlidingConfig = SlidingConfig()) -> list[tuple[float, float, float]]:
    """Where ``text`` happens in ``audio`` (a file, or a mono waveform at the model's rate):
    up to ``top`` ``(start_s, end_s, score)`` moments, best first, by the sliding-window
    baseline over any opened earshot retriever (``earshot.loading.retriever.load_retriever``)."""
    if isinstance(text, (list, tuple)):
        raise TypeError("find_moments takes one text; use predict_moments for many")
    feats = window_features(model, audio, window)
    duration = (len(audio) / model.sample_rate if isinstance(audio, np.ndarray) else None)
    curve = _curves(model, feats, [text])[0]
    return moments_from_curve(curve, window.window_s, window.hop_s, duration, top, sliding)
