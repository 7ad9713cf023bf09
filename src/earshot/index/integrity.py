"""Whether an index's files are the ones its indexer wrote: digests recorded, checked on open.

``vectors.faiss`` is derived from the database, so nothing inside it says whether it is whole,
damaged or another index's copy. When the indexer writes it, :func:`record_vectors` stores in
the database's ``info`` table the file's size and SHA-256, the database uid and generation it
was built for, and digests of the clip and window embedding blobs it was built from (combined
from the per-file digests ``Store.put_file`` writes beside the blobs, so a watched update of a
few files does not re-read every embedding; :func:`verify` checks them against the blobs). Opening
an index (:func:`check_vectors`) compares size and digest before FAISS reads a byte; the digest
of a file already checked in this process is remembered by (device, inode, size, mtime), so a
server reopening an unchanged file does not hash it again. :func:`verify` (``earshot index
--verify``) does everything: SQLite's ``integrity_check``, every row's blob lengths and window
counts, the recorded blob digests and left-over temporary files. The window vectors
(``windows.npz`` and, for the compressed and sharded kinds, the ``windows.faiss*`` files beside
it), which window ranking searches, get the same record (:func:`record_windows`,
:func:`check_windows`); a reader that finds them wrong ranks from the database instead.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from earshot.errors import EarshotError
from earshot.index.store import DB_FILE, FAISS_FILE, Store, embedding_digests

RECORD = "vectors"  # info key of the record written by record_vectors
WINDOWS_RECORD = "windows_file"  # info key of the record written by record_windows
WINDOWS_FILE = "windows.npz"  # the window vectors (earshot.index.moments), named here to stay below it

_memo: dict[tuple[int, int, int, int], str] = {}  # (dev, ino, size, mtime_ns) -> sha256 checked here
_memo_lock = threading.Lock()


def file_sha256(path: Path, remember: bool = True) -> tuple[int, str]:
    """(size, hex SHA-256) of ``path``; with ``remember``, a file unchanged since it was last
    hashed in this process (same inode, size and mtime) is not read again."""
    st = os.stat(path)
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    if remember:
        with _memo_lock:
            known = _memo.get(key)
        if known is not None:
            return st.st_size, known
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    digest = h.hexdigest()
    if remember:
        with _memo_lock:
            _memo[key] = digest
    return st.st_size, digest


BLOBS = 2  # how the record's blob digests are made: 2 = over the per-file digests (1: every blob, streamed)


def _has_digest_table(store: Store) -> bool:
    return store.conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'blob_digests'"
                              ).fetchone() is not None


def _file_blobs(store: Store, missing_only: bool) -> Iterator[tuple[int, str, bytes, bytes | None, bytes | None, list]]:
    """(id, path, clip blob, clip digest, windows digest, [(idx, window blob)]) of every file
    (or of those without a digest row), in id order: one pass over the windows, merge-joined."""
    has = _has_digest_table(store)
    join = "LEFT JOIN blob_digests d ON d.file_id = files.id" if has else ""
    cols = "d.clip, d.windows" if has else "NULL, NULL"
    where = " WHERE d.file_id IS NULL" if has and missing_only else ""
    wins = store.conn.execute("SELECT file_id, idx, embedding FROM windows ORDER BY file_id, idx")
    pending = wins.fetchone()
    for fid, path, blob, clip, windows in store.conn.execute(
            f"SELECT files.id, files.path, files.embedding, {cols} FROM files {join}{where} ORDER BY files.id"):
        own = []
        while pending is not None and pending[0] <= fid:
            if pending[0] == fid:
                own.append((pending[1], pending[2]))
            pending = wins.fetchone()
        yield fid, path, blob, clip, windows, own


def fill_digests(store: Store) -> int:
    """Write the digest rows of files that lack one (rows of an older earshot); returns how many.
    Called by the indexer before it records the vectors, so that later updates read no blobs."""
    if not _has_digest_table(store) or store.conn.execute(
            "SELECT 1 FROM files LEFT JOIN blob_digests d ON d.file_id = files.id WHERE d.file_id IS NULL LIMIT 1"
    ).fetchone() is None:
        return 0
    rows = [(fid, *embedding_digests(blob, own)) for fid, _, blob, _, _, own in _file_blobs(store, missing_only=True)]
    with store.transaction():
        store.conn.executemany("INSERT INTO blob_digests(file_id, clip, windows) VALUES (?, ?, ?)", rows)
    return len(rows)


def remember_sha256(path: Path, digest: str) -> None:
    """Note the SHA-256 of a file just written (computed while writing it), so that recording
    or checking it in this process does not read it again."""
    st = os.stat(path)
    with _memo_lock:
        _memo[(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)] = digest


def blob_digests(store: Store) -> tuple[str, str]:
    """(SHA-256 over every file's id and clip digest, over every file's id and windows digest),
    in id order: what the vectors were built from, and what moment search reads.

    The per-file digests are those ``Store.put_file`` wrote (table ``blob_digests``), so this
    reads 64 bytes per file, not the embeddings; when some file has no row (written by an older
    earshot), every file is hashed from its blobs instead (one pass). :func:`verify` checks the
    rows against the blobs.
    """
    clips, wins = hashlib.sha256(), hashlib.sha256()
    rows = store.conn.execute("SELECT files.id, d.clip, d.windows FROM files LEFT JOIN blob_digests d "
                              "ON d.file_id = files.id ORDER BY files.id").fetchall() if _has_digest_table(store) else None
    if rows is None or any(r[1] is None for r in rows):
        rows = [(fid, *embedding_digests(blob, own)) for fid, _, blob, _, _, own in _file_blobs(store, False)]
    for fid, clip, windows in rows:
        key = int(fid).to_bytes(8, "little", signed=True)
        clips.update(key + clip)
        wins.update(key + windows)
    return clips.hexdigest(), wins.hexdigest()


def _blob_digests_v1(store: Store) -> tuple[str, str]:
    """The digests a record without ``blobs`` (an older earshot) holds: every blob, streamed."""
    clips, wins = hashlib.sha256(), hashlib.sha256()
    for fid, blob in store.conn.execute("SELECT id, embedding FROM files ORDER BY id"):
        clips.update(int(fid).to_bytes(8, "little", signed=True))
        clips.update(blob if isinstance(blob, bytes) else str(blob).encode())
    for fid, idx, blob in store.conn.execute("SELECT file_id, idx, embedding FROM windows ORDER BY file_id, idx"):
        wins.update(int(fid).to_bytes(8, "little", signed=True) + int(idx).to_bytes(4, "little", signed=True))
        wins.update(blob if isinstance(blob, bytes) else str(blob).encode())
    return clips.hexdigest(), wins.hexdigest()


def changed_blobs(store: Store, limit: int = 20) -> list[tuple[str, str]]:
    """[(path, "clip" | "window")] of files whose embeddings no longer hash to the digests
    written with them (at most ``limit``); reads every blob once, in id order."""
    if not _has_digest_table(store):
        return []
    found: list[tuple[str, str]] = []
    for _, path, blob, clip, windows, own in _file_blobs(store, missing_only=False):
        if clip is None:
            continue  # no digest written for it (an older earshot)
        c, w = embedding_digests(blob, own)
        if c != clip:
            found.append((path, "clip"))
        elif w != windows:
            found.append((path, "window"))
        if len(found) >= limit:
            break
    return found


def record_vectors(store: Store, path: Path, generation: int) -> None:
    """Remember what ``path`` (just written) is: size, digest, the database and blobs behind it."""
    size, digest = file_sha256(path)
    clips, wins = blob_digests(store)
    with store.transaction():
        store.set_info(RECORD, {"size": size, "sha256": digest, "uid": store.get_info("uid"),
                                "generation": generation, "clips_sha256": clips, "windows_sha256": wins,
                                "blobs": BLOBS})


def check_vectors(store: Store, path: Path) -> str | None:
    """Why ``path`` is not the vector file this database's indexer wrote, or None when it is.

    Size first (a truncated file costs one stat), then the SHA-256 (remembered by mtime).
    """
    rec = store.get_info(RECORD)
    if not isinstance(rec, dict) or not {"size", "sha256", "uid", "generation"} <= set(rec):
        return "no digest was recorded for it (written by an older earshot)"
    if rec["uid"] != store.get_info("uid"):
        return "its record belongs to another database"
    try:
        st = os.stat(path)
    except OSError as e:
        return f"cannot read it ({e.strerror or e})"
    if st.st_size != rec["size"]:
        return f"it is {st.st_size} bytes, {rec['size']} were written (truncated or replaced)"
    _, digest = file_sha256(path)
    if digest != rec["sha256"]:
        return "its SHA-256 differs from the one recorded when it was written (damaged, or copied from another index)"
    return None


def window_files(directory: Path) -> list[Path]:
    """The files that hold an index's window vectors: ``windows.npz`` and its siblings
    ``windows.faiss*`` (temporary files of an interrupted write excluded)."""
    main = directory / WINDOWS_FILE
    side = sorted(p for p in directory.glob(Path(WINDOWS_FILE).stem + ".faiss*") if not p.name.endswith(".tmp"))
    return ([main] if main.is_file() else []) + side


def record_windows(store: Store, generation: int) -> None:
    """Remember the window files just written: each one's size and digest, the database uid and
    the generation they were built for."""
    files = {p.name: list(file_sha256(p)) for p in window_files(store.directory)}
    with store.transaction():
        store.set_info(WINDOWS_RECORD, {"uid": store.get_info("uid"), "generation": generation, "files": files})


def check_windows(store: Store, directory: Path | None = None) -> str | None:
    """Why the window files in ``directory`` (default: the store's) are not those this database's
    indexer wrote, or None when they are (size first, then the digest remembered by mtime)."""
    directory = store.directory if directory is None else directory
    rec = store.get_info(WINDOWS_RECORD)
    if not isinstance(rec, dict) or not {"uid", "generation", "files"} <= set(rec):
        return "no digest was recorded for them (written by an older earshot)"
    if rec["uid"] != store.get_info("uid"):
        return "their record belongs to another database"
    found = {p.name: p for p in window_files(directory)}
    if set(found) != set(rec["files"]):
        return f"expected {sorted(rec['files'])}, found {sorted(found)}"
    for name, (size, digest) in rec["files"].items():
        if found[name].stat().st_size != size:
            return f"{name} is {found[name].stat().st_size} bytes, {size} were written (truncated or replaced)"
        if file_sha256(found[name])[1] != digest:
            return f"{name}: its SHA-256 differs from the one recorded when it was written (damaged, or copied from another index)"
    return None


@dataclass
class VerifyReport:
    """What ``earshot index --verify`` found; ``problems`` empty means the index is sound."""

    index: Path
    files: int = 0
    windows: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # harmless findings (left-over temporary files)

    @property
    def ok(self) -> bool:
        return not self.problems


def stale_temp_files(directory: Path) -> list[Path]:
    """Temporary vector files left by a run killed mid-write (readers ignore them)."""
    return sorted({*directory.glob(f".{FAISS_FILE}*.tmp"), *directory.glob(f".{Path(WINDOWS_FILE).stem}.*.tmp")})


def verify(directory: str | Path) -> VerifyReport:
    """Check every part of index ``directory`` without changing anything; see :class:`VerifyReport`."""
    directory = Path(directory).expanduser()
    report = VerifyReport(index=directory)
    if not (directory / DB_FILE).is_file():
        raise EarshotError(f"{directory}: not an earshot index (no {DB_FILE})")
    store = Store.open(directory, readonly=True, check=False)
    try:
        verdicts = [r[0] for r in store.conn.execute("PRAGMA integrity_check(20)")]
        if verdicts != ["ok"]:
            report.problems.append("database: " + "; ".join(verdicts))
            return report
        settings = store.settings()
        if settings is None:
            report.problems.append("database: no settings (the index was never built)")
            return report
        report.files = store.count()
        report.windows = int(store.conn.execute("SELECT COUNT(*) FROM windows").fetchone()[0])
        for rel in store.damaged_files(settings.dim):
            report.problems.append(f"database: rows of {rel!r} are damaged (clip or window embeddings "
                                   "missing or of the wrong length)")
        for rel, what in changed_blobs(store):
            report.problems.append(f"database: the {what} embeddings of {rel!r} changed since they were "
                                   "written (they no longer match their digest)")
        path = directory / FAISS_FILE
        rec = store.get_info(RECORD)
        stale = store.get_info("faiss_generation") != store.generation()
        if not path.is_file():
            report.problems.append(f"{FAISS_FILE}: missing")
        elif stale:
            report.notes.append(f"{FAISS_FILE}: older than the database (an interrupted run); searches "
                                "rank from the database until the next `earshot index`")
        else:
            why = check_vectors(store, path)
            if why:
                report.problems.append(f"{FAISS_FILE}: {why}")
        if isinstance(rec, dict) and not stale and "clips_sha256" in rec:
            clips, wins = blob_digests(store) if rec.get("blobs") == BLOBS else _blob_digests_v1(store)
            if clips != rec["clips_sha256"]:
                report.problems.append("database: clip embeddings differ from those the vectors were built from")
            if wins != rec["windows_sha256"]:
                report.problems.append("database: window embeddings changed since the vectors were written")
        if store.get_info("windows_generation") == store.generation() and (directory / WINDOWS_FILE).is_file():
            why = check_windows(store, directory)
            if why:
                report.problems.append(f"window vectors: {why}")
        for tmp in stale_temp_files(directory):
            report.notes.append(f"{tmp.name}: left by a run killed while writing vectors (ignored by "
                                "search and serve; the next `earshot index` removes it)")
        if report.problems:
            report.problems.append(store.repair_hint())
    finally:
        store.close()
    return report
