"""Audio moment retrieval: QD-DETR head training throughput and ``find_moments`` on a long
recording, the head against the sliding-window baseline.

* Training: lighthouse's AMR head (768-d audio and text features, hidden 256, 10 queries) on
  cached features of one-minute recordings (60 windows), batch 32, one optimiser step per batch
  with the negative-text pass, Hungarian matching and every loss: query-recording pairs/s.
* ``find_moments`` on a generated 1 h recording (``--quick``: 10 min) with a small retriever
  (small_cnn at 16 kHz): cold (window features computed, as a first query pays) and warm
  (features cached, what every further query pays) for the sliding-window baseline (2 s / 1 s
  windows in the joint space) and for the head (1 s / 1 s tower features, 300-window chunks at
  half-chunk hops). Figures are ratios of medians over interleaved repeats; absolute times are
  context.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common import figure, interleaved, summarize


def _training_rate(steps: int) -> tuple[float, float]:
    from earshot.moments.dataset import MomentExample, collate
    from earshot.moments.qddetr import QDDETR, QDDETRConfig, SetCriterion

    g = torch.Generator().manual_seed(0)
    ex = [MomentExample(str(i), torch.randn(60, 768, generator=g), torch.randn(12, 768, generator=g),
                        [(10.0, 25.0)], 60.0) for i in range(32)]
    batch = collate(ex)
    model, crit = QDDETR(QDDETRConfig()).train(), SetCriterion()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4, fused=True)  # as the trainer
    times = []
    for i in range(steps + 1):
        t = time.perf_counter()
        out = model(**batch["inputs"], with_negatives=True)
        total, _ = crit(out, *batch["targets"])
        opt.zero_grad()
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        opt.step()
        if i:  # the first step is warm-up
            times.append(time.perf_counter() - t)
    s = summarize(32 / t for t in times)
    return s.median, s.iqr


def run(quick: bool = False) -> dict[str, Any]:
    from earshot.audio.io import save_audio
    from earshot.models.biencoder import create_model
    from earshot.moments.head import FeatureSpec, MomentHead
    from earshot.moments.predict import find_moments
    from earshot.moments.qddetr import QDDETR, QDDETRConfig

    rate, rate_iqr = _training_rate(3 if quick else 8)
    minutes = 10 if quick else 60
    sr = 16000
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["EARSHOT_CACHE"] = str(Path(tmp) / "cache")
        path = Path(tmp) / "long.wav"
        rng = np.random.default_rng(0)
        chunks = [(0.05 * rng.standard_normal(sr * 60)).astype(np.float32) for _ in range(minutes)]
        save_audio(path, np.concatenate(chunks), sr)
        del chunks
        torch.manual_seed(0)
        retriever = create_model({"audio": {"name": "small_cnn", "options": {"channels": [8, 16, 32, 64], "sample_rate": sr}},
                                  "text": {"name": "bow", "options": {"dim": 64}}, "embed_dim": 64}).eval()
        da = int(retriever.audio_encoder.embed_dim)
        head = MomentHead(QDDETR(QDDETRConfig(txt_dim=64, aud_dim=da)).eval(),
                          FeatureSpec(retriever="(in memory)", text="pooled"), retriever)
        t = time.perf_counter()
        find_moments(retriever, path, "a beep")
        cold_sliding = time.perf_counter() - t
        t = time.perf_counter()
        head.find_moments(path, "a beep")
        cold_head = time.perf_counter() - t
        times = interleaved({"sliding": lambda: find_moments(retriever, path, "a dog barks"),
                             "head": lambda: head.find_moments(path, "a dog barks")},
                            repeats=3 if quick else 5, warmup=0, seed=0)
    ratio = summarize(h / s for h, s in zip(times["head"], times["sliding"]))
    warm_s = summarize(times["sliding"]).median
    warm_h = summarize(times["head"]).median
    figures = [
        figure("head training pairs/s (cached features, batch 32)", rate, unit="pairs/s", spread=rate_iqr,
               context="lighthouse AMR size: 768-d features, 60 windows, hidden 256, 10 queries"),
        figure(f"find_moments warm: head / sliding window time ({minutes} min recording)", ratio.median,
               spread=ratio.iqr, n=ratio.n, context=f"head {warm_h:.2f} s, sliding {warm_s:.2f} s per query"),
        figure(f"find_moments cold: head / sliding window time ({minutes} min recording)",
               cold_head / cold_sliding, n=1,
               context=f"head {cold_head:.1f} s (1 s windows), sliding {cold_sliding:.1f} s (2 s windows at 1 s hop)"),
    ]
    return {"figures": figures, "notes": [f"{torch.get_num_threads()} threads; the cold times include "
                                          f"decoding and embedding every window once"],
            "cold_s": {"sliding": cold_sliding, "head": cold_head}, "warm_s": times, "pairs_per_s": rate}


if __name__ == "__main__":
    import sys

    for f in run(quick="--quick" in sys.argv)["figures"]:
        print(f"{f['name']:<70} {f['value']:>10.4g} {f['context']}")
