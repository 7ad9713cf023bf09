"""Moment-level ranking: a vector index over every window embedding, and moments inside a file.

A 3 s door slam in a 2 h field recording is 1/1440 of the file's mean embedding, so a ranking
of pooled clip vectors never finds it. Here each window is a searchable vector: a file scores
its best window (or the mean of its top ``m`` windows), and each hit lists its *moments*,
runs of adjacent windows scoring near the file's best, merged into spans and ranked.

The window vectors are derived data like ``vectors.faiss``: ``windows.npz`` holds the FAISS
index over all windows (built with :func:`earshot.index.vectors.build`, so any index type that
module offers serves windows too) and, per row, the file id and window number. It is written
atomically after the database and stamped with the database generation; a stale or missing
file (an index from before moments existed) is rebuilt in memory from the window embeddings
SQLite already holds, so old indexes open and search by window without re-indexing.

Filters restrict the search *before* top-k: a bitmap over rows (``faiss.IDSelectorBitmap``) is
handed to FAISS, so k results come back whenever k matching files exist.
"""

from __future__ import annotations

import io
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import faiss
import numpy as np

from earshot.errors import EarshotError
from earshot.index import vectors as V
from earshot.index.compressed import CompressedIndex
from earshot.index.integrity import WINDOWS_FILE, WINDOWS_RECORD, check_windows, record_windows
from earshot.index.sharded import ShardedIndex
from earshot.utils import atomic_write

log = logging.getLogger(__name__)

MOMENT_RHO = 0.25  # a window joins a moment when within 25% of the gap (file median -> best) of the best
MAX_MOMENTS = 5  # moments listed per hit


@dataclass(frozen=True)
class Moment:
    """A span of a file where the query matches: adjacent matching windows merged."""

    start: float  # seconds, start of the span's first window
    end: float  # seconds, end of its last window
    score: float  # the best window score inside the span
    peak_start: float  # seconds: start of that best window (where playback should begin)
    peak_end: float


def moments(starts: np.ndarray, ends: np.ndarray, scores: np.ndarray, rho: float = MOMENT_RHO,
            limit: int = MAX_MOMENTS) -> list[Moment]:
    """Spans of consecutive windows scoring at least ``best - rho * (best - median)``, best first.

    The threshold is relative to the file's own scores, because cosines of one model can sit
    anywhere in [-1, 1]: a window counts when it is nearly as good as the best, measured
    against how the file scores typically. A file that scores the same everywhere is one span.
    """
    if len(scores) == 0:
        return []
    best = float(np.max(scores))
    threshold = best - rho * (best - float(np.median(scores)))
    above = scores >= threshold - 1e-7  # (W,)
    spans: list[Moment] = []
    i, n = 0, len(scores)
    while i < n:
        if not above[i]:
            i += 1
            continue
        j = i
        while j + 1 < n and above[j + 1]:
            j += 1
        peak = i + int(np.argmax(scores[i:j + 1]))
        spans.append(Moment(float(starts[i]), float(ends[j]), float(scores[peak]),
                            float(starts[peak]), float(ends[peak])))
        i = j + 1
    spans.sort(key=lambda m: (-m.score, m.start))
    return spans[:limit]


def file_score(scores: np.ndarray, top_m: int) -> float:
    """A file's score from its window scores: the best window, or the mean of the top ``m``."""
    if top_m <= 1 or len(scores) == 1:
        return float(np.max(scores))
    m = min(top_m, len(scores))
    return float(np.mean(np.partition(scores, len(scores) - m)[-m:]))


