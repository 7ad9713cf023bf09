"""Index a folder of sounds: walk, decode in worker processes, frame, encode, pool, commit.

The pipeline overlaps the two costly stages: worker processes hash, decode, resample and frame
files ahead of the encoder while the parent process runs the model on the previous batch. Each
encoded batch is committed to SQLite in one transaction, so a killed run keeps every finished
file and a rerun skips them. A rerun on a changed folder encodes only new or changed files
(size and mtime first; the content hash decides when they differ) and drops deleted ones.
"""

from __future__ import annotations

import collections
import contextlib
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor, TimeoutError
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable, Iterator, Literal

import numpy as np

from earshot.audio.io import SUPPORTED_SUFFIXES
from earshot.errors import AudioError, EarshotError
from earshot.index import vectors as V
from earshot.index import words
from earshot.index.decode import (Decoded, Framing, Limits, WindowStream, decode, decode_job, die_with_parent,
                                  is_candidate)
from earshot.index.encoder import Encoder
from earshot.index.moments import write_windows
from earshot.index import integrity
from earshot.index.store import DB_FILE, FAISS_FILE, LOCK_FILE, IndexSettings, Store, building_dir, files_kept, index_lock  # noqa: F401 - files_kept re-exported

Pooling = Literal["mean", "max"]


@dataclass(frozen=True)
class IndexConfig:
    window_s: float = 10.0  # window length in seconds (the models are trained on 10 s crops)
    hop_s: float = 5.0  # hop between windows in seconds (50% overlap)
    pooling: Pooling = "mean"  # clip embedding = mean or element-wise max of window embeddings
    min_s: float = 1.0  # clips shorter than this are zero-padded at the end to this length
    batch_size: int = 16  # windows per forward pass
    workers: int = 2  # decoding processes; 0 decodes in this process (no overlap)
    vectors: V.VectorConfig = field(default_factory=V.VectorConfig)  # FAISS index type
    limits: Limits = field(default_factory=Limits)  # what a header may declare (4 h, 64 ch, 1-768 kHz)
    links_outside: bool = False  # index symlinks whose target lies outside the folder (refused by default)
    stream_after_s: float = 120.0  # longer files are decoded, resampled and embedded block by block

    def __post_init__(self) -> None:
        if self.pooling not in ("mean", "max"):
            raise EarshotError(f"pooling {self.pooling!r}: expected 'mean' or 'max'")
        if not (0 < self.hop_s <= self.window_s):
            raise EarshotError(f"need 0 < hop ({self.hop_s} s) <= window ({self.window_s} s)")
        if self.batch_size < 1 or self.workers < 0 or self.min_s < 0:
            raise EarshotError("batch_size must be >= 1, workers >= 0 and min_s >= 0")


@dataclass(frozen=True)
class Progress:
    """Passed to the progress callback after every committed batch."""

    done: int  # files looked at so far (encoded, unchanged or bad)
    total: int  # files found
    audio_s: float  # seconds of audio encoded so far


@dataclass
class IndexReport:
    """What a run did; ``bad`` lists every skipped file with its reason (relative paths)."""

    index: Path
    root: Path
    found: int = 0  # candidate files under root
    encoded: list[str] = field(default_factory=list)  # new or changed files embedded this run
    unchanged: int = 0  # already indexed with the same content
    removed: list[str] = field(default_factory=list)  # gone from the folder, dropped
    bad: list[tuple[str, str]] = field(default_factory=list)  # (path, reason), sorted
    items: int = 0  # files in the index after the run
    audio_s: float = 0.0  # seconds of audio encoded this run
    windows: int = 0  # windows encoded this run
    seconds: float = 0.0  # wall time
    kind: str = "flat"  # FAISS index type written
    repaired: list[str] = field(default_factory=list)  # what was found damaged and rebuilt
    notes: list[tuple[str, str]] = field(default_factory=list)  # (path, note): indexed, but not as declared


ENGINES = ("local", "ray")  # index_folder | earshot.index.engine_ray.index_folder_ray


@dataclass(frozen=True)
class IndexRequest:
    """An ``earshot index`` run, checked by :func:`check_index_request`."""

    folder: Path  # the sound folder (expanded)
    out: Path  # the index directory (expanded)
    has_audio: bool  # the folder holds audio to index, or an index is already there to update


