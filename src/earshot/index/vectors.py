"""FAISS inner-product search over clip embeddings: exact by default, HNSW or IVF when large.

Exact search (``IndexFlatIP``) is the reference and is used below ``auto_threshold`` items,
where it is already fast. Above it (or by choice) an approximate index is built: IVF-Flat
(k-means cells; quick to build, which matters because the vectors are rebuilt from SQLite after
every update; the default) or HNSW (no training, good latency/recall, much slower to build).
Hits come back as file ids, not row numbers: IVF stores the ids in its lists, the other kinds
are wrapped in ``IndexIDMap2``. Flat and IVF indexes can be patched in place (:func:`patchable`).

At scale (issue 22): ``ivfpq`` is the compressed index of :mod:`earshot.index.compressed` (OPQ +
IVF-PQ codes in RAM, exact re-ranking from the float vectors memory-mapped from disk), which
``auto`` picks once the float vectors alone would take ``compress_above_bytes`` of RAM (2 GB, about
10^6 vectors of 512 dims; IVF-Flat would hold all of them); ``shards > 1`` splits any kind into
shards searched in parallel and merged (:mod:`earshot.index.sharded`).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import faiss
import numpy as np

from earshot.errors import EarshotError
from earshot.index.integrity import remember_sha256
from earshot.utils import atomic_write

IndexKind = Literal["auto", "flat", "hnsw", "ivf", "ivfpq"]
KINDS: tuple[str, ...] = ("auto", "flat", "hnsw", "ivf", "ivfpq")


@dataclass(frozen=True)
class VectorConfig:
    kind: IndexKind = "auto"  # flat = exact; auto = flat below auto_threshold items, else ivf
    auto_threshold: int = 100_000  # items from which "auto" switches to an approximate index
    hnsw_m: int = 32  # HNSW graph degree: higher = better recall, more memory
    hnsw_ef_construction: int = 80  # HNSW build-time beam width
    hnsw_ef_search: int = 96  # HNSW query-time beam width (recall vs latency)
    ivf_nprobe: int = 32  # IVF cells visited per query (recall vs latency)
    ivf_cells: int = 0  # IVF cells; 0 = 2·sqrt(N) (ivfpq: sqrt(N)), clamped so each cell gets >= 39 training points
    compress_above_bytes: int = 2_000_000_000  # "auto" picks ivfpq once N x D float32 vectors reach this (2 GB)
    pq_bytes: int = 48  # ivfpq: code bytes per vector (plus FAISS's 8-byte id)
    pq_rerank: int = 0  # ivfpq: candidates re-ranked exactly from the floats on disk; 0 = max(256, N // 8192)
    shards: int = 1  # split the vectors into this many shards, searched in parallel and merged

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise EarshotError(f"index type {self.kind!r}: expected one of {', '.join(KINDS)}")
        if self.shards < 1 or self.pq_bytes < 1 or self.pq_rerank < 0:
            raise EarshotError("vector index: shards and pq_bytes must be >= 1, pq_rerank >= 0 (0 = automatic)")


def _pq(cfg: VectorConfig):
    from earshot.index.compressed import PQConfig

    return PQConfig(pq_bytes=cfg.pq_bytes, cells=cfg.ivf_cells, nprobe=cfg.ivf_nprobe, rerank=cfg.pq_rerank)


def resolve_kind(cfg: VectorConfig, n: int, dim: int = 0) -> str:
    """The concrete index type for ``n`` items of ``dim`` dimensions under ``cfg`` (never "auto")."""
    if cfg.kind != "auto":
        return cfg.kind
    if n < cfg.auto_threshold:
        return "flat"
    return "ivfpq" if n * dim * 4 >= cfg.compress_above_bytes else "ivf"


def describe(cfg: VectorConfig, n: int, dim: int) -> str:
    """What :func:`build` makes: the kind, and the shard count when sharded ("ivfpq x4")."""
    kind = resolve_kind(cfg, n, dim)
    return kind if cfg.shards == 1 else f"{kind} x{cfg.shards}"


def build(vectors: np.ndarray, ids: np.ndarray, cfg: VectorConfig = VectorConfig()) -> faiss.Index:
    """A searchable FAISS index over ``vectors (N, D)`` whose hits carry ``ids (N,)``."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    if vectors.ndim != 2 or len(vectors) != len(ids):
        raise EarshotError(f"need (N, D) vectors and N ids, got {vectors.shape} and {ids.shape}")
    n, d = vectors.shape
    kind = resolve_kind(cfg, n, d)
    if cfg.shards > 1 and n > 0:
        from dataclasses import replace

        from earshot.index.sharded import ShardedIndex

        one = replace(cfg, kind=kind, shards=1)  # every shard of the kind the whole would get
        if kind == "ivfpq":  # trained once on a sample of all vectors; each shard only adds its own
            from earshot.index.compressed import CompressedIndex

            trained = CompressedIndex.train(vectors, _pq(cfg))
            return ShardedIndex.build(vectors, ids, cfg.shards, trained.filled)
        return ShardedIndex.build(vectors, ids, cfg.shards, lambda v, i: build(v, i, one))
    if kind == "ivfpq" and n > 0:
        from earshot.index.compressed import CompressedIndex

        return CompressedIndex.build(vectors, ids, _pq(cfg))
    if kind == "hnsw" and n > 0:
        inner = faiss.IndexHNSWFlat(d, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        inner.hnsw.efConstruction = cfg.hnsw_ef_construction
        inner.hnsw.efSearch = cfg.hnsw_ef_search
    elif kind == "ivf" and n > 0:
        cells = cfg.ivf_cells or int(2 * math.sqrt(n))
        cells = max(1, min(cells, n // 39 or 1))
        quantizer = faiss.IndexFlatIP(d)
        inner = faiss.IndexIVFFlat(quantizer, d, cells, faiss.METRIC_INNER_PRODUCT)
        # k-means on at most 64 points per cell: more adds build time, hardly any recall
        cap = 64 * cells
        sample = vectors if n <= cap else vectors[np.random.default_rng(0).choice(n, cap, replace=False)]
        inner.train(sample)
        inner.nprobe = min(cfg.ivf_nprobe, cells)
        # IVF keeps ids in its own lists: no ID map, so ``remove_ids`` works in place (through
        # ``IndexIDMap2`` it would renumber the map but not the lists)
        if n:
            inner.add_with_ids(vectors, ids)
        return inner
    else:
        inner = faiss.IndexFlatIP(d)
    index = faiss.IndexIDMap2(inner)  # the SWIG wrapper keeps ``inner`` alive
    if n:
        index.add_with_ids(vectors, ids)
    return index


def kind_of(index: faiss.Index) -> str:
    """"flat", "hnsw", "ivf" or "ivfpq": what an index (possibly read from disk) does."""
    from earshot.index.compressed import CompressedIndex
    from earshot.index.sharded import ShardedIndex

    if isinstance(index, ShardedIndex):
        return kind_of(index.shards[0])
    if isinstance(index, CompressedIndex):
        return "ivfpq"
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap) else index
    if isinstance(inner, faiss.IndexHNSW):
        return "hnsw"
    if isinstance(inner, faiss.IndexIVF):
        return "ivf"
    return "flat"


def nbytes(index) -> int:
    """Bytes an index built here holds (as serialised; the compressed kind counts its training
    once however many shards share it, not the float vectors it reads from disk)."""
    from earshot.index.compressed import CompressedIndex, shared_training
    from earshot.index.sharded import ShardedIndex

    if isinstance(index, ShardedIndex):
        if shared_training(index.shards) is not None:
            return index.shards[0].training_bytes() + sum(s.code_bytes() for s in index.shards)
        return sum(nbytes(s) for s in index.shards)
    if isinstance(index, CompressedIndex):
        return index.nbytes_in_ram()
    return int(faiss.serialize_index(index).nbytes)


def patchable(index) -> bool:
    """Whether ``index`` can take ``remove_ids``/``add_with_ids`` in place (an ID-mapped flat or
    IVF index as :func:`build` makes them); HNSW cannot remove, and the compressed and sharded
    kinds are rebuilt whole."""
    if isinstance(index, faiss.IndexIVF):
        return True
    if not isinstance(index, faiss.IndexIDMap2):
        return False
    return isinstance(faiss.downcast_index(index.index), faiss.IndexFlat)


def ids_of(index: faiss.Index) -> np.ndarray:
    """The ids a :func:`patchable` index holds (any order)."""
    if isinstance(index, faiss.IndexIDMap):
        return faiss.vector_to_array(index.id_map).astype(np.int64)
    lists = index.invlists
    parts = [faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy()
             for i in range(index.nlist) if lists.list_size(i)]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)


def search(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores (Q, k), ids (Q, k)); missing hits (fewer than k items) have id -1 and are dropped
    by callers."""
    q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
    k = max(1, min(int(k), max(index.ntotal, 1)))
    return index.search(q, k)


def save(index: faiss.Index, path: str | Path) -> None:
    """Write an index atomically: a crash leaves the previous file, never half of a new one."""
    from earshot.index.compressed import CompressedIndex
    from earshot.index.sharded import ShardedIndex

    if isinstance(index, ShardedIndex):
        from earshot.index.compressed import shared_training

        if shared_training(index.shards) is not None:  # trained once: the training stored once
            index.save(path, lambda s, p: s.save(p, codes_only=True), common=index.shards[0].save_training)
        else:
            index.save(path, save)
        return
    if isinstance(index, CompressedIndex):
        index.save(path)
        return
    # streamed straight into the file (no serialised copy in memory) and hashed on the way, so
    # the integrity record written next does not read the file back
    digest = hashlib.sha256()
    with atomic_write(path) as f:
        def sink(chunk: bytes) -> None:
            f.write(chunk)
            digest.update(chunk)

        writer = faiss.PyCallbackIOWriter(sink)
        faiss.write_index(index, writer)
        del writer  # the writer buffers; its destructor sends the last block, before the fsync
    remember_sha256(Path(path), digest.hexdigest())


def _shard_loader(ef_search: int | None, nprobe: int | None):
    """Reads one shard of a manifest: a whole index, or compressed codes over the common
    training (deserialised once and shared by every shard)."""
    from earshot.index import compressed

    trainings: dict[Path, faiss.Index] = {}

    def one(path: Path, common: Path | None):
        if common is None:
            return load(path, ef_search, nprobe)
        if common not in trainings:
            try:
                trainings[common] = faiss.deserialize_index(np.fromfile(str(common), dtype=np.uint8))
            except (OSError, RuntimeError) as e:
                raise EarshotError(f"{common}: cannot read the shards' common training: {e}") from None
        shard = compressed.CompressedIndex.from_codes(trainings[common], path)
        if nprobe is not None:
            shard.set_nprobe(nprobe)
        return shard

    return one


def load(path: str | Path, ef_search: int | None = None, nprobe: int | None = None) -> faiss.Index:
    """Read an index written by :func:`save`; query-time knobs can be changed on the way in."""
    from earshot.index import compressed, sharded

    try:
        if sharded.is_manifest(path):
            return sharded.ShardedIndex.load(path, _shard_loader(ef_search, nprobe))
        index = faiss.read_index(str(path))  # straight from the file, no copy of it in memory
    except (OSError, RuntimeError) as e:
        raise EarshotError(f"{path}: cannot read FAISS index: {e}") from None
    if compressed.is_compressed(index):
        ci = compressed.CompressedIndex.from_faiss(index, path)
        if nprobe is not None:
            ci.set_nprobe(nprobe)
        return ci
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap) else index
    if ef_search is not None and isinstance(inner, faiss.IndexHNSW):
        inner.hnsw.efSearch = ef_search
    if nprobe is not None and isinstance(inner, faiss.IndexIVF):
        inner.nprobe = nprobe
    return index
