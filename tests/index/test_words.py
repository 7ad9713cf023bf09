"""Words and meaning: names and tags in FTS5, hybrid fusion, required and excluded words."""

from __future__ import annotations

import sqlite3
import struct

import numpy as np
import pytest
import soundfile as sf

from conftest import SR
from earshot.errors import EarshotError
from earshot.index import Index, IndexConfig, index_folder
from earshot.index.ranking import RRF_K, rrf
from earshot.index.words import parse_query, read_tags, split_words

CFG = IndexConfig(window_s=2.0, hop_s=1.0, workers=0, batch_size=16)


def kick(seed: int, seconds: float = 0.6) -> np.ndarray:
    """A synthetic kick: a decaying 55 Hz sine with a little seeded noise (all kicks alike)."""
    t = np.arange(int(seconds * SR)) / SR
    rng = np.random.default_rng(seed)
    wave = np.sin(2 * np.pi * 55 * t) * np.exp(-t * 8) + 0.01 * rng.standard_normal(len(t))
    return (0.5 * wave).astype(np.float32)


def test_names_split_on_separators_camel_case_and_digits():
    assert split_words("kick_808_hard") == ["kick", "808", "hard"]
    assert split_words("DoorSlam-take3.v2") == ["door", "slam", "take", "3", "v", "2"]
    assert split_words("HTTPServer") == ["http", "server"]
    q = parse_query('kick "808 hard" -snare loud')
    assert q.free == ("kick", "loud") and q.required == ("808 hard",) and q.excluded == ("snare",)
    assert q.text == "kick loud 808 hard"  # what the model embeds: no excluded word


def test_rrf_adds_reciprocal_ranks_with_the_documented_constant():
    fused = dict(rrf([[(1, 0.9), (2, 0.8), (3, 0.7)], [(3, 5.0), (1, 4.0)]]))
    assert RRF_K == 60
    assert fused[1] == pytest.approx(1 / 61 + 1 / 62)
    assert fused[3] == pytest.approx(1 / 63 + 1 / 61)
    assert fused[2] == pytest.approx(1 / 62)
    assert [i for i, _ in rrf([[(1, 0.9), (2, 0.8), (3, 0.7)], [(3, 5.0), (1, 4.0)]])] == [1, 3, 2]
    tied = dict(rrf([[(7, 1.0), (8, 0.5), (9, 0.5)]]))  # equal scores share the better rank
    assert tied[8] == tied[9] == pytest.approx(1 / 62)


def _bext(path, description: str) -> None:
    """Insert a BWF ``bext`` chunk (602 bytes; Description first) after the fmt chunk."""
    data = bytearray(path.read_bytes())
    body = description.encode("ascii").ljust(256, b"\0") + bytes(602 - 256)
    chunk = b"bext" + struct.pack("<I", len(body)) + body
    data[12:12] = chunk
    data[4:8] = struct.pack("<I", len(data) - 8)
    path.write_bytes(bytes(data))


def test_tags_are_read_from_wav_info_bwf_flac_ogg_and_mp3(tmp_path):
    x = kick(0)
    subtypes = {"wav": None, "flac": None, "ogg": "VORBIS", "mp3": "MPEG_LAYER_III"}
    for ext, subtype in subtypes.items():
        if ext.upper() not in sf.available_formats():
            continue
        with sf.SoundFile(tmp_path / f"t.{ext}", "w", SR, 1, format=ext.upper(), subtype=subtype) as f:
            f.title, f.artist, f.album, f.genre, f.comment = "Door Slam", "Ann", "Foley 1", "foley", "oak door"
            f.write(x)
        tags = read_tags(tmp_path / f"t.{ext}")
        assert tags == {"title": ["Door Slam"], "artist": ["Ann"], "album": ["Foley 1"], "genre": ["foley"],
                        "comment": ["oak door"]}, ext
    sf.write(tmp_path / "b.wav", x, SR)
    _bext(tmp_path / "b.wav", "Heavy gate creak, close mic")
    assert read_tags(tmp_path / "b.wav") == {"description": ["Heavy gate creak, close mic"]}
    assert sf.read(tmp_path / "b.wav")[0].shape == x.shape  # still a valid WAV
    (tmp_path / "junk.wav").write_bytes(b"RIFF\xff\xff\xff\xffWAVEjunk")
    assert read_tags(tmp_path / "junk.wav") == {}


