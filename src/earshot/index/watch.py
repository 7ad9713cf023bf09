"""A folder that keeps itself indexed: ``earshot index DIR --watch`` and ``earshot serve INDEX --watch``.

:func:`watch_folder` waits for file-system events under the folder (``watchfiles``: inotify
on Linux, FSEvents on macOS), lets a burst settle, then hands the paths the events named to
:func:`earshot.index.index_folder` (``changed=``): only those paths are looked at (a folder
moved or copied in is walked, nothing else), new and changed files are encoded, deleted ones
dropped, a moved file is a delete plus a new file, and the vector files are patched in place
(FAISS ``remove_ids``/``add_with_ids``) rather than rebuilt. A full run (the whole walk, the
damaged-row check, vectors rebuilt when much changed) happens only as a fallback: every
``reconcile_s`` seconds, and after a targeted run failed. Events are debounced (``debounce_ms``: a burst of 1,000 copied files arrives as a few
batches, each one indexing run) and a changed file is only indexed once its size and mtime
have stopped moving for ``settle_s`` (so a file still being written is retried when it is
finished, not recorded as bad; a file that never settles within ``max_settle_s`` is indexed as
it is, and re-tried when it changes again, as the indexer re-tries any bad file whose size or
mtime moved). Events inside the index directory itself are ignored. A running server reopens
the index by itself when a run has written new vectors (``LiveIndex``), so it answers
throughout.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from earshot.errors import EarshotError


@dataclass(frozen=True)
class WatchConfig:
    debounce_ms: int = 1000  # events closer than this are one batch
    settle_s: float = 1.0  # a changed file must keep its size and mtime this long before it is indexed
    max_settle_s: float = 30.0  # ...but a batch waits at most this long for its files to settle
    reconcile_s: float = 3600.0  # a full walk of the folder at most this often, on the next event (0: never)


@dataclass(frozen=True)
class Update:
    """One indexing run triggered by changes (passed to the ``on_update`` callback)."""

    changed: int  # paths the events named
    encoded: int  # files (re)encoded
    removed: int  # files dropped
    bad: int  # files skipped in the index now
    seconds: float  # the indexing run's wall time
    error: str | None = None  # the run failed (the watcher keeps going)
    full: bool = False  # a full reconcile (the whole folder walked), not just the changed paths


def _stamp(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def settle(paths: Iterable[str], settle_s: float, max_settle_s: float, stop: threading.Event | None = None) -> bool:
    """Wait until every path has kept its size and mtime (or stayed absent) for ``settle_s``;
    False if ``max_settle_s`` passed first (or ``stop`` was set)."""
    paths = list(paths)
    deadline = time.monotonic() + max_settle_s
    last = {p: _stamp(p) for p in paths}
    quiet_since = time.monotonic()
    while True:
        if stop is not None and stop.is_set():
            return False
        now = time.monotonic()
        if now - quiet_since >= settle_s:
            return True
        if now >= deadline:
            return False
        time.sleep(min(0.1, settle_s / 4))
        cur = {p: _stamp(p) for p in paths}
        if cur != last:
            last, quiet_since = cur, time.monotonic()


def watch_folder(
    root: str | Path,
    encoder,
    out: str | Path,
    cfg=None,
    watch: WatchConfig = WatchConfig(),
    stop: threading.Event | None = None,
    on_update: Callable[[Update], None] | None = None,
    ready: threading.Event | None = None,
) -> None:
    """Keep index ``out`` of folder ``root`` up to date until ``stop`` is set (or Ctrl+C).

    ``cfg`` (an :class:`earshot.index.IndexConfig`) defaults to the settings the index was
    built with. ``ready`` is set once the watch is in place (events after it are seen).
    """
    import watchfiles

    from earshot.index.indexer import index_folder

    root = Path(root).expanduser().resolve()
    out = Path(out).expanduser().resolve()
    if not root.is_dir():
        raise EarshotError(f"{root}: not a folder")
    cfg = cfg if cfg is not None else config_of(out)
    stop = stop or threading.Event()
    last_full = time.monotonic()  # the caller has just run (or will run) a full index
    failed = False

    def not_in_index(_change, path: str) -> bool:
        p = Path(path)
        return p != out and out not in p.parents and not p.name.startswith(".")

    # watchfiles starts watching before its first yield; a zero-length first wait marks "ready"
    for changes in watchfiles.watch(root, watch_filter=not_in_index, debounce=watch.debounce_ms, step=50,
                                    stop_event=stop, yield_on_timeout=True, rust_timeout=200,
                                    raise_interrupt=False):
        if ready is not None and not ready.is_set():
            ready.set()
        if stop.is_set():
            return
        if not changes:
            continue
        paths = {p for _, p in changes}
        settle(paths, watch.settle_s, watch.max_settle_s, stop)
        if stop.is_set():
            return
        t0 = time.perf_counter()
        full = failed or (watch.reconcile_s > 0 and time.monotonic() - last_full >= watch.reconcile_s)
        try:
            report = index_folder(root, encoder, out, cfg, changed=None if full else sorted(paths))
        except EarshotError as e:  # e.g. another indexer holds the lock: a full run on the next event
            failed = True
            if on_update:
                on_update(Update(len(paths), 0, 0, 0, time.perf_counter() - t0, str(e), full))
            continue
        failed = False
        if full:
            last_full = time.monotonic()
        if on_update:
            on_update(Update(len(paths), len(report.encoded), len(report.removed), len(report.bad),
                             time.perf_counter() - t0, None, full))


def config_of(out: Path):
    """The :class:`IndexConfig` an existing index was built with (windowing, pooling, vectors)."""
    from earshot.index import vectors as V
    from earshot.index.indexer import IndexConfig
    from earshot.index.store import Store

    store = Store.open(out)
    try:
        s = store.settings()
        doc = store.get_info("vector_config") or {}
    finally:
        store.close()
    if s is None:
        raise EarshotError(f"{out}: index has never been built; run `earshot index` once first")
    return IndexConfig(window_s=s.window_s, hop_s=s.hop_s, pooling=s.pooling,  # type: ignore[arg-type]
                       vectors=V.VectorConfig(**doc), workers=0)  # no fork from a threaded server


class Watcher:
    """:func:`watch_folder` in a background thread (what ``serve --watch`` runs)."""

    def __init__(self, root: str | Path, encoder, out: str | Path, watch: WatchConfig = WatchConfig(),
                 on_update: Callable[[Update], None] | None = None):
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.updates: list[Update] = []
        self.error: str | None = None

        def record(u: Update) -> None:
            self.updates.append(u)
            if on_update:
                on_update(u)

        def run() -> None:
            try:
                watch_folder(root, encoder, out, None, watch, self.stop, record, self.ready)
            except Exception as e:  # noqa: BLE001 - reported by /health, not a dead thread's traceback
                self.error = f"{type(e).__name__}: {e}"
                self.ready.set()

        self.thread = threading.Thread(target=run, name="earshot-watch", daemon=True)
        self.thread.start()

    def close(self, timeout: float = 10.0) -> None:
        self.stop.set()
        self.thread.join(timeout)
