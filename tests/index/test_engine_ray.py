"""`earshot index --engine ray` on a local Ray cluster started here: equal to the local index,
bad files reported alike, a killed worker and a killed driver, incremental re-index.

One cluster for the module (``ray.init(num_cpus=2)``, no network, no dashboard); its temp dir
and HOME (Ray keeps an auth token in ``~/.ray``) are inside pytest's tmp folder.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import SR, noise, tone, write_bad, write_sounds
from earshot.index import IndexConfig, index_folder
from earshot.index.indexer import building_dir
from earshot.index.store import Store

ray = pytest.importorskip("ray")

from earshot.index.engine_ray import SHARD_DIR, EncoderSpec, RayConfig, index_folder_ray  # noqa: E402

SHUTDOWN_S = 30.0  # the cluster's shutdown may take this long; then its processes are killed


def _node_pids() -> list[int]:
    """Process ids of the local cluster this module started (GCS, raylet, ...; workers are the
    raylet's children and die with it)."""
    node = ray._private.worker._global_node
    return [p.process.pid for procs in node.all_processes.values() for p in procs if p.process is not None]


def _shutdown_within(seconds: float, pids: list[int]) -> None:
    """``ray.shutdown()`` with a hard bound: a cluster whose workers are stuck must not hang the
    suite, so after ``seconds`` the processes this module started are killed by their ids."""
    t = threading.Thread(target=ray.shutdown, daemon=True)
    t.start()
    t.join(seconds)
    if not t.is_alive():
        return
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


CFG = IndexConfig(window_s=2.0, hop_s=1.0, workers=0, batch_size=4)
RC = RayConfig(workers=2, cpus_per_worker=0.5, files_per_shard=2, files_per_task=2)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    base = tmp_path_factory.mktemp("ray")
    saved = {k: os.environ.get(k) for k in ("HOME", "RAY_USAGE_STATS_ENABLED")}
    os.environ["HOME"] = str(base / "home")
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    # Ray's socket paths must stay under 107 bytes: a short folder beside pytest's base temp
    temp = tempfile.mkdtemp(prefix="r", dir=tmp_path_factory.getbasetemp())
    # the workers cannot import this test module: its model factories travel by value
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, _temp_dir=temp, include_dashboard=False, log_to_driver=False, configure_logging=False)
    node_pids = _node_pids()
    yield ray.get_runtime_context().gcs_address
    _shutdown_within(SHUTDOWN_S, node_pids)
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def encoder(model_dir):
    """The local path's encoder in fp32, as every Ray run here (bf16 would add its own noise)."""
    from earshot.index import open_encoder

    return open_encoder(model_dir, "fp32")


def _rows(ix: Path, dim: int):
    """(files by path without ids, {path: windows}, clip vectors by path, bad) of an index."""
    s = Store.open(ix)
    try:
        files = {r.path: (r.size, r.sha256, r.duration, r.sample_rate, r.channels, r.n_windows) for r in s.files().values()}
        ids = {r.path: r.id for r in s.files().values()}
        wins = {p: s.windows(i, dim) for p, i in ids.items()}
        clips = {p: s.clip_vector(i, dim) for p, i in ids.items()}
        return files, wins, clips, s.bad(), ids
    finally:
        s.close()


def assert_same_index(a: Path, b: Path, dim: int) -> None:
    fa, wa, ca, ba, ia = _rows(a, dim)
    fb, wb, cb, bb, ib = _rows(b, dim)
    assert fa == fb
    assert {p: r for p, (_, _, r) in ba.items()} == {p: r for p, (_, _, r) in bb.items()}
    # same files merged in walk order -> same ids; window table identical, embeddings within
    # fp32 batching noise (a window's numbers do not depend on its batch beyond ~1e-6)
    assert sorted(ia, key=ia.get) == sorted(ib, key=ib.get)
    for p in fa:
        np.testing.assert_array_equal(wa[p][0], wb[p][0])
        np.testing.assert_array_equal(wa[p][1], wb[p][1])
        np.testing.assert_allclose(wa[p][2], wb[p][2], atol=1e-5)
        np.testing.assert_allclose(ca[p], cb[p], atol=1e-5)


@dataclass(frozen=True)
class CrashOnce:
    """A model factory whose first embedding call anywhere kills its worker process (os._exit)."""

    model: str
    flag: str
    precision: str = "fp32"

    def open(self, device="cpu"):
        inner = EncoderSpec(self.model, self.precision).open(device)
        flag = self.flag

        class Crashing:
            model_id, model_path = inner.model_id, inner.model_path
            sample_rate, dim, normalize = inner.sample_rate, inner.dim, inner.normalize

            def embed_audio(self, waves, batch_size=16):
                if not os.path.exists(flag):
                    Path(flag).write_text(str(os.getpid()))
                    os._exit(1)  # the worker dies mid-batch, as when a node is lost
                return inner.embed_audio(waves, batch_size=batch_size)

            def embed_text(self, texts):
                return inner.embed_text(texts)

        return Crashing()


