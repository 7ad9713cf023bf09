"""A sound library at scale (issue 20): window search, hybrid queries, duplicates, watch latency.

Sizes (``quick`` in brackets), chosen so one run takes under 2 minutes on the 2 shared cores here:

- **window search**: 1,000,000 [100,000] window embeddings (D = 128, unit length, the geometry of
  ``bench_search.structured_embeddings``; 10 windows a file, as a library with long recordings has), through
  :class:`earshot.index.moments.WindowVectors` with the index type ``auto`` picks (IVF at this
  size); p50 latency of one query asking for the 10 best *files*, memory per window, and
  recall@10 (files) against exact search over the same windows.
- **watch latency**: file written -> searchable, with ``serve --watch``'s machinery
  (``Watcher``, debounce 200 ms, settle 0.3 s) on a folder of 200 short files.

Hybrid queries at 10^6 files (``bench_library_scale``) and duplicates at 10^5
(``bench_library_duplicates``) are sections of their own (building those indexes takes
minutes); this module keeps their shared builder, :func:`synthetic_index`. ``run() -> dict``.
"""

from __future__ import annotations

import hashlib
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from common import figure

WORDS = ("kick snare hat clap door slam creak wind rain thunder bird dog car engine crowd street "
         "water drip footsteps glass metal wood impact whoosh hum buzz beep click room tone").split()


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _p50_ms(fn, n: int) -> tuple[float, float]:
    fn(0)
    times = []
    for i in range(n):
        t = time.perf_counter()
        fn(i)
        times.append(1000 * (time.perf_counter() - t))
    q1, _, q3 = statistics.quantiles(times, n=4)
    return statistics.median(times), q3 - q1


