"""What state an index directory is in, read without opening it for search, and which indexed
files may be played back.

A server polls :func:`read_status` to notice a re-index (the generation moved), a rebuilt or
replaced database (another uid or inode) and an unfinished run; :func:`playable` is the rule
for serving an indexed file: only its real location inside the indexed folder, and only while
it is still the file that was indexed (same size and mtime).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import stat
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from earshot.errors import EarshotError
from earshot.index.store import DB_FILE, LOCK_FILE, FileRow


@dataclass(frozen=True)
class IndexStatus:
    """One look at an index directory's database."""

    generation: int  # bumped by every commit that changes the set of vectors
    faiss_generation: int | None  # generation the vector file was written for
    uid: str | None  # which database (a deleted and rebuilt index gets another)
    inode: tuple[int, int]  # (st_dev, st_ino) of meta.sqlite
    files: int  # indexed files
    found: int | None  # files the last run found (None: unknown)
    finished: bool  # the last `earshot index` run finished
    indexer_running: bool  # an indexer holds index.lock now

    @property
    def vectors_ready(self) -> bool:
        return self.faiss_generation == self.generation

    @property
    def partial(self) -> str | None:
        """"partial: N of M files (...)" while the last run has not finished, else None."""
        if self.finished:
            return None
        why = "indexing in progress" if self.indexer_running else "the last `earshot index` run did not finish"
        return f"partial: {self.files} of {'?' if self.found is None else self.found} files ({why})"


def indexer_running(directory: Path) -> bool:
    """Whether an `earshot index` holds this directory's lock (a shared flock would block)."""
    import fcntl

    try:
        fd = os.open(directory / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def read_status(directory: str | Path, timeout_s: float = 0.2) -> IndexStatus:
    """The status of index ``directory`` through a short read-only connection.

    Raises :class:`EarshotError` when there is no database (deleted, or a rebuild has not
    swapped its new one in yet) and ``sqlite3.OperationalError`` when it is briefly busy.
    """
    directory = Path(directory)
    db = directory / DB_FILE
    try:
        st = os.stat(db)
    except OSError:
        raise EarshotError(f"{directory}: no index database (deleted, or being rebuilt)") from None
    uri = f"file:{quote(str(db.resolve()))}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=timeout_s)) as conn:
        info = dict(conn.execute("SELECT key, value FROM info WHERE key IN "
                                 "('generation', 'faiss_generation', 'run', 'uid')").fetchall())
        count = int(conn.execute("SELECT COUNT(*) FROM files").fetchone()[0])
    try:
        run = json.loads(info.get("run", "null")) or {}
        return IndexStatus(
            generation=int(json.loads(info.get("generation", "0"))),
            faiss_generation=json.loads(info.get("faiss_generation", "null")),
            uid=json.loads(info.get("uid", "null")),
            inode=(st.st_dev, st.st_ino),
            files=count,
            found=run.get("found"),
            finished=bool(run.get("finished", True)),
            indexer_running=indexer_running(directory),
        )
    except (json.JSONDecodeError, TypeError, ValueError, AttributeError):
        raise EarshotError(f"{directory}: the index's status records are damaged; run "
                           f"`earshot index --verify --out {directory}`") from None


def database_inode(directory: Path) -> tuple[int, int] | None:
    """(st_dev, st_ino) of the database now at ``directory``, or None when there is none."""
    try:
        st = os.stat(Path(directory) / DB_FILE)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class NotPlayable(EarshotError):
    """An indexed file cannot be served; ``gone`` is True when it is no longer what was indexed
    (HTTP 410), False when the id names nothing (404)."""

    def __init__(self, message: str, gone: bool):
        super().__init__(message)
        self.gone = gone


def playable(row: FileRow | None, root: str | Path, file_id: int, links_outside: bool = False
             ) -> tuple[Path, os.stat_result]:
    """(real path, its stat) of an indexed file that may be played back, else :class:`NotPlayable`.

    The real location (symlinks resolved) must lie inside the indexed folder unless the index
    allowed links outside, and the file must still have the size and mtime it was indexed with:
    a request reaches nothing but the sounds that were indexed.
    """
    if row is None:
        raise NotPlayable(f"no file with id {file_id} in this index", gone=False)
    path = Path(root) / row.path
    real = Path(os.path.realpath(path))
    if not links_outside:
        try:
            real.relative_to(os.path.realpath(root))
        except ValueError:
            raise NotPlayable(f"{row.path} no longer leads to the indexed file (it now points outside "
                              "the indexed folder)", gone=True) from None
    try:
        st = os.stat(real)
    except OSError:
        raise NotPlayable(f"{row.path} was indexed but is no longer on disk", gone=True) from None
    if not stat.S_ISREG(st.st_mode) or (st.st_size, st.st_mtime_ns) != (row.size, row.mtime_ns):
        raise NotPlayable(f"{row.path} has changed since it was indexed; re-index to play it", gone=True)
    return real, st
