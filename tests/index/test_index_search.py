"""Searching: ranking equals brute force, best windows, query by example, the text cache."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from conftest import SR, CountingEncoder, tone, write_sounds
from earshot.errors import AudioError, EarshotError
from earshot.index import Index, IndexConfig, index_folder
from earshot.index.store import Store

CFG = IndexConfig(window_s=2.0, hop_s=1.0, workers=0, batch_size=8)


@pytest.fixture(scope="module")
def built(tmp_path_factory, encoder):
    tmp = tmp_path_factory.mktemp("search")
    write_sounds(tmp / "s")
    index_folder(tmp / "s", encoder, tmp / "ix", CFG)
    return tmp


def test_text_ranking_equals_brute_force_and_windows_are_the_best(built, encoder):
    with Index.open(built / "ix", encoder) as ix:
        hits = ix.search("a high beep", k=4, ranking="pooled", mode="meaning")
        store = Store.open(built / "ix")
        ids, vecs = store.clip_vectors(encoder.dim)
        q = encoder.embed_text(["a high beep"])[0]
        order = np.argsort(-(vecs @ q))[:4]
        assert [h.id for h in hits] == ids[order].tolist()
        assert [h.rank for h in hits] == [1, 2, 3, 4]
        np.testing.assert_allclose([h.score for h in hits], (vecs @ q)[order], rtol=1e-5)
        for h in hits:
            starts, ends, wins = store.windows(h.id, encoder.dim)
            best = int(np.argmax(wins @ q))
            assert (h.window_start, h.window_end) == (starts[best], ends[best])
            assert h.window_score == pytest.approx(float(np.max(wins @ q)), rel=1e-5)
        assert len(ix.search("a high beep", k=100, ranking="pooled")) == 6  # k beyond the collection: all of it


def test_query_by_example_finds_the_segment_inside_a_long_file(built, encoder, tmp_path):
    # The 880 Hz tone fills seconds 2-4 of " long walk.wav"; that window is the same audio as
    # the query, so its embedding is identical (cosine 1) and it is the best window there.
    sf.write(tmp_path / "q.wav", tone(880, 2.0), SR)
    with Index.open(built / "ix", encoder) as ix:
        hits = {h.path: h for h in ix.search_audio(tmp_path / "q.wav", k=6)}
        walk = hits["sub/ long walk.wav"]
        assert (walk.window_start, walk.window_end) == (2.0, 4.0)
        assert walk.window_score == pytest.approx(1.0, abs=1e-5)
        own = ix.search_audio(built / "s" / "hum.flac", k=1)[0]
        assert own.path == "hum.flac" and own.score == pytest.approx(1.0, abs=1e-5)
        rest = ix.search_audio(built / "s" / "hum.flac", k=2, exclude_self=True)
        assert [h.rank for h in rest] == [1, 2] and "hum.flac" not in {h.path for h in rest}
        (tmp_path / "bad.wav").write_bytes(b"RIFF")
        with pytest.raises(AudioError):
            ix.search_audio(tmp_path / "bad.wav")


def test_repeated_text_queries_are_embedded_once(built, encoder):
    counting = CountingEncoder(encoder)
    with Index.open(built / "ix", counting) as ix:
        first = ix.search("rain on a tin roof", k=3)
        second = ix.search("rain on a tin roof ", k=3)  # surrounding spaces do not matter
        ix.search("a different query", k=3)
        assert counting.texts == 2 and ix.cache_hits == 1
        assert first == second
        with pytest.raises(EarshotError, match="empty query"):
            ix.search("   ")
        with pytest.raises(EarshotError, match="k must be"):
            ix.search("x", k=0)


def test_open_without_a_model_uses_the_one_that_built_the_index(built, model_dir):
    with Index.open(built / "ix") as ix:
        assert ix.encoder.model_path == str(model_dir.resolve())
        assert len(ix.search("hum", k=2)) == 2
        assert ix.kind == "flat"
        row, path = ix.file(ix.search("hum", k=1)[0].id)
        assert path.is_file() and path.name == row.path.split("/")[-1]
        assert ix.file(10_000) is None