class WindowVectors:
    """Every window embedding of an index, searchable; row r is window ``idx[r]`` of ``file_ids[r]``."""

    def __init__(self, index: faiss.Index, file_ids: np.ndarray, idx: np.ndarray):
        self.index = index
        self.file_ids = np.ascontiguousarray(file_ids, dtype=np.int64)  # (N,); -1: a removed row
        self.idx = np.ascontiguousarray(idx, dtype=np.int32)  # (N,)
        self._live = int((self.file_ids >= 0).sum())

    def __len__(self) -> int:
        """Windows that can be found (rows of removed files excluded)."""
        return self._live

    @property
    def kind(self) -> str:
        return V.kind_of(self.index)

    def nbytes(self) -> int:
        """Bytes the index and the row map occupy (as serialised; memory is the same to within
        FAISS's small per-object overhead)."""
        return int(V.nbytes(self.index) + self.file_ids.nbytes + self.idx.nbytes)

    # -- building and storing -------------------------------------------------------------------
    @classmethod
    def from_store(cls, conn, dim: int, cfg: V.VectorConfig = V.VectorConfig()) -> "WindowVectors":
        """Build from the window embeddings in an index database (``Store.conn``)."""
        file_ids, idx, vecs = _window_rows(conn, dim)
        return cls.build(vecs, file_ids, idx, cfg)

    @classmethod
    def build(cls, vecs: np.ndarray, file_ids: np.ndarray, idx: np.ndarray,
              cfg: V.VectorConfig = V.VectorConfig()) -> "WindowVectors":
        """Index ``vecs (N, D)``; the FAISS ids are row numbers, mapped back by ``file_ids``/``idx``.

        Any kind :func:`earshot.index.vectors.build` makes, the compressed (``ivfpq``) and
        sharded ones included: filters reach them through :func:`search_params`."""
        index = V.build(vecs, np.arange(len(vecs), dtype=np.int64), cfg)
        return cls(index, file_ids, idx)

    @staticmethod
    def kind_for(cfg: V.VectorConfig, n: int, dim: int) -> str:
        """The index type :meth:`build` makes for ``n`` windows (the file-level rule)."""
        return V.resolve_kind(cfg, n, dim)

    def patch(self, conn, dim: int, file_ids: np.ndarray) -> bool:
        """Bring the vectors to the files ``file_ids`` now in the database, in place: windows of
        files gone are removed from the FAISS index (their rows stay, marked -1, so row numbers
        keep their meaning), windows of new files are appended. False, and nothing changed, when
        FAISS cannot (HNSW) or so much changed (or lies dead) that a rebuild is due."""
        if not V.patchable(self.index):
            return False
        have = np.unique(self.file_ids[self.file_ids >= 0])
        gone = np.setdiff1d(have, file_ids, assume_unique=True)
        new = np.setdiff1d(file_ids, have, assume_unique=True)
        dead_rows = np.flatnonzero(np.isin(self.file_ids, gone))
        fids, idxs, vecs = _window_rows(conn, dim, new)
        dead_after = len(self.file_ids) - self._live + len(dead_rows)
        if len(dead_rows) + len(fids) > REBUILD_AFTER * max(self._live, 1) or dead_after > REBUILD_AFTER * (
                len(self.file_ids) + len(fids)):
            return False
        if len(dead_rows):
            self.index.remove_ids(faiss.IDSelectorBatch(len(dead_rows), faiss.swig_ptr(dead_rows)))
            self.file_ids[dead_rows] = -1
        if len(fids):
            rows = np.arange(len(self.file_ids), len(self.file_ids) + len(fids), dtype=np.int64)
            self.index.add_with_ids(vecs, rows)
            self.file_ids = np.concatenate([self.file_ids, fids])
            self.idx = np.concatenate([self.idx, idxs])
        self._live = int((self.file_ids >= 0).sum())
        return True

    def save(self, path: str | Path, generation: int) -> None:
        """Write atomically: a crash leaves the old file, never half a new one. The FAISS index
        is saved beside the ``.npz`` (``windows.faiss``, and the siblings of a compressed or
        sharded one, :func:`earshot.index.vectors.save`), streamed to disk, and named there; an
        ``.npz`` of an older earshot holding the index inside it still loads."""
        path = Path(path)
        side = path.with_suffix(".faiss")
        arrays = {"file_ids": self.file_ids, "idx": self.idx, "generation": np.int64(generation)}
        if isinstance(self.index, faiss.Index):
            for stale in path.parent.glob(side.name + ".*"):  # shards of a sharded index written before
                stale.unlink(missing_ok=True)
        V.save(self.index, side)
        arrays["vectors"] = np.array(side.name)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        with atomic_write(path) as f:
            f.write(buf.getvalue())

    @classmethod
    def load(cls, path: str | Path) -> tuple["WindowVectors", int]:
        """(vectors, the database generation they were built from)."""
        path = Path(path)
        try:
            with np.load(str(path)) as z:
                file_ids, idx, generation = z["file_ids"], z["idx"], int(z["generation"])
                index = (V.load(path.parent / str(z["vectors"])) if "vectors" in z.files
                         else faiss.deserialize_index(z["faiss"]))
        except (OSError, ValueError, KeyError, RuntimeError, zipfile.BadZipFile) as e:
            raise EarshotError(f"{path}: cannot read window vectors: {e}") from None
        live = int((file_ids >= 0).sum())  # rows of removed files stay, marked -1 (see patch)
        if index.ntotal != live:
            raise EarshotError(f"{path}: {index.ntotal} window vectors for {live} rows; "
                               "run earshot index again to rebuild them")
        return cls(index, file_ids, idx), generation

    # -- searching ------------------------------------------------------------------------------
    def rows_of(self, allowed_files: np.ndarray) -> np.ndarray:
        """Boolean (N,) mask of the rows belonging to ``allowed_files``."""
        return np.isin(self.file_ids, np.asarray(allowed_files, dtype=np.int64))

    def best_files(self, q: np.ndarray, n_files: int, allowed_files: np.ndarray | None = None
                   ) -> list[tuple[int, float]]:
        """The ``n_files`` files whose best window scores highest: [(file id, best score)].

        Asks FAISS for the top windows and widens the request until ``n_files`` distinct files
        appear (or every allowed window was seen). With exact search this is exactly the top
        files by best window: a file not yet seen has no window above the last one returned.
        """
        q = np.ascontiguousarray(np.asarray(q, dtype=np.float32).reshape(1, -1))
        mask = None if allowed_files is None else self.rows_of(allowed_files)
        total = len(self) if mask is None else int(mask.sum())
        if total == 0 or n_files < 1:
            return []
        params = None if mask is None else search_params(self.index, mask)
        want = min(total, max(4 * n_files, 64))
        while True:
            scores, rows = self.index.search(q, min(want, len(self)), params=params)
            best: dict[int, float] = {}
            for s, r in zip(scores[0], rows[0]):
                if r < 0:
                    continue
                fid = int(self.file_ids[r])
                if fid not in best:
                    best[fid] = float(s)
            got = int((rows[0] >= 0).sum())
            if len(best) >= n_files or want >= total or got < want:
                break
            want = min(total, want * 4)
        return sorted(best.items(), key=lambda t: -t[1])[:n_files]


