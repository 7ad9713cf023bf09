"""Search an index by text or by example: ``Index.open(path).search("a dog barks", k=10)``.

Ranking uses the pooled clip embeddings in FAISS; then, for the k hits only, the stored window
embeddings say where in each file the query matches best, which is what a person needs in a
long recording. The model is loaded lazily (only text and audio queries need it) and must be
the one the index was built with.
"""

from __future__ import annotations

import collections
import re
import threading
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from earshot.errors import EarshotError
from earshot.index import vectors as V
from earshot.index.hits import Hit
from earshot.index.decode import Framing, Limits, WindowStream, frame, load_checked
from earshot.index.encoder import Encoder, open_encoder, open_text_encoder
from earshot.index.indexer import pool
from earshot.index.store import FAISS_FILE, DamagedIndex, FileRow, IndexSettings, Store

TEXT_CACHE_SIZE = 1024  # distinct recent queries whose embeddings are kept


class Index:
    """A read-only view of an index directory, safe to share between threads."""

    def __init__(self, directory: Path, store: Store, settings: IndexSettings, faiss_index,
                 encoder: Encoder | None, model_path: str | None):
        self.directory = directory
        self.settings = settings
        self._store = store
        self._faiss = faiss_index
        self._encoder = encoder
        self._text_encoder: Encoder | None = None  # text side only, for text queries (fast to open)
        self._model_path = model_path
        self._lock = threading.RLock()  # SQLite connection, FAISS, the query cache and model loading
        self.generation = store.generation()  # of the database when the vectors were loaded
        self.uid = store.get_info("uid")  # which database (a deleted and rebuilt index gets a new one)
        self.inode = store.inode  # (st_dev, st_ino) of the database file this view reads
        self.links_outside = bool(store.get_info("links_outside"))  # symlinks out of root were allowed
        self._text_cache: collections.OrderedDict[str, np.ndarray] = collections.OrderedDict()
        self.cache_hits = 0  # text queries answered from the cache (for tests and /health)
        self._windows = None  # moments.WindowVectors, loaded on the first window-ranked search

    @classmethod
    def open(cls, path: str | Path, model: str | Path | Encoder | None = None,
             ef_search: int | None = None, nprobe: int | None = None) -> "Index":
        """Open index directory ``path``. ``model`` (a path or an encoder) defaults to the one
        the index was built with; a model with other weights is refused."""
        directory = Path(path).expanduser()
        if not directory.exists():
            raise EarshotError(f"{directory}: no such index")
        store = Store.open(directory, readonly=True)
        try:
            settings = store.settings()
        except EarshotError:
            store.close()
            raise
        if settings is None:
            store.close()
            raise EarshotError(f"{directory}: index has never been built (no settings)")
        encoder: Encoder | None = None
        model_path: str | None = None
        if model is None:
            model_path = settings.model_path
        elif isinstance(model, (str, Path)):
            model_path = str(model)
        else:
            encoder = model
            _check_model(encoder.model_id, settings, directory)
        if model_path is not None and model is not None:
            from earshot.index.encoder import model_identity

            _check_model(model_identity(model_path), settings, directory)
        faiss_index = _load_vectors(store, settings, directory, ef_search, nprobe)
        return cls(directory, store, settings, faiss_index, encoder, model_path)

    def close(self) -> None:
        self._store.close()

    def __enter__(self) -> "Index":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return int(self._faiss.ntotal)

    @property
    def kind(self) -> str:
        """FAISS index type in use: flat (exact), hnsw or ivf."""
        return V.kind_of(self._faiss)

    @property
    def encoder(self) -> Encoder:
        """The model, loaded on first use and checked against the index's model id."""
        with self._lock:
            if self._encoder is None:
                enc = open_encoder(self._existing_model_path())
                _check_model(enc.model_id, self.settings, self.directory)
                self._encoder = enc
            return self._encoder

    @property
    def text_encoder(self) -> Encoder:
        """What a text query needs: the full model if it is loaded, else only its text side
        (no audio tower, no sentence-transformers import), checked like :attr:`encoder`."""
        with self._lock:
            if self._encoder is not None:
                return self._encoder
            if self._text_encoder is None:
                enc = open_text_encoder(self._existing_model_path())
                _check_model(enc.model_id, self.settings, self.directory)
                self._text_encoder = enc
            return self._text_encoder

    def _existing_model_path(self) -> str:
        path = self._model_path or ""
        if not path or not Path(path).exists():
            raise EarshotError(
                f"{self.directory}: the model it was built with ({path or 'unknown'}) is not "
                "there any more; pass the same model explicitly (--model)"
            )
        return path

    # -- queries ------------------------------------------------------------------------------
    def embed_query(self, text: str) -> np.ndarray:
        """(D,) embedding of a text query; repeated queries come from an LRU cache."""
        return self.embed_queries([text])[0]

    def embed_queries(self, texts: list[str]) -> list[np.ndarray]:
        """(D,) embeddings of several text queries in one encoder call (cached ones skipped).

        The server batches concurrent queries through here: one forward pass for many texts
        costs little more than for one.
        """
        keys = [t.strip() for t in texts]
        if not all(keys):
            raise EarshotError("empty query: type some words describing the sound")
        with self._lock:
            known = {k: self._text_cache[k] for k in keys if k in self._text_cache}
            self.cache_hits += sum(1 for k in keys if k in known)
            for key in known:
                self._text_cache.move_to_end(key)
        missing = list(dict.fromkeys(k for k in keys if k not in known))
        if missing:  # the model runs without the lock: searches meanwhile need only SQLite and FAISS
            fresh = dict(zip(missing, self.text_encoder.embed_text(missing)))
            with self._lock:
                self._text_cache.update(fresh)
                while len(self._text_cache) > TEXT_CACHE_SIZE:
                    self._text_cache.popitem(last=False)
            known.update(fresh)
        return [known[k] for k in keys]

    def embed_audio_file(self, path: str | Path, limits: Limits = Limits()) -> np.ndarray:
        """(D,) embedding of an example clip, framed and pooled exactly as indexed files are.

        The clip's header is checked against ``limits`` before anything is decoded, and it is
        decoded, resampled and embedded block by block (:class:`WindowStream`): memory follows
        the window, not the clip's length.
        """
        s = self.settings
        stream = WindowStream(path, Framing(s.sample_rate, s.window_s, s.hop_s, limits=limits))
        # 8 windows a pass: the model's activations, not the clip, set the memory of an upload
        emb = np.concatenate([self.encoder.embed_audio(w, batch_size=8) for w, _, _ in stream.windows(8)])  # (W, D)
        return pool(emb, s.pooling, s.normalize)  # type: ignore[arg-type]

    def search(self, text: str, k: int = 10, **options: Any) -> list[Hit]:
        """The ``k`` files that best match a text query, best first.

        ``options`` are :class:`earshot.index.ranking.SearchOptions` fields: ``mode``
        (hybrid, meaning, words), ``ranking`` (windows, pooled), ``top_m``, ``filter``. The text
        may hold "required words" and -excluded words; only the rest is embedded.
        """
        from earshot.index import ranking as R
        from earshot.index.words import parse_query

        opts = R.SearchOptions(k=k, **options)
        vec = None
        if opts.mode != "words":
            embedded = parse_query(text).text
            if text.strip() and not embedded:
                raise EarshotError(f"query {text!r} only excludes words; say what to look for too")
            vec = self.embed_query(embedded or text)
        elif not text.strip():
            raise EarshotError("empty query: type some words describing the sound")
        return R.search(self, text, vec, opts)

    def search_audio(self, path: str | Path, k: int = 10, exclude_self: bool = False,
                     limits: Limits = Limits(), **options: Any) -> list[Hit]:
        """Query by example: the ``k`` files most similar to the clip at ``path``."""
        q = self.embed_audio_file(path, limits)
        hits = self.search_vector(q, k + 1 if exclude_self else k, **options)
        if exclude_self:
            try:
                rel = Path(path).resolve().relative_to(Path(self.settings.root)).as_posix()
            except ValueError:
                rel = None
            hits = [h for h in hits if h.path != rel][:k]
            hits = [replace(h, rank=i + 1) for i, h in enumerate(hits)]
        return hits

    def search_vector(self, query: np.ndarray, k: int = 10, **options: Any) -> list[Hit]:
        """Rank by inner product with a (D,) query embedding (by window unless
        ``ranking="pooled"``); each hit carries its best window and its moments."""
        from earshot.index import ranking as R

        opts = R.SearchOptions(k=k, **{**options, "mode": "meaning"})
        q = np.asarray(query, dtype=np.float32).reshape(-1)
        if q.shape[0] != self.settings.dim:
            raise EarshotError(f"query has dimension {q.shape[0]}, index has {self.settings.dim}")
        return R.search(self, None, q, opts)

    def search_like(self, file: int | str, start: float | None = None, k: int = 10, **options: Any) -> list[Hit]:
        """"More like this": files like an indexed file (by id or path relative to the root),
        queried by its window at ``start`` seconds or, without ``start``, its pooled embedding.
        Nothing is decoded or encoded; the file itself is left out."""
        from earshot.index.moments import like_vector

        with self._lock:
            fid = self._file_id(file)
            q = like_vector(self._store, fid, self.settings.dim, start)
        hits = [h for h in self.search_vector(q, k + 1, **options) if h.id != fid][:k]
        return [replace(h, rank=i + 1) for i, h in enumerate(hits)]

    def _file_id(self, file: int | str) -> int:
        if isinstance(file, int):
            return file
        rel = Path(file).expanduser()
        if rel.is_absolute() or rel.exists():  # a path on disk; else one relative to the root
            try:
                rel = rel.resolve().relative_to(Path(self.settings.root))
            except ValueError:
                raise EarshotError(f"{file}: not inside the indexed folder {self.settings.root}") from None
        row = self._store.conn.execute("SELECT id FROM files WHERE path = ?", (rel.as_posix(),)).fetchone()
        if row is None:
            raise EarshotError(f"{file}: not in this index (paths are relative to {self.settings.root})")
        return int(row[0])

    def upgrade_note(self) -> str | None:
        """What to run when this index predates word search (hybrid then ranks by meaning only)."""
        from earshot.index.words import UPGRADE, has_words

        with self._lock:
            return None if has_words(self._store.conn) else f"{self.directory}: {UPGRADE}"

    @property
    def window_vectors(self):
        """Every window embedding, searchable (:class:`earshot.index.moments.WindowVectors`)."""
        from earshot.index.moments import load_windows

        with self._lock:
            if self._windows is None:
                self._windows = load_windows(self._store, self.settings.dim, self.directory)
            return self._windows

    def peaks(self, file_ids: list[int]) -> dict[int, list[int]]:
        """Each file's waveform envelope (0..255 values) by id, for drawing result strips."""
        with self._lock:
            return {i: p.tolist() for i, p in self._store.peaks([int(f) for f in file_ids]).items()}

    def partial(self) -> str | None:
        """"partial: N of M files" when the last indexing run did not finish, else None."""
        with self._lock:
            return self._store.partial()

    def file(self, file_id: int) -> tuple[FileRow, Path] | None:
        """The row and absolute path of an indexed file, or None for an id not in the index."""
        if not 0 <= int(file_id) < 2**63:  # SQLite integers are 64-bit signed
            return None
        with self._lock:
            row = self._store.rows([int(file_id)]).get(int(file_id))
        if row is None:
            return None
        return row, Path(self.settings.root) / row.path

    def bad_files(self) -> list[tuple[str, str]]:
        """Files skipped while indexing: (relative path, reason)."""
        with self._lock:
            return sorted((p, r) for p, (_, _, r) in self._store.bad().items())