def check_index_request(folder: str | Path, model: str | Path, out: str | Path, engine: str = "local",
                        address: str | None = None, gpus_per_worker: float = 0.0,
                        watch: bool = False) -> IndexRequest:
    """What ``earshot index`` checks before any model is opened: the folder is one, ``out`` is
    not a file, the model argument means something (the one resolver's error otherwise,
    prefixed ``--model``), the engine and its options agree; and whether there is audio."""
    from earshot.errors import WeightsError
    from earshot.loading.resolve import resolve

    folder, out = Path(folder).expanduser(), Path(out).expanduser()
    if not folder.is_dir():
        raise EarshotError(f"{folder}: no such folder")
    if out.exists() and not out.is_dir():
        raise EarshotError(f"--out {out}: is a file; give a folder for the index")
    try:
        resolve(model)
    except WeightsError as e:
        raise EarshotError(f"--model {e}") from None
    if engine not in ENGINES:
        raise EarshotError(f"--engine {engine!r}: expected one of {', '.join(ENGINES)}")
    if engine == "local" and (address or gpus_per_worker):
        raise EarshotError("--address and --gpus-per-worker need --engine ray")
    if engine == "ray" and watch:
        raise EarshotError("--watch keeps this machine's index up to date: use it with --engine local")
    has_audio = (out / "meta.sqlite").is_file() or any(
        p.suffix.lower() in SUPPORTED_SUFFIXES for p in walk(folder, out.resolve()))
    return IndexRequest(folder, out, has_audio)


def pool(window_embeddings: np.ndarray, how: Pooling, normalize: bool) -> np.ndarray:
    """(W, D) window embeddings -> (D,) clip embedding; unit length again when ``normalize``."""
    v = window_embeddings.mean(axis=0) if how == "mean" else window_embeddings.max(axis=0)
    if normalize:
        v = v / max(float(np.linalg.norm(v)), 1e-12)
    return v.astype(np.float32)


def walk(root: Path, exclude: Path | None = None) -> list[Path]:
    """Every non-hidden file under ``root`` (recursively, sorted so runs are deterministic)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(
            d for d in dirnames if not d.startswith(".") and (exclude is None or (here / d).resolve() != exclude)
        )
        found.extend(here / f for f in sorted(filenames) if is_candidate(here / f))
    return found


def index_folder(
    root: str | Path,
    encoder: Encoder,
    out: str | Path,
    cfg: IndexConfig = IndexConfig(),
    progress: Callable[[Progress], None] | None = None,
    changed: Iterable[str | Path] | None = None,
) -> IndexReport:
    """Index (or bring up to date) the sounds under ``root`` into index directory ``out``.

    Returns a report of what was encoded, kept, removed and skipped. Refuses an existing index
    built with another model or other windowing settings. ``changed`` (what a watcher saw:
    files or folders, absolute or relative to ``root``) limits an update of an existing index to
    those paths: nothing else is walked or stat'ed, and the vector files are updated in place
    (see :func:`write_vectors`); a path that no longer exists drops what was indexed there.
    """
    t0 = time.perf_counter()
    root = Path(root).expanduser().resolve()
    out = Path(out).expanduser().resolve()
    if not root.is_dir():
        raise EarshotError(f"{root}: not a folder")
    settings = settings_for(encoder, cfg, root)
    with staged_build(out) as where, _deferred_sigint():
        # ``changed`` only limits an update: a new index is always a whole walk
        only = None if changed is None or where != out else list(changed)
        report = _run(where, out, root, encoder, settings, cfg, progress, only)
    report.seconds = time.perf_counter() - t0
    return report


@contextlib.contextmanager
def staged_build(out: Path) -> Iterator[Path]:
    """The folder an indexing run writes into, locked; both engines (local, Ray) build through here.

    An update is written in place (``out`` itself, one transaction per batch). A new index is
    built in :func:`building_dir` and renamed into place whole when the run ends; a run that
    ends with an error or Ctrl-C puts what it finished in place (a rerun resumes from it), or
    leaves the building folder for the next run when nothing was finished yet.
    """
    if (out / DB_FILE).is_file():
        with index_lock(out):
            yield out
        return
    staging = building_dir(out)
    with _lock_if_exists(out), index_lock(staging):
        try:
            yield staging
        except BaseException:
            with contextlib.suppress(Exception):
                if _has_files(staging):
                    _swap_in(staging, out)
            raise
        _swap_in(staging, out)


def settings_for(encoder: Encoder, cfg: IndexConfig, root: Path) -> IndexSettings:
    """What an index of ``root`` built by ``encoder`` under ``cfg`` records (and a rerun must match)."""
    return IndexSettings(
        model_id=encoder.model_id,
        model_path=getattr(encoder, "model_path", ""),
        dim=encoder.dim,
        sample_rate=encoder.sample_rate,
        normalize=encoder.normalize,
        window_s=cfg.window_s,
        hop_s=cfg.hop_s,
        pooling=cfg.pooling,
        root=str(root),
    )


_STOP = threading.Event()  # set by the first Ctrl-C during index_folder (see _deferred_sigint)


def _checkpoint() -> None:
    """Stop here if Ctrl-C was pressed: between files, batches and window blocks, never inside
    a transaction or the process pool's own bookkeeping (where an interrupt could deadlock)."""
    if _STOP.is_set():
        raise KeyboardInterrupt