def window_search(n_windows: int, d: int = 128, per_file: int = 10) -> list[dict[str, Any]]:
    import faiss

    from earshot.index import vectors as V
    from earshot.index.moments import WindowVectors

    from bench_search import structured_embeddings

    vecs, _ = structured_embeddings(n_windows, d, 2000, seed=1)  # the search bench's realistic geometry
    queries, _ = structured_embeddings(40, d, 2000, seed=2, spread=1.6)
    file_ids = np.arange(n_windows, dtype=np.int64) // per_file
    idx = (np.arange(n_windows) % per_file).astype(np.int32)
    t = time.perf_counter()
    wv = WindowVectors.build(vecs, file_ids, idx)
    build_s = time.perf_counter() - t
    exact = WindowVectors(V.build(vecs, np.arange(n_windows), V.VectorConfig(kind="flat")), file_ids, idx)
    faiss.omp_set_num_threads(1)  # queries as one server request runs them
    p50, iqr = _p50_ms(lambda i: wv.best_files(queries[i], 10), len(queries))
    p50_exact, iqr_exact = _p50_ms(lambda i: exact.best_files(queries[i], 10), 20)
    recall = np.mean([len({f for f, _ in wv.best_files(q, 10)} & {f for f, _ in exact.best_files(q, 10)}) / 10
                      for q in queries])
    mask_files = np.arange(0, n_windows // per_file, 10)  # a filter keeping 10% of the files
    p50_f, iqr_f = _p50_ms(lambda i: wv.best_files(queries[i], 10, mask_files), 20)
    ctx = f"{n_windows:,} windows, D={d}, {wv.kind}, 1 thread"
    return [
        figure("window search p50 (10 best files)", p50, unit="ms", spread=iqr, n=len(queries), context=ctx),
        figure("window search exact p50", p50_exact, unit="ms", spread=iqr_exact, n=20, context=ctx),
        figure("window search recall@10 files vs exact", float(recall), goal=">= 0.9", n=len(queries), context=ctx),
        figure("window search p50, filter keeps 10% of files", p50_f, unit="ms", spread=iqr_f, n=20, context=ctx),
        figure("window index bytes per window", wv.nbytes() / n_windows, unit="B",
               context=f"{ctx}; D*4 = {d * 4} B of vector"),
        figure("window index build", build_s, unit="s", n=1, context=ctx),
    ]


class _FixedText:
    """Stands in for a model: a text's embedding is a vector seeded by its hash (bench only)."""

    model_id, model_path, normalize, sample_rate = "bench:random", "", True, 16000

    def __init__(self, dim: int):
        self.dim = dim

    def embed_text(self, texts):
        out = []
        for t in texts:
            seed = int.from_bytes(hashlib.sha256(t.encode()).digest()[:4], "little")
            out.append(_unit(np.random.default_rng(seed).standard_normal((1, self.dim)))[0])
        return np.stack(out)

    def embed_audio(self, waves, batch_size=16):  # not used: no audio is indexed here
        raise NotImplementedError


def synthetic_index(directory: Path, n_files: int, d: int = 64, per_file: int = 2, near_copies: float = 0.0,
                    block: int = 50_000) -> list[tuple[str, str]]:
    """An index directory of ``n_files`` generated files (names, ``per_file`` windows each), no
    audio, written block by block (memory bounded by ``block`` files, not ``n_files``).

    A share ``near_copies`` of the files are near copies of the file before them (its window
    embeddings plus noise of norm 0.1: cosine about 0.995, 0.2 s shorter, another name), as a
    library's trimmed or re-encoded copies; returns those (original, copy) path pairs.
    """
    from earshot.index import words as W
    from earshot.index.indexer import write_vectors
    from earshot.index.integrity import fill_digests
    from earshot.index.moments import write_windows
    from earshot.index.store import IndexSettings, Store
    from earshot.index import vectors as V

    rng = np.random.default_rng(1)
    store = Store.open(directory, create=True)
    store.set_settings(IndexSettings(model_id="bench:random", model_path="", dim=d, sample_rate=16000,
                                     normalize=True, window_s=10.0, hop_s=5.0, pooling="mean",
                                     root=str(directory / "root")))
    planted: list[tuple[str, str]] = []
    for lo in range(0, n_files, block):
        n = min(block, n_files - lo)
        wins = _unit(rng.standard_normal((n * per_file, d))).reshape(n, per_file, d)
        copy = rng.random(n) < near_copies
        copy[0] = False
        copy[1:] &= ~copy[:-1]  # no copy of a copy: each planted pair is one group
        for j in np.flatnonzero(copy):
            noise = rng.standard_normal((per_file, d))
            wins[j] = _unit(wins[j - 1] + 0.1 * noise / np.linalg.norm(noise, axis=1, keepdims=True))
        names = rng.integers(0, len(WORDS), (n, 3))
        clips = _unit(wins.mean(axis=1))
        paths = [f"{WORDS[a]}/{WORDS[b]}_{WORDS[c]}_{lo + i:07d}.wav" for i, (a, b, c) in enumerate(names)]
        # distinct durations: no two files share a frame count, as in most real libraries; a copy is 0.2 s shorter
        dur = 12.0 + (lo + np.arange(n)) * 1e-4  # 4.4 frames apart at 44.1 kHz
        dur[copy] = dur[np.flatnonzero(copy) - 1] - 0.2
        planted += [(paths[j - 1], paths[j]) for j in np.flatnonzero(copy)]
        files = ((lo + i + 1, paths[i], 1000 + lo + i, lo + i, f"{lo + i:064x}", float(dur[i]), 44100, 2, per_file,
                  clips[i].tobytes()) for i in range(n))
        windows = ((lo + i + 1, w, 5.0 * w, 5.0 * w + 10.0, wins[i, w].tobytes())
                   for i in range(n) for w in range(per_file))
        with store.transaction():  # bulk rows in the layout Store.put_file writes
            store.conn.executemany("INSERT INTO files(id, path, size, mtime_ns, sha256, duration, sample_rate, "
                                   "channels, n_windows, embedding) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", files)
            store.conn.executemany("INSERT INTO windows(file_id, idx, start, end, embedding) VALUES (?, ?, ?, ?, ?)",
                                   windows)
    with store.transaction():
        store.bump_generation()
    W.sync(store, directory / "root", batch=20_000)  # files do not exist: names only, no tags
    fill_digests(store)  # the per-file blob digests put_file writes, as the indexer fills them
    write_vectors(store, d, V.VectorConfig())
    write_windows(store, d, V.VectorConfig())
    store.close()
    return planted


def hybrid_queries(ix, n_files: int, label: str = "", n_queries: int = 30) -> list[dict[str, Any]]:
    """p50 of ``Index.search`` in each mode (text embeddings cached: only ranking is timed)."""
    rng = np.random.default_rng(2)
    queries = [" ".join(rng.choice(WORDS, 2)) for _ in range(n_queries)]
    for q in queries:
        ix.embed_query(q)
    figs = []
    for mode in ("hybrid", "meaning", "words"):
        p50, iqr = _p50_ms(lambda i: ix.search(queries[i], k=10, mode=mode), len(queries))
        figs.append(figure(f"{mode} query p50{label}", p50, unit="ms", spread=iqr, n=len(queries),
                           context=f"{n_files:,} files, k=10"))
    p50, iqr = _p50_ms(lambda i: ix.search(queries[i], k=10, filter=_filter()), len(queries))
    figs.append(figure(f"hybrid query p50 with --where duration<30 and --folder{label}", p50, unit="ms", spread=iqr,
                       n=len(queries), context=f"{n_files:,} files, k=10"))
    figs += _words_shortcut(ix, queries, n_files, label)
    return figs


def _words_shortcut(ix, queries: list[str], n_files: int, label: str) -> list[dict[str, Any]]:
    """The words ranking hybrid search asks for (50 files), with and without the all-words
    shortcut (``words.rank``), interleaved per query; the results must be equal."""
    from earshot.index import words as W

    conn, times = ix._store.conn, {True: [], False: []}
    for text in queries:
        q, got = W.parse_query(text), {}
        for shortcut in (True, False):
            t = time.perf_counter()
            got[shortcut] = W.rank(conn, q, 50, shortcut=shortcut)
            times[shortcut].append(1000 * (time.perf_counter() - t))
        assert got[True] == got[False], text
    ratio = float(np.median(np.array(times[False]) / np.array(times[True])))
    return [figure(f"words ranking of 50 files p50, {name}{label}", float(np.median(times[s])), unit="ms",
                   n=len(queries), context=f"{n_files:,} files; same results both ways")
            for s, name in ((False, "every file holding any word"), (True, "all-words shortcut"))] + [
        figure(f"words ranking: shortcut speed-up{label}", ratio, unit="x", n=len(queries),
               context="median of per-query ratios, interleaved")]


def _filter():
    from earshot.index.filters import Filter

    return Filter(where="duration<30", folder="kick")


class _Bands:
    """A spectral band encoder for the watch figure (no model needed to time the machinery)."""

    model_id, model_path, normalize, sample_rate, dim = "bench:bands", "", True, 1000, 16

    def embed_audio(self, waves, batch_size=16):
        out = np.zeros((len(waves), self.dim), dtype=np.float32)
        for i, w in enumerate(waves):
            p = np.abs(np.fft.rfft(np.asarray(w, dtype=np.float64))) ** 2
            e = np.add.reduceat(p, np.linspace(0, len(p), self.dim + 1).astype(int)[:-1])[: self.dim]
            out[i] = e / max(np.linalg.norm(e), 1e-12)
        return out

    def embed_text(self, texts):
        return np.full((len(texts), self.dim), 1 / np.sqrt(self.dim), dtype=np.float32)


def watch_latency(n_files: int = 200, repeats: int = 3) -> list[dict[str, Any]]:
    import soundfile as sf

    from earshot.index import Index, IndexConfig, index_folder
    from earshot.index.watch import WatchConfig, Watcher

    tmp = Path(tempfile.mkdtemp(prefix="earshot-bench-watch-"))
    enc = _Bands()
    rng = np.random.default_rng(3)
    try:
        root = tmp / "lib"
        root.mkdir()
        for i in range(n_files):
            sf.write(root / f"f{i:04d}.wav", (0.1 * rng.standard_normal(2000)).astype(np.float32), 1000)
        index_folder(root, enc, tmp / "ix", IndexConfig(window_s=1.0, hop_s=0.5, workers=0))
        cfg = WatchConfig(debounce_ms=200, settle_s=0.3)
        w = Watcher(root, enc, tmp / "ix", cfg)
        w.ready.wait(20)
        lat = []
        for r in range(repeats):
            name = f"new{r}.wav"
            t = time.perf_counter()
            sf.write(root / name, (0.1 * rng.standard_normal(3000)).astype(np.float32), 1000)
            while True:
                with Index.open(tmp / "ix", enc) as ix:
                    if any(h.path == name for h in ix.search("x", k=n_files + 10, mode="meaning")):
                        break
                if time.perf_counter() - t > 60:
                    break
                time.sleep(0.05)
            lat.append(time.perf_counter() - t)
        w.close()
        q1, med, q3 = np.percentile(lat, [25, 50, 75])
        return [figure("watch: file written -> searchable", float(med), unit="s", spread=float(q3 - q1), n=repeats,
                       context=f"{n_files} files indexed; debounce 200 ms + settle 0.3 s included")]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(quick: bool = False) -> dict[str, Any]:
    figs = window_search(100_000 if quick else 1_000_000)
    figs += watch_latency(100 if quick else 200, 2 if quick else 3)
    return {"figures": figs}


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
