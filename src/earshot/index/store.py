"""The on-disk layout of a sound index: one directory, an SQLite database and a FAISS file.

::

    INDEX/
      meta.sqlite      settings (model id, windowing, pooling), files, window embeddings, bad files
      vectors.faiss    clip embeddings for search; derived from meta.sqlite, rebuilt when stale
      index.lock       held (flock) by the one indexer writing here; the kernel drops it on exit

SQLite is the source of truth: every finished file is committed in a transaction together with
its clip and window embeddings, so a killed run keeps what it finished and never leaves a half
row. The FAISS file is written atomically after the database, stamped with the database's
generation; if a crash falls between the two, the reader sees the stamps differ and rebuilds the
vectors from SQLite instead of trusting a stale file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator
from urllib.parse import quote

import numpy as np

from earshot.errors import EarshotError

DB_FILE = "meta.sqlite"
FAISS_FILE = "vectors.faiss"
LOCK_FILE = "index.lock"
FORMAT = "earshot.index/1"


def building_dir(out: Path) -> Path:
    """Where a new index for ``out`` is built before it is renamed into place (hidden, beside it).

    A reader of ``out`` sees either no index or a complete one, never a database under
    construction; a server still holding a deleted index keeps answering from it until then.
    A run killed by a signal that cannot be caught leaves this folder, and the same command
    resumes from it.
    """
    return out.parent / f".{out.name}.building"


class DamagedIndex(EarshotError):
    """An index's files are not what its indexer wrote; the message names the repair command."""


QUICK_CHECK_BYTES = 64 * 1024 * 1024  # databases up to this size get PRAGMA quick_check on open