@contextlib.contextmanager
def _deferred_sigint() -> Iterator[None]:
    """While indexing in the main thread, the first SIGINT only asks to stop (checked at the
    next :func:`_checkpoint`, well within a second); a second one interrupts at once."""
    _STOP.clear()
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def ask(signum, frame) -> None:
        if _STOP.is_set():
            raise KeyboardInterrupt
        _STOP.set()

    previous = signal.signal(signal.SIGINT, ask)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        asked = _STOP.is_set()
        _STOP.clear()
    if asked:  # only reached when the run finished after the request: still an interrupt
        raise KeyboardInterrupt


def _has_files(directory: Path) -> bool:
    try:
        store = Store.open(directory, readonly=True, check=False)
    except EarshotError:
        return False
    try:
        return store.count() > 0
    finally:
        store.close()


@contextlib.contextmanager
def _lock_if_exists(out: Path) -> Iterator[None]:
    """Hold ``out``'s lock while building its replacement, when ``out`` exists (an empty folder
    or a bare lock file): a second indexer on it is refused as for an update."""
    if out.exists():
        with index_lock(out):
            yield
    else:
        yield


def _swap_in(staging: Path, out: Path) -> None:
    """Rename the finished ``staging`` folder to ``out``; an ``out`` holding only a lock file and
    stale temporary files (what a refused or killed run leaves) is replaced."""
    if out.exists():
        leftovers = [p for p in out.iterdir() if p.name != LOCK_FILE and not p.name.endswith(".tmp")]
        if leftovers:
            raise EarshotError(f"{out}: something was written there while the index was built; "
                               f"the new index is in {staging}")
        for p in out.iterdir():
            p.unlink()
        out.rmdir()
    os.rename(staging, out)


def _run(where: Path, out: Path, root: Path, encoder: Encoder, settings: IndexSettings, cfg: IndexConfig,
         progress: Callable[[Progress], None] | None, changed: list[str | Path] | None = None) -> IndexReport:
    """One indexing run writing into directory ``where`` (``out`` itself or its building folder);
    ``changed``: only these paths (see :func:`index_folder`)."""
    for stale in integrity.stale_temp_files(where):  # vector files left by a run killed mid-write
        with contextlib.suppress(OSError):
            stale.unlink()
    store = Store.open(where, create=True)
    try:
        check_settings(store, settings, out)
        store.set_info("links_outside", cfg.links_outside)
        report = IndexReport(index=out, root=root)
        _update(store, root, out, encoder, settings, cfg, report, progress, changed)
        _checkpoint()  # Ctrl-C before the final writes stops here; each of them is safe to cut
        finish_run(store, root, settings, cfg, report, whole_walk=changed is None)
    finally:
        store.close()
    return report


def finish_run(store: Store, root: Path, settings: IndexSettings, cfg: IndexConfig, report: IndexReport,
               whole_walk: bool = True) -> None:
    """After every file is committed: words, window vectors, the FAISS file, the report's totals,
    and the run marked finished. Shared by both engines, so their indexes end alike.
    ``whole_walk=False`` (a watcher's batch of named paths): the run's ``found`` counts only those
    paths, so the folder's count is taken from the database instead."""
    words.sync(store, root)  # names and tags of new files, for word search and filters
    # every window, for moment ranking; before vectors.faiss, whose stamp tells a running
    # server that the update is complete
    _checkpoint()
    write_windows(store, settings.dim, cfg.vectors)
    _checkpoint()
    integrity.fill_digests(store)  # rows of an older earshot: hashed once, so later updates read no blobs
    report.kind = write_vectors(store, settings.dim, cfg.vectors, report.repaired)
    report.items = store.count()
    report.bad = sorted((p, r) for p, (_, _, r) in store.bad().items())
    found = report.found if whole_walk else report.items + len(report.bad)  # the whole folder's count
    with store.transaction():
        store.set_info("run", {"found": found, "finished": True})