REBUILD_AFTER = 0.2  # a patch touching (or leaving dead) more than this share of the windows rebuilds them


def _window_rows(conn, dim: int, file_ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(file ids (N,), window numbers (N,), embeddings (N, D)) of the windows in the database,
    of every file or of ``file_ids`` only, in (file, window) order; read in blocks."""
    fids, idxs, parts = [], [], []
    if file_ids is None:
        cursors = [conn.execute("SELECT file_id, idx, embedding FROM windows ORDER BY file_id, idx")]
    else:
        ids = [int(i) for i in np.sort(file_ids)]
        cursors = [conn.execute(f"SELECT file_id, idx, embedding FROM windows WHERE file_id IN "
                                f"({','.join('?' * len(ids[lo:lo + 900]))}) ORDER BY file_id, idx", ids[lo:lo + 900])
                   for lo in range(0, len(ids), 900)]  # SQLite's bound-parameter limit
    for cur in cursors:
        while rows := cur.fetchmany(65536):
            fids.append(np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows)))
            idxs.append(np.fromiter((r[1] for r in rows), dtype=np.int32, count=len(rows)))
            parts.append(np.frombuffer(b"".join(r[2] for r in rows), dtype=np.float32).reshape(len(rows), dim))
    return (np.concatenate(fids) if fids else np.zeros(0, dtype=np.int64),
            np.concatenate(idxs) if idxs else np.zeros(0, dtype=np.int32),
            np.concatenate(parts) if parts else np.zeros((0, dim), dtype=np.float32))


def search_params(index: faiss.Index, mask: np.ndarray) -> faiss.SearchParameters:
    """FAISS search parameters that only admit ids whose ``mask`` entry is true (ids are
    row numbers here), keeping the index's own query-time knobs (nprobe, efSearch)."""
    if isinstance(index, ShardedIndex):  # one set of parameters per shard, each of its own kind
        return [search_params(s, mask) for s in index.shards]
    if isinstance(index, CompressedIndex):
        return index.selection(mask=mask)
    bits = np.packbits(mask.astype(np.uint8), bitorder="little")
    sel = faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(bits))
    return _params(index, sel, bits)


