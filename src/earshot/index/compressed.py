"""A compressed vector index for 10^6-10^9 vectors: OPQ + IVF-PQ in RAM, exact re-ranking from disk.

Why: IVF-Flat keeps every float (2 KiB per 512-d vector; 20 GiB at 10^7), so above a few
million vectors the index no longer fits beside the model. Here each vector costs ``pq_bytes``
bytes of product-quantisation code plus FAISS's 8-byte id in its inverted list (56 B at the
default 48), and the float vectors stay in one ``.npy`` file on disk, memory-mapped. A query

1. rotates the query with the trained OPQ matrix (which balances variance across the PQ
   sub-spaces, so the codes lose less), visits ``nprobe`` IVF cells and ranks their codes by
   approximate inner product, keeping the best ``rerank`` candidates (by default a depth that
   grows with the index, :func:`rerank_depth`);
2. reads those candidates' float vectors from the memory-mapped file (sorted by row, so reads
   are in file order) and ranks them exactly; the top k of the exact scores are returned.

So the scores returned are exact inner products; only which candidates reach step 2 is
approximate (recall against exact search is measured in ``benchmarks/bench_scale.py``).
Training (OPQ, k-means, PQ codebooks) uses a sample of at most ``train_points`` vectors.

On disk beside the FAISS file ``P`` (which holds the OPQ + IVF-PQ index over row numbers):
``P.floats.npy`` (N, D) float32, ``P.ids.npy`` (N,) int64 (row -> file id) and ``P.pq.json``.
Shards of one collection are trained once and share that training in RAM (the coarse quantizer
and the OPQ matrix are the same objects) and on disk (one training file; each shard file holds
only its inverted lists), so a shard adds only its codes and ids.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from earshot.errors import EarshotError
from earshot.utils import atomic_write

FLOATS_SUFFIX = ".floats.npy"
IDS_SUFFIX = ".ids.npy"
META_SUFFIX = ".pq.json"  # query-time settings that FAISS does not store (re-rank depth)


@dataclass(frozen=True)
class PQConfig:
    pq_bytes: int = 48  # PQ sub-quantisers (1 byte each): 48 -> 56 B/vector with FAISS's id
    cells: int = 0  # IVF cells; 0 = sqrt(N) rounded to a power of two (1024 at 10^6, 4096 at 10^7)
    nprobe: int = 32  # cells visited per query
    rerank: int = 0  # candidates re-ranked exactly from the float vectors; 0 = grows with N (rerank_depth)
    train_points: int = 65536  # training sample size (OPQ, IVF k-means, PQ codebooks)
    opq: bool = True  # learn a rotation before PQ (helps anisotropic embeddings)
    opq_iterations: int = 8  # OPQ's alternations (FAISS's 50 buys little on embeddings, costs most of training)
    opq_train_points: int = 16384  # OPQ's rotation is learnt on at most this many of the training vectors

    def __post_init__(self) -> None:
        if self.pq_bytes < 1 or self.nprobe < 1 or self.train_points < 1 or self.cells < 0 or self.rerank < 0:
            raise EarshotError("ivfpq: pq_bytes, nprobe and train_points must be >= 1, cells and rerank >= 0")


RERANK_MIN = 256  # the automatic re-rank depth's floor (recall@10 >= 0.997 at 10^5 and 10^6)
RERANK_PER = 8192  # ... and one re-ranked candidate per this many vectors above it (1,220 at 10^7)


def rerank_depth(rerank: int, n: int, k: int) -> int:
    """Candidates re-ranked exactly for a top ``k`` from ``n`` vectors: ``rerank`` when set, else
    ``max(256, n // 8192)``. The approximate (PQ) ranking misplaces more true neighbours the denser
    the index, so a fixed depth loses recall as N grows: at 10^7 vectors 256 gave recall@10 0.70
    and 1,024 gave 0.95 (benchmarks/RESULTS.md). Never below ``k``."""
    depth = rerank if rerank > 0 else max(RERANK_MIN, n // RERANK_PER)
    return max(int(k), depth)


def layout(n: int, d: int, cfg: PQConfig) -> tuple[int, int, int]:
    """(IVF cells, PQ sub-quantisers m, rotated dimension d2, a multiple of m and <= d).

    Without OPQ (asked for, or too few vectors to train its 256-centroid sub-quantisers), m is
    the largest divisor of d not above ``pq_bytes``, so no transform is needed.
    """
    if use_opq(n, cfg):
        m = max(1, min(cfg.pq_bytes, d))
        d2 = m * (d // m)
    else:
        m = max(x for x in range(1, min(cfg.pq_bytes, d) + 1) if d % x == 0)
        d2 = d
    cells = cfg.cells or 2 ** max(0, round(math.log2(max(1.0, math.sqrt(n)))))
    cells = max(1, min(cells, n // 39 or 1))  # k-means wants >= 39 points per cell
    return cells, m, d2


def use_opq(n: int, cfg: PQConfig) -> bool:
    return cfg.opq and n >= 256  # OPQ trains 256-centroid sub-quantisers whatever the code size


class CompressedIndex:
    """OPQ + IVF-PQ candidates, exact re-ranking from (memory-mapped) float vectors.

    Quacks like the FAISS indexes earshot uses: ``ntotal`` and ``search(q (Q, D), k) ->
    (scores (Q, k), ids (Q, k))`` with id -1 for a missing hit.
    """

    def __init__(self, index: faiss.Index, floats: np.ndarray, ids: np.ndarray, rerank: int,
                 training: faiss.Index | None = None):
        self.index = index  # over row numbers 0..N-1
        self.floats = floats  # (N, D) float32, an np.memmap when loaded from disk
        self.ids = ids  # (N,) int64
        self.rerank = rerank
        # the index whose rotation, cells and codebooks this one uses (itself unless it was filled
        # from a shared training): shards of one collection hold them once, in RAM and on disk
        self.training = index if training is None else training

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def d(self) -> int:
        return int(self.index.d)

    @property
    def ivf(self) -> faiss.IndexIVF:
        return faiss.extract_index_ivf(self.index)

    @classmethod
    def build(cls, vectors: np.ndarray, ids: np.ndarray, cfg: PQConfig = PQConfig(), chunk: int = 65536,
              seed: int = 0) -> "CompressedIndex":
        """Train on a sample of ``vectors (N, D)`` (an array or a memmap), then add all of them
        in chunks (so a memmap is never read whole into RAM)."""
        if len(ids) != len(vectors):
            raise EarshotError(f"ivfpq: {len(vectors)} vectors but {len(ids)} ids")
        return cls.train(vectors, cfg, seed).filled(vectors, ids, chunk)

    @classmethod
    def train(cls, vectors: np.ndarray, cfg: PQConfig = PQConfig(), seed: int = 0) -> "CompressedIndex":
        """An empty index trained on a sample of ``vectors (N, D)``; sized (cells) for N vectors."""
        n, d = vectors.shape
        if n == 0:
            raise EarshotError("ivfpq: no vectors to index")
        cells, m, d2 = layout(n, d, cfg)
        nbits = 8 if n >= 256 * 39 else max(1, int(math.log2(max(2, n // 39))))  # small sets: fewer centroids
        quantizer = faiss.IndexFlatIP(d2)
        ivfpq = faiss.IndexIVFPQ(quantizer, d2, cells, m, nbits, faiss.METRIC_INNER_PRODUCT)
        if use_opq(n, cfg):
            opq = faiss.OPQMatrix(d, m, d2)
            opq.niter = cfg.opq_iterations
            opq.niter_pq_0 = 4  # FAISS's first alternation runs 40 k-means rounds; 4 is as good a start here
            opq.max_train_points = cfg.opq_train_points
            index: faiss.Index = faiss.IndexPreTransform(opq, ivfpq)
        else:
            index = ivfpq
        take = min(n, cfg.train_points)
        rows = np.sort(np.random.default_rng(seed).choice(n, take, replace=False)) if take < n else np.arange(n)
        index.train(np.ascontiguousarray(vectors[rows], dtype=np.float32))
        faiss.extract_index_ivf(index).nprobe = min(cfg.nprobe, cells)
        return cls(index, np.zeros((0, d), np.float32), np.zeros(0, np.int64), cfg.rerank)

    def filled(self, vectors: np.ndarray, ids: np.ndarray, chunk: int = 65536) -> "CompressedIndex":
        """A new index with this one's training (rotation, cells, codebooks) holding ``vectors``
        instead: shards of one collection share one training, so only adding costs per shard."""
        if len(vectors) != len(ids) or vectors.shape[1] != self.d:
            raise EarshotError(f"ivfpq: need (N, {self.d}) vectors and N ids, got {vectors.shape} and {len(ids)}")
        index = self._empty_sharing()
        for lo in range(0, len(vectors), chunk):
            index.add(np.ascontiguousarray(vectors[lo : lo + chunk], dtype=np.float32))
        return CompressedIndex(index, vectors, np.ascontiguousarray(ids, dtype=np.int64), self.rerank, self.training)

    def subset(self, lo: int, hi: int) -> "CompressedIndex":
        """A shard holding rows [lo, hi) of this index, without re-encoding: its inverted lists
        are copied (FAISS ``copy_subset_to`` by id range) and it shares this index's float
        vectors, ids and training, so splitting a built index into shards costs a copy of its codes."""
        index = self._empty_sharing()
        ivf = faiss.extract_index_ivf(index)
        self.ivf.copy_subset_to(ivf, 0, int(lo), int(hi))  # 0 = InvertedLists::SUBSET_TYPE_ID_RANGE
        index.ntotal = ivf.ntotal  # the pre-transform wrapper keeps its own count
        return CompressedIndex(index, self.floats, self.ids, self.rerank, self.training)

    def _empty_sharing(self) -> faiss.Index:
        """An empty index using this one's trained parts *by reference*: the coarse quantizer
        (the cells' centroids) and the OPQ rotation are shared objects, the PQ codebooks (256
        centroids per sub-quantiser, <= 0.5 MB) are copied; only codes and ids are its own.
        ``self.training`` must stay alive as long as the new index (the callers keep it)."""
        src = faiss.downcast_index(faiss.extract_index_ivf(self.training))  # IndexIVFPQ
        ivf = faiss.IndexIVFPQ(src.quantizer, src.d, src.nlist, src.pq.M, src.pq.nbits, src.metric_type)
        ivf.pq = src.pq  # a copy of the codebooks
        ivf.by_residual = src.by_residual
        ivf.is_trained = True
        ivf.nprobe = self.ivf.nprobe
        outer = faiss.downcast_index(self.training)
        if isinstance(outer, faiss.IndexPreTransform):
            return faiss.IndexPreTransform(outer.chain.at(0), ivf)  # FAISS's wrapper keeps both referenced
        return ivf

    def set_nprobe(self, nprobe: int) -> None:
        self.ivf.nprobe = max(1, min(int(nprobe), self.ivf.nlist))

    def selection(self, mask: np.ndarray | None = None, ids: np.ndarray | None = None) -> faiss.SearchParameters:
        """Search parameters admitting only some vectors, by their external ids: ``mask`` (a
        boolean array indexed by id) or ``ids`` (the allowed ids). FAISS sees row numbers here,
        so the allowed rows become a bitmap; the index's nprobe is kept."""
        if mask is not None:
            mask = np.asarray(mask, dtype=bool)
            keep = np.zeros(len(self.ids), dtype=bool)
            inside = self.ids < len(mask)
            keep[inside] = mask[self.ids[inside]]
        else:
            keep = np.isin(self.ids, np.asarray(ids if ids is not None else [], dtype=np.int64))
        bits = np.packbits(keep.astype(np.uint8), bitorder="little")
        sel = faiss.IDSelectorBitmap(len(keep), faiss.swig_ptr(bits))
        params = faiss.SearchParametersIVF(sel=sel, nprobe=self.ivf.nprobe)
        params._keep = (bits, sel)  # what the selector reads lives as long as the parameters
        return params

    def search(self, queries: np.ndarray, k: int, params: faiss.SearchParameters | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` by exact inner product among the re-ranked candidates; ``params`` from
        :meth:`selection` restricts them to the allowed vectors."""
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)  # (Q, D)
        k = max(1, int(k))
        depth = rerank_depth(self.rerank, self.ntotal, k)
        _, cand = self.index.search(q, depth, params=params) if params is not None else self.index.search(q, depth)
        scores = np.full((len(q), k), -np.inf, dtype=np.float32)
        ids = np.full((len(q), k), -1, dtype=np.int64)
        for i, row in enumerate(cand):
            rows = np.unique(row[row >= 0])  # sorted: the memmap is read in file order
            if rows.size == 0:
                continue
            exact = np.asarray(self.floats[rows], dtype=np.float32) @ q[i]  # (R,)
            top = np.argsort(-exact, kind="stable")[:k]
            scores[i, : len(top)] = exact[top]
            ids[i, : len(top)] = self.ids[rows[top]]
        return scores, ids

    # -- files -----------------------------------------------------------------------------------
    def save(self, path: str | Path, codes_only: bool = False) -> None:
        """The FAISS file at ``path`` and its siblings, each written atomically. With
        ``codes_only`` the file holds only the inverted lists (codes and row numbers): a shard
        whose training is saved once for all shards (:meth:`save_training`, :meth:`from_codes`)."""
        path = Path(path)
        for suffix, array in ((FLOATS_SUFFIX, self.floats), (IDS_SUFFIX, self.ids)):
            target = Path(str(path) + suffix)
            if isinstance(array, np.memmap) and Path(array.filename).resolve() == target.resolve():
                continue  # already that file
            with atomic_write(target) as f:
                np.lib.format.write_array(f, np.ascontiguousarray(array))
        with atomic_write(Path(str(path) + META_SUFFIX), "w") as f:
            json.dump({"rerank": self.rerank}, f)
        if codes_only:
            writer = faiss.VectorIOWriter()
            faiss.write_InvertedLists(self.ivf.invlists, writer)
            data = faiss.vector_to_array(writer.data)
        else:
            data = faiss.serialize_index(self.index)
        with atomic_write(path) as f:
            f.write(data.tobytes())

    def save_training(self, path: str | Path) -> None:
        """The rotation, cells and codebooks alone (an empty index), atomically: what the shards
        saved with ``codes_only`` share."""
        data = faiss.serialize_index(self._empty_sharing())
        with atomic_write(Path(path)) as f:
            f.write(data.tobytes())

    @classmethod
    def from_codes(cls, training: faiss.Index, path: str | Path) -> "CompressedIndex":
        """A shard saved with ``codes_only``: its inverted lists read from ``path`` into an index
        sharing ``training`` (read once for all shards), with its floats, ids and re-rank depth."""
        try:
            reader = faiss.VectorIOReader()
            faiss.copy_array_to_vector(np.fromfile(str(path), dtype=np.uint8), reader.data)
            lists = faiss.read_InvertedLists(reader)
        except (OSError, RuntimeError) as e:
            raise EarshotError(f"{path}: cannot read the shard's codes: {e}") from None
        shell = cls(training, np.zeros((0, training.d), np.float32), np.zeros(0, np.int64), 1)
        index = shell._empty_sharing()
        ivf = faiss.extract_index_ivf(index)
        if lists.nlist != ivf.nlist or lists.code_size != ivf.code_size:
            raise EarshotError(f"{path}: codes for {lists.nlist} cells of {lists.code_size} B, the shared "
                               f"training has {ivf.nlist} of {ivf.code_size} B; rebuild the index")
        ivf.replace_invlists(lists, True)
        lists.this.disown()  # the index owns the lists now
        ivf.ntotal = sum(lists.list_size(i) for i in range(lists.nlist))
        index.ntotal = ivf.ntotal
        loaded = cls.from_faiss(index, path)
        loaded.training = training
        return loaded

    @classmethod
    def from_faiss(cls, index: faiss.Index, path: str | Path) -> "CompressedIndex":
        """Attach the float vectors, ids and re-rank depth saved beside ``path`` to its deserialised index."""
        try:
            floats = np.load(str(path) + FLOATS_SUFFIX, mmap_mode="r")
            ids = np.load(str(path) + IDS_SUFFIX, mmap_mode="r")  # read for the k hits (and filters) only
            rerank = int(json.loads(Path(str(path) + META_SUFFIX).read_text())["rerank"])
        except (OSError, ValueError, KeyError) as e:
            raise EarshotError(f"{path}: compressed index without its float vectors or ids: {e}") from None
        if floats.shape != (index.ntotal, index.d) or ids.shape != (index.ntotal,):
            raise EarshotError(f"{path}: float vectors {floats.shape} / ids {ids.shape} do not match the "
                               f"index ({index.ntotal} x {index.d}); rebuild it")
        return cls(index, floats, ids, rerank)

    def nbytes_in_ram(self) -> int:
        """Bytes the compressed index itself holds (codes, ids, centroids, rotation)."""
        return self.training_bytes() + self.code_bytes()

    def code_bytes(self) -> int:
        """Bytes of its own: PQ codes and 8-byte row numbers in the inverted lists."""
        return int(self.ntotal * (self.ivf.code_size + 8))

    def training_bytes(self) -> int:
        """Bytes of the trained parts (centroids, rotation, codebooks), shared by shards."""
        return int(faiss.serialize_index(self._empty_sharing()).nbytes)


def shared_training(indexes: list) -> faiss.Index | None:
    """The one training all ``indexes`` share, if they are all compressed indexes sharing one."""
    if not indexes or not all(isinstance(i, CompressedIndex) for i in indexes):
        return None
    first = indexes[0].training
    return first if all(i.training is first for i in indexes) else None


def is_compressed(index: faiss.Index) -> bool:
    """A deserialised FAISS index of this module's kind (IVF-PQ over row numbers, no id map)."""
    if isinstance(index, faiss.IndexIDMap):
        return False
    try:
        return isinstance(faiss.downcast_index(faiss.extract_index_ivf(index)), faiss.IndexIVFPQ)
    except RuntimeError:
        return False
