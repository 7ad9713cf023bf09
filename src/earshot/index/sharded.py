"""An index made of several shards, searched in parallel and merged: equal to one index on the same vectors.

Each shard is any index earshot builds (exact, IVF, HNSW or the compressed IVF-PQ of
:mod:`earshot.index.compressed`) over a contiguous slice of the vectors. A query goes to every
shard at once (threads: FAISS releases the GIL while it searches), each returns its own top k,
and the merge keeps the k best of the S·k by score (ties by id, so the order is deterministic).
For exact shards this is exactly the global top k: the k best overall are each among the k best
of their own shard. Shards let a collection grow past one machine's RAM or one FAISS file, and
a Ray run's shards become the index's shards without re-training one big index.

On disk the index file is a small JSON manifest naming one file per shard beside it, and a
``common`` file holding what the shards share (compressed shards: one training, stored once).
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from earshot.errors import EarshotError
from earshot.utils import atomic_write

MANIFEST_FORMAT = "earshot.vector-shards/1"


def split(n: int, shards: int) -> list[tuple[int, int]]:
    """``shards`` contiguous [lo, hi) row ranges covering 0..n, sizes differing by at most one."""
    if shards < 1:
        raise EarshotError(f"shards must be >= 1, got {shards}")
    edges = [n * s // shards for s in range(shards + 1)]
    return [(edges[s], edges[s + 1]) for s in range(shards) if edges[s + 1] > edges[s]]


def merge(parts: Sequence[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-shard (scores (Q, k_s), ids (Q, k_s)) -> the global top k: (scores (Q, k), ids (Q, k))."""
    scores = np.concatenate([np.asarray(s, dtype=np.float32) for s, _ in parts], axis=1)  # (Q, S·k)
    ids = np.concatenate([np.asarray(i, dtype=np.int64) for _, i in parts], axis=1)
    scores = np.where(ids < 0, -np.inf, scores)  # a shard's missing hits never win
    order = np.lexsort((ids, -scores), axis=1)[:, :k]  # by score descending, then id
    top_s = np.take_along_axis(scores, order, axis=1)
    top_i = np.take_along_axis(ids, order, axis=1)
    if top_s.shape[1] < k:  # fewer than k vectors in all shards together
        pad = k - top_s.shape[1]
        top_s = np.pad(top_s, ((0, 0), (0, pad)), constant_values=-np.inf)
        top_i = np.pad(top_i, ((0, 0), (0, pad)), constant_values=-1)
    return top_s, np.where(np.isfinite(top_s), top_i, -1)


class ShardedIndex:
    """Several indexes searched as one (``ntotal``, ``search(q, k)`` like a FAISS index)."""

    def __init__(self, shards: Sequence[Any], threads: int = 0):
        if not shards:
            raise EarshotError("a sharded index needs at least one shard")
        self.shards = list(shards)
        self._pool = ThreadPoolExecutor(max_workers=threads or len(self.shards), thread_name_prefix="earshot-shard")

    @property
    def ntotal(self) -> int:
        return sum(int(s.ntotal) for s in self.shards)

    @property
    def d(self) -> int:
        return int(self.shards[0].d)

    @classmethod
    def build(cls, vectors: np.ndarray, ids: np.ndarray, shards: int,
              build_one: Callable[[np.ndarray, np.ndarray], Any]) -> "ShardedIndex":
        """Split ``vectors (N, D)`` / ``ids (N,)`` into contiguous shards, build each with ``build_one``."""
        return cls([build_one(vectors[lo:hi], ids[lo:hi]) for lo, hi in split(len(ids), shards)])

    def search(self, queries: np.ndarray, k: int, params: Sequence[Any] | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """The global top k; ``params`` (one per shard, each the kind its shard takes) restricts
        every shard to the allowed vectors, so filters apply before top-k as in one index."""
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        k = max(1, int(k))
        if params is not None and len(params) != len(self.shards):
            raise EarshotError(f"sharded search: {len(params)} search parameters for {len(self.shards)} shards")
        futures = []
        for i, s in enumerate(self.shards):
            kk = min(k, max(1, int(s.ntotal)))
            extra = {} if params is None else {"params": params[i]}
            futures.append(self._pool.submit(s.search, q, kk, **extra))
        return merge([f.result() for f in futures], k)

    def save(self, path: str | Path, save_one: Callable[[Any, Path], None],
             common: Callable[[Path], None] | None = None) -> None:
        """Each shard to ``<path>.s<i>`` (with ``save_one``), then the manifest to ``path``.
        ``common`` writes what every shard shares (a compressed index's training) once, to
        ``<path>.common``; the manifest names it and :meth:`load` hands it to every shard."""
        path = Path(path)
        doc: dict[str, Any] = {"format": MANIFEST_FORMAT}
        if common is not None:
            doc["common"] = f"{path.name}.common"
            common(path.parent / doc["common"])
        names = []
        for i, shard in enumerate(self.shards):
            name = f"{path.name}.s{i}"
            save_one(shard, path.parent / name)
            names.append(name)
        doc["shards"] = names
        with atomic_write(path, "w") as f:
            json.dump(doc, f)

    @classmethod
    def load(cls, path: str | Path, load_one: Callable[[Path, Path | None], Any]) -> "ShardedIndex":
        """Read a manifest written by :meth:`save`: ``load_one(shard file, common file or None)``."""
        path = Path(path)
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise EarshotError(f"{path}: cannot read the shard manifest: {e}") from None
        if doc.get("format") != MANIFEST_FORMAT:
            raise EarshotError(f"{path}: shard manifest format {doc.get('format')!r}, expected {MANIFEST_FORMAT}")
        common = path.parent / doc["common"] if doc.get("common") else None
        return cls([load_one(path.parent / name, common) for name in doc["shards"]])


def is_manifest(path: str | Path) -> bool:
    """Whether the index file at ``path`` is a shard manifest (JSON) rather than a FAISS file."""
    with open(path, "rb") as f:
        return f.read(1) == b"{"
