"""Moment-level ranking: files score their best window, hits list moments, old indexes still open."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from conftest import BandEncoder, write_sounds
from earshot.index import Index, IndexConfig, index_folder
from earshot.index.moments import WINDOWS_FILE, Moment, file_score, moments
from earshot.index.store import Store

CFG = IndexConfig(window_s=2.0, hop_s=1.0, workers=0, batch_size=8)


def test_moments_merge_adjacent_windows_and_rank_spans_by_their_best():
    starts = np.arange(8.0)  # 2 s windows every 1 s
    ends = starts + 2
    scores = np.array([0.1, 0.9, 0.8, 0.1, 0.1, 0.7, 0.1, 0.1])
    # median 0.1, best 0.9 -> threshold 0.9 - 0.25 * 0.8 = 0.7: windows 1, 2 and 5
    got = moments(starts, ends, scores)
    assert got == [Moment(1.0, 4.0, pytest.approx(0.9), 1.0, 3.0), Moment(5.0, 7.0, pytest.approx(0.7), 5.0, 7.0)]
    assert moments(starts, ends, np.full(8, 0.3)) == [Moment(0.0, 9.0, pytest.approx(0.3), 0.0, 2.0)]  # flat: one span
    assert file_score(scores, 1) == pytest.approx(0.9)
    assert file_score(scores, 3) == pytest.approx((0.9 + 0.8 + 0.7) / 3)


@pytest.fixture(scope="module")
def built(tmp_path_factory, encoder):
    tmp = tmp_path_factory.mktemp("moments")
    write_sounds(tmp / "s")
    index_folder(tmp / "s", encoder, tmp / "ix", CFG)
    return tmp


def test_window_ranking_equals_brute_force_over_every_window(built, encoder):
    store = Store.open(built / "ix")
    q = encoder.embed_text(["a high beep"])[0]
    best, per_file = {}, {}
    for fid in store.clip_vectors(encoder.dim)[0].tolist():
        starts, ends, wins = store.windows(fid, encoder.dim)
        per_file[fid] = (starts, ends, wins @ q)
        best[fid] = float(np.max(wins @ q))
    expected = sorted(best, key=lambda f: -best[f])
    with Index.open(built / "ix", encoder) as ix:
        hits = ix.search("a high beep", k=6, mode="meaning")
        assert [h.id for h in hits] == expected
        np.testing.assert_allclose([h.score for h in hits], [best[f] for f in expected], rtol=1e-5)
        for h in hits:
            starts, ends, s = per_file[h.id]
            assert h.moments and h.moments[0].score == pytest.approx(h.score, rel=1e-5)
            assert (h.window_start, h.window_end) == (h.moments[0].peak_start, h.moments[0].peak_end)
            assert h.moments == tuple(moments(starts, ends, s))
        top3 = ix.search("a high beep", k=6, mode="meaning", top_m=3)
        mean3 = {f: file_score(per_file[f][2], 3) for f in best}
        assert [h.id for h in top3] == sorted(mean3, key=lambda f: -mean3[f])
        assert [h["moments"][0]["start"] for h in (x.to_dict() for x in hits)] == [h.moments[0].start for h in hits]


def test_an_index_without_window_vectors_rebuilds_them_and_ranks_the_same(built, encoder, tmp_path):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(built / "ix", old)
    (old / WINDOWS_FILE).unlink()  # as written before moment ranking existed
    with Index.open(built / "ix", encoder) as a, Index.open(old, encoder) as b:
        assert [h.id for h in a.search("tone", k=6, mode="meaning")] == \
               [h.id for h in b.search("tone", k=6, mode="meaning")]
    assert not (old / WINDOWS_FILE).exists()  # searching writes nothing into the index


@pytest.mark.slow
def test_a_3_s_event_inside_a_2_h_recording_is_hit_1_by_window_ranking(tmp_path):
    """1,000 files of 5-60 s plus one 2 h recording holding a single 3 s beep at 4000 s.

    Every file is white noise; 50 of the short files also carry a faint beep-band tone all
    along (score about 0.6), the rest none (about 0.25). The 2 h file's event window scores
    about 1, but as 2 of its 1,440 windows it moves the file's mean vector by almost nothing.
    Measured here (band encoder, seed 0): window ranking puts the 2 h file at 1 with its moment
    at 3995-4010 s; pooled ranking puts it at rank 464 of 1,001: behind all 50 faint tones,
    its mean vector as plain as the middle of the noise files.
    """
    enc = BandEncoder()
    sr = enc.sample_rate
    rng = np.random.default_rng(0)
    root = tmp_path / "lib"
    root.mkdir()
    t_beep = np.arange(int(3.0 * sr)) / sr
    for i in range(1000):
        n = int(rng.uniform(5, 60) * sr)
        wave = 0.1 * rng.standard_normal(n)
        if i % 20 == 0:
            wave += 0.05 * np.sin(2 * np.pi * enc.BEEP_HZ * np.arange(n) / sr)
        sf.write(root / f"clip_{i:04d}.wav", wave.astype(np.float32), sr, subtype="PCM_16")
    long = 0.1 * rng.standard_normal(2 * 3600 * sr)
    event = 4000 * sr
    long[event:event + len(t_beep)] += 0.5 * np.sin(2 * np.pi * enc.BEEP_HZ * t_beep)
    sf.write(root / "field_2h.wav", long.astype(np.float32), sr, subtype="PCM_16")
    del long
    cfg = IndexConfig(window_s=10.0, hop_s=5.0, workers=2, batch_size=256)
    report = index_folder(root, enc, tmp_path / "ix", cfg)
    assert report.items == 1001 and not report.bad

    with Index.open(tmp_path / "ix", enc) as ix:
        hits = ix.search("a beep", k=10, mode="meaning")
        assert hits[0].path == "field_2h.wav"
        m = hits[0].moments[0]
        assert m.start <= 4000 and m.end >= 4003  # the span covers the event
        assert abs(m.peak_start - 4000) <= cfg.window_s  # best window within one window of it
        assert hits[0].score > 0.9
        pooled = ix.search("a beep", k=1001, mode="meaning", ranking="pooled")
        rank = next(h.rank for h in pooled if h.path == "field_2h.wav")
        assert rank > 50  # behind every faint-tone file (measured: 464 of 1001)
