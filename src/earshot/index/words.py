"""Words: full-text search (SQLite FTS5) over folder names, file names and embedded tags.

A query that names the file ("kick 808", "take 3") is answered by the words people put in names
and tags; CLAP-style models are weak exactly there (short percussive samples). Each indexed
file gets one FTS5 row (rowid = file id) with three columns:

- ``folders``: the path's folder components, split into words;
- ``name``: the file name without suffix, split on ``_ - .``, spaces, camelCase and
  letter/digit boundaries (``kick808HardTake3`` -> ``kick 808 hard take 3``);
- ``tags``: title, artist, album, genre, comment (mutagen: ID3 for mp3, Vorbis comments for
  FLAC/Ogg, ID3 chunks in WAV/AIFF) and, for WAV, the RIFF ``LIST/INFO`` fields and the BWF
  ``bext`` description, read by :func:`read_tags`'s own chunk walker (mutagen reads neither).

Tag values are also kept one per row in ``tags`` for ``--where "genre=foley"``. The tables are
added by the indexer (:func:`sync`, schema ``words: 1`` in the settings), filled for files
that lack a row, so updates are incremental and an index from before words existed is
upgraded by rerunning ``earshot index`` on its folder (tags are read; no audio is re-encoded).
The tokenizer is FTS5's ``porter unicode61``: case and accents folded, English suffixes
stemmed (``kicks`` finds ``kick``). Ranking is FTS5's BM25 with the name weighted above tags
above folders (:data:`WEIGHTS`); files matched only by words that most files share carry no
evidence and are left out of hybrid fusion (:data:`EVIDENCE`).
"""

from __future__ import annotations

import math
import re
import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from earshot.errors import EarshotError

WORDS_SCHEMA = 1  # settings key "words": tables below present and filled
WEIGHTS = (1.0, 3.0, 2.0)  # BM25 column weights: folders, name, tags
# A word found in more than half the files has BM25 weight (IDF) <= 0, which FTS5 clamps to
# 1e-6: a file matched only by such words (every kick, for "kick" in a folder of kicks) has no
# word evidence, and hybrid search leaves it out of the words list so that it cannot outvote
# the meaning ranking (words mode lists it: there is nothing to outvote).
EVIDENCE = 1e-3
_SCHEMA = """
CREATE VIRTUAL TABLE IF NOT EXISTS words USING fts5(folders, name, tags, tokenize = 'porter unicode61');
CREATE TABLE IF NOT EXISTS tags (
    file_id INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,
    key TEXT NOT NULL,                      -- title, artist, album, genre, comment, description
    value TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS tags_file ON tags(file_id);
CREATE INDEX IF NOT EXISTS tags_key ON tags(key, value);
"""
_INFO = {b"INAM": "title", b"IART": "artist", b"IPRD": "album", b"IGNR": "genre", b"ICMT": "comment",
         b"ISBJ": "description", b"IKEY": "comment"}
_ID3 = {"TIT2": "title", "TPE1": "artist", "TALB": "album", "TCON": "genre", "COMM": "comment"}
_EASY = {"title": "title", "artist": "artist", "album": "album", "genre": "genre", "comment": "comment",
         "description": "description"}
_MAX_VALUE = 1000  # characters kept per tag value


_CAMEL = re.compile(r"([a-z])([A-Z])")
_ACRONYM = re.compile(r"([A-Z]+)([A-Z][a-z])")
_LETTER_DIGIT = re.compile(r"([A-Za-z])([0-9])|([0-9])([A-Za-z])")
_SEPARATORS = re.compile(r"[\W_]+")


def split_words(text: str) -> list[str]:
    """Words of a name: split on separators, camelCase and letter/digit boundaries, lowercased."""
    text = _CAMEL.sub(r"\1 \2", text)
    text = _ACRONYM.sub(r"\1 \2", text)
    text = _LETTER_DIGIT.sub(lambda m: " ".join(g for g in m.groups() if g), text)
    return [w.lower() for w in _SEPARATORS.split(text) if w]