def id_params(index: faiss.Index, allowed_ids: Sequence[int]) -> faiss.SearchParameters:
    """Search parameters admitting only the given external ids (for the pooled file index)."""
    if isinstance(index, ShardedIndex):
        return [id_params(s, allowed_ids) for s in index.shards]
    if isinstance(index, CompressedIndex):
        return index.selection(ids=np.asarray(allowed_ids, dtype=np.int64))
    ids = np.ascontiguousarray(np.asarray(allowed_ids, dtype=np.int64))
    sel = faiss.IDSelectorBatch(len(ids), faiss.swig_ptr(ids))
    return _params(index, sel, ids)


def _params(index: faiss.Index, sel: faiss.IDSelector, buffer: np.ndarray) -> faiss.SearchParameters:
    """Search parameters with selector ``sel`` for ``index``'s type, keeping its own query-time
    knobs (nprobe, efSearch); ``buffer`` (what ``sel`` reads during the search) stays alive
    with the parameters."""
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap) else index
    if isinstance(inner, faiss.IndexIVF):
        params = faiss.SearchParametersIVF(sel=sel, nprobe=inner.nprobe)
    elif isinstance(inner, faiss.IndexHNSW):
        params = faiss.SearchParametersHNSW(sel=sel, efSearch=inner.hnsw.efSearch)
    else:
        params = faiss.SearchParameters(sel=sel)
    params._keep = (buffer, sel)
    return params


def write_windows(store, dim: int, cfg: V.VectorConfig) -> str:
    """Bring ``windows.npz`` up to date with the database; return its index type.

    A file written for an older generation is patched (:meth:`WindowVectors.patch`: only the
    windows of new and removed files are touched) while its index type is still the one
    ``cfg`` picks for this many windows; otherwise, or if it cannot be read, it is rebuilt."""
    gen = store.generation()
    path = store.directory / WINDOWS_FILE
    damaged = path.is_file() and check_windows(store) is not None  # never patch or keep a wrong file
    if store.get_info("windows_generation") == gen and path.is_file() and not damaged:
        return str(store.get_info("windows_kind"))
    wv = None
    if path.is_file() and not damaged:
        try:
            old, _ = WindowVectors.load(path)
        except EarshotError:
            old = None
        n = store.conn.execute("SELECT COUNT(*) FROM windows").fetchone()[0]
        if old is not None and old.kind == WindowVectors.kind_for(cfg, n, dim) and old.patch(
                store.conn, dim, store.file_ids()):
            wv = old
    if wv is None:
        wv = WindowVectors.from_store(store.conn, dim, cfg)
    wv.save(path, gen)
    record_windows(store, gen)
    with store.transaction():
        store.set_info("windows_generation", gen)
        store.set_info("windows_kind", wv.kind)
    return wv.kind


def load_windows(store, dim: int, directory: Path) -> WindowVectors:
    """The window vectors on disk if they match the database, else rebuilt in memory."""
    path = directory / WINDOWS_FILE
    gen = store.generation()
    if path.is_file() and store.get_info("windows_generation") == gen:
        why = check_windows(store, directory)
        if why is None:
            wv, stamped = WindowVectors.load(path)
            if stamped == gen:
                return wv
        elif store.get_info(WINDOWS_RECORD) is not None:
            # damaged, another index's copy, or the folder rebuilt under a reader that still holds
            # the old database: never search with it; the windows this database holds are ranked
            # instead (right answers, built in memory), and the log says how to repair the file
            log.warning(
                "%s: not searched: %s; ranking windows from the database (%s)", path, why, store.repair_hint())
    # stale (an interrupted run), not this database's, or written by an older earshot (no
    # digest): rank from SQLite
    doc = store.get_info("vector_config") or {}
    return WindowVectors.from_store(store.conn, dim, V.VectorConfig(**doc))


def like_vector(store, file_id: int, dim: int, start: float | None = None) -> np.ndarray:
    """The query for "more like this": the window of ``file_id`` that contains ``start``
    seconds (the one starting closest before it), or the file's pooled embedding without one."""
    if start is None:
        vec = store.clip_vector(int(file_id), dim)
        if vec is None:
            raise EarshotError(f"no file with id {file_id} in this index")
        return vec
    starts, _, wins = store.windows(int(file_id), dim)
    if not len(wins):
        raise EarshotError(f"no file with id {file_id} in this index")
    if start < 0:
        raise EarshotError(f"start must be >= 0 seconds, got {start}")
    i = max(0, int(np.searchsorted(starts, start, side="right")) - 1)
    return wins[i].copy()