def _check_model(model_id: str, settings: IndexSettings, directory: Path) -> None:
    if model_id != settings.model_id:
        raise EarshotError(
            f"{directory}: index was built with model {settings.model_id} ({settings.model_path}); "
            f"the model given is {model_id}. Query an index with the model that built it."
        )


def _load_vectors(store: Store, settings: IndexSettings, directory: Path,
                  ef_search: int | None, nprobe: int | None):
    """The FAISS index on disk if it matches the database and its recorded digest; rebuilt in
    memory when it is merely stale (an interrupted run) or has no digest (an older earshot);
    refused when it is damaged or another index's file."""
    from earshot.index import integrity

    path = directory / FAISS_FILE
    if path.is_file() and store.get_info("faiss_generation") == store.generation():
        why = integrity.check_vectors(store, path)
        if why is None:
            return V.load(path, ef_search, nprobe)
        if store.get_info(integrity.RECORD) is not None:
            raise DamagedIndex(f"{path}: refusing to search with it: {why}; {store.repair_hint()} "
                               "(it rebuilds the vectors from the database)")
    # Stale vectors (a run interrupted between committing files and writing them) or a file
    # without a digest: rank from what SQLite holds.
    doc = store.get_info("vector_config") or {}
    cfg = V.VectorConfig(**doc)
    ids, vecs = store.clip_vectors(settings.dim)
    return V.build(vecs, ids, cfg)