def path_terms(rel: str) -> tuple[str, str]:
    """(folder words, name words) of a path relative to the indexed root (POSIX separators)."""
    folder, _, name = rel.rpartition("/")
    stem = name[:name.rindex(".")] if "." in name[1:] else name  # as Path.stem: ".wav" alone is a name
    folders = [w for part in folder.split("/") if part for w in split_words(part)]
    return " ".join(folders), " ".join(split_words(stem))


def read_tags(path: str | Path) -> dict[str, list[str]]:
    """Embedded tags of an audio file by field (title, artist, album, genre, comment,
    description); {} when there are none or the file cannot be read (tags are optional)."""
    path = Path(path)
    out: dict[str, list[str]] = {}

    def add(key: str, value) -> None:
        text = str(value).replace("\x00", " ").strip()[:_MAX_VALUE]
        if text and text not in out.setdefault(key, []):
            out[key].append(text)

    suffix = path.suffix.lower()
    try:
        if suffix in (".wav", ".wave"):
            for key, value in _riff_tags(path):
                add(key, value)
        import mutagen

        f = mutagen.File(str(path))  # not easy=True: EasyID3 has no comment field
        tags = getattr(f, "tags", None) if f is not None else None
        if tags is None:
            return out
        if hasattr(tags, "getall"):  # ID3: mp3, or an id3 chunk in WAV/AIFF
            for frame_id, key in _ID3.items():
                for fr in tags.getall(frame_id):
                    for text in getattr(fr, "text", []):
                        add(key, text)
        else:
            for name, key in _EASY.items():
                try:
                    values = tags[name]
                except (KeyError, ValueError):
                    continue
                for v in values if isinstance(values, list) else [values]:
                    add(key, v)
    except Exception:  # noqa: BLE001 - unreadable tags never make a file bad; the audio decides that
        return out
    return out


def _riff_tags(path: Path) -> list[tuple[str, str]]:
    """RIFF ``LIST/INFO`` fields and the BWF ``bext`` description of a WAV file.

    Walks the chunk headers only (seeking past ``data``), at most 256 chunks, each tag chunk
    read up to 64 KiB, so a crafted file cannot make this read much.
    """
    found: list[tuple[str, str]] = []
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] not in (b"RIFF", b"RF64") or head[8:12] != b"WAVE":
            return found
        for _ in range(256):
            hdr = f.read(8)
            if len(hdr) < 8:
                break
            cid, size = hdr[:4], struct.unpack("<I", hdr[4:])[0]
            start = f.tell()
            if cid == b"LIST" and size >= 4:
                body = f.read(min(size, 1 << 16))
                if body[:4] == b"INFO":
                    pos = 4
                    while pos + 8 <= len(body):
                        sid, ssize = body[pos:pos + 4], struct.unpack("<I", body[pos + 4:pos + 8])[0]
                        value = body[pos + 8:pos + 8 + ssize]
                        if sid in _INFO:
                            found.append((_INFO[sid], _decode(value)))
                        pos += 8 + ssize + (ssize & 1)
            elif cid == b"bext":
                found.append(("description", _decode(f.read(min(size, 256)))))
            f.seek(start + size + (size & 1))
    return found


def _decode(raw: bytes) -> str:
    raw = raw.split(b"\x00", 1)[0]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


# -- the tables ---------------------------------------------------------------------------------
def has_words(conn) -> bool:
    """Whether this index database has the words tables (schema ``words`` >= 1)."""
    row = conn.execute("SELECT value FROM info WHERE key = 'words'").fetchone()
    return row is not None and int(row[0]) >= WORDS_SCHEMA


UPGRADE = ("this index was built before word search existed; rerun `earshot index FOLDER --model "
           "MODEL --out INDEX` on its folder to add it (tags are read, no audio is re-encoded)")


