"""Issue 21 §1: a damaged index is never trusted, and `earshot index` repairs it.

Each failure the issue reports is reproduced on a tiny generated index: damaged, truncated and
foreign vector files, damaged database rows, and a 0-byte database that search must not write.
Before the fix, search trusted the damaged vectors (exit 0, a wrong top hit) or crashed with a
traceback; after it, search refuses in one line naming the repair and `earshot index` rebuilds.
"""

from __future__ import annotations

import re
import shutil
import sqlite3

import numpy as np
import pytest

from rel_util import build, cli, rel_model, write_sounds  # noqa: F401 - rel_model is a fixture

from earshot.errors import EarshotError
from earshot.index import Index
from earshot.index.store import DB_FILE, FAISS_FILE, DamagedIndex


@pytest.fixture
def idx(tmp_path, rel_model):
    write_sounds(tmp_path / "s")
    build(tmp_path / "s", tmp_path / "ix", rel_model)
    return tmp_path / "ix"


def _ranking(ix_dir, rel_model, text="a low hum"):
    with Index.open(ix_dir, rel_model) as ix:
        return [(h.path, round(h.score, 5)) for h in ix.search(text, k=6)]


def _damage(path, how: str) -> None:
    b = bytearray(path.read_bytes())
    mid = len(b) // 2
    if how == "xor":
        for i in range(mid - 32, mid + 32):
            b[i] ^= 0xA5
    elif how == "zero":
        b[mid - 128: mid + 128] = bytes(256)
    elif how == "truncate":
        b = b[: len(b) * 2 // 3]
    path.write_bytes(bytes(b))


@pytest.mark.parametrize("how", ["xor", "zero", "truncate"])
def test_damaged_vectors_are_refused_and_rebuilt_by_the_next_index(idx, rel_model, how):
    good = _ranking(idx, rel_model)
    _damage(idx / FAISS_FILE, how)
    with pytest.raises(DamagedIndex, match=r"refusing to search.*run `earshot index .* --out .*` to repair"):
        Index.open(idx, rel_model)
    r = cli("search", str(idx), "a low hum", "--model", str(rel_model))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert [ln for ln in r.stderr.splitlines() if ln.strip()][-1].startswith("error: ")
    report = build(idx.parent / "s", idx, rel_model)
    assert report.unchanged == 6 and any("rebuilt it from the database" in n for n in report.repaired)
    assert _ranking(idx, rel_model) == good  # scores rounded to 1e-5: same vectors, same FAISS sums


def test_a_vector_file_copied_from_another_index_of_the_same_model_is_refused(idx, rel_model, tmp_path):
    write_sounds(tmp_path / "other", n=6, offset=20)
    build(tmp_path / "other", tmp_path / "ix2", rel_model)
    shutil.copy(tmp_path / "ix2" / FAISS_FILE, idx / FAISS_FILE)
    with pytest.raises(DamagedIndex, match="SHA-256 differs"):
        Index.open(idx, rel_model)
    r = cli("index", "--verify", "--out", str(idx))
    assert r.returncode == 1 and "problem: vectors.faiss" in r.stdout, r.stdout + r.stderr


def _sql(ix_dir, statement, *args):
    with sqlite3.connect(ix_dir / DB_FILE) as conn:
        conn.execute(statement, args)


def test_invalid_settings_json_is_one_line_naming_the_index(idx, rel_model):
    _sql(idx, "UPDATE info SET value = '{\"model_id\": ' WHERE key = 'settings'")
    with pytest.raises(DamagedIndex, match=rf"{idx.name}: the index's 'settings' record is damaged.*delete"):
        Index.open(idx, rel_model)
    r = cli("search", str(idx), "a tone", "--model", str(rel_model))
    assert r.returncode == 2 and "Traceback" not in r.stderr and "JSONDecodeError" not in r.stderr, r.stderr


def test_missing_window_rows_of_a_hit_are_a_clear_error_and_index_repairs_them(idx, rel_model):
    good = _ranking(idx, rel_model)
    with Index.open(idx, rel_model) as ix:
        top = ix.search("a low hum", k=1)[0]
    _sql(idx, "DELETE FROM windows WHERE file_id = ?", top.id)
    with Index.open(idx, rel_model) as ix, pytest.raises(DamagedIndex, match=r"window rows .* missing.*earshot index"):
        ix.search("a low hum", k=3)
    report = build(idx.parent / "s", idx, rel_model)
    assert report.encoded == [top.path] and "damaged rows" in report.repaired[0]
    assert [p for p, _ in _ranking(idx, rel_model)] == [p for p, _ in good]


def test_a_clip_blob_of_the_wrong_length_is_a_clear_error_and_index_repairs_it(idx, rel_model):
    _sql(idx, "UPDATE files SET embedding = x'0000803f' WHERE path = 's01.wav'")
    _sql(idx, "UPDATE info SET value = value + 1 WHERE key = 'generation'")  # vectors now stale: rebuilt on open
    with pytest.raises(DamagedIndex, match=r"clip embedding of 's01.wav' is damaged \(4 bytes, expected 64\)"):
        Index.open(idx, rel_model)
    r = cli("index", "--verify", "--out", str(idx))
    assert r.returncode == 1 and "s01.wav" in r.stdout
    report = build(idx.parent / "s", idx, rel_model)
    assert report.encoded == ["s01.wav"]
    assert cli("index", "--verify", "--out", str(idx)).returncode == 0


def test_search_opens_the_database_read_only_and_never_writes(tmp_path, idx, rel_model):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / DB_FILE).write_bytes(b"")
    r = cli("search", str(empty), "a dog", "--model", str(rel_model))
    assert r.returncode == 2 and "not an earshot index" in r.stderr and "Traceback" not in r.stderr
    assert (empty / DB_FILE).stat().st_size == 0  # before the fix: the schema was created (45 kB)
    before = (idx / DB_FILE).read_bytes()
    _ranking(idx, rel_model)
    assert (idx / DB_FILE).read_bytes() == before
    assert not list(idx.glob(f"{DB_FILE}-*"))  # no journal left behind either