# ---- one call per `earshot search` ------------------------------------------------------------

@dataclass(frozen=True)
class SearchOutcome:
    """What one search answered: the hits, the indexed folder they are relative to, the title
    of the question, the index's partial-update note and any note on how it was ranked."""

    hits: list[Hit]
    root: str
    title: str
    partial: str | None = None
    notes: tuple[str, ...] = ()


def parse_like(like: str) -> tuple[str, float | None]:
    """``FILE`` or ``FILE@START`` (START in seconds or m:ss) -> (file, start or None). A file
    whose own name holds ``@`` is taken whole when it exists."""
    head, sep, tail = like.rpartition("@")
    if sep and head and re.fullmatch(r"(\d+:)?\d+(\.\d*)?", tail) and not Path(like).expanduser().exists():
        minutes, _, seconds = tail.rpartition(":")
        return head, (int(minutes) * 60 if minutes else 0) + float(seconds)
    return like, None


def search_index(index: str | Path, *, query: str | None = None, audio: str | Path | None = None,
                 like: str | None = None, k: int = 10, model: str | Path | None = None,
                 mode: str = "hybrid", ranking: str = "windows", top_m: int = 1,
                 where: str | None = None, folder: str | None = None) -> SearchOutcome:
    """Search the index at ``index`` by exactly one of a text ``query``, an example ``audio``
    clip or ``like`` (an indexed ``FILE[@START]``), with the filters ``where``/``folder``
    applied before the top ``k``. What ``earshot search`` prints, as data."""
    from earshot.index.filters import Filter

    if sum(x is not None for x in (query, audio, like)) != 1:
        raise EarshotError("give either a text QUERY or --audio CLIP (or --like FILE), exactly one")
    opts = {"ranking": ranking, "top_m": top_m, "filter": Filter(where=where, folder=folder)}
    notes: list[str] = []
    with Index.open(index, model) as ix:
        partial = ix.partial()
        if query is not None:
            note = ix.upgrade_note() if mode == "hybrid" else None
            if note:
                notes.append(f"{note}; ranking by meaning only")
            hits = ix.search(query, k, mode=mode, **opts)
            title = repr(query)
        elif audio is not None:
            hits = ix.search_audio(audio, k, **opts)
            title = f"like {audio}"
        else:
            file, start = parse_like(like)  # type: ignore[arg-type]
            hits = ix.search_like(file, start, k, **opts)
            title = f"like {file}" + (f" @ {start:g} s" if start is not None else "")
        root = ix.settings.root
    return SearchOutcome(hits, root, title, partial, tuple(notes))