def sync(store, root: Path, batch: int = 500) -> int:
    """Bring the words and tags tables up to date with ``files``; returns files (re)read.

    Files are identified by id and a changed file gets a new id, so this reads only files
    without a row and drops rows of files that are gone.
    """
    conn = store.conn
    conn.executescript(_SCHEMA)
    with store.transaction():
        conn.execute("DELETE FROM words WHERE rowid NOT IN (SELECT id FROM files)")
        conn.execute("DELETE FROM tags WHERE file_id NOT IN (SELECT id FROM files)")
    todo = conn.execute("SELECT id, path FROM files WHERE id NOT IN (SELECT rowid FROM words) ORDER BY id").fetchall()
    for i in range(0, len(todo), batch):
        rows = []
        for fid, rel in todo[i:i + batch]:
            folders, name = path_terms(rel)
            rows.append((fid, folders, name, read_tags(root / rel)))
        with store.transaction():
            for fid, folders, name, tags in rows:
                text = " ".join(v for vs in tags.values() for v in vs)
                conn.execute("INSERT INTO words(rowid, folders, name, tags) VALUES (?, ?, ?, ?)",
                             (fid, folders, name, text))
                conn.executemany("INSERT INTO tags(file_id, key, value) VALUES (?, ?, ?)",
                                 [(fid, k, v) for k, vs in tags.items() for v in vs])
    with store.transaction():
        store.set_info("words", WORDS_SCHEMA)
    return len(todo)


def file_tags(conn, file_ids: list[int]) -> dict[int, dict[str, list[str]]]:
    """Tags by file id (files without tags, or an index without the table, are absent)."""
    if not file_ids or not has_words(conn):
        return {}
    marks = ",".join("?" * len(file_ids))
    out: dict[int, dict[str, list[str]]] = {}
    for fid, key, value in conn.execute(f"SELECT file_id, key, value FROM tags WHERE file_id IN ({marks})",
                                        [int(f) for f in file_ids]):
        out.setdefault(fid, {}).setdefault(key, []).append(value)
    return out


# -- queries ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Query:
    """A search box's text, read the way people type it: ``kick 808 "hard" -snare``."""

    free: tuple[str, ...] = ()  # words that rank (any of them)
    required: tuple[str, ...] = ()  # "quoted" words or phrases: must appear
    excluded: tuple[str, ...] = ()  # -word: must not appear
    text: str = field(default="")  # what the model embeds: everything but the excluded words

    @property
    def has_words(self) -> bool:
        return bool(self.free or self.required)


def parse_query(text: str) -> Query:
    """Split a query into free words, "required phrases" and -excluded words."""
    required = [m.strip() for m in re.findall(r'"([^"]*)"', text) if m.strip()]
    rest = re.sub(r'"[^"]*"', " ", text).replace('"', " ")
    free, excluded = [], []
    for tok in rest.split():
        if tok.startswith("-") and len(tok) > 1:
            excluded.append(tok[1:])
        else:
            free.append(tok)
    kept = " ".join([*free, *required]).strip()
    return Query(tuple(free), tuple(required), tuple(excluded), kept)


def _quoted(words: list[str]) -> str:
    """An FTS5 string for a phrase: its words, each quoted so no query syntax gets through."""
    return '"' + " ".join(words).replace('"', '""') + '"'


def match_any(phrases) -> str | None:
    """FTS5 MATCH text: any of the phrases (None if none has a word)."""
    parts = [_quoted(ws) for ws in (split_words(p) for p in phrases) if ws]
    return " OR ".join(parts) or None


def match_all(phrases) -> str | None:
    """FTS5 MATCH text: every phrase (None if none has a word)."""
    parts = [_quoted(ws) for ws in (split_words(p) for p in phrases) if ws]
    return " AND ".join(parts) or None


def ranked_phrases(q: Query) -> list[list[str]]:
    """The phrases that rank, each a list of words: each free word, and each required phrase
    (a word named twice is listed twice, as FTS5 scores it)."""
    return [[w] for t in q.free for w in split_words(t)] + [ws for ws in map(split_words, q.required) if ws]


def free_match(q: Query) -> str | None:
    """MATCH text of the words that rank: any of :func:`ranked_phrases`."""
    return " OR ".join(_quoted(p) for p in ranked_phrases(q)) or None


