"""Indexing on a Ray cluster (Ray Data): the same index as :func:`index_folder`, built by many machines.

The driver plans exactly as the local indexer does (:func:`earshot.index.indexer.plan_update`:
walk, skip unchanged, record unreadable and unsupported files) and cuts the decode jobs into
shards of ``files_per_shard`` files. A Ray Data pipeline then runs

    jobs --map_batches(decode, CPU tasks)--> decoded windows
         --map_batches(_Embedder, actor pool: the model loaded once per actor)--> window embeddings

and the driver writes each shard as soon as all its files are back (``INDEX/shards/<key>.npz``, in the building folder for a new index:
the file rows, window table and window embeddings; no audio). When every shard exists, one
SQLite transaction merges them in plan order through the same :func:`store_decoded` the local
path commits with, then the FAISS file is rebuilt; the shard files are deleted afterwards.

Both paths share the planner, the checked decoder (:func:`earshot.index.decode.decode` under the
local path's crash-tolerant process pool), the encoder (:func:`embed_decoded`) and the row writer,
so bad files get the same reasons and the merged index holds the same rows (file ids included:
files are merged in walk order). A shard's key is a digest of the model, the framing, the
precision and its jobs (path, size, mtime, known hash), so a rerun after a killed driver finds
the finished shards and decodes and embeds only the others; a killed worker is restarted by Ray
(actors restart, tasks retry) and its batch redone. Nothing is merged until every shard is
written, so a killed run leaves the database as it was; an incremental rerun plans only new and
changed files, as locally. Like the local indexer, the run writes through
:func:`earshot.index.indexer.staged_build`: a new index (its shards included) is built in
``.OUT.building`` beside ``out`` and renamed into place when merged, so a reader of ``out`` never
sees it half-built, and the run ends through the same :func:`finish_run` (words, window vectors,
the FAISS file).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import pickle
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from earshot.errors import EarshotError
from earshot.index.decode import Decoded
from earshot.index.encoder import Encoder
from earshot.index.indexer import (
    IndexConfig,
    IndexReport,
    Progress,
    _decoded,
    check_settings,
    embed_decoded,
    finish_run,
    plan_update,
    settings_for,
    staged_build,
    store_decoded,
)
from earshot.index.store import FAISS_FILE, Store
from earshot.utils import atomic_write

SHARD_DIR = "shards"  # INDEX/shards/<key>.npz: finished shards not yet merged
SHARD_FORMAT = "earshot.shard/1"


class EncoderFactory(Protocol):
    """What every embedding actor calls once to build its model (pickled to the workers)."""

    precision: str

    def open(self, device: str = "cpu") -> Encoder: ...


@dataclass(frozen=True)
class EncoderSpec:
    """A model to open on each worker: it must be reachable there (shared path or HF cache)."""

    model: str  # checkpoint dir, ensemble manifest, CLAP folder or registry name
    precision: str = "auto"  # the audio tower's arithmetic (see earshot.models.inference)

    def open(self, device: str = "cpu") -> Encoder:
        from earshot.index.encoder import open_encoder

        return open_encoder(self.model, self.precision, device)


@dataclass(frozen=True)
class RayConfig:
    address: str | None = None  # None: start a local cluster (or RAY_ADDRESS); "auto" / "ray://host:10001"
    workers: int = 2  # embedding actors, each holding the model once
    cpus_per_worker: float = 0.0  # CPUs each embedding actor reserves (its torch threads); 0 = half the cluster's CPUs shared by the workers
    gpus_per_worker: float = 0.0  # GPUs each embedding actor reserves (0: CPU only)
    files_per_shard: int = 64  # files per shard: the unit written, resumed and merged
    files_per_task: int = 8  # files per decode task and per embedding call

    def __post_init__(self) -> None:
        if self.workers < 1 or self.files_per_shard < 1 or self.files_per_task < 1:
            raise EarshotError("Ray engine: workers, files_per_shard and files_per_task must be >= 1")
        if self.cpus_per_worker < 0 or self.gpus_per_worker < 0:
            raise EarshotError("Ray engine: cpus_per_worker and gpus_per_worker must be >= 0")


@dataclass
class RayIndexReport(IndexReport):
    """An :class:`IndexReport` plus what the cluster did."""

    shards: int = 0  # shards this run needed (new or changed files only)
    shards_reused: int = 0  # of those, found finished on disk (a killed run's work)
    workers: int = 0  # embedding actors


def index_folder_ray(
    root: str | Path,
    model: EncoderFactory,
    out: str | Path,
    cfg: IndexConfig = IndexConfig(),
    ray_cfg: RayConfig = RayConfig(),
    progress: Callable[[Progress], None] | None = None,
) -> RayIndexReport:
    """Index (or bring up to date) ``root`` into ``out`` on Ray; the result equals :func:`index_folder`.

    ``model`` is opened once on the driver (for its identity, rate and dimension) and once per
    embedding actor. Uses the Ray session already initialised in this process, else connects to
    ``ray_cfg.address`` (or starts a local cluster) and shuts it down afterwards.
    """
    t0 = time.perf_counter()
    root = Path(root).expanduser().resolve()
    out = Path(out).expanduser().resolve()
    if not root.is_dir():
        raise EarshotError(f"{root}: not a folder")
    probe = model.open()
    settings = settings_for(probe, cfg, root)
    del probe
    with staged_build(out) as where:  # a new index is built beside out and renamed into place
        for stale in [*where.glob(f".{FAISS_FILE}.*.tmp"), *(where / SHARD_DIR).glob(".*.tmp")]:
            with contextlib.suppress(OSError):
                stale.unlink()
        store = Store.open(where, create=True)
        try:
            check_settings(store, settings, out)
            store.set_info("links_outside", cfg.links_outside)
            report = RayIndexReport(index=out, root=root, workers=ray_cfg.workers)
            files, jobs = plan_update(store, root, out, settings, cfg, report)
            # A decode task hands its windows over whole (the local path streams files longer than
            # stream_after_s in the main process instead): Ray tasks decode every file in full.
            jobs = [(*job[:5], replace(job[5], stream_after_s=None)) for job in jobs]
            shards = [jobs[i : i + ray_cfg.files_per_shard] for i in range(0, len(jobs), ray_cfg.files_per_shard)]
            digest = _plan_digest(settings.model_id, model.precision, cfg)
            paths = [where / SHARD_DIR / f"{_shard_key(digest, s)}.npz" for s in shards]
            todo = [i for i, p in enumerate(paths) if not p.is_file()]
            report.shards, report.shards_reused = len(shards), len(shards) - len(todo)
            done = len(files) - len(jobs) + sum(len(shards[i]) for i in set(range(len(shards))) - set(todo))
            if progress:
                progress(Progress(done, len(files), 0.0))
            if todo:
                _run(shards, todo, paths, model, cfg, ray_cfg, settings.dim, progress, done, len(files))
            _merge(store, paths, cfg, settings.normalize, report)
            finish_run(store, root, settings, cfg, report)  # words, windows, vectors: as locally
            for left in (where / SHARD_DIR).glob("*.npz"):  # merged, or a changed file's stale shard
                with contextlib.suppress(OSError):
                    left.unlink()
            with contextlib.suppress(OSError):
                (where / SHARD_DIR).rmdir()
        finally:
            store.close()
    report.seconds = time.perf_counter() - t0
    return report


# -- planning ----------------------------------------------------------------------------------
def _plan_digest(model_id: str, precision: str, cfg: IndexConfig) -> str:
    """What every shard's content depends on besides its files."""
    doc = {"format": SHARD_FORMAT, "model": model_id, "precision": precision, "window_s": cfg.window_s,
           "hop_s": cfg.hop_s, "min_s": cfg.min_s, "limits": asdict(cfg.limits)}
    return json.dumps(doc, sort_keys=True)


