"""Seeded randomized moment predictions (and small ground truths) for the scorer goldens.

The goldens in ``golden/scorer.json`` were computed outside the repository by lighthouse's own
``training/standalone_eval/eval.py`` (``compute_mr_ap``, ``compute_mr_r1``, and
``compute_average_precision_detection`` for the unrounded values) on exactly these inputs; the
inputs' SHA-256 is stored beside them so a change in numpy's random stream shows up as such.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np


def random_predictions(gt: list[dict], seed: int) -> list[dict]:
    """Per query 1-13 ranked windows: jittered copies of its ground-truth windows (so IoUs
    spread over 0-1), random windows, repeated scores (ties) and a few exact copies."""
    rng = np.random.default_rng(seed)
    out = []
    for d in gt:
        dur = float(d["duration"])
        n = int(rng.integers(1, 14))
        wins = []
        for _ in range(n):
            if rng.random() < 0.6:
                s, e = d["relevant_windows"][int(rng.integers(len(d["relevant_windows"])))]
                if rng.random() < 0.15:
                    ns, ne = float(s), float(e)  # an exact hit
                else:
                    ln = e - s
                    ns = s + rng.normal(0, 0.25) * max(ln, 1.0)
                    ne = e + rng.normal(0, 0.25) * max(ln, 1.0)
            else:
                ns = rng.random() * dur
                ne = ns + rng.random() * dur / 3
            ns, ne = round(min(max(ns, 0.0), dur), 1), round(min(max(ne, 0.0), dur), 1)
            if ne <= ns:
                ne = round(min(ns + 1.0, dur), 1)
                ns = round(ne - 1.0, 1)
            score = round(float(rng.random()), 1 if rng.random() < 0.5 else 4)  # many ties
            wins.append([ns, ne, score])
        out.append({"qid": d["qid"], "query": d["query"], "vid": d["vid"],
                    "pred_relevant_windows": wins})
    return out


def small_ground_truth(seed: int, queries: int = 60) -> list[dict]:
    """A small ground truth of 1-4 disjoint windows per query in 20-120 s recordings."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(queries):
        dur = int(rng.integers(20, 121))
        k = int(rng.integers(1, 5))
        cuts = np.sort(rng.choice(np.arange(1, dur), size=2 * k, replace=False))
        wins = [[int(cuts[2 * j]), int(cuts[2 * j + 1])] for j in range(k)]
        out.append({"qid": f"q{i}", "query": f"event {i}", "vid": f"rec{i}", "duration": dur,
                    "relevant_windows": wins})
    return out


def digest(rows: list[dict]) -> str:
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()