def rebuild_hint(directory: Path, settings: "IndexSettings | None" = None) -> str:
    """What to run to repair index ``directory``: the same `earshot index` when its settings are
    known (it re-encodes damaged files and rebuilds the vectors), else a rebuild from scratch."""
    if settings is not None:
        return (f"run `earshot index {settings.root} --model {settings.model_path} --out {directory}` "
                "to repair it")
    return f"delete {directory} and run `earshot index FOLDER --model MODEL --out {directory}` again"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS info (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY AUTOINCREMENT,   -- never reused: a stale id cannot name another file
    path TEXT UNIQUE NOT NULL,              -- relative to the indexed root, POSIX separators
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    duration REAL NOT NULL,                 -- seconds
    sample_rate INTEGER NOT NULL,           -- the file's own rate
    channels INTEGER NOT NULL,
    n_windows INTEGER NOT NULL,
    embedding BLOB NOT NULL                 -- pooled clip embedding, float32 (D,)
);
CREATE TABLE IF NOT EXISTS windows (
    file_id INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    start REAL NOT NULL,                    -- seconds
    end REAL NOT NULL,                      -- seconds, clipped to the file's duration
    embedding BLOB NOT NULL,                -- float32 (D,)
    PRIMARY KEY (file_id, idx)
);
-- --folder and folder= filters are case-insensitive LIKE prefixes: this index lets SQLite seek them
CREATE INDEX IF NOT EXISTS files_path_nocase ON files(path COLLATE NOCASE);
CREATE TABLE IF NOT EXISTS peaks (          -- waveform envelope for the page (absent in older indexes)
    file_id INTEGER PRIMARY KEY REFERENCES files(id) ON DELETE CASCADE,
    data BLOB NOT NULL                      -- uint8 (P,), max |sample| per slice scaled to 0..255
);
CREATE TABLE IF NOT EXISTS bad (
    path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS blob_digests (   -- what each file's embeddings hash to (absent in older indexes)
    file_id INTEGER PRIMARY KEY REFERENCES files(id) ON DELETE CASCADE,
    clip BLOB NOT NULL,                     -- SHA-256 of the clip blob
    windows BLOB NOT NULL                   -- SHA-256 of its windows' (idx, blob), in idx order
);
"""


@contextlib.contextmanager
def index_lock(directory: Path) -> Iterator[None]:
    """Exclusive right to write index ``directory``; a second indexer is refused at once.

    An advisory ``flock`` on ``index.lock``: released by the kernel when the holder exits,
    however it dies, so a killed run never leaves a stale lock behind.
    """
    import fcntl

    if directory.exists() and not directory.is_dir():
        raise EarshotError(f"{directory}: --out must be a folder (an index directory), not a file")
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            raise EarshotError(
                f"{directory}: another `earshot index` (pid {holder}) is writing this index; "
                "wait for it to finish or use another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing drops the flock


@dataclass(frozen=True)
class IndexSettings:
    """What an index was built with; a rerun or a query must agree with it."""

    model_id: str  # identity of the model's weights (encoder.model_identity)
    model_path: str  # where the model was loaded from (a default for search; may have moved)
    dim: int  # embedding dimension
    sample_rate: int  # Hz audio is decoded at
    normalize: bool  # clip embeddings are unit length (scores are cosines)
    window_s: float  # sliding window length, seconds
    hop_s: float  # hop between window starts, seconds
    pooling: str  # "mean" or "max" over window embeddings -> clip embedding
    root: str  # absolute path of the indexed folder


@dataclass(frozen=True)
class FileRow:
    """One indexed file, as the database holds it (without embeddings)."""

    id: int
    path: str  # relative to the root
    size: int
    mtime_ns: int
    sha256: str
    duration: float
    sample_rate: int
    channels: int
    n_windows: int


_ROW_COLS = "id, path, size, mtime_ns, sha256, duration, sample_rate, channels, n_windows"


def _blob(v: np.ndarray) -> bytes:
    return np.ascontiguousarray(v, dtype=np.float32).tobytes()


def embedding_digests(clip: bytes, windows: Iterable[tuple[int, bytes]]) -> tuple[bytes, bytes]:
    """(SHA-256 of a file's clip blob, SHA-256 of its windows' (idx, blob) in idx order): what
    :func:`earshot.index.integrity.blob_digests` combines, kept per file so that a watched
    update hashes only the files it wrote."""
    wins = hashlib.sha256()
    for idx, blob in windows:
        wins.update(int(idx).to_bytes(4, "little", signed=True))
        wins.update(blob if isinstance(blob, bytes) else str(blob).encode())
    return hashlib.sha256(clip if isinstance(clip, bytes) else str(clip).encode()).digest(), wins.digest()


class Store:
    """The SQLite half of an index. Not thread-safe: callers serialise access (see Index)."""

    def __init__(self, directory: Path, conn: sqlite3.Connection):
        self.directory = directory
        self.conn = conn
        self.inode: tuple[int, int] = (0, 0)  # (st_dev, st_ino) of the database file opened

    # -- opening ------------------------------------------------------------------------------
    @classmethod
    def open(cls, directory: str | Path, create: bool = False, readonly: bool = False,
             check: bool = True) -> "Store":
        """Open (or with ``create``, make) the database of index ``directory``.

        ``readonly`` (what search and serve use) opens it through a ``mode=ro`` URI: nothing is
        ever written, not even a schema into an empty file, and a journal left by a writer is
        never rolled back into it. ``check`` runs SQLite's ``quick_check`` first when the
        database is small enough for that to be cheap (:data:`QUICK_CHECK_BYTES`).
        """
        directory = Path(directory)
        db = directory / DB_FILE
        if not create and not db.is_file():
            raise EarshotError(f"{directory}: not an earshot index (no {DB_FILE})")
        if create:
            directory.mkdir(parents=True, exist_ok=True)
        try:
            if readonly:
                conn = sqlite3.connect(f"file:{quote(str(db.resolve()))}?mode=ro", uri=True,
                                       check_same_thread=False, isolation_level=None, timeout=5.0)
                conn.execute("PRAGMA query_only = ON")
            else:
                conn = sqlite3.connect(str(db), check_same_thread=False, isolation_level=None, timeout=5.0)
                conn.execute("PRAGMA foreign_keys = ON")
            if check and db.is_file() and db.stat().st_size <= QUICK_CHECK_BYTES:
                verdict = conn.execute("PRAGMA quick_check(1)").fetchone()[0]
                if verdict != "ok":
                    conn.close()
                    raise DamagedIndex(f"{db}: the index database is damaged ({verdict}); "
                                       f"{rebuild_hint(directory)}")
            if readonly:
                tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                missing = {"info", "files", "windows", "bad"} - tables
                if missing:
                    conn.close()
                    what = "an empty file" if not tables else f"no {', '.join(sorted(missing))} table"
                    raise EarshotError(f"{directory}: not an earshot index ({DB_FILE} is {what}); "
                                       f"{rebuild_hint(directory)}")
            else:
                conn.executescript(_SCHEMA)
        except sqlite3.DatabaseError as e:
            raise DamagedIndex(f"{db}: not a valid index database: {e}; {rebuild_hint(directory)}") from None
        store = cls(directory, conn)
        fmt = store.get_info("format")
        if fmt is None and create:
            store.set_info("format", FORMAT)
            store.set_info("uid", os.urandom(8).hex())  # tells a rebuilt index from the one it replaced
        elif fmt != FORMAT:
            conn.close()
            raise EarshotError(f"{db}: unknown index format {fmt!r} (expected {FORMAT})")
        st = db.stat()
        store.inode = (st.st_dev, st.st_ino)  # a replaced database (rm -rf + rebuild) has another
        return store

    def repair_hint(self) -> str:
        """The command that repairs this index: the same `earshot index` run (from its settings)."""
        try:
            s = self.settings()
        except EarshotError:
            s = None
        return rebuild_hint(self.directory, s)

    def close(self) -> None:
        self.conn.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """All or nothing: a crash inside leaves the database as it was before."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # -- settings -----------------------------------------------------------------------------
    def get_info(self, key: str) -> Any:
        row = self.conn.execute("SELECT value FROM info WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        try:
            return json.loads(row[0])
        except (json.JSONDecodeError, TypeError):
            raise DamagedIndex(f"{self.directory}: the index's {key!r} record is damaged (not valid JSON); "
                               f"{rebuild_hint(self.directory, None if key == 'settings' else self.settings())}"
                               ) from None

    def set_info(self, key: str, value: Any) -> None:
        self.conn.execute(
            "INSERT INTO info(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, json.dumps(value)),
        )

    def settings(self) -> IndexSettings | None:
        doc = self.get_info("settings")
        if doc is None:
            return None
        try:
            return IndexSettings(**doc)
        except TypeError:
            raise DamagedIndex(f"{self.directory}: the index's 'settings' record is damaged (unexpected "
                               f"fields); {rebuild_hint(self.directory)}") from None

    def set_settings(self, settings: IndexSettings) -> None:
        self.set_info("settings", asdict(settings))

    def generation(self) -> int:
        """Bumped by every commit that changes the set of vectors."""
        return int(self.get_info("generation") or 0)

    def partial(self) -> str | None:
        """"partial: N of M files" while the last run has not finished (killed or still going)."""
        run = self.get_info("run")
        if not run or run.get("finished", True):
            return None
        return f"partial: {self.count()} of {run.get('found', '?')} files (the last `earshot index` run did not finish)"

    def bump_generation(self) -> int:
        gen = self.generation() + 1
        self.set_info("generation", gen)
        return gen

    # -- files --------------------------------------------------------------------------------
    def files(self) -> dict[str, FileRow]:
        """Every indexed file by relative path."""
        rows = self.conn.execute(f"SELECT {_ROW_COLS} FROM files").fetchall()
        return {r[1]: FileRow(*r) for r in rows}

    def files_at(self, rels: list[str]) -> tuple[dict[str, FileRow], dict[str, tuple[int, int, str]]]:
        """(indexed files, skipped files) whose path is one of ``rels`` or lies under one of them
        (a folder): what a watched change to those paths can touch, without reading every row."""
        files: dict[str, FileRow] = {}
        bad: dict[str, tuple[int, int, str]] = {}
        for rel in rels:  # "a/b" itself, and "a/b/..." as the range ["a/b/", "a/b0"): '0' follows '/'
            span = (rel, rel + "/", rel + "0")
            for r in self.conn.execute(f"SELECT {_ROW_COLS} FROM files WHERE path = ? OR (path >= ? AND path < ?)",
                                       span):
                files[r[1]] = FileRow(*r)
            for r in self.conn.execute("SELECT path, size, mtime_ns, reason FROM bad WHERE path = ? OR "
                                       "(path >= ? AND path < ?)", span):
                bad[r[0]] = (r[1], r[2], r[3])
        return files, bad

    def file_ids(self) -> np.ndarray:
        """Ids of every indexed file, ascending (no embeddings read)."""
        return np.fromiter((r[0] for r in self.conn.execute("SELECT id FROM files ORDER BY id")), dtype=np.int64)

    def rows(self, ids: list[int]) -> dict[int, FileRow]:
        """Indexed files by id (unknown ids are absent)."""
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self.conn.execute(f"SELECT {_ROW_COLS} FROM files WHERE id IN ({marks})", ids).fetchall()
        return {r[0]: FileRow(*r) for r in rows}

    def count(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM files").fetchone()[0])

    def put_file(
        self,
        path: str,
        size: int,
        mtime_ns: int,
        sha256: str,
        duration: float,
        sample_rate: int,
        channels: int,
        clip: np.ndarray,
        starts: np.ndarray,
        ends: np.ndarray,
        windows: np.ndarray,
        peaks: np.ndarray | None = None,
    ) -> int:
        """Insert or replace one file with its clip (D,) and window (W, D) embeddings; its id.

        A changed file gets a new id (the old row and its windows are deleted first).
        """
        self.conn.execute("DELETE FROM files WHERE path = ?", (path,))
        self.conn.execute("DELETE FROM bad WHERE path = ?", (path,))
        cur = self.conn.execute(
            "INSERT INTO files(path, size, mtime_ns, sha256, duration, sample_rate, channels, "
            "n_windows, embedding) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (path, size, mtime_ns, sha256, duration, sample_rate, channels, len(windows), _blob(clip)),
        )
        file_id = int(cur.lastrowid)
        blobs = [_blob(w) for w in windows]
        self.conn.executemany(
            "INSERT INTO windows(file_id, idx, start, end, embedding) VALUES (?, ?, ?, ?, ?)",
            [(file_id, i, float(s), float(e), b) for i, (s, e, b) in enumerate(zip(starts, ends, blobs))],
        )
        self.conn.execute("INSERT INTO blob_digests(file_id, clip, windows) VALUES (?, ?, ?)",
                          (file_id, *embedding_digests(_blob(clip), enumerate(blobs))))
        if peaks is not None:
            self.conn.execute("INSERT INTO peaks(file_id, data) VALUES (?, ?)",
                              (file_id, np.ascontiguousarray(peaks, dtype=np.uint8).tobytes()))
        return file_id

    def touch_file(self, path: str, size: int, mtime_ns: int) -> None:
        """Record a new size/mtime for a file whose content hash did not change."""
        self.conn.execute("UPDATE files SET size = ?, mtime_ns = ? WHERE path = ?", (size, mtime_ns, path))

    def remove(self, path: str) -> None:
        """Forget a file (indexed or bad)."""
        self.conn.execute("DELETE FROM files WHERE path = ?", (path,))
        self.conn.execute("DELETE FROM bad WHERE path = ?", (path,))

    def put_bad(self, path: str, size: int, mtime_ns: int, reason: str) -> None:
        self.conn.execute("DELETE FROM files WHERE path = ?", (path,))
        self.conn.execute(
            "INSERT INTO bad(path, size, mtime_ns, reason) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(path) DO UPDATE SET size = excluded.size, mtime_ns = excluded.mtime_ns, "
            "reason = excluded.reason",
            (path, size, mtime_ns, reason),
        )

    def bad(self) -> dict[str, tuple[int, int, str]]:
        """Skipped files: relative path -> (size, mtime_ns, reason)."""
        return {r[0]: (r[1], r[2], r[3]) for r in self.conn.execute("SELECT path, size, mtime_ns, reason FROM bad")}

    # -- embeddings ---------------------------------------------------------------------------
    def clip_vectors(self, dim: int, ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(ids (N,), clip embeddings (N, D)) of every indexed file (or of the files ``ids``), by id."""
        if ids is None:
            rows = self.conn.execute("SELECT id, embedding, path FROM files ORDER BY id").fetchall()
        else:
            rows = []
            for lo in range(0, len(ids), 900):  # SQLite's bound-parameter limit
                part = [int(i) for i in ids[lo:lo + 900]]
                rows += self.conn.execute(f"SELECT id, embedding, path FROM files WHERE id IN ({','.join('?' * len(part))})",
                                          part).fetchall()
            rows.sort(key=lambda r: r[0])
        for r in rows:
            self._check_blob(r[1], dim, f"clip embedding of {r[2]!r}")
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), dim)
        return ids, vecs.copy()

    def _check_blob(self, blob: Any, dim: int, what: str) -> None:
        if not isinstance(blob, bytes) or len(blob) != 4 * dim:
            size = len(blob) if isinstance(blob, (bytes, str)) else type(blob).__name__
            raise DamagedIndex(f"{self.directory}: the {what} is damaged ({size} bytes, expected {4 * dim}); "
                               f"{self.repair_hint()}")

    def damaged_files(self, dim: int) -> list[str]:
        """Files whose rows are not whole: a clip blob of the wrong length, window rows missing
        or of the wrong length. The indexer drops and re-encodes them."""
        rows = self.conn.execute(
            "SELECT f.path FROM files f LEFT JOIN (SELECT file_id, COUNT(*) AS n, "
            "SUM(typeof(embedding) != 'blob' OR length(embedding) != ?) AS bad FROM windows GROUP BY file_id) w "
            "ON w.file_id = f.id WHERE typeof(f.embedding) != 'blob' OR length(f.embedding) != ? "
            "OR w.n IS NULL OR w.n != f.n_windows OR w.bad > 0",
            (4 * dim, 4 * dim)).fetchall()
        return sorted(r[0] for r in rows)

    def clip_vector(self, file_id: int, dim: int) -> np.ndarray | None:
        row = self.conn.execute("SELECT embedding FROM files WHERE id = ?", (file_id,)).fetchone()
        if row is None:
            return None
        self._check_blob(row[0], dim, f"clip embedding of file id {file_id}")
        return np.frombuffer(row[0], dtype=np.float32).reshape(dim).copy()

    def peaks(self, ids: list[int]) -> dict[int, np.ndarray]:
        """Waveform envelopes (uint8 (P,)) by file id; files indexed before peaks existed are absent."""
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self.conn.execute(f"SELECT file_id, data FROM peaks WHERE file_id IN ({marks})", ids).fetchall()
        return {r[0]: np.frombuffer(r[1], dtype=np.uint8).copy() for r in rows}

    def windows(self, file_id: int, dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(starts (W,), ends (W,), embeddings (W, D)) of one file's windows, in time order."""
        rows = self.conn.execute(
            "SELECT start, end, embedding FROM windows WHERE file_id = ? ORDER BY idx", (file_id,)
        ).fetchall()
        if not rows:
            raise DamagedIndex(f"{self.directory}: the window rows of file id {file_id} are missing; "
                               f"{self.repair_hint()}")
        for i, r in enumerate(rows):
            self._check_blob(r[2], dim, f"window {i} of file id {file_id}")
        starts = np.array([r[0] for r in rows], dtype=np.float64)
        ends = np.array([r[1] for r in rows], dtype=np.float64)
        embs = np.frombuffer(b"".join(r[2] for r in rows), dtype=np.float32).reshape(len(rows), dim)
        return starts, ends, embs


def files_kept(out: str | Path) -> int:
    """How many files an interrupted run left in the index at ``out`` (or its building folder)."""
    out = Path(out)
    for where in (out, building_dir(out.resolve())):
        if (where / DB_FILE).is_file():
            try:
                store = Store.open(where, readonly=True, check=False)
                try:
                    return store.count()
                finally:
                    store.close()
            except Exception:  # noqa: BLE001 - interrupted before the first commit: nothing kept
                return 0
    return 0