def test_a_database_that_fails_quick_check_is_refused(idx, rel_model):
    data = bytearray((idx / DB_FILE).read_bytes())
    page = 4096
    assert len(data) >= 3 * page
    for start in range(page, len(data), page):  # every b-tree page but the first gets an invalid type
        data[start: start + 8] = b"\x07" * 8
    (idx / DB_FILE).write_bytes(bytes(data))
    with pytest.raises(EarshotError, match="damaged|not a valid index database"):
        with Index.open(idx, rel_model) as ix:
            ix.search("a tone", k=6)


def test_verify_reports_a_sound_index_and_left_over_temp_files(idx, rel_model):
    (idx / f".{FAISS_FILE}.x1y2.tmp").write_bytes(b"half a file")
    (idx / ".windows.npz.a1b2.tmp").write_bytes(b"half a window file")
    (idx / ".windows.faiss.common.c3d4.tmp").write_bytes(b"half a shard training")
    r = cli("index", "--verify", "--out", str(idx))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ok: " in r.stdout and ".vectors.faiss.x1y2.tmp: left by a run killed" in r.stdout
    assert ".windows.npz.a1b2.tmp: left" in r.stdout and ".windows.faiss.common.c3d4.tmp: left" in r.stdout
    with Index.open(idx, rel_model) as ix:  # serve/search ignore it
        assert len(ix.search("a tone", k=6)) == 6
    assert np.isfinite([s for _, s in _ranking(idx, rel_model)]).all()
    build(idx.parent / "s", idx, rel_model)  # the next writer removes them all
    assert not list(idx.glob(".*.tmp"))


def test_audio_ids_are_canonical_decimal_only(idx, rel_model):
    from fastapi.testclient import TestClient

    from earshot.app.server import create_app

    c = TestClient(create_app(idx, allowed_hosts=("testserver",)))
    assert c.get("/audio/1").status_code == 200
    # before: /audio/10_0 served id 100; +10, %2010, 010 and 10.0 served id 10
    for bad in ("10_0", "+1", "%201", "01", "1.0", "1e0", "0x1", "%2B1"):
        r = c.get(f"/audio/{bad}")
        assert r.status_code == 422 and "plain decimal" in r.json()["detail"], (bad, r.status_code)
    assert c.get("/audio/-1").status_code == 404 and c.get(f"/audio/{10**30}").status_code == 404


@pytest.mark.parametrize("how", ["xor", "xor-faiss", "copy"])
def test_damaged_or_foreign_window_vectors_are_never_searched_and_rebuilt_by_the_next_index(
        idx, rel_model, tmp_path, how, caplog):
    """Window ranking (the default) searches windows.npz: a damaged file, or one copied from
    another index of the same model (same generation number, same kind), is never searched: the
    windows the database holds are ranked instead (the same answers), the log says why and how to
    repair, --verify names it, and `earshot index` rebuilds it from the database."""
    from earshot.index.integrity import window_files
    from earshot.index.moments import WINDOWS_FILE

    good = _ranking(idx, rel_model)
    if how == "xor":
        _damage(idx / WINDOWS_FILE, "xor")
    elif how == "xor-faiss":  # the FAISS index beside windows.npz
        _damage(idx / "windows.faiss", "xor")
    else:  # every window file of another index
        write_sounds(tmp_path / "other", n=6, offset=20)
        build(tmp_path / "other", tmp_path / "ix2", rel_model)
        for f in window_files(tmp_path / "ix2"):
            shutil.copy(f, idx / f.name)
    with caplog.at_level("WARNING", logger="earshot.index"):
        assert _ranking(idx, rel_model) == good  # before: a traceback (xor) or another index's windows (copy)
    assert re.search(r"windows.npz: not searched: .*SHA-256 differs.*to repair", caplog.text), caplog.text
    r = cli("index", "--verify", "--out", str(idx))
    assert r.returncode == 1 and re.search(r"problem: window vectors: windows\.(npz|faiss)", r.stdout), r.stdout + r.stderr
    build(idx.parent / "s", idx, rel_model)
    assert _ranking(idx, rel_model) == good
    assert cli("index", "--verify", "--out", str(idx)).returncode == 0