def test_ray_index_equals_local_survives_a_killed_worker_and_updates(tmp_path, cluster, model_dir, encoder):
    root = tmp_path / "s"
    write_sounds(root)
    write_bad(root)
    local = index_folder(root, encoder, tmp_path / "local", CFG)
    flag = tmp_path / "crashed"
    rep = index_folder_ray(root, CrashOnce(str(model_dir), str(flag)), tmp_path / "ray", CFG, RC)
    assert flag.is_file()  # a worker really died mid-run; Ray restarted it and redid its batch
    assert sorted(rep.encoded) == sorted(local.encoded) and rep.bad == local.bad and rep.items == local.items
    assert rep.shards == 5 and rep.shards_reused == 0  # 10 files, 2 per shard
    assert not (tmp_path / "ray" / SHARD_DIR).exists()  # merged, then removed
    assert not building_dir(tmp_path / "ray").exists()  # built beside it, renamed into place
    assert_same_index(tmp_path / "local", tmp_path / "ray", encoder.dim)

    from earshot.index import Index

    with Index.open(tmp_path / "local", model_dir) as a, Index.open(tmp_path / "ray", model_dir) as b:
        for q in ("a beep", "noise"):
            assert [h.path for h in a.search(q, 5)] == [h.path for h in b.search(q, 5)]

    # incremental: change one, touch one (same content), delete one, add one
    sf.write(root / "beep.wav", tone(220, 1.5), SR)
    os.utime(root / "hum.flac", ns=(1, 1))
    (root / "sub" / "noise.wav").unlink()
    sf.write(root / "new.wav", noise(1.2, 9), SR)
    local2 = index_folder(root, encoder, tmp_path / "local", CFG)
    rep2 = index_folder_ray(root, EncoderSpec(str(model_dir), "fp32"), tmp_path / "ray", CFG, RC)
    assert sorted(rep2.encoded) == sorted(local2.encoded) == ["beep.wav", "new.wav"]
    assert rep2.removed == local2.removed == ["sub/noise.wav"] and rep2.unchanged == local2.unchanged
    assert rep2.shards == 2  # beep, hum (hashed: unchanged), new -> 3 jobs in 2 shards
    assert_same_index(tmp_path / "local", tmp_path / "ray", encoder.dim)


DRIVER = textwrap.dedent("""
    import sys, time
    from dataclasses import dataclass
    import ray
    from earshot.index import IndexConfig
    from earshot.index.engine_ray import EncoderSpec, RayConfig, index_folder_ray

    @dataclass(frozen=True)
    class Slow:  # each embedding call takes a second, so the driver can be killed mid-run
        model: str
        precision: str = "fp32"
        def open(self, device="cpu"):
            inner = EncoderSpec(self.model, self.precision).open(device)
            class S:
                model_id, model_path = inner.model_id, inner.model_path
                sample_rate, dim, normalize = inner.sample_rate, inner.dim, inner.normalize
                def embed_audio(self, waves, batch_size=16):
                    time.sleep(1.0)
                    return inner.embed_audio(waves, batch_size=batch_size)
            return S()

    ray.init(address=sys.argv[4], log_to_driver=False, configure_logging=False)
    cfg = IndexConfig(window_s=2.0, hop_s=1.0, workers=0, batch_size=4)
    rc = RayConfig(workers=1, cpus_per_worker=0.5, files_per_shard=1, files_per_task=1)
    index_folder_ray(sys.argv[1], Slow(sys.argv[2]), sys.argv[3], cfg, rc)
""")


def test_a_killed_driver_resumes_with_only_the_unfinished_shards(tmp_path, cluster, model_dir, encoder):
    root = tmp_path / "s"
    write_sounds(root)  # 6 files, one per shard
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    out = tmp_path / "ray"
    proc = subprocess.Popen([sys.executable, str(script), str(root), str(model_dir), str(out), cluster],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    shards = building_dir(out) / SHARD_DIR  # a new index is built beside --out (issue 21)
    deadline = time.monotonic() + 300  # generous: a loaded machine starts workers slowly
    while time.monotonic() < deadline and len(list(shards.glob("*.npz"))) < 2 and proc.poll() is None:
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = len(list(shards.glob("*.npz")))
    assert 2 <= finished < 6, (finished, proc.stderr.read().decode()[-2000:])
    assert not out.exists()  # nothing merged before every shard exists, nothing visible at --out

    # restarted from the command line, on the same cluster and settings
    run = subprocess.run([sys.executable, "-c", "from earshot.app.cli import main; main()", "index", str(root), "--model", str(model_dir),
                          "--out", str(out), "--engine", "ray", "--address", cluster, "--workers", "1",
                          "--files-per-shard", "1", "--window", "2", "--hop", "1", "--batch-size", "4",
                          "--precision", "fp32"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    # only the unfinished shards were redone
    assert f"ray: 6 shard(s) this run, {finished} reused from an interrupted run" in run.stdout, run.stdout
    index_folder(root, encoder, tmp_path / "local", CFG)
    assert_same_index(tmp_path / "local", out, encoder.dim)
