"""Indexing throughput end to end against the model-only forward pass on the same clips.

The target: ``earshot index`` (walk, hash, decode, resample and frame in worker processes,
encode, pool, commit to SQLite, write FAISS) runs at >= 90% of the throughput of the model's
forward pass alone on the same, already decoded windows, because decoding overlaps encoding.

The clips are written once under ``benchmarks/out/bench_index`` (git-ignored): 10 s and 20 s
noise-and-tone recordings at 44.1 kHz (so workers really resample to the model's 32 kHz), encoded
by the ``small_cnn`` from-scratch model (untrained weights: speed does not depend on training).
A peer in the same run: inline decoding (``workers=0``), which shows what the overlap buys.
``run() -> dict``; ``python benchmarks/bench_index.py`` prints it.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import soundfile as sf
import torch

from common import figure, interleaved, ratio_stats, summarize

from earshot.audio.io import load_audio
from earshot.index import IndexConfig, index_folder, open_encoder
from earshot.index.decode import Framing, frame

OUT = Path(__file__).resolve().parent / "out" / "bench_index"
FILE_SR = 44100
MODEL = {"audio": {"name": "small_cnn", "options": {"sample_rate": 32000}},
         "text": {"name": "bow", "options": {"dim": 64}}, "embed_dim": 256}


def _clips(n: int) -> Path:
    folder = OUT / f"clips{n}"
    if folder.is_dir() and len(list(folder.glob("*.wav"))) == n:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        seconds = 20.0 if i % 4 == 0 else 10.0
        t = np.arange(int(seconds * FILE_SR)) / FILE_SR
        wave = 0.05 * rng.standard_normal(t.size) + 0.2 * np.sin(2 * np.pi * rng.uniform(100, 4000) * t)
        sf.write(folder / f"clip{i:04d}.wav", wave.astype(np.float32), FILE_SR)
    return folder


def _model() -> Path:
    path = OUT / "model"
    if not (path / "model.safetensors").is_file():
        from earshot.models import checkpoint
        from earshot.models.biencoder import create_model

        torch.manual_seed(0)
        checkpoint.save(create_model(MODEL), path)
    return path


def run(quick: bool = False, clips: int = 48, batch_size: int = 16, workers: int = 2,
        rounds: int | None = None) -> dict[str, Any]:
    """Model-only encoding, indexing with workers and inline indexing, in interleaved rounds
    (shuffled order per round); ``index_vs_model`` is the median of the per-round ratios."""
    folder, model = _clips(clips), _model()
    encoder = open_encoder(model)  # as `earshot index` opens it: precision auto, fused where possible
    cfg = IndexConfig(window_s=10.0, hop_s=5.0, batch_size=batch_size, workers=workers)
    framing = Framing(encoder.sample_rate, cfg.window_s, cfg.hop_s)
    windows = [w for p in sorted(folder.glob("*.wav")) for w in frame(load_audio(p, encoder.sample_rate), framing)[0]]
    audio_s = sum(sf.info(str(p)).duration for p in folder.glob("*.wav"))
    encoder.embed_audio(windows[:batch_size], batch_size=batch_size)  # warm-up: allocator, MKL

    res: dict[str, Any] = {"clips": clips, "windows": len(windows), "audio_s": audio_s,
                           "torch_threads": torch.get_num_threads(), "workers": workers,
                           "precision": getattr(encoder.retriever.audio_encoder, "inference_precision", None)}

    def index_with(w: int) -> Callable[[], None]:
        def call() -> None:
            out = Path(tempfile.mkdtemp(prefix="earshot-bench-", dir=OUT))
            try:
                report = index_folder(folder, encoder, out / "ix", IndexConfig(**{**cfg.__dict__, "workers": w}))
                assert report.windows == len(windows) and not report.bad
            finally:
                shutil.rmtree(out)
        return call

    fns = {"model_only": lambda: encoder.embed_audio(windows, batch_size=batch_size),  # the indexer's batches
           "index": index_with(workers), "index_inline": index_with(0)}
    n = rounds or (2 if quick else 3)
    times = interleaved(fns, repeats=n, warmup=0, seed=0)
    for key, ts in times.items():
        st = summarize(ts)
        res[f"{key}_s"] = st.median
        res[f"{key}/windows_per_s"] = len(windows) / st.median
        res[f"{key}/x_realtime"] = audio_s / st.median
    ratio = ratio_stats(times["model_only"], times["index"])
    inline = ratio_stats(times["model_only"], times["index_inline"])
    figures = [
        figure("indexing end to end / model-only throughput", ratio.median, goal=">= 0.9", spread=ratio.iqr,
               n=ratio.n, context=f"{res['index/windows_per_s']:.1f} vs {res['model_only/windows_per_s']:.1f} "
                                  f"windows/s median, {workers} decoding workers"),
        figure("inline indexing (no workers) / model-only throughput", inline.median, spread=inline.iqr, n=inline.n,
               context=f"{res['index_inline/windows_per_s']:.1f} windows/s"),
        figure("indexing speed", res["index/x_realtime"], unit="x real time",
               context=f"{audio_s:.0f} s of audio, {len(windows)} windows, {torch.get_num_threads()} torch threads"),
    ]
    res["index_vs_model"] = ratio.median
    res["inline_vs_model"] = inline.median
    notes = [f"{clips} clips (10-20 s, 44.1 kHz), small_cnn at precision {res['precision']}; {n} interleaved rounds "
             "of (model only, index, inline index) in shuffled order; ratios are medians of per-round ratios"]
    return {"figures": figures, "notes": notes, "raw": res}


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