def test_a_window_blob_changed_in_place_is_named_by_verify(idx):
    """Same length, other values: no length check can see it; the per-file digest written with
    the blobs does, and --verify names the file."""
    from earshot.index.integrity import verify

    assert verify(idx).ok
    _sql(idx, "UPDATE windows SET embedding = zeroblob(length(embedding)) WHERE file_id = "
              "(SELECT id FROM files WHERE path = 's02.wav') AND idx = 0")
    report = verify(idx)
    assert any("window embeddings of 's02.wav' changed" in p for p in report.problems), report.problems
    assert not any("s01.wav" in p for p in report.problems)


def test_blob_digests_of_rows_without_digests_equal_those_written_with_them(idx):
    """An index written before the per-file digests (no rows in blob_digests) hashes its blobs
    instead, to the same record; a record of the older kind (every blob streamed) still verifies."""
    from earshot.index import integrity as I
    from earshot.index.store import Store

    store = Store.open(idx)
    try:
        with_rows = I.blob_digests(store)
        store.conn.execute("DELETE FROM blob_digests")
        assert I.blob_digests(store) == with_rows
        assert I.fill_digests(store) == store.count() and I.fill_digests(store) == 0  # what the indexer does once
        assert I.blob_digests(store) == with_rows
        store.conn.execute("DELETE FROM blob_digests WHERE file_id = (SELECT min(id) FROM files)")
        assert I.blob_digests(store) == with_rows
        rec = store.get_info(I.RECORD)
        assert rec["blobs"] == I.BLOBS
        clips, wins = I._blob_digests_v1(store)
        del rec["blobs"]
        store.set_info(I.RECORD, {**rec, "clips_sha256": clips, "windows_sha256": wins})
    finally:
        store.close()
    assert I.verify(idx).ok
    _sql(idx, "UPDATE files SET embedding = zeroblob(length(embedding)) WHERE path = 's01.wav'")
    assert any("clip embeddings differ" in p for p in I.verify(idx).problems)


def test_a_watched_update_reads_the_embeddings_of_the_files_it_wrote_only(tmp_path, rel_model, monkeypatch):
    """Recording what the vectors were built from hashes 64 bytes per file, not every blob:
    after one new file in a library of 30 (a patch, not a rebuild, of both vector files), no
    statement reads the embeddings of all windows or all files."""
    from rel_util import FAST

    from earshot.index import IndexConfig, index_folder, open_encoder
    from earshot.index import store as store_mod

    root, encoder = tmp_path / "s", open_encoder(rel_model)
    write_sounds(root, n=30)
    index_folder(root, encoder, tmp_path / "ix", IndexConfig(**FAST))
    write_sounds(root, n=1, offset=30)
    statements: list[str] = []
    connect = store_mod.sqlite3.connect

    def traced(*args, **kwargs):
        conn = connect(*args, **kwargs)
        conn.set_trace_callback(statements.append)
        return conn

    monkeypatch.setattr(store_mod.sqlite3, "connect", traced)
    report = index_folder(root, encoder, tmp_path / "ix", IndexConfig(**FAST), changed=[root / "s30.wav"])
    assert report.encoded == ["s30.wav"]
    reads = [s for s in statements if "embedding" in s and s.lstrip().upper().startswith("SELECT")]
    assert reads, "the update read no embeddings at all"
    whole = [s for s in reads if " WHERE " not in s.upper()]
    assert not whole, whole  # before: blob_digests streamed every clip and window blob


def test_window_vectors_of_an_older_earshot_inside_the_npz_still_load_and_move_beside_it(idx, rel_model):
    """An older earshot serialised a plain window index inside windows.npz; such an index (with
    its own record) searches as before, and the next update writes windows.faiss beside it."""
    import faiss

    from earshot.index.integrity import check_windows, record_windows
    from earshot.index.moments import WINDOWS_FILE, WindowVectors
    from earshot.index.store import Store

    good = _ranking(idx, rel_model)
    wv, gen = WindowVectors.load(idx / WINDOWS_FILE)
    np.savez(idx / WINDOWS_FILE, file_ids=wv.file_ids, idx=wv.idx, generation=np.int64(gen),
             faiss=faiss.serialize_index(wv.index))
    (idx / "windows.faiss").unlink()
    store = Store.open(idx)
    record_windows(store, gen)
    assert check_windows(store) is None  # searched from the file, not ranked from the database
    store.close()
    assert WindowVectors.load(idx / WINDOWS_FILE)[0].index.ntotal == wv.index.ntotal
    assert _ranking(idx, rel_model) == good
    write_sounds(idx.parent / "s", n=1, offset=40)
    build(idx.parent / "s", idx, rel_model)
    assert (idx / "windows.faiss").is_file() and "faiss" not in np.load(idx / WINDOWS_FILE).files
    assert [p for p, _ in _ranking(idx, rel_model, text="a low hum")]  # searches after the move