def _shard_key(digest: str, jobs: list[tuple]) -> str:
    h = hashlib.sha256(digest.encode())
    for job in jobs:  # (path, rel, size, mtime_ns, known sha256, framing)
        h.update(json.dumps(job[1:5]).encode())
    return h.hexdigest()[:24]


# -- the pipeline --------------------------------------------------------------------------------
def _connect(address: str | None) -> bool:
    """Join or start a Ray cluster unless this process already has one; True if we started it."""
    import ray

    if ray.is_initialized():
        return False
    try:
        ray.init(address=address, include_dashboard=False, configure_logging=False, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise EarshotError(f"Ray engine: cannot connect to the cluster at {address or 'a new local cluster'}: {e}") from None
    return True


def _decode_batch(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Ray task: decode a few files with the local path's checked, crash-tolerant decoder."""
    jobs = [pickle.loads(b) for b in batch["job"]]
    recs = [pickle.dumps(d, protocol=5) for d in _decoded(jobs, 1)]  # one forked decoder: a segfault costs its file
    return {"shard": batch["shard"], "pos": batch["pos"], "rec": np.array(recs, dtype=object)}


class _Embedder:
    """Ray actor: holds the model, embeds decoded files; returns their rows without the audio."""

    def __init__(self, model: EncoderFactory, batch_size: int, threads: int, gpu: bool):
        import torch

        torch.set_num_threads(max(1, threads))
        self.encoder = model.open("cuda" if gpu else "cpu")  # Ray sets CUDA_VISIBLE_DEVICES to its GPUs
        self.batch_size = batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        recs: list[Decoded] = [pickle.loads(b) for b in batch["rec"]]
        emb = embed_decoded(self.encoder, recs, self.batch_size)  # (W, D); failures set d.error
        out, pos = [], 0
        for d in recs:
            e = None
            if d.error is None and not d.unchanged:
                n = len(d.windows or ())
                e, pos = emb[pos : pos + n], pos + n
            d.windows = None  # the audio stays on the worker
            out.append(pickle.dumps((d, e), protocol=5))
        return {"shard": batch["shard"], "pos": batch["pos"], "rec": np.array(out, dtype=object)}


def _run(shards: list[list[tuple]], todo: list[int], paths: list[Path], model: EncoderFactory, cfg: IndexConfig,
         rc: RayConfig, dim: int, progress: Callable[[Progress], None] | None, done: int, total: int) -> None:
    """Decode and embed the files of shards ``todo`` on the cluster; write each shard when complete."""
    try:
        import ray
    except ImportError:
        raise EarshotError("the Ray engine needs Ray: pip install 'earshot[ray]' (ray[data]==2.60.0)") from None
    started = _connect(rc.address)
    try:
        import ray.data

        cpus = float(ray.cluster_resources().get("CPU", 0))
        per_worker = rc.cpus_per_worker or max(0.25, cpus / (2 * rc.workers))  # the other half decodes
        if rc.workers * per_worker + 1 > cpus:
            raise EarshotError(
                f"Ray engine: {rc.workers} workers x {per_worker:g} CPUs leave no CPU for decoding on a "
                f"cluster of {cpus:g} CPUs; use fewer --workers")

        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # earshot reports progress itself
        items = [{"shard": i, "pos": j, "job": pickle.dumps(job)} for i in todo for j, job in enumerate(shards[i])]
        ds = ray.data.from_items(items, override_num_blocks=max(1, len(items) // rc.files_per_task))
        ds = ds.map_batches(_decode_batch, batch_size=rc.files_per_task, batch_format="numpy", num_cpus=1)
        gpu = {"num_gpus": rc.gpus_per_worker} if rc.gpus_per_worker else {}
        ds = ds.map_batches(_Embedder, fn_constructor_args=(model, cfg.batch_size, int(per_worker), bool(rc.gpus_per_worker)),
                            batch_size=rc.files_per_task, batch_format="numpy",
                            compute=ray.data.ActorPoolStrategy(size=rc.workers), num_cpus=per_worker, **gpu)
        pending: dict[int, dict[int, tuple[Decoded, np.ndarray | None]]] = {}
        audio_s = 0.0
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            for shard, pos, rec in zip(batch["shard"], batch["pos"], batch["rec"]):
                d, e = pickle.loads(rec)
                got = pending.setdefault(int(shard), {})
                got[int(pos)] = (d, e)
                audio_s += d.duration if d.error is None and not d.unchanged else 0.0
                done += 1
                if len(got) == len(shards[int(shard)]):
                    write_shard(paths[int(shard)], [got[k] for k in sorted(got)], dim)
                    del pending[int(shard)]
            if progress:
                progress(Progress(done, total, audio_s))
        if pending:
            raise EarshotError(f"Ray engine: {len(pending)} shard(s) came back incomplete; rerun to finish them")
    finally:
        if started:
            ray.shutdown()


# -- shards ------------------------------------------------------------------------------------
_ROW_FIELDS = ("rel", "size", "mtime_ns", "sha256", "duration", "sample_rate", "channels", "error", "unchanged")


def write_shard(path: Path, records: list[tuple[Decoded, np.ndarray | None]], dim: int) -> None:
    """One shard, atomically: file rows (JSON), window table (starts, ends), window embeddings, peaks."""
    rows, starts, ends, embs, peaks = [], [], [], [], []
    for d, e in records:
        n = 0 if e is None else len(e)
        rows.append({**{k: getattr(d, k) for k in _ROW_FIELDS}, "n_windows": n})
        if e is not None:
            starts.append(np.asarray(d.starts, dtype=np.float64))
            ends.append(np.asarray(d.ends, dtype=np.float64))
            embs.append(np.asarray(e, dtype=np.float32).reshape(n, dim))
            peaks.append(np.asarray(d.peaks, dtype=np.uint8))
    arrays = {
        "format": np.array(SHARD_FORMAT),
        "rows": np.array(json.dumps(rows)),
        "starts": np.concatenate(starts) if starts else np.zeros(0),
        "ends": np.concatenate(ends) if ends else np.zeros(0),
        "embeddings": np.concatenate(embs) if embs else np.zeros((0, dim), np.float32),
        "peaks": np.stack(peaks) if peaks else np.zeros((0, 0), np.uint8),
    }
    with atomic_write(path) as f:
        np.savez(f, **arrays)


def read_shard(path: Path) -> tuple[list[Decoded], np.ndarray]:
    """(records as :class:`Decoded` without audio, window embeddings (W, D)) of a shard file."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["format"]) != SHARD_FORMAT:
                raise EarshotError(f"{path}: shard format {str(z['format'])!r}, expected {SHARD_FORMAT}")
            rows = json.loads(str(z["rows"]))
            starts, ends, emb, peaks = z["starts"], z["ends"], z["embeddings"], z["peaks"]
    except (OSError, ValueError, KeyError) as e:
        raise EarshotError(f"{path}: unreadable shard ({e}); delete it and rerun") from None
    out, pos, good = [], 0, 0
    for r in rows:
        n = r.pop("n_windows")
        d = Decoded(**r)
        if d.error is None and not d.unchanged:
            d.starts, d.ends = starts[pos : pos + n], ends[pos : pos + n]
            d.peaks = peaks[good]
            pos, good = pos + n, good + 1
        out.append(d)
    return out, emb


def _merge(store: Store, paths: list[Path], cfg: IndexConfig, normalize: bool, report: IndexReport) -> None:
    """All shards into the database in plan order, in one transaction (all or nothing)."""
    with store.transaction():
        for path in paths:
            records, emb = read_shard(path)
            store_decoded(store, records, emb, cfg.pooling, normalize, report)