def check_settings(store: Store, new: IndexSettings, out: Path) -> None:
    old = store.settings()
    if old is None:
        store.set_settings(new)
        return
    if old.model_id != new.model_id:
        raise EarshotError(
            f"{out}: index was built with model {old.model_id} ({old.model_path}); "
            f"this model is {new.model_id}. Use the same model or a new --out."
        )
    for name in ("window_s", "hop_s", "pooling", "root", "dim", "sample_rate"):
        if getattr(old, name) != getattr(new, name):
            raise EarshotError(
                f"{out}: index was built with {name}={getattr(old, name)!r}, now {getattr(new, name)!r}. "
                "Use the same settings or a new --out."
            )
    if old.model_path != new.model_path:  # same weights, moved: remember where they are now
        store.set_settings(new)


def _update(
    store: Store,
    root: Path,
    out: Path,
    encoder: Encoder,
    settings: IndexSettings,
    cfg: IndexConfig,
    report: IndexReport,
    progress: Callable[[Progress], None] | None,
    changed: list[str | Path] | None = None,
) -> None:
    files, jobs = plan_update(store, root, out, settings, cfg, report, changed)
    done = len(files) - len(jobs)
    if progress:
        progress(Progress(done, len(files), 0.0))
    batch: list[Decoded] = []
    job_of = {job[1]: job for job in jobs}  # (path, rel, size, mtime, sha256, framing)
    for item in _decoded(jobs, cfg.workers):
        _checkpoint()
        if item.long:  # too long to hand over whole: streamed here, window block by window block
            job = job_of[item.rel]
            _commit_streamed(store, encoder, job[0], item, job[5], cfg, report)
            done += 1
            if progress:
                progress(Progress(done, len(files), report.audio_s))
            continue
        batch.append(item)
        if sum(len(d.windows or ()) for d in batch) >= cfg.batch_size:
            done += _commit(store, encoder, batch, cfg, report)
            batch = []
            if progress:
                progress(Progress(done, len(files), report.audio_s))
    if batch:
        done += _commit(store, encoder, batch, cfg, report)
        if progress:
            progress(Progress(done, len(files), report.audio_s))


def plan_update(
    store: Store, root: Path, out: Path, settings: IndexSettings, cfg: IndexConfig, report: IndexReport,
    changed: list[str | Path] | None = None,
) -> tuple[list[Path], list[tuple]]:
    """Walk ``root`` against the index: (files found, decode jobs for new or changed files).

    Commits what needs no decoding at once (deleted files dropped, unreadable or unsupported
    ones recorded as bad) and fills ``report.found/unchanged/removed``. Both engines (local and
    Ray, :mod:`earshot.index.engine_ray`) plan through here, so they skip and report alike.
    With ``changed`` only those paths are looked at (:func:`changed_files`), and only what was
    indexed at or under them can be dropped.
    """
    if changed is None:
        files = walk(root, exclude=out)
        known, bad = store.files(), store.bad()
        with store.transaction():
            store.set_info("run", {"found": len(files), "finished": False})
        damaged = store.damaged_files(settings.dim)
    else:  # a watched batch: the damaged-row check and the full walk are left to a full run
        files, named = changed_files(root, out, changed)
        known, bad = store.files_at(named)
        damaged = []
    report.found = len(files)
    if damaged:  # rows that are not whole: drop them, so the files are encoded again below
        with store.transaction():
            for rel in damaged:
                store.remove(rel)
            store.bump_generation()
        report.repaired.append(f"{len(damaged)} file(s) had damaged rows in the database "
                               f"({', '.join(damaged[:3])}{', ...' if len(damaged) > 3 else ''}); encoded them again")
        known = store.files()
    present: set[str] = set()
    jobs = []
    framing = Framing(settings.sample_rate, cfg.window_s, cfg.hop_s, cfg.min_s, cfg.limits, cfg.stream_after_s)
    skipped_now: list[tuple[str, int, int, str]] = []
    for path in files:
        _checkpoint()
        rel = path.relative_to(root).as_posix()
        try:
            rel.encode("utf-8")
        except UnicodeEncodeError:  # bytes that are not UTF-8: the database keeps text only
            rel = os.fsencode(rel).decode("utf-8", "backslashreplace")
            present.add(rel)
            skipped_now.append((rel, 0, 0, "file name is not valid UTF-8; rename the file to index it"))
            continue
        present.add(rel)
        try:
            st = path.stat()
        except OSError as e:
            skipped_now.append((rel, 0, 0, f"cannot stat: {e.strerror or e}"))
            continue
        if not cfg.links_outside and path.is_symlink() and not _inside(path, root):
            skipped_now.append((rel, st.st_size, st.st_mtime_ns,
                                "symbolic link to a file outside the indexed folder (not indexed)"))
            continue
        if not path.is_file():
            skipped_now.append((rel, st.st_size, st.st_mtime_ns, "not a regular file"))
            continue
        row = known.get(rel)
        if row is not None and (row.size, row.mtime_ns) == (st.st_size, st.st_mtime_ns):
            report.unchanged += 1
            continue
        if rel in bad and bad[rel][:2] == (st.st_size, st.st_mtime_ns):
            continue  # still the same bad file; its reason stays in the report
        if path.suffix.lower() not in SUPPORTED_SUFFIXES:
            skipped_now.append((rel, st.st_size, st.st_mtime_ns,
                                f"unsupported format {path.suffix or '(no suffix)'!r}"))
            continue
        jobs.append((str(path), rel, st.st_size, st.st_mtime_ns, row.sha256 if row else None, framing))

    gone = sorted((set(known) | set(bad)) - present)
    with store.transaction():
        for rel in gone:
            store.remove(rel)
        for rel, size, mtime, reason in skipped_now:
            store.put_bad(rel, size, mtime, reason)
        if gone:
            store.bump_generation()
    report.removed = [g for g in gone if g in known]
    return files, jobs


