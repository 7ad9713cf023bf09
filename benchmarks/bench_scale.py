"""Search at scale (issue 22): the compressed index (OPQ + IVF-PQ, exact re-ranking from the float
vectors memory-mapped from disk) at 10^6 vectors of 512 dims, and 4 shards against 1, same run.

Figures: build time, bytes per vector held in RAM (codes + ids + centroids + rotation; the goal
<= 64), p50/p99 single-query latency (goal p50 <= 10 ms), recall@10 against exact search (goal
>= 0.95), and 4 shards vs 1 (latency ratio from interleaved per-query pairs, recall of both).

Vectors: unit vectors around 4,000 anisotropic class centres (a 64-d principal subspace of the
512-d space, per-class spread varying 3x), as in ``bench_search``; queries are fresh draws with
a larger offset. They are generated in chunks of 65,536 straight into a ``.npy`` memmap under
``benchmarks/out/bench_scale`` (git-ignored; 2 GB at 10^6, 20 GB at 10^7), so the process never
holds them in RAM (peak RSS is recorded). Ground truth: exact top 10 by chunked matmul.

The issue asks for 10^7 vectors: ``python benchmarks/bench_scale.py --n 10000000 --out F.json
--delete-items`` runs that size (20 GB of disk, deleted afterwards with ``--delete-items``; a long
build on 2 cores; ``F.json`` is rewritten after every stage, so a run stopped by a time limit
keeps what it measured). ``make bench`` runs 10^5 (``quick``: 5·10^4) to stay inside the
harness's 10-minute section limit; the 10^6 and 10^7 figures in RESULTS.md are separate runs.
Resident memory stays small at any size: the items are written, scanned and added through plain
file reads of 65,536 rows (page cache, not this process's memory); only the exact re-ranking
reads rows through a memory map, a few hundred per query.
Single queries run on one FAISS thread (a server answers one query per request); the sharded
index searches its shards in parallel threads, so on 2 cores 4 shards can at best halve latency.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from common import figure, peak_rss_mib, summarize

from earshot.index import vectors as V
from earshot.index.compressed import CompressedIndex, PQConfig, layout, rerank_depth
from earshot.index.sharded import ShardedIndex, split

OUT = Path(__file__).resolve().parent / "out" / "bench_scale"
CHUNK = 65536


TIMEOUT_S = 1800  # builds an IVF-PQ index over 10^5 vectors
LOADS = (0,)  # bytes, recall and latency at scale: idle only

def _centres(d: int, classes: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.standard_normal((d, 64)))[0]  # (d, 64) principal subspace
    centres = rng.standard_normal((classes, 64)) @ basis.T + 0.15 * rng.standard_normal((classes, d))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    return centres.astype(np.float32), rng.uniform(0.1, 0.3, classes).astype(np.float32)


def _draw(rng: np.random.Generator, centres: np.ndarray, scale: np.ndarray, n: int, spread: float) -> np.ndarray:
    d = centres.shape[1]
    lab = rng.integers(0, len(centres), n)
    x = centres[lab] + spread * scale[lab, None] * rng.standard_normal((n, d), dtype=np.float32) / np.sqrt(d) * 4
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


class Rows:
    """An (n, d) float32 ``.npy`` file read by plain reads: ``rows[lo:hi]`` copies those rows into
    a fresh array, so scanning 20 GB never maps it into this process (its RSS stays small)."""

    def __init__(self, path: Path):
        self.path = path
        mm = np.load(path, mmap_mode="r")
        self.shape, self.offset = mm.shape, mm.offset
        del mm

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key):
        if isinstance(key, slice):
            lo, hi, _ = key.indices(self.shape[0])
            return np.fromfile(self.path, dtype=np.float32, count=max(0, hi - lo) * self.shape[1],
                               offset=self.offset + 4 * lo * self.shape[1]).reshape(-1, self.shape[1])
        rows = np.asarray(key)  # sorted row numbers (a training sample): through a short-lived map
        mm = np.load(self.path, mmap_mode="r")
        out = np.asarray(mm[rows], dtype=np.float32)
        del mm
        return out


def vectors(n: int, d: int = 512, classes: int = 4000) -> Path:
    """The ``.npy`` file of the (n, d) items, generated once in chunks."""
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"items_n{n}_d{d}.npy"
    if not path.is_file():
        centres, scale = _centres(d, classes)
        tmp = path.with_suffix(".tmp.npy")
        rng = np.random.default_rng(1)
        with open(tmp, "wb") as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (n, d)})
            for lo in range(0, n, CHUNK):
                f.write(_draw(rng, centres, scale, min(CHUNK, n - lo), 1.0).tobytes())
        tmp.rename(path)
    return path


def exact_top(items: Rows, q: np.ndarray, k: int) -> np.ndarray:
    """Row numbers of the exact top k per query, by chunked matmul over the file."""
    best_s = np.full((len(q), k), -np.inf, dtype=np.float32)
    best_i = np.full((len(q), k), -1, dtype=np.int64)
    for lo in range(0, len(items), CHUNK):
        s = q @ items[lo : lo + CHUNK].T  # (Q, C)
        part = np.argpartition(-s, min(k, s.shape[1] - 1), axis=1)[:, :k]  # the chunk's own top k first
        cs = np.concatenate([best_s, np.take_along_axis(s, part, 1)], axis=1)
        ci = np.concatenate([best_i, lo + part], axis=1)
        top = np.argsort(-cs, axis=1, kind="stable")[:, :k]
        best_s, best_i = np.take_along_axis(cs, top, 1), np.take_along_axis(ci, top, 1)
    return best_i


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / truth.shape[1] for f, t in zip(found, truth)]))


def run(quick: bool = False, n: int | None = None, d: int = 512, queries: int = 300, k: int = 10,
        shards: int = 4, nprobes: tuple[int, ...] = (16, 32, 64), out: Path | None = None,
        delete_items: bool = False) -> dict[str, Any]:
    n = n or (50_000 if quick else 100_000)
    res: dict[str, Any] = {"items": n, "dim": d, "queries": queries, "shards": shards}

    def stage(name: str, t0: float) -> None:  # a run cut short by a time limit keeps what it measured
        res[name] = time.perf_counter() - t0
        res["peak_rss_mib"] = peak_rss_mib()
        if out is not None:
            out.write_text(json.dumps({k: v for k, v in res.items() if k != "figures"}, indent=2, default=str))

    t = time.perf_counter()
    path = vectors(n, d)
    items = Rows(path)
    stage("make_items_s", t)
    centres, scale = _centres(d, 4000)
    q = _draw(np.random.default_rng(2), centres, scale, queries, 1.6)
    t = time.perf_counter()
    truth = exact_top(items, q, k)
    stage("exact_truth_s", t)
    cfg = PQConfig()
    depth = rerank_depth(cfg.rerank, n, k)  # the default (automatic) re-rank depth at this size
    res["layout"] = dict(zip(("cells", "pq_bytes", "rotated_dim"), layout(n, d, cfg)))
    ids = np.arange(n, dtype=np.int64)

    t = time.perf_counter()
    trained = CompressedIndex.train(items, cfg)
    stage("train_s", t)
    one = trained.filled(items, ids)
    one.floats = np.load(path, mmap_mode="r")  # re-ranking reads its few rows per query through a map
    stage("build_1_s", t)
    t = time.perf_counter()
    # the single index split into shards (same codes, no re-encoding; equal to shards filled one by
    # one from the same training, as vectors.build makes them: tests/index/test_scale_search.py)
    many = ShardedIndex([one.subset(lo, hi) for lo, hi in split(n, shards)])
    stage(f"split_{shards}_s", t)
    light = ShardedIndex([one.subset(lo, hi) for lo, hi in split(n, shards)])
    for sh in light.shards:
        sh.rerank = max(k, depth // shards)  # the same total re-ranking work as one index
    t = time.perf_counter()
    res["bytes_per_vector"] = V.nbytes(one) / n
    # the shards share one training (centroids, rotation, codebooks), held and saved once
    res[f"bytes_per_vector_{shards}_shards"] = V.nbytes(many) / n
    res["training_bytes"] = one.training_bytes()
    res["float_bytes_on_disk_per_vector"] = 4 * d
    stage("bytes_s", t)
    t = time.perf_counter()

    faiss.omp_set_num_threads(1)
    for p in nprobes:  # the recall / latency trade-off of nprobe, single index
        one.set_nprobe(p)
        found = one.search(q, k)[1]
        res[f"nprobe{p}/recall@10"] = recall(found, truth)
    one.set_nprobe(cfg.nprobe)
    for sh in [*many.shards, *light.shards]:
        sh.set_nprobe(cfg.nprobe)

    # interleaved per query: each query once through each index, in a shuffled order
    t1, t4, tl = [], [], []
    f1, f4, fl = (np.empty((queries, k), np.int64) for _ in range(3))
    one.search(q[:5], k), many.search(q[:5], k), light.search(q[:5], k)  # warm-up (page cache, threads)
    order = random.Random(0)
    for i in range(queries):
        pair = [(one, t1, f1), (many, t4, f4), (light, tl, fl)]
        order.shuffle(pair)
        for index, times, found in pair:
            tq = time.perf_counter()  # (not t: that times the whole search stage)
            found[i] = index.search(q[i : i + 1], k)[1][0]
            times.append(1000 * (time.perf_counter() - tq))
    # the re-rank depth's recall / latency trade-off, single index, interleaved per query
    depths = sorted({64, 256, 1024, 2048, depth})
    deep = {r: CompressedIndex(one.index, one.floats, one.ids, r, one.training) for r in depths}
    dt = {r: [] for r in depths}
    dfound = {r: np.empty((queries, k), np.int64) for r in depths}
    for i in range(queries):
        for r in order.sample(depths, len(depths)):
            tq = time.perf_counter()
            dfound[r][i] = deep[r].search(q[i : i + 1], k)[1][0]
            dt[r].append(1000 * (time.perf_counter() - tq))
    for r in depths:
        res[f"rerank{r}/recall@10"] = recall(dfound[r], truth)
        res[f"rerank{r}/p50_ms"] = summarize(dt[r]).median
    s1, s4 = summarize(t1), summarize(t4)
    ratios = summarize([a / b for a, b in zip(t4, t1)])
    ratios_l = summarize([a / b for a, b in zip(tl, t1)])
    res.update({f"{shards}_shards_rerank_split/p50_ms": summarize(tl).median,
                f"{shards}_shards_rerank_split/recall@10": recall(fl, truth),
                f"{shards}_vs_1_rerank_split/latency_ratio": ratios_l.median})
    res.update({"p50_ms": s1.median, "p99_ms": float(np.percentile(t1, 99)), "recall@10": recall(f1, truth),
                f"{shards}_shards/p50_ms": s4.median, f"{shards}_shards/p99_ms": float(np.percentile(t4, 99)),
                f"{shards}_shards/recall@10": recall(f4, truth), f"{shards}_vs_1/latency_ratio": ratios.median,
                "peak_rss_mib": peak_rss_mib(), "nprobe": cfg.nprobe, "rerank": depth})
    stage("search_s", t)
    if delete_items:
        path.unlink()
    size = f"{n:.0e}".replace("+0", "").replace("+", "")
    res["figures"] = [
        figure(f"ivfpq {size}x{d}: bytes per vector in RAM", res["bytes_per_vector"], unit="B", goal="<= 64",
               context=f"{cfg.pq_bytes} B codes + 8 B id + centroids/OPQ; floats on disk {4 * d} B"),
        figure(f"ivfpq {size}x{d}, {shards} shards: bytes per vector in RAM", res[f"bytes_per_vector_{shards}_shards"],
               unit="B", goal="<= 64", context="one training shared by the shards, each adds codes + ids"),
        figure(f"ivfpq {size}x{d}: p50 query latency", s1.median, unit="ms", goal="<= 10", spread=s1.iqr,
               n=s1.n, context=f"p99 {res['p99_ms']:.2f} ms; nprobe {cfg.nprobe}, re-rank {depth} (automatic), 1 thread"),
        figure(f"ivfpq {size}x{d}: recall@10 vs exact", res["recall@10"], goal=">= 0.95", n=queries,
               context=", ".join(f"nprobe {p}: {res[f'nprobe{p}/recall@10']:.3f}" for p in nprobes)),
        figure(f"ivfpq {size}x{d}: recall@10 by re-rank depth", res["recall@10"], goal=">= 0.95", n=queries,
               context=", ".join(f"{r}: {res[f'rerank{r}/recall@10']:.3f} at p50 {res[f'rerank{r}/p50_ms']:.1f} ms"
                                 for r in depths) + f" (automatic: {depth})"),
        figure(f"ivfpq {size}x{d}: build time", res["build_1_s"], unit="s",
               context=f"train {res['train_s']:.0f} s on {min(n, cfg.train_points)} vectors, then add all; "
                       f"split into {shards} shards: {res[f'split_{shards}_s']:.1f} s"),
        figure(f"{shards} shards vs 1: latency ratio", ratios.median, spread=ratios.iqr, n=ratios.n,
               context=f"{shards} shards p50 {s4.median:.2f} ms, p99 {res[f'{shards}_shards/p99_ms']:.2f} ms, "
                       f"recall@10 {res[f'{shards}_shards/recall@10']:.3f}; shard threads on 2 cores"),
        figure(f"{shards} shards (re-rank {max(k, depth // shards)} each) vs 1: latency ratio", ratios_l.median,
               spread=ratios_l.iqr, n=ratios_l.n,
               context=f"p50 {res[f'{shards}_shards_rerank_split/p50_ms']:.2f} ms, recall@10 "
                       f"{res[f'{shards}_shards_rerank_split/recall@10']:.3f}: the same total re-ranking as 1 index"),
    ]
    return res


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=100_000, help="vectors (the issue's target is 10000000)")
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--out", type=Path, help="JSON file rewritten after every stage (kept if the run is cut short)")
    ap.add_argument("--delete-items", action="store_true", help="delete the generated items file at the end")
    args = ap.parse_args()
    out = run(n=args.n, queries=args.queries, out=args.out, delete_items=args.delete_items)
    print(json.dumps({k: v for k, v in out.items() if k != "figures"}, indent=2, default=str))
