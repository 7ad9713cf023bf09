"""A watched folder: real file operations reach the index within generous deadlines."""

from __future__ import annotations

import shutil
import time

import numpy as np
import pytest
import soundfile as sf

from conftest import BandEncoder
from earshot.index import Index, IndexConfig, index_folder
from earshot.index.watch import WatchConfig, Watcher, settle

SR = 1000
DEADLINE_S = 30.0  # generous: the machine is shared; the runs themselves take well under a second


def _noise(seed: int, seconds: float = 2.0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * SR))).astype(np.float32)


def _paths(out, enc) -> set[str]:
    with Index.open(out, enc) as ix:
        return set(ix._store.files())


def _until(cond, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {DEADLINE_S} s: {what}")
        time.sleep(0.1)


def test_settle_waits_for_a_file_to_stop_growing(tmp_path):
    p = tmp_path / "growing.bin"
    p.write_bytes(b"x")
    t0 = time.monotonic()
    assert settle([str(p)], 0.3, 5.0)
    assert time.monotonic() - t0 >= 0.3
    assert not settle([str(p)], 10.0, 0.3)  # never quiet long enough within the limit


def test_new_changed_moved_deleted_and_half_written_files_reach_the_index(tmp_path):
    enc = BandEncoder(sample_rate=SR)
    root, out = tmp_path / "lib", tmp_path / "ix"
    (root / "sub").mkdir(parents=True)
    sf.write(root / "first.wav", _noise(0), SR)
    index_folder(root, enc, out, IndexConfig(window_s=1.0, hop_s=0.5, workers=0))
    w = Watcher(root, enc, out, WatchConfig(debounce_ms=300, settle_s=0.5, max_settle_s=20))
    try:
        assert w.ready.wait(20) and w.error is None
        sf.write(root / "sub" / "new.wav", _noise(1), SR)
        _until(lambda: "sub/new.wav" in _paths(out, enc), "a new file indexed")
        (root / "sub" / "new.wav").rename(root / "moved.wav")
        _until(lambda: _paths(out, enc) == {"first.wav", "moved.wav"}, "a moved file indexed at its new path")
        (root / "first.wav").unlink()
        _until(lambda: _paths(out, enc) == {"moved.wav"}, "a deleted file dropped")

        # a half-written file: the header and half the samples, a pause, then the rest
        wave = _noise(2, 4.0)
        with sf.SoundFile(root / "slow.wav", "w", SR, 1, subtype="PCM_16") as f:
            f.write(wave[: len(wave) // 2])
            f.flush()
            time.sleep(0.3)  # shorter than settle_s: the watcher must wait for the rest
            f.write(wave[len(wave) // 2:])
        _until(lambda: "slow.wav" in _paths(out, enc), "a slowly written file indexed")
        with Index.open(out, enc) as ix:
            assert ix.bad_files() == [] and ix._store.files()["slow.wav"].duration == pytest.approx(4.0)
        assert all(u.bad == 0 for u in w.updates)  # never recorded as bad, not even for one run

        # a burst of copies arrives in a few batches, not one run per file
        runs_before = len(w.updates)
        burst = tmp_path / "burst"
        burst.mkdir()
        for i in range(40):
            sf.write(burst / f"b{i:02d}.wav", _noise(100 + i, 1.0), SR)
        shutil.copytree(burst, root / "burst")
        _until(lambda: len(_paths(out, enc)) == 42, "a burst of 40 copied files indexed")
        assert len(w.updates) - runs_before <= 5
        assert all(u.error is None for u in w.updates)
        with Index.open(out, enc) as ix:  # what a search sees, windows included
            assert {h.path for h in ix.search("noise", k=50, mode="meaning")} == _paths(out, enc)
    finally:
        w.close()
    assert not w.thread.is_alive()


def test_serve_watch_answers_throughout_and_finds_new_files(tmp_path):
    from fastapi.testclient import TestClient

    from earshot.app.server import create_app

    enc = BandEncoder(sample_rate=SR)
    root, out = tmp_path / "lib", tmp_path / "ix"
    root.mkdir()
    for i in range(3):
        sf.write(root / f"n{i}.wav", _noise(i), SR)
    index_folder(root, enc, out, IndexConfig(window_s=1.0, hop_s=0.5, workers=0))
    app = create_app(out, model=enc, allowed_hosts=("testserver",), poll_s=0.2,
                     watch=WatchConfig(debounce_ms=200, settle_s=0.3))
    with TestClient(app) as client:
        assert app.state.watcher.ready.wait(20)
        for i in range(3, 8):
            sf.write(root / f"n{i}.wav", _noise(i), SR)
        statuses, seen = [], 0
        deadline = time.monotonic() + DEADLINE_S
        while seen < 8 and time.monotonic() < deadline:
            r = client.get("/search", params={"q": "noise", "k": 20, "mode": "meaning"})
            statuses.append(r.status_code)
            seen = len(r.json()["results"]) if r.status_code == 200 else seen
            time.sleep(0.05)
        assert seen == 8 and set(statuses) == {200}  # every search answered while the index grew
        # the run reports after its last write, which a search can see first
        _until(lambda: client.get("/health").json()["watching"]["updates"] >= 1, "the update reported")
        assert client.get("/health").json()["watching"]["error"] is None
    assert not app.state.watcher.thread.is_alive()


@pytest.mark.slow
def test_a_burst_of_1000_copied_files_is_indexed_in_a_few_batches(tmp_path):
    enc = BandEncoder(sample_rate=SR)
    root, out, src = tmp_path / "lib", tmp_path / "ix", tmp_path / "src"
    root.mkdir()
    src.mkdir()
    sf.write(root / "seed.wav", _noise(0), SR)
    index_folder(root, enc, out, IndexConfig(window_s=1.0, hop_s=0.5, workers=0))
    for i in range(1000):
        sf.write(src / f"c{i:04d}.wav", _noise(10 + i, 0.5), SR)
    w = Watcher(root, enc, out, WatchConfig(debounce_ms=500, settle_s=0.5, max_settle_s=30))
    try:
        assert w.ready.wait(20)
        shutil.copytree(src, root / "burst")
        deadline = time.monotonic() + 120  # generous: 1,000 file writes and their indexing
        while sum(u.encoded for u in w.updates) < 1000 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(_paths(out, enc)) == 1001
        assert 1 <= len(w.updates) <= 10 and all(u.error is None and u.bad == 0 for u in w.updates)
        assert sum(u.encoded for u in w.updates) == 1000  # each file encoded once
    finally:
        w.close()


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_a_batch_touching_few_files_reads_only_those_and_equals_a_fresh_index(tmp_path, monkeypatch, kind):
    """A watched batch names its paths: only they are stat'ed and decoded, the FAISS files are
    patched (``vectors.build`` is never called), and every ranking equals a fresh index's."""
    import os

    from earshot.index import indexer
    from earshot.index import vectors as V

    enc = BandEncoder(sample_rate=SR)
    root, out = tmp_path / "lib", tmp_path / "ix"
    (root / "sub").mkdir(parents=True)
    for i in range(60):  # 5 of them change: under the 20% from which the vectors are rebuilt
        sf.write(root / f"f{i:02d}.wav", _noise(10 + i), SR)
    # 60 files x 3 windows: IVF gets 1 cell for the files and 4 for the windows, nprobe covers them,
    # so "ivf" ranks exactly and the comparison below holds for both kinds
    cfg = IndexConfig(window_s=1.0, hop_s=0.5, workers=0, vectors=V.VectorConfig(kind=kind))
    index_folder(root, enc, out, cfg)

    sf.write(root / "f03.wav", _noise(99, 3.0), SR)  # changed
    sf.write(root / "new.wav", _noise(98), SR)  # added
    (root / "f07.wav").unlink()  # deleted
    (root / "f10.wav").rename(root / "sub" / "f10.wav")  # moved
    changed = [root / "f03.wav", root / "new.wav", root / "f07.wav", root / "f10.wav", root / "sub" / "f10.wav"]
    named = {str(p) for p in changed}

    stats: list[str] = []
    real_stat = os.stat

    def counting_stat(path, *a, **kw):
        p = os.fspath(path)
        if p.startswith(str(root)) and p != str(root):
            stats.append(p)
        return real_stat(path, *a, **kw)

    decoded: list[str] = []
    real_decode = indexer.decode

    def counting_decode(*job):
        decoded.append(job[1])
        return real_decode(*job)

    def no_rebuild(*a, **kw):
        raise AssertionError("vectors rebuilt instead of patched")

    monkeypatch.setattr(os, "stat", counting_stat)
    monkeypatch.setattr(indexer, "decode", counting_decode)
    monkeypatch.setattr(V, "build", no_rebuild)
    report = index_folder(root, enc, out, cfg, changed=changed)
    monkeypatch.undo()

    assert set(stats) <= named, f"stat'ed files outside the batch: {sorted(set(stats) - named)[:5]}"
    assert sorted(decoded) == ["f03.wav", "new.wav", "sub/f10.wav"]
    assert sorted(report.encoded) == ["f03.wav", "new.wav", "sub/f10.wav"]
    assert sorted(report.removed) == ["f07.wav", "f10.wav"]

    fresh = tmp_path / "fresh"
    index_folder(root, enc, fresh, cfg)
    queries = np.random.default_rng(5).standard_normal((6, enc.dim)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    with Index.open(out, enc) as a, Index.open(fresh, enc) as b:
        assert set(a._store.files()) == set(b._store.files())
        for q in queries:
            for ranking in ("windows", "pooled"):
                ha, hb = a.search_vector(q, k=70, ranking=ranking), b.search_vector(q, k=70, ranking=ranking)
                assert [h.path for h in ha] == [h.path for h in hb]
                # same float32 embeddings, inner products summed in another order: 1e-5
                np.testing.assert_allclose([h.score for h in ha], [h.score for h in hb], atol=1e-5)
                assert [h.window_start for h in ha] == [h.window_start for h in hb]