def changed_files(root: Path, out: Path, changed: Iterable[str | Path]) -> tuple[list[Path], list[str]]:
    """(candidate files among or under the ``changed`` paths, those paths relative to ``root``).

    A changed folder (moved or copied in whole) is walked; a path that is gone yields no file,
    so what was indexed at or under it is dropped; paths outside ``root``, inside the index or
    hidden are ignored, as a full walk would ignore them. Each path costs one ``stat``.
    """
    files: dict[Path, None] = {}
    named: list[str] = []
    for p in changed:
        p = Path(p) if Path(p).is_absolute() else root / p
        try:
            rel = p.relative_to(root)
        except ValueError:
            continue
        if not rel.parts or p == out or out in p.parents or any(part.startswith(".") for part in rel.parts):
            continue
        named.append(rel.as_posix())
        if p.is_dir() and not p.is_symlink():
            files.update(dict.fromkeys(walk(p, exclude=out)))
        elif p.is_file() or p.is_symlink():
            files[p] = None
    return sorted(files), sorted(set(named))


def _inside(path: Path, root: Path) -> bool:
    """Whether ``path``'s real location (all symlinks resolved) lies under ``root``."""
    try:
        Path(os.path.realpath(path)).relative_to(os.path.realpath(root))
        return True
    except ValueError:
        return False


def _decoded(jobs: list[tuple], workers: int) -> Iterator[Decoded]:
    """Decoded files in job order; with workers, up to 4 per worker are decoded ahead.

    Workers die with this process (see :func:`die_with_parent`); a worker that crashes on a
    file (a decoder segfault) costs that file only: it is reported and the pool is restarted.
    """
    if workers == 0:
        for job in jobs:
            _checkpoint()
            yield decode(*job)
        return
    # fork starts workers at once and works from any script (spawn re-imports ``__main__``);
    # workers only run numpy/soundfile/soxr, never the parent's torch or SQLite handle.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    ctx = multiprocessing.get_context(method)

    def new_pool() -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=die_with_parent,
                                   initargs=(os.getpid(),))

    pool_ = new_pool()
    queue: collections.deque[tuple[tuple, Future]] = collections.deque()
    it = iter(jobs)
    finished = False
    try:
        for job in it:
            queue.append((job, pool_.submit(decode_job, job)))
            if len(queue) >= 4 * workers:
                break
        while queue:
            job, fut = queue.popleft()
            try:
                while True:  # poll, so Ctrl-C is seen while a worker decodes a long file
                    _checkpoint()
                    try:
                        result = fut.result(timeout=0.1)
                        break
                    except TimeoutError:
                        continue
            except BrokenProcessPool:
                result = Decoded(rel=job[1], size=job[2], mtime_ns=job[3],
                                 error="the decoder crashed on this file (its worker process died)")
                pool_.shutdown(wait=False, cancel_futures=True)
                pool_ = new_pool()
                queue = collections.deque((j, pool_.submit(decode_job, j)) for j, _ in queue)
            except Exception as e:  # noqa: BLE001 - e.g. a result that cannot be unpickled
                result = Decoded(rel=job[1], size=job[2], mtime_ns=job[3], error=f"{type(e).__name__}: {e}"[:300])
            nxt = next(it, None)
            if nxt is not None:
                queue.append((nxt, pool_.submit(decode_job, nxt)))
            yield result
        finished = True
    finally:
        for _, f in queue:
            f.cancel()
        if finished:
            pool_.shutdown(wait=True, cancel_futures=True)
        else:  # Ctrl-C or an error: the workers hold nothing worth waiting for (nothing is committed there)
            _stop_workers(pool_)