@pytest.fixture(scope="module")
def kicks(tmp_path_factory, encoder):
    tmp = tmp_path_factory.mktemp("kicks")
    root = tmp / "Drums" / "Kicks"
    root.mkdir(parents=True)
    names = [f"kick_{i:02d}.wav" for i in range(1, 13)] + ["kick_808_hard.wav", "kick_909_soft.wav"]
    for i, name in enumerate(names):
        sf.write(root / name, kick(i), SR)
    snare = tmp / "Drums" / "snare_tight.wav"
    with sf.SoundFile(snare, "w", SR, 1, format="WAV") as f:
        f.genre, f.comment = "percussion", "crisp snare hit"
        f.write(kick(99))
    index_folder(tmp / "Drums", encoder, tmp / "ix", CFG)
    return tmp


def test_hybrid_ranks_the_file_the_name_describes_first_meaning_alone_does_not(kicks, encoder):
    with Index.open(kicks / "ix", encoder) as ix:
        meaning = ix.search("kick 808 hard", k=16, mode="meaning")
        hybrid = ix.search("kick 808 hard", k=16)
        words = ix.search("kick 808 hard", k=16, mode="words")
    rank = {h.path: h.rank for h in meaning}["Kicks/kick_808_hard.wav"]
    assert rank > 1  # the untrained model cannot tell kicks apart (measured: rank 8 of 15, cosines 1e-5 apart)
    # "kick" is in 14 of 15 names: no word evidence; "808" and "hard" only in this file's name,
    # so it alone gets a words rank, and 1/61 + 1/(60 + rank) beats every other file's 1/(60 + r)
    assert hybrid[0].path == "Kicks/kick_808_hard.wav"
    assert hybrid[0].fused == pytest.approx(1 / (RRF_K + 1) + 1 / (RRF_K + rank))
    assert words[0].path == "Kicks/kick_808_hard.wav" and words[0].words_score > words[1].words_score
    assert len(hybrid) == 15 and all(h.moments for h in hybrid)  # words-only hits still get moments


def test_quoted_words_must_appear_and_minus_words_are_excluded(kicks, encoder):
    with Index.open(kicks / "ix", encoder) as ix:
        required = ix.search('kick "909"', k=16)
        assert [h.path for h in required] == ["Kicks/kick_909_soft.wav"]
        no808 = ix.search("kick -808", k=16)
        assert len(no808) == 14 and not any("808" in h.path for h in no808)
        # tags and folders are words too: the snare's comment says "crisp snare hit"
        assert {h.path for h in ix.search('"snare hit"', k=5)} == {"snare_tight.wav"}
        assert len(ix.search("drums", k=20, mode="words")) == 0  # the root's own name is not a word
        assert {h.path for h in ix.search("kicks", k=20, mode="words")} == {
            h.path for h in ix.search("x", k=20, mode="meaning") if h.path.startswith("Kicks/")}
        with pytest.raises(EarshotError, match="only excludes"):
            ix.search("-808", k=3)


def test_words_follow_the_folder_incrementally(kicks, encoder, tmp_path):
    import shutil

    root = tmp_path / "lib"
    shutil.copytree(kicks / "Drums", root)
    index_folder(root, encoder, tmp_path / "ix", CFG)
    sf.write(root / "clap_tight.wav", kick(7), SR)
    (root / "Kicks" / "kick_909_soft.wav").unlink()
    index_folder(root, encoder, tmp_path / "ix", CFG)
    with Index.open(tmp_path / "ix", encoder) as ix:
        assert [h.path for h in ix.search("clap", k=3, mode="words")] == ["clap_tight.wav"]
        assert ix.search("909", k=3, mode="words") == []
        conn = ix._store.conn
        assert conn.execute("SELECT COUNT(*) FROM words").fetchone()[0] == ix._store.count()


def test_an_index_from_before_words_says_which_command_adds_them(kicks, encoder, tmp_path):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(kicks / "ix", old)
    with sqlite3.connect(old / "meta.sqlite") as conn:
        conn.execute("DROP TABLE words")
        conn.execute("DROP TABLE tags")
        conn.execute("DELETE FROM info WHERE key = 'words'")
    with Index.open(old, encoder) as ix:
        assert "rerun `earshot index" in ix.upgrade_note()
        assert len(ix.search("kick 808 hard", k=5)) == 5  # hybrid: meaning alone, still answers
        with pytest.raises(EarshotError, match="rerun `earshot index"):
            ix.search("kick", k=5, mode="words")
        with pytest.raises(EarshotError, match="rerun `earshot index"):
            ix.search('kick "808"', k=5)
    index_folder(kicks / "Drums", encoder, old, CFG)  # the command it names upgrades in place
    with Index.open(old, encoder) as ix:
        assert ix.search("kick 808 hard", k=1, mode="words")[0].path == "Kicks/kick_808_hard.wav"
        assert ix.upgrade_note() is None