def selection_sql(q: Query) -> tuple[str, list]:
    """SQL over ``files`` for the must-appear and must-not-appear words ("1" when none)."""
    parts, params = [], []
    req = match_all(q.required)
    if req:
        parts.append("files.id IN (SELECT rowid FROM words WHERE words MATCH ?)")
        params.append(req)
    exc = match_any(q.excluded)
    if exc:
        parts.append("files.id NOT IN (SELECT rowid FROM words WHERE words MATCH ?)")
        params.append(exc)
    return (" AND ".join(parts) or "1"), params


BM25_K1 = 1.2  # FTS5's bm25 constants (fts5_aux.c): a phrase adds at most idf x (K1 + 1) to a score
PRUNE_MARGIN = 1e-9  # relative: the all-words list is kept only when its n-th score clears the bound by this


def rank(conn, q: Query, n: int, where_sql: str = "1", where_params: list | None = None,
         min_score: float = float("-inf"), shortcut: bool = True) -> list[tuple[int, float]]:
    """The ``n`` best files by BM25 for the query's words among those ``where_sql`` allows:
    [(file id, score)], higher better (FTS5's bm25 negated); hybrid search passes
    ``min_score=EVIDENCE``.

    A query of several words first ranks only the files holding all of them (far fewer than
    those holding any, when the words are common): a file that misses a word scores below the
    sum of the others' upper bounds (each word adds less than idf x (K1 + 1)), so when the n-th
    file of that list scores above the bound, no other file can enter the top n and the list
    is the answer, with the same scores and order the full ranking gives. Otherwise every file
    holding any word is ranked (always, with ``shortcut=False``: the benchmark's comparison).
    """
    if not has_words(conn):
        raise EarshotError(UPGRADE)
    phrases = ranked_phrases(q)
    if not phrases:
        return []
    w = ", ".join(str(x) for x in WEIGHTS)
    join = "" if where_sql == "1" else f" JOIN files ON files.id = words.rowid AND ({where_sql})"
    sql = (f"SELECT words.rowid, bm25(words, {w}) AS s FROM words{join} "
           f"WHERE words MATCH ? ORDER BY s, words.rowid LIMIT ?")
    params = [*(where_params or [])]
    rows = None
    if shortcut and len({tuple(p) for p in phrases}) > 1:  # the same phrases (a repeated word counts twice, as in FTS5), all required
        both = conn.execute(sql, [*params, " AND ".join(_quoted(p) for p in phrases), int(n)]).fetchall()
        if len(both) >= n and -float(both[-1][1]) > _missing_bound(conn, phrases) * (1 + PRUNE_MARGIN):
            rows = both
    if rows is None:
        rows = conn.execute(sql, [*params, " OR ".join(_quoted(p) for p in phrases), int(n)]).fetchall()
    return [(int(r[0]), -float(r[1])) for r in rows if -float(r[1]) > min_score]


def _missing_bound(conn, phrases: list[list[str]]) -> float:
    """An upper bound of the BM25 score of a file that lacks at least one of ``phrases``.

    FTS5 weighs a phrase found in ``h`` of ``N`` rows by idf = ln((N - h + 0.5) / (h + 0.5))
    (1e-6 when not positive) and adds less than idf x (K1 + 1) for each time the query names
    it, so a file missing a phrase scores below the sum over the rest; the largest such sum
    drops the phrase of smallest total. ``N`` is bounded by the largest rowid (file ids are
    never reused), which can only raise each idf: the bound stays a bound.
    """
    n_rows = conn.execute("SELECT max(rowid) FROM words").fetchone()[0] or 0
    share = []  # per distinct phrase: its most, times the query names it
    for p, times in Counter(map(tuple, phrases)).items():
        hits = conn.execute("SELECT count(*) FROM words WHERE words MATCH ?", (_quoted(list(p)),)).fetchone()[0]
        idf = math.log((n_rows - hits + 0.5) / (hits + 0.5)) if n_rows > hits else 0.0
        share.append(times * (BM25_K1 + 1) * max(idf, 1e-6))
    return sum(share) - min(share)