def _stop_workers(pool_: ProcessPoolExecutor) -> None:
    """End a pool at once: kill its workers, then shut it down without waiting.

    ``shutdown(wait=True)`` would join workers still decoding (or blocked on a pipe), which is
    what made Ctrl-C hang in multiprocessing's exit handler.
    """
    procs = list(getattr(pool_, "_processes", {}).values())  # the executor's own map of workers
    for p in procs:
        with contextlib.suppress(Exception):
            p.kill()
    for q in (getattr(pool_, "_call_queue", None),):  # its feeder thread must not block the exit
        with contextlib.suppress(Exception):
            q.cancel_join_thread()
    pool_.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        with contextlib.suppress(Exception):
            p.join(1.0)


def _commit(store: Store, encoder: Encoder, batch: list[Decoded], cfg: IndexConfig, report: IndexReport) -> int:
    """Encode a batch of decoded files and commit them (and any bad ones) in one transaction."""
    _checkpoint()
    emb = embed_decoded(encoder, batch, cfg.batch_size)
    with store.transaction():
        store_decoded(store, batch, emb, cfg.pooling, encoder.normalize, report)
    return len(batch)


def embed_decoded(encoder: Encoder, batch: list[Decoded], batch_size: int) -> np.ndarray:
    """(W, D) embeddings of the windows of every good file in ``batch``, in order.

    A file the model fails on gets ``error`` set (the others still go in), so the failure is
    reported like a decoding failure. Shared by the local indexer and the Ray embedding actors.
    """
    todo = [d for d in batch if d.error is None and not d.unchanged]
    waves = [w for d in todo for w in d.windows or ()]
    try:
        return encoder.embed_audio(waves, batch_size=batch_size) if waves else np.empty((0, encoder.dim), np.float32)
    except Exception:  # noqa: BLE001 - find the file the model fails on; the others go in
        parts = []
        for d in todo:
            try:
                parts.append(encoder.embed_audio(d.windows or [], batch_size=batch_size))
            except Exception as e:  # noqa: BLE001
                d.error = f"the model failed on this file: {type(e).__name__}: {e}"[:300]
        return np.concatenate(parts) if parts else np.empty((0, encoder.dim), np.float32)


def store_decoded(store: Store, batch: list[Decoded], emb: np.ndarray, pooling: Pooling, normalize: bool,
                  report: IndexReport) -> None:
    """Write a batch (good files with their rows of ``emb``, bad and unchanged ones) to ``store``.

    Call inside a transaction. ``d.windows`` is not read (a shard from the Ray engine carries
    only ``d.starts``), so the local and Ray paths write identical rows.
    """
    pos = 0
    wrote = False
    for d in batch:
        if d.error is not None:
            store.put_bad(d.rel, d.size, d.mtime_ns, d.error)
        elif d.unchanged:
            store.touch_file(d.rel, d.size, d.mtime_ns)
            report.unchanged += 1
        else:
            n = len(d.starts if d.starts is not None else ())
            win = emb[pos : pos + n]  # (W, D)
            pos += n
            store.put_file(d.rel, d.size, d.mtime_ns, d.sha256, d.duration, d.sample_rate, d.channels,
                           pool(win, pooling, normalize), d.starts, d.ends, win, d.peaks)
            report.encoded.append(d.rel)
            report.audio_s += d.duration
            report.windows += n
            wrote = True
            if d.note:
                report.notes.append((d.rel, d.note))
    if wrote:
        store.bump_generation()


