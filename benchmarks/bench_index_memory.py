"""Peak memory of indexing many files (it must not grow with the number of files) and the
index's size on disk per item.

Indexes 1,000 and then 10,000 short generated clips, each in a fresh process, with a small
model; the figure is the ratio of the two runs' peak resident memory (goal <= 1.1: a few
hundred MiB of model and buffers, not a per-file list in memory). ``run() -> dict``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import figure

OUT = Path(__file__).resolve().parent / "out" / "bench_index_memory"
SR = 16000

_CHILD = r"""
import json, resource, sys, time
from pathlib import Path
import numpy as np, soundfile as sf, torch
from earshot.index import IndexConfig, index_folder, open_encoder
from earshot.models import checkpoint
from earshot.models.biencoder import create_model

out, n = Path(sys.argv[1]), int(sys.argv[2])
audio = out / "audio"
audio.mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(0)
for i in range(n):  # 0.5 s tones, written once and reused by the larger run
    p = audio / f"{i // 1000:02d}" / f"clip{i:05d}.wav"
    if not p.is_file():
        p.parent.mkdir(exist_ok=True)
        t = np.arange(SR // 2) / SR
        sf.write(p, (0.2 * np.sin(2 * np.pi * rng.uniform(100, 4000) * t)).astype(np.float32), SR)
model_dir = out / "model"
if not (model_dir / "model.safetensors").is_file():
    torch.manual_seed(0)
    checkpoint.save(create_model({"audio": {"name": "small_cnn", "options": {"channels": [8, 16], "sample_rate": SR}},
                                  "text": {"name": "bow", "options": {"dim": 32}}, "embed_dim": 16}), model_dir)
files = sorted(audio.rglob("*.wav"))[:n]
subset = out / f"subset{n}"
if not subset.is_dir():
    for f in files:
        dst = subset / f.relative_to(audio)
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.symlink_to(f)
import shutil
shutil.rmtree(out / f"index{n}", ignore_errors=True)  # a fresh index every pass (a rerun would resume)
t = time.perf_counter()
# the subset's files are symlinks into audio/, outside the indexed folder: allowed on purpose here
rep = index_folder(subset, open_encoder(model_dir), out / f"index{n}",
                   IndexConfig(workers=1, batch_size=64, links_outside=True))
assert rep.items == n, (rep.items, n)
size = sum(p.stat().st_size for p in (out / f"index{n}").rglob("*") if p.is_file())
print(json.dumps({"items": rep.items, "seconds": time.perf_counter() - t, "index_bytes": size,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
""".replace("SR", str(SR))


def _index_in_child(n: int) -> dict[str, Any]:
    res = subprocess.run([sys.executable, "-c", _CHILD, str(OUT), str(n)], capture_output=True, text=True,
                         check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def run(quick: bool = False) -> dict[str, Any]:
    small, large = (200, 2000) if quick else (1000, 10000)
    OUT.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    a = _index_in_child(small)
    b = _index_in_child(large)
    ratio = b["peak_rss_mib"] / a["peak_rss_mib"]
    return {
        "figures": [
            figure(f"peak RSS indexing {large} files / {small} files", ratio, goal="<= 1.1",
                   context=f"{a['peak_rss_mib']:.0f} MiB vs {b['peak_rss_mib']:.0f} MiB"),
            figure("index size on disk per item", b["index_bytes"] / b["items"], unit="B",
                   context=f"{b['items']} items, 16-d embeddings, one window each (SQLite + FAISS)"),
            figure(f"indexing time for {large} files", b["seconds"], unit="s",
                   context="0.5 s clips, small_cnn; context only"),
        ],
        "notes": [f"each size indexed in a fresh process; total {time.perf_counter() - t:.0f} s"],
    }


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
