"""A sound library at the issue's size (issue 20): hybrid queries over 10^6 files.

The index is a real index directory (SQLite rows, FTS5 words, both vector files) written
without audio by :func:`bench_library.synthetic_index`: generated names, D = 64 embeddings,
rows written in the layout ``Store.put_file`` writes, then the library's own ``words.sync``,
``write_vectors`` and ``write_windows``. Memory stays bounded by a 50,000-file block while
writing; the largest resident parts are the two FAISS indexes (10^6 x 64 floats each, ~0.3 GB).

- **hybrid query**: 1,000,000 [100,000] files of one window each (a library of one-shots);
  p50 latency of ``Index.search`` in hybrid, meaning and words modes, and with a filter (a
  fixed-vector text encoder stands in for the model, so only ranking is timed; 12 queries).

- **watched batch at scale**: one new file reaching a synthetic library of 100,000 [10,000]
  files x 4 windows of D = 512 (the watcher's ``index_folder(changed=[file])``, debounce
  excluded), and the time to record the blob digests both ways (per-file digests, every blob).

Duplicates at 10^5 files are ``bench_library_duplicates`` (each section has its own time-out).

``run() -> dict``; the index is built, measured and deleted.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench_library import _FixedText, hybrid_queries, synthetic_index
from common import figure


TIMEOUT_S = 2400  # the 10^6-file index is built first (~13 min on 2 loaded cores)
LOADS = (0,)  # sizes and latencies at scale: idle only

def hybrid_at(n_files: int) -> list[dict[str, Any]]:
    from earshot.index import Index

    tmp = Path(tempfile.mkdtemp(prefix="earshot-bench-library-scale-"))
    try:
        t = time.perf_counter()
        synthetic_index(tmp / "ix", n_files, per_file=1)
        figs = [figure("library index build (no audio)", time.perf_counter() - t, unit="s", n=1,
                       context=f"{n_files:,} files, 1 window each, D=64: SQLite rows, FTS5, both vector files")]
        with Index.open(tmp / "ix", _FixedText(64)) as ix:
            figs += hybrid_queries(ix, n_files, n_queries=12)
        return figs
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class _RandomAudio(_FixedText):
    """The synthetic index's model for a watched batch: each window a seeded random unit vector."""

    def embed_audio(self, waves, batch_size=16):
        rng = np.random.default_rng(len(waves))
        x = rng.standard_normal((len(waves), self.dim))
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def watched_batch_at(n_files: int, d: int = 512, per_file: int = 4, repeats: int = 3) -> list[dict[str, Any]]:
    """One new file reaching a library of ``n_files`` (``per_file`` windows of ``d`` floats each):
    the watcher's batch (``index_folder(changed=[file])``, debounce excluded), and the part that
    records what the vectors were built from, per-file digests against every blob (the way
    before), interleaved in the same run."""
    import soundfile as sf

    from earshot.index import IndexConfig, index_folder
    from earshot.index import integrity as I
    from earshot.index.store import Store

    tmp = Path(tempfile.mkdtemp(prefix="earshot-bench-watch-scale-"))
    try:
        t = time.perf_counter()
        synthetic_index(tmp / "ix", n_files, d=d, per_file=per_file)
        build = time.perf_counter() - t
        root = tmp / "lib"  # beside the index: a folder inside the index is never walked
        root.mkdir()
        store = Store.open(tmp / "ix")
        with store.transaction():
            store.set_settings(dataclasses.replace(store.settings(), root=str(root.resolve())))
        store.close()
        enc, cfg = _RandomAudio(d), IndexConfig(window_s=10.0, hop_s=5.0, workers=0)
        batch, digests = [], {"per-file digests": [], "every blob": []}
        for r in range(repeats):
            sf.write(root / f"new{r}.wav", np.zeros(16000 * 12, dtype=np.float32), 16000)
            t = time.perf_counter()
            rep = index_folder(root, enc, tmp / "ix", cfg, changed=[root / f"new{r}.wav"])
            batch.append(time.perf_counter() - t)
            assert rep.encoded == [f"new{r}.wav"], rep.encoded
            store = Store.open(tmp / "ix", readonly=True, check=False)
            try:
                for name, fn in (("per-file digests", I.blob_digests), ("every blob", I._blob_digests_v1)):
                    t = time.perf_counter()
                    fn(store)
                    digests[name].append(time.perf_counter() - t)
            finally:
                store.close()
        size = f"{n_files:,} files x {per_file} windows, D={d}"
        return [figure("watch at scale: synthetic library build (no audio)", build, unit="s", n=1, context=size),
                figure("watch at scale: one new file's batch (index_folder changed=[file])", float(np.median(batch)),
                       unit="s", n=repeats, context=size + "; debounce and settle not included")] + [
            figure(f"watch at scale: recording the blob digests, {name}", float(np.median(v)), unit="s", n=repeats,
                   context=size) for name, v in digests.items()]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(quick: bool = False) -> dict[str, Any]:
    figs = hybrid_at(100_000 if quick else 1_000_000)
    figs += watched_batch_at(10_000 if quick else 100_000)
    return {"figures": figs}


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
