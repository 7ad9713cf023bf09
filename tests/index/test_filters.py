"""Filters: a small --where grammar with clear errors, applied before top-k."""

from __future__ import annotations

import datetime as dt
import os

import numpy as np
import pytest
import soundfile as sf

from conftest import BandEncoder
from earshot.errors import EarshotError
from earshot.index import Index, IndexConfig, index_folder
from earshot.index.filters import Condition, Filter, compile_filter, parse

CFG = IndexConfig(window_s=2.0, hop_s=1.0, workers=0, batch_size=64)


def test_where_parses_conditions_joined_by_and():
    assert parse("duration<2 and channels=2") == [Condition("duration", "<", "2"), Condition("channels", "=", "2")]
    assert parse('genre ~ "field rec" AND rate>=44.1k') == [Condition("genre", "~", "field rec"),
                                                            Condition("rate", ">=", "44.1k")]


@pytest.mark.parametrize("where, message", [
    ("duration<2 or channels=2", "'or' is not supported"),
    ("length<2", "unknown field 'length'"),
    ("duration 2", "expected an operator"),
    ("duration<", "expected a value after duration<"),
    ("duration<two", "duration needs a number"),
    ("channels=2 channels=1", "expected 'and' before 'channels'"),
    ("format<wav", "format is text"),
    ("modified>yesterday", "modified needs a date"),
    ("duration~2", "'~' (contains) is for text fields"),
    ("", "empty"),
])
def test_bad_where_expressions_get_an_error_naming_the_problem(where, message):
    with pytest.raises(EarshotError, match="--where") as e:
        compile_filter(Filter(where=where if where else " "))
        parse(where)
    assert message in str(e.value)


def test_units_and_folder_compile_to_parameters():
    sql, params = compile_filter(Filter(where="duration<=500ms and rate>=44.1k", folder="/Foley/Doors_1/"))
    assert params == ["Foley/Doors\\_1/%", 0.5, 44100.0]  # _ escaped: LIKE would read it as a wildcard
    assert sql.count("?") == 3
    assert compile_filter(Filter()) == ("1", [])


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    """15 mono beeps and 5 stereo noises in Foley/Doors (older files), 5 flac noises elsewhere."""
    enc = BandEncoder(sample_rate=1000)
    tmp = tmp_path_factory.mktemp("filters")
    root = tmp / "lib"
    (root / "Foley" / "Doors").mkdir(parents=True)
    (root / "Ambience").mkdir()
    rng = np.random.default_rng(0)
    t = np.arange(3000) / 1000
    for i in range(15):
        sf.write(root / f"beep_{i}.wav", (0.5 * np.sin(2 * np.pi * enc.BEEP_HZ * t)
                                          + 0.01 * rng.standard_normal(len(t))).astype(np.float32), 1000)
    old = dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc).timestamp()
    for i in range(5):
        p = root / "Foley" / "Doors" / f"door_{i}.wav"
        sf.write(p, (0.1 * rng.standard_normal((1500 + 500 * i, 2))).astype(np.float32), 1000)
        os.utime(p, (old, old))
        q = root / "Ambience" / f"room_{i}.flac"
        with sf.SoundFile(q, "w", 1000, 1, format="FLAC") as f:
            f.genre = "ambience" if i < 3 else "room tone"
            f.write((0.1 * rng.standard_normal(4000)).astype(np.float32))
    index_folder(root, enc, tmp / "ix", CFG)
    return tmp, enc


def test_filters_apply_before_top_k_so_k_results_come_back(library):
    tmp, enc = library
    with Index.open(tmp / "ix", enc) as ix:
        top5 = ix.search("a beep", k=5, mode="meaning")
        assert all(h.path.startswith("beep_") for h in top5)  # filtering these afterwards leaves nothing
        for ranking in ("windows", "pooled"):
            stereo = ix.search("a beep", k=5, mode="meaning", ranking=ranking, filter=Filter(where="channels=2"))
            assert len(stereo) == 5 and {h.path for h in stereo} == {f"Foley/Doors/door_{i}.wav" for i in range(5)}
        doors = ix.search("a beep", k=10, filter=Filter(where="duration<=2.5", folder="Foley/Doors"))
        assert {h.path for h in doors} == {f"Foley/Doors/door_{i}.wav" for i in range(3)}  # 1.5, 2.0, 2.5 s
        assert len(ix.search("a beep", k=50, filter=Filter(where="modified<2021-01-01"))) == 5
        assert len(ix.search("a beep", k=50, filter=Filter(where="format=flac"))) == 5
        assert len(ix.search("a beep", k=50, filter=Filter(where="format!=flac and rate=1k"))) == 20
        assert {h.path for h in ix.search("room", k=50, filter=Filter(where='genre="room tone"'))} == \
            {"Ambience/room_3.flac", "Ambience/room_4.flac"}
        assert len(ix.search("x", k=50, filter=Filter(where="genre~amb"))) == 3
        assert ix.search("a beep", k=5, filter=Filter(where="duration>100")) == []


def test_a_folder_filter_seeks_the_path_index_and_stays_case_insensitive(library):
    """--folder is a LIKE prefix, case-insensitive like the rest of the filters; SQLite seeks it
    through the NOCASE path index instead of reading every row of a large library."""
    import sqlite3

    tmp, enc = library
    sql, params = compile_filter(Filter(folder="foley/DOORS"))
    with sqlite3.connect(tmp / "ix" / "meta.sqlite") as conn:
        plan = " ".join(r[-1] for r in conn.execute(f"EXPLAIN QUERY PLAN SELECT id FROM files WHERE {sql}", params))
    assert "SEARCH files USING" in plan and "files_path_nocase" in plan, plan  # before: SCAN files
    with Index.open(tmp / "ix", enc) as ix:
        found = ix.search("a beep", k=50, filter=Filter(folder="foley/DOORS"))
    assert {h.path for h in found} == {f"Foley/Doors/door_{i}.wav" for i in range(5)}
