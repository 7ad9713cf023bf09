"""Framing, pooling and the FAISS layer, each against hand-worked numbers or brute force."""

from __future__ import annotations

import numpy as np
import pytest

from earshot.errors import EarshotError
from earshot.index import vectors as V
from earshot.index.decode import Framing, frame
from earshot.index.indexer import IndexConfig, pool


def test_frame_long_recording_ends_with_a_window_flush_at_the_end():
    # 11 s at 10 Hz, 4 s windows, 2 s hop: full windows start at 0, 2, 4, 6 (6 + 4 = 10 s);
    # one more covers the last second and ends exactly at 11 s, so it starts at 7 s.
    wave = np.arange(110, dtype=np.float32)
    windows, starts, ends = frame(wave, Framing(10, 4.0, 2.0))
    assert starts.tolist() == [0, 2, 4, 6, 7]
    assert ends.tolist() == [4, 6, 8, 10, 11]
    assert all(w.shape == (40,) for w in windows)
    assert windows[-1][0] == 70 and windows[-1][-1] == 109  # real samples, no padding
    assert windows[2][0] == 40


def test_frame_short_clip_is_one_window_of_its_own_length_padded_to_the_minimum():
    windows, starts, ends = frame(np.ones(5, dtype=np.float32), Framing(10, 4.0, 2.0, min_s=1.0))
    assert len(windows) == 1 and windows[0].tolist() == [1] * 5 + [0] * 5
    assert starts.tolist() == [0] and ends.tolist() == [0.5]  # the true duration, not the padded
    windows, _, _ = frame(np.ones(30, dtype=np.float32), Framing(10, 4.0, 2.0))
    assert windows[0].shape == (30,)  # 3 s < 4 s window: kept whole, not padded with silence


def test_pool_mean_and_max_by_hand():
    w = np.array([[3.0, 0.0], [1.0, 4.0]], dtype=np.float32)
    assert pool(w, "mean", normalize=False).tolist() == [2.0, 2.0]
    assert pool(w, "max", normalize=False).tolist() == [3.0, 4.0]
    np.testing.assert_allclose(pool(w, "max", normalize=True), [0.6, 0.8], rtol=1e-6)


def test_bad_settings_are_refused():
    with pytest.raises(EarshotError, match="pooling"):
        IndexConfig(pooling="median")  # type: ignore[arg-type]
    with pytest.raises(EarshotError, match="hop"):
        IndexConfig(window_s=2.0, hop_s=3.0)
    with pytest.raises(EarshotError, match="index type"):
        V.VectorConfig(kind="annoy")  # type: ignore[arg-type]


def _clustered(n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((20, d))
    x = centers[rng.integers(0, 20, n)] + 0.5 * rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_flat_index_is_exact_and_returns_file_ids(tmp_path):
    x = _clustered(500, 16, 0)
    ids = np.arange(500, dtype=np.int64) * 3 + 7  # ids are not row numbers
    q = _clustered(5, 16, 1)
    index = V.build(x, ids, V.VectorConfig(kind="flat"))
    scores, got = V.search(index, q, 10)
    sim = q @ x.T
    want = np.argsort(-sim, axis=1)[:, :10]
    np.testing.assert_array_equal(got, ids[want])
    np.testing.assert_allclose(scores, np.take_along_axis(sim, want, 1), rtol=1e-5)
    V.save(index, tmp_path / "v.faiss")
    again = V.load(tmp_path / "v.faiss")
    np.testing.assert_array_equal(V.search(again, q, 10)[1], got)
    assert V.kind_of(again) == "flat"


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_indexes_agree_with_exact_search(tmp_path, kind):
    x = _clustered(4000, 32, 2)
    q = _clustered(50, 32, 3)
    ids = np.arange(4000, dtype=np.int64)
    exact = V.search(V.build(x, ids, V.VectorConfig(kind="flat")), q, 10)[1]
    index = V.build(x, ids, V.VectorConfig(kind=kind))
    V.save(index, tmp_path / "v.faiss")
    index = V.load(tmp_path / "v.faiss")
    assert V.kind_of(index) == kind
    approx = V.search(index, q, 10)[1]
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact)])
    assert recall >= 0.9


def test_auto_switches_to_approximate_above_the_threshold():
    cfg = V.VectorConfig(auto_threshold=100)
    assert V.resolve_kind(cfg, 99) == "flat"
    assert V.resolve_kind(cfg, 100) == "ivf"
    index = V.build(_clustered(150, 8, 4), np.arange(150), cfg)
    assert V.kind_of(index) == "ivf"
    assert V.resolve_kind(V.VectorConfig(kind="hnsw"), 5) == "hnsw"


def test_peaks_by_hand_and_as_stored_in_the_index(tmp_path, encoder):
    import soundfile as sf

    from earshot.index import index_folder
    from earshot.index.decode import load_checked, peaks
    from earshot.index.store import Store

    # two slices [0, .5] and [-1, .25]: maxima .5 and 1, scaled so the loudest is 255
    assert peaks(np.array([0, 0.5, -1, 0.25], np.float32), n=2).tolist() == [128, 255]
    assert peaks(np.array([0.2, -0.4, 0.1], np.float32), n=6).tolist() == [128, 128, 255, 255, 64, 64]
    assert peaks(np.zeros(10, np.float32), n=4).tolist() == [0, 0, 0, 0]
    (tmp_path / "s").mkdir()
    t = np.arange(32000) / 16000
    sf.write(tmp_path / "s" / "ramp.wav", (t / 2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000)
    index_folder(tmp_path / "s", encoder, tmp_path / "ix", IndexConfig(window_s=2.0, hop_s=1.0, workers=0))
    store = Store.open(tmp_path / "ix")
    fid = store.files()["ramp.wav"].id
    stored = store.peaks([fid])[fid]
    assert stored.dtype == np.uint8 and stored.shape == (200,)
    assert stored.tolist() == peaks(load_checked(tmp_path / "s" / "ramp.wav", 16000)[0]).tolist()
    assert stored[0] < 10 and stored[-1] == 255 and (np.diff(stored.astype(int)) >= -2).all()  # a rising ramp
