"""The zero-shot sliding-window baseline: any clip retriever turned into a moment retriever.

The AM-DETR paper's comparison (Munakata et al., 2024): embed windows of the recording with
the retriever's audio tower, compare each with the text, and read moments off the similarity
curve. Candidates come from several thresholds relative to the curve (``min + r * (max - min)``
for each ``r`` in ``relative_thresholds``): each run of windows at or above a threshold, with
gaps of at most ``merge_gap`` windows merged, is one candidate scored by the ``mean`` (or
``max``) similarity inside it. Temporal NMS (IoU ``nms_iou``) removes near duplicates, and the
best ``top`` remain. No training. ``ranking="expected_iou"`` then ranks those by each one's
mean IoU with all of them, weighted by ``exp((score - best) / temperature)`` (the head's
``QDDETRConfig.ranking``; earshot's, off by default as the issue defines the baseline).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from earshot.errors import ConfigError
from earshot.moments.metrics import temporal_iou

__all__ = ["RANKINGS", "SlidingConfig", "expected_iou", "moments_from_curve", "temporal_nms"]

# how ranked moments are ordered, here and in the moment head (QDDETRConfig.ranking): "score"
# = by their own score; "expected_iou" = by expected_iou with their scores as weights
RANKINGS: tuple[str, ...] = ("score", "expected_iou")


@dataclass(frozen=True)
class SlidingConfig:
    """How a similarity curve becomes ranked moments."""

    relative_thresholds: tuple[float, ...] = (0.3, 0.5, 0.7, 0.85)  # of the curve's range
    merge_gap: int = 1  # runs separated by at most this many windows are one moment
    score: Literal["mean", "max"] = "mean"  # a moment's score from its windows' similarities
    nms_iou: float = 0.7  # drop a moment overlapping a better one by more than this
    smooth: int = 1  # moving-average width over windows before thresholding (1: none)
    ranking: Literal["score", "expected_iou"] = "score"  # the kept moments' final order
    temperature: float = 0.02  # "expected_iou": weights exp((score - best) / temperature)

    def check(self) -> "SlidingConfig":
        if not self.relative_thresholds or not all(0 <= r <= 1 for r in self.relative_thresholds):
            raise ConfigError(f"relative_thresholds must lie in [0, 1]: {self.relative_thresholds}")
        if self.merge_gap < 0 or self.smooth < 1 or not 0 < self.nms_iou <= 1:
            raise ConfigError(f"merge_gap >= 0, smooth >= 1 and 0 < nms_iou <= 1 needed: {self}")
        if self.score not in ("mean", "max"):
            raise ConfigError(f"score must be 'mean' or 'max', got {self.score!r}")
        if self.ranking not in RANKINGS or not self.temperature > 0:
            raise ConfigError(f"ranking must be 'score' or 'expected_iou' and temperature > 0: {self}")
        return self


def _runs(mask: np.ndarray, gap: int) -> list[tuple[int, int]]:
    # [first, last] window indices of runs of True, joining runs with <= gap False between.
    idx = np.flatnonzero(mask)
    if idx.size == 0:
        return []
    runs, a, b = [], int(idx[0]), int(idx[0])
    for i in idx[1:]:
        if i - b - 1 <= gap:
            b = int(i)
        else:
            runs.append((a, b))
            a = b = int(i)
    runs.append((a, b))
    return runs


def temporal_nms(moments: list[tuple[float, float, float]], iou: float) -> list[tuple[float, float, float]]:
    """Greedy NMS: best score first, dropping any moment whose IoU with a kept one exceeds ``iou``."""
    kept: list[tuple[float, float, float]] = []
    for m in sorted(moments, key=lambda m: -m[2]):
        ok = True
        for k in kept:
            inter = max(0.0, min(m[1], k[1]) - max(m[0], k[0]))
            union = (m[1] - m[0]) + (k[1] - k[0]) - inter
            if union > 0 and inter / union > iou:
                ok = False
                break
        if ok:
            kept.append(m)
    return kept


def expected_iou(spans: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``(Q,)``: each of ``spans`` ``(Q, 2)`` (start, end) scored by its IoU with every span,
    averaged with ``weights`` ``(Q,)`` (one minus the risk of choosing it when the moment is
    drawn from the spans in proportion to their weights; two empty spans have IoU 0)."""
    spans, weights = np.asarray(spans, np.float64), np.asarray(weights, np.float64)
    with np.errstate(invalid="ignore"):  # 0 / 0 for two empty spans
        iou = np.nan_to_num(temporal_iou(spans, spans), nan=0.0)
    return (iou * weights[None, :]).sum(1) / max(float(weights.sum()), 1e-12)


def moments_from_curve(curve: np.ndarray, window_s: float, hop_s: float, duration: float | None = None,
                       top: int = 10, config: SlidingConfig = SlidingConfig()) -> list[tuple[float, float, float]]:
    """Ranked ``(start, end, score)`` moments of a similarity curve over windows ``k`` covering
    ``[k * hop_s, k * hop_s + window_s]`` (ends clipped to ``duration`` when given)."""
    cfg = config.check()
    curve = np.asarray(curve, dtype=np.float64)
    if curve.ndim != 1 or curve.size == 0:
        raise ConfigError(f"expected a non-empty 1-D similarity curve, got shape {curve.shape}")
    if cfg.smooth > 1:
        k = np.ones(cfg.smooth) / cfg.smooth
        curve = np.convolve(np.pad(curve, (cfg.smooth // 2, (cfg.smooth - 1) // 2), mode="edge"), k, "valid")
    lo, hi = float(curve.min()), float(curve.max())
    cands: dict[tuple[int, int], float] = {}
    for r in cfg.relative_thresholds:
        for a, b in _runs(curve >= lo + r * (hi - lo), cfg.merge_gap):
            seg = curve[a : b + 1]
            cands[(a, b)] = float(seg.mean() if cfg.score == "mean" else seg.max())
    out = []
    for (a, b), s in cands.items():
        start, end = a * hop_s, b * hop_s + window_s
        if duration is not None:
            end = min(end, duration)
        if end > start:
            out.append((round(start, 3), round(end, 3), s))
    kept = temporal_nms(out, cfg.nms_iou)[:top]
    if cfg.ranking == "expected_iou" and kept:
        sc = np.array([m[2] for m in kept])
        e = expected_iou(np.array([m[:2] for m in kept]), np.exp((sc - sc.max()) / cfg.temperature)).tolist()
        kept = sorted(((a, b, x) for (a, b, _), x in zip(kept, e)), key=lambda m: -m[2])
    return kept
