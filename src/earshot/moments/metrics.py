"""Moment retrieval metrics of record: Moment-DETR's ``standalone_eval`` as lighthouse ships it.

For every query the ground truth is one or more windows ``[start, end]`` (seconds) and the
prediction a ranked list of ``[start, end, score]``. Two metrics, each at the IoU thresholds
0.50, 0.55, ..., 0.95 (:data:`IOU_THRESHOLDS`):

* **R1@t** (``compute_mr_r1``): the *first listed* predicted window is a hit when its IoU with the
  ground-truth window it overlaps most (ties: the first listed) is at least ``t``. The
  IoU here divides by the hull ``max(end) - min(start)``, as the reference does; that is the
  union whenever the two overlap, and both give 0 otherwise, so the number is the usual IoU.
* **mAP@t** (``compute_mr_ap``, the ActivityNet detection AP from MMAction2): the first
  ``max_predictions`` (10) windows, sorted by score (stable, so equal scores keep their listed
  order), are matched greedily to unmatched ground-truth windows by decreasing IoU; AP is the
  VOC-2011 interpolated area under precision/recall with recall over all ground-truth windows.

Both are means over queries, in percent; ``.../avg`` is their mean over the thresholds (the
reference reports that average for mAP only; R1's average is added here because the DCASE 2026
task ranks on the averages). With ``lighthouse_rounding`` every number is rounded to two
decimals after averaging, exactly as the reference prints them; tests check equality with the
reference to 1e-6 both rounded and unrounded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from earshot.errors import DataError

__all__ = ["IOU_THRESHOLDS", "MAX_PREDICTIONS", "query_average_precision", "score_files", "score_moments",
           "temporal_iou"]

# np.linspace(0.5, 0.95, 10) rounded to two decimals, as the reference does before use.
IOU_THRESHOLDS: tuple[float, ...] = tuple(float(f"{t:.2f}") for t in np.linspace(0.5, 0.95, 10))
MAX_PREDICTIONS = 10  # windows per query the mAP reads (the reference's max_pred_windows)

Window = Sequence[float]


def temporal_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every window in ``a`` (N, 2) with every window in ``b`` (M, 2) -> (N, M)."""
    area_a = a[:, 1] - a[:, 0]
    area_b = b[:, 1] - b[:, 0]
    left = np.maximum(a[:, None, 0], b[None, :, 0])
    right = np.minimum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(right - left, 0, None)
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def _interpolated_ap(precision: np.ndarray, recall: np.ndarray) -> float:
    # VOC 2011: make precision monotone from the right, then sum it over recall steps.
    p = np.hstack([[0.0], precision, [0.0]])
    r = np.hstack([[0.0], recall, [1.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]
    steps = np.where(r[1:] != r[:-1])[0] + 1
    return float(np.sum((r[steps] - r[steps - 1]) * p[steps]))


def query_average_precision(gt: Sequence[Window], pred: Sequence[Window],
                            thresholds: Sequence[float] = IOU_THRESHOLDS) -> np.ndarray:
    """AP of one query's predictions ``[[s, e, score], ...]`` (already cut to the top
    ``max_predictions`` in listed order) against its ground-truth windows, per threshold."""
    ap = np.zeros(len(thresholds))
    if len(pred) == 0:
        return ap
    order = sorted(range(len(pred)), key=lambda i: -pred[i][2])  # stable, as list.sort
    spans = np.array([[pred[i][0], pred[i][1]] for i in order], dtype=float)
    gts = np.array([[w[0], w[1]] for w in gt], dtype=float)
    ious = temporal_iou(spans, gts)  # (P, G)
    tp = np.zeros((len(thresholds), len(order)))
    locked = np.zeros((len(thresholds), len(gts)), dtype=bool)
    for p, iou in enumerate(ious):
        by_iou = iou.argsort()[::-1]  # the reference's order, ties included
        for t, thr in enumerate(thresholds):
            for g in by_iou:
                if iou[g] < thr:
                    break
                if locked[t, g]:
                    continue
                tp[t, p] = 1.0
                locked[t, g] = True
                break
    tp_cum = np.cumsum(tp, axis=1)
    fp_cum = np.cumsum(1.0 - tp, axis=1)  # every prediction that is not a hit is a miss
    recall = tp_cum / float(len(gts))
    precision = tp_cum / (tp_cum + fp_cum)
    for t in range(len(thresholds)):
        ap[t] = _interpolated_ap(precision[t], recall[t])
    return ap


def _r1_iou(first: Window, gt: Sequence[Window]) -> float:
    # The ground-truth window overlapping the first prediction most, then the paired IoU.
    p = np.array([[first[0], first[1]]], dtype=float)
    g = np.array([[w[0], w[1]] for w in gt], dtype=float)
    best = g[int(np.argmax(temporal_iou(p, g)[0]))]
    inter = max(0.0, min(p[0, 1], best[1]) - max(p[0, 0], best[0]))
    hull = max(p[0, 1], best[1]) - min(p[0, 0], best[0])
    return inter / hull if hull != 0 else 0.0


def _round(v: float) -> float:
    return float(f"{v:.2f}")


def score_moments(ground_truth: Mapping[str, Sequence[Window]],
                  predictions: Mapping[str, Sequence[Window]],
                  thresholds: Sequence[float] = IOU_THRESHOLDS,
                  max_predictions: int | None = MAX_PREDICTIONS,
                  lighthouse_rounding: bool = False) -> dict[str, float]:
    """R1@t, mAP@t (percent) and their averages over ``thresholds`` for every query.

    ``ground_truth``: qid -> its windows ``[[s, e], ...]``; ``predictions``: qid -> ranked
    ``[[s, e, score], ...]``. Both must name the same queries, every query with at least one
    window on each side (the reference crashes or silently skips a query otherwise).
    Returns ``{"R1@0.5": ..., ..., "R1/avg": ..., "mAP@0.5": ..., ..., "mAP/avg": ...}``.
    """
    missing = [q for q in ground_truth if q not in predictions]
    extra = [q for q in predictions if q not in ground_truth]
    if missing or extra:
        raise DataError(f"predictions and ground truth must name the same queries: "
                        f"{len(missing)} without predictions (e.g. {missing[:3]}), "
                        f"{len(extra)} not in the ground truth (e.g. {extra[:3]})")
    if not ground_truth:
        raise DataError("no queries to score")
    thresholds = [float(t) for t in thresholds]
    aps, r1 = [], []
    for qid, gt in ground_truth.items():
        pred = list(predictions[qid])
        if not gt:
            raise DataError(f"query {qid!r}: no ground-truth window")
        if not pred:
            raise DataError(f"query {qid!r}: no predicted window")
        kept = pred[:max_predictions] if max_predictions is not None else pred
        aps.append(query_average_precision(gt, kept, thresholds))
        r1.append(_r1_iou(pred[0], gt))
    ap_t = np.mean(np.array(aps), axis=0)
    r1_arr = np.array(r1)
    r1_t = [float(np.mean(r1_arr >= t) * 100) for t in thresholds]
    fmt = _round if lighthouse_rounding else float
    out: dict[str, float] = {}
    for t, v in zip(thresholds, r1_t):
        out[f"R1@{t:g}"] = fmt(v)
    out["R1/avg"] = fmt(float(np.mean(r1_t)))
    for t, v in zip(thresholds, ap_t):
        out[f"mAP@{t:g}"] = fmt(float(v) * 100)
    out["mAP/avg"] = fmt(float(np.mean(ap_t)) * 100)
    return out


def score_files(ground_truth: str | Path, predictions: str | Path,
                max_predictions: int | None = MAX_PREDICTIONS,
                lighthouse_rounding: bool = False, on_bad_window: str = "error",
                report=None) -> dict[str, float]:
    """:func:`score_moments` of a lighthouse-layout ground-truth file and a prediction file,
    both validated line by line; adds ``n_queries``. ``on_bad_window`` / ``report``: as
    :func:`~earshot.moments.data.read_annotations`."""
    from earshot.moments.data import read_annotations, read_predictions, windows_by_qid

    gt = windows_by_qid(read_annotations(ground_truth, on_bad_window=on_bad_window, report=report))
    scores = score_moments(gt, read_predictions(predictions), max_predictions=max_predictions,
                           lighthouse_rounding=lighthouse_rounding)
    scores["n_queries"] = float(len(gt))
    return scores