def _commit_streamed(store: Store, encoder: Encoder, path: str, d: Decoded, framing: Framing, cfg: IndexConfig,
                     report: IndexReport) -> None:
    """Decode, resample, frame and embed one long file block by block (:class:`WindowStream`),
    keeping only its window embeddings, then commit it (or its reason) in one transaction."""
    stream = WindowStream(path, replace(framing, stream_after_s=None))
    embs, starts, ends = [], [], []
    try:
        for windows, s, e in stream.windows(cfg.batch_size):
            _checkpoint()
            embs.append(encoder.embed_audio(windows, batch_size=cfg.batch_size))  # (n, D)
            starts.append(s)
            ends.append(e)
    except AudioError as e:
        d.error = e.reason
    except Exception as e:  # noqa: BLE001 - the model failed on this file: it is named, the run goes on
        d.error = f"the model failed on this file: {type(e).__name__}: {e}"[:300]
    with store.transaction():
        if d.error is not None:
            store.put_bad(d.rel, d.size, d.mtime_ns, d.error)
            return
        win = np.concatenate(embs)  # (W, D)
        store.put_file(d.rel, d.size, d.mtime_ns, d.sha256, stream.duration, stream.sample_rate, stream.channels,
                       pool(win, cfg.pooling, encoder.normalize), np.concatenate(starts), np.concatenate(ends), win,
                       stream.peaks())
        store.bump_generation()
    report.encoded.append(d.rel)
    report.audio_s += stream.duration
    report.windows += len(win)
    if stream.note:
        report.notes.append((d.rel, stream.note))


def write_vectors(store: Store, dim: int, cfg: V.VectorConfig, notes: list[str] | None = None) -> str:
    """Rebuild the FAISS file from the database if it is stale or not the file that was written;
    return its index type.

    The file is written atomically first and stamped in the database after (generation plus
    its size and digest, see :mod:`earshot.index.integrity`), so a crash in between leaves a
    stamp that does not match and the next reader rebuilds. A file that fails its digest
    (damaged, truncated, copied from another index) is rebuilt, and ``notes`` says so.
    """

    gen = store.generation()
    path = store.directory / FAISS_FILE
    ids = store.file_ids()
    kind = V.describe(cfg, len(ids), dim)
    index = None
    if store.get_info("faiss_kind") == kind and path.is_file():
        why = integrity.check_vectors(store, path)
        if why is None and store.get_info("faiss_generation") == gen:
            return kind
        if why is None:  # the file written for an older generation: patched in place where FAISS allows
            index = _patched(V.load(path), store, ids, dim)
        elif notes is not None:
            notes.append(f"{FAISS_FILE}: {why}; rebuilt it from the database")
    if index is None:
        ids, vecs = store.clip_vectors(dim)
        index = V.build(vecs, ids, cfg)
    V.save(index, path)
    with store.transaction():
        store.set_info("faiss_generation", gen)
        store.set_info("faiss_kind", kind)
        store.set_info("vector_config", {k: getattr(cfg, k) for k in cfg.__dataclass_fields__})
    integrity.record_vectors(store, path, gen)
    return kind


REBUILD_AFTER = 0.2  # an update changing more than this share of the vectors rebuilds them (fresh IVF cells)


def _patched(index, store: Store, ids: np.ndarray, dim: int):
    """``index`` (the file-level vectors of an older generation) brought to the files ``ids``
    now in the database: ids gone are removed, new ones added with their embeddings (a changed
    file has a new id, so it is one of each). None when FAISS cannot do that for this index
    (HNSW, the compressed and sharded kinds) or when most of it changed: rebuild instead."""
    import faiss

    if not V.patchable(index):
        return None
    have = V.ids_of(index)
    gone = np.setdiff1d(have, ids, assume_unique=True)
    new = np.setdiff1d(ids, have, assume_unique=True)
    if len(gone) + len(new) > REBUILD_AFTER * max(len(ids), 1):
        return None
    if len(gone):
        index.remove_ids(faiss.IDSelectorBatch(len(gone), faiss.swig_ptr(np.ascontiguousarray(gone))))
    if len(new):
        new_ids, vecs = store.clip_vectors(dim, new)
        index.add_with_ids(np.ascontiguousarray(vecs), np.ascontiguousarray(new_ids))
    return index
