"""How a search ranks a library: windows or pooled vectors, words, filters, and their fusion.

``Index.search`` and ``Index.search_vector`` come here. The order of work:

1. **Allowed files** (filters, "required" and -excluded words) are one SQL condition over
   ``files``; the ids it selects restrict both rankings *before* top-k.
2. **Meaning**: by default each file scores its best window (``ranking="windows"``,
   :mod:`earshot.index.moments`), or the mean of its top ``m`` windows; ``ranking="pooled"``
   is the old ranking by one mean vector per file.
3. **Words**: BM25 over names, folders and tags (:mod:`earshot.index.words`).
4. **Fusion** (``mode="hybrid"``, the default): reciprocal rank fusion, a file's fused score
   being ``sum over lists of 1 / (RRF_K + rank)``; ``RRF_K = 60`` is the constant of Cormack,
   Clarke and Büttcher (SIGIR 2009), also used by the ensemble's ``rrf`` rule. It needs no
   score calibration between cosines and BM25, which live on unrelated scales.
5. **Moments** of each returned file, from its stored window scores.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from earshot.errors import EarshotError
from earshot.index import moments as M
from earshot.index import words as W
from earshot.index.filters import Filter, compile_filter
from earshot.index.hits import Hit

# "Index" in annotations is earshot.index.search.Index, which imports this module (so not imported here).

Mode = Literal["hybrid", "meaning", "words"]
Ranking = Literal["windows", "pooled"]
MODES: tuple[str, ...] = ("hybrid", "meaning", "words")
RANKINGS: tuple[str, ...] = ("windows", "pooled")
RRF_K = 60  # reciprocal rank fusion constant (Cormack et al. 2009)
FUSE_DEPTH = 50  # at least this many of each list take part in the fusion


@dataclass(frozen=True)
class SearchOptions:
    """How to rank; the defaults are what a person searching a library wants."""

    k: int = 10  # results
    mode: Mode = "hybrid"  # hybrid = words and meaning fused; meaning = the model only; words = names/tags only
    ranking: Ranking = "windows"  # windows = a file scores its best window(s); pooled = its mean vector
    top_m: int = 1  # with windows: a file's score is the mean of its top m window scores
    filter: Filter = field(default_factory=Filter)  # --where / --folder
    moment_rho: float = M.MOMENT_RHO  # how close to the best a window must score to join a moment

    def __post_init__(self) -> None:
        if self.k < 1:
            raise EarshotError(f"k must be at least 1, got {self.k}")
        if self.mode not in MODES:
            raise EarshotError(f"mode {self.mode!r}: expected one of {', '.join(MODES)}")
        if self.ranking not in RANKINGS:
            raise EarshotError(f"ranking {self.ranking!r}: expected one of {', '.join(RANKINGS)}")
        if self.top_m < 1:
            raise EarshotError(f"top_m must be at least 1, got {self.top_m}")
        if not 0.0 <= self.moment_rho <= 1.0:
            raise EarshotError(f"moment_rho must be in [0, 1], got {self.moment_rho}")


def rrf(lists: list[list[tuple[int, float]]], k: int = RRF_K) -> list[tuple[int, float]]:
    """Reciprocal rank fusion of ranked [(id, score)] lists: [(id, fused score)], best first.

    Items with equal scores in a list share its best rank ("1224" ranking), so an arbitrary
    order among ties (many files named alike) does not decide the fusion. Ties in the fused
    score keep the order in which ids were first met.
    """
    fused: dict[int, float] = {}
    for ranked in lists:
        rank, prev = 0, None
        for pos, (item, score) in enumerate(ranked, start=1):
            if prev is None or score != prev:
                rank, prev = pos, score
            fused[item] = fused.get(item, 0.0) + 1.0 / (k + rank)
    return sorted(fused.items(), key=lambda t: -t[1])


def allowed_files(ix: "Index", opts: SearchOptions, query: W.Query | None) -> tuple[np.ndarray | None, str, list]:
    """(ids allowed or None for all, the SQL condition, its parameters)."""
    conn = ix._store.conn
    sql_f, p_f = compile_filter(opts.filter)
    sql_w, p_w = W.selection_sql(query) if query is not None else ("1", [])
    needs_words = sql_w != "1" or "FROM tags" in sql_f
    if needs_words and not W.has_words(conn):
        raise EarshotError(f"{ix.directory}: {W.UPGRADE}")
    if sql_f == "1" and sql_w == "1":
        return None, "1", []
    sql, params = f"({sql_f}) AND ({sql_w})", [*p_f, *p_w]
    ids = np.array([r[0] for r in conn.execute(f"SELECT id FROM files WHERE {sql} ORDER BY id", params)],
                   dtype=np.int64)
    return ids, sql, params


def search(ix: "Index", text: str | None, vector: np.ndarray | None, opts: SearchOptions) -> list["Hit"]:
    """Rank the index for a text query (parsed for "required" and -excluded words) and/or a
    query vector; see the module docstring for the steps."""

    query = W.parse_query(text) if text is not None else None
    mode = opts.mode if query is not None else "meaning"  # a vector alone has no words
    n = max(opts.k, FUSE_DEPTH) if mode == "hybrid" else opts.k
    with ix._lock:
        if len(ix) == 0 and ix._store.count() == 0:
            raise EarshotError(f"{ix.directory}: the index is empty (no file was indexed); "
                               "run `earshot index` on a folder with sounds")
        allowed, sql, params = allowed_files(ix, opts, query)
        if allowed is not None and len(allowed) == 0:
            return []
        meaning: list[tuple[int, float]] = []
        if mode != "words":
            if vector is None:
                raise EarshotError("a meaning search needs a query embedding")
            q = np.asarray(vector, dtype=np.float32).reshape(-1)
            if q.shape[0] != ix.settings.dim:
                raise EarshotError(f"query has dimension {q.shape[0]}, index has {ix.settings.dim}")
            meaning = _meaning(ix, q, n, allowed, opts)
        words: list[tuple[int, float]] = []
        if mode != "meaning" and query is not None:
            if mode == "words" or W.has_words(ix._store.conn):
                words = W.rank(ix._store.conn, query, n, sql, params,
                               min_score=W.EVIDENCE if mode == "hybrid" else float("-inf"))
        if mode == "hybrid":
            ranked = rrf([meaning, words])
            order, fused = [fid for fid, _ in ranked], dict(ranked)
        elif mode == "words":
            order, fused = [f for f, _ in words], {}
        else:
            order, fused = [f for f, _ in meaning], {}
        order = order[:opts.k]
        m_score, w_score = dict(meaning), dict(words)
        rows = ix._store.rows(order)
        hits = []
        for fid in order:
            row = rows.get(fid)
            if row is None:
                continue
            starts, ends, wins = ix._store.windows(fid, ix.settings.dim)
            if vector is not None and len(wins):
                w = wins @ q  # (W,)
                spans = M.moments(starts, ends, w, opts.moment_rho)
                best = int(np.argmax(w))
                win = (float(starts[best]), float(ends[best]), float(w[best]))
                score = m_score.get(fid)
                if score is None:  # found by words only: still say how well the sound matches
                    score = M.file_score(w, opts.top_m) if opts.ranking == "windows" else \
                        float(ix._store.clip_vector(fid, ix.settings.dim) @ q)
            else:
                spans = []
                win = (0.0, float(ends[0]) if len(ends) else row.duration, 0.0)
                score = w_score.get(fid, 0.0)
            hits.append(Hit(len(hits) + 1, float(score), fid, row.path, row.duration, *win,
                            moments=tuple(spans), words_score=w_score.get(fid), fused=fused.get(fid)))
    return hits


def _meaning(ix: "Index", q: np.ndarray, n: int, allowed: np.ndarray | None,
             opts: SearchOptions) -> list[tuple[int, float]]:
    """The ``n`` best files by the model: [(file id, score)], best first."""
    n_allowed = ix._store.count() if allowed is None else len(allowed)
    if opts.ranking == "pooled":
        found = _pooled(ix, q, n, allowed)
    else:
        wv = ix.window_vectors
        cands = wv.best_files(q, n if opts.top_m == 1 else max(3 * n, n + 20), allowed)
        if opts.top_m > 1:  # rescore the candidates exactly by their top-m mean
            rescored = []
            for fid, _ in cands:
                _, _, wins = ix._store.windows(fid, ix.settings.dim)
                if len(wins):
                    rescored.append((fid, M.file_score(wins @ q, opts.top_m)))
            cands = sorted(rescored, key=lambda t: -t[1])
        found = cands[:n]
    known = ix._store.rows([f for f, _ in found])
    kept = [(f, s) for f, s in found if f in known]
    if len(kept) < min(n, n_allowed):
        # Vectors lag the database (a re-index is writing) or an approximate index visited too
        # few cells: rank exactly from SQLite so n results still come back.
        kept = _exact(ix, q, n, allowed, opts)
    return kept


def _pooled(ix: "Index", q: np.ndarray, n: int, allowed: np.ndarray | None) -> list[tuple[int, float]]:
    index = ix._faiss
    if index.ntotal == 0:
        return []
    qq = q.reshape(1, -1)
    params = None if allowed is None else M.id_params(index, allowed)
    kk = max(1, min(n, index.ntotal))
    scores, ids = index.search(qq, kk, params=params) if params is not None else index.search(qq, kk)
    return [(int(i), float(s)) for s, i in zip(scores[0], ids[0]) if i >= 0]


def _exact(ix: "Index", q: np.ndarray, n: int, allowed: np.ndarray | None,
           opts: SearchOptions) -> list[tuple[int, float]]:
    """Exact ranking from the embeddings SQLite holds now (the fallback)."""
    conn = ix._store.conn
    allow = None if allowed is None else set(allowed.tolist())
    dim = ix.settings.dim
    scores: dict[int, float] = {}
    if opts.ranking == "pooled":
        ids, vecs = ix._store.clip_vectors(dim)
        for fid, s in zip(ids.tolist(), (vecs @ q).tolist()):
            if allow is None or fid in allow:
                scores[fid] = s
    else:
        per_file: dict[int, list[float]] = {}
        if allowed is None or len(allowed) > 50_000:
            cursors = [conn.execute("SELECT file_id, embedding FROM windows ORDER BY file_id, idx")]
        else:  # few files allowed: read only theirs
            chunks = [allowed[i:i + 500].tolist() for i in range(0, len(allowed), 500)]
            cursors = [conn.execute(f"SELECT file_id, embedding FROM windows WHERE file_id IN "
                                    f"({','.join('?' * len(c))}) ORDER BY file_id, idx", c) for c in chunks]
        for cur in cursors:
            while rows := cur.fetchmany(65536):
                fids = [r[0] for r in rows]
                s = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), dim) @ q
                for fid, v in zip(fids, s.tolist()):
                    if allow is None or fid in allow:
                        per_file.setdefault(fid, []).append(v)
        scores = {fid: M.file_score(np.array(v), opts.top_m) for fid, v in per_file.items()}
    return sorted(scores.items(), key=lambda t: (-t[1], t[0]))[:n]