def _words_db(n_rows: int, seed: int) -> sqlite3.Connection:
    """A bare words table (the index's schema) of generated names, folders and tags."""
    from earshot.index.words import _SCHEMA, WORDS_SCHEMA

    vocab = "kick snare hat clap door slam wood metal glass rain wind hum".split()
    rng = np.random.default_rng(seed)
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE info (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    conn.execute("CREATE TABLE files (id INTEGER PRIMARY KEY, duration REAL NOT NULL)")
    conn.executescript(_SCHEMA)
    conn.execute("INSERT INTO info VALUES ('words', ?)", (str(WORDS_SCHEMA),))
    ids = np.sort(rng.choice(n_rows + n_rows // 5, n_rows, replace=False)) + 1  # gaps, as after re-indexing
    for fid in ids:
        pick = lambda k: " ".join(rng.choice(vocab, k))  # noqa: E731
        conn.execute("INSERT INTO files VALUES (?, ?)", (int(fid), float(rng.uniform(0.1, 60))))
        conn.execute("INSERT INTO words(rowid, folders, name, tags) VALUES (?, ?, ?, ?)",
                     (int(fid), pick(rng.integers(0, 3)), pick(rng.integers(1, 5)), pick(rng.integers(0, 3))))
    return conn


def test_words_rank_of_several_words_equals_the_full_bm25_ranking_and_skips_it_when_it_can():
    """The all-words list is answered only when it provably holds the top n: the result (ids,
    scores, order) always equals FTS5's ranking of every file holding any word, and the full
    ranking is skipped for common words, where it is costly."""
    from earshot.index import words as W

    conn = _words_db(3000, seed=5)
    rng = np.random.default_rng(6)
    vocab = "kick snare hat clap door slam wood metal glass rain wind hum".split()
    weights = ", ".join(str(x) for x in W.WEIGHTS)
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    pruned = full = 0
    for trial in range(60):
        words = list(rng.choice(vocab, int(rng.integers(2, 4))))
        text = " ".join(words) if trial % 3 else f'{words[0]} "{words[1]} {words[-1]}"'
        q = W.parse_query(text)
        where, params = ("duration < ?", [30.0]) if trial % 2 else ("1", [])
        n = int(rng.choice([1, 5, 50]))
        join = "" if where == "1" else f" JOIN files ON files.id = words.rowid AND ({where})"
        ref = conn.execute(f"SELECT words.rowid, bm25(words, {weights}) AS s FROM words{join} WHERE words MATCH ? "
                           "ORDER BY s, words.rowid LIMIT ?", [*params, W.free_match(q), n]).fetchall()
        statements.clear()
        got = W.rank(conn, q, n, where, params)
        assert [f for f, _ in got] == [int(r[0]) for r in ref], text
        np.testing.assert_allclose([s for _, s in got], [-r[1] for r in ref], rtol=1e-12)
        ranked = [s for s in statements if "bm25(" in s]
        pruned += len(ranked) == 1 and len(set(words)) > 1  # the all-words list was the answer
        full += len(ranked) == 2
    assert pruned >= 10 and full >= 5, (pruned, full)  # both paths were exercised


def test_the_bound_on_a_file_missing_a_word_is_worked_by_hand():
    from earshot.index.words import BM25_K1, _missing_bound

    conn = _words_db(3000, seed=5)
    n = conn.execute("SELECT max(rowid) FROM words").fetchone()[0]
    hits = {w: conn.execute("SELECT count(*) FROM words WHERE words MATCH ?", (w,)).fetchone()[0]
            for w in ("kick", "door", "hum")}
    idf = {w: np.log((n - h + 0.5) / (h + 0.5)) for w, h in hits.items()}
    assert _missing_bound(conn, [["kick"], ["door"], ["hum"]]) == pytest.approx(
        (BM25_K1 + 1) * (sum(idf.values()) - min(idf.values())), rel=1e-12)
    # a word named twice counts twice, as in FTS5's score; dropping it drops both
    twice = (BM25_K1 + 1) * np.array([2 * idf["kick"], idf["door"]])
    assert _missing_bound(conn, [["kick"], ["door"], ["kick"]]) == pytest.approx(twice.sum() - twice.min(), rel=1e-12)
    # every file holding only some of the words scores below it (FTS5's own scores)
    rows = conn.execute("SELECT bm25(words, 1.0, 3.0, 2.0) FROM words WHERE words MATCH 'kick OR door OR hum' "
                        "AND rowid NOT IN (SELECT rowid FROM words WHERE words MATCH 'kick AND door AND hum')").fetchall()
    assert rows and max(-r[0] for r in rows) < _missing_bound(conn, [["kick"], ["door"], ["hum"]])
