"""Readers for caption tables: Clotho, AudioCaps, WavCaps and a generic (audio, caption) list,
plus exclusion lists of clip ids applied as a table is read (:func:`read_table`).

Every reader uses the csv module and keeps names exactly as written: Clotho file names contain
commas, quotes and leading spaces, and a stripped name points at a file that does not exist.
Errors name the file and the 1-based line a person would see in an editor.
"""

from __future__ import annotations

import csv
import io
import json
import re
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

from earshot.data.records import (
    AudioCaptions,
    CaptionTable,
    DuplicateCaption,
    DuplicatePolicy,
    MissingPolicy,
    finish_table,
)
from earshot.errors import DataError
from earshot.registry import Registry
from earshot.utils import atomic_write

TableFormat = Literal["clotho", "audiocaps", "pairs", "wavcaps"]
TABLE_READERS: Registry[Callable[..., CaptionTable]] = Registry("caption table format")


def _open_text(path: Path) -> str:
    """The whole file as text (BOM tolerated), or a DataError naming it."""
    try:
        return path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"{path}: no such caption file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, not a caption file") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start})") from None


def _csv_rows(
    path: Path, required: list[str]
) -> tuple[list[str], Iterator[tuple[int, dict[str, str]]]]:
    """The header and an iterator of (first line of the row, row dict) for a CSV file.

    Line numbers are where each record *starts*, since quoted captions may span lines.
    """
    text = _open_text(path)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise DataError(f"{path}: empty file (expected a header with {required})") from None
    except csv.Error as e:
        raise DataError(f"{path}: line 1: not valid CSV: {e}") from None
    dup = sorted({h for h in header if header.count(h) > 1})
    if dup:
        raise DataError(f"{path}: column(s) {dup} appear more than once in the header")
    absent = [c for c in required if c not in header]
    if absent:
        raise DataError(f"{path}: missing column(s) {absent}; header has {header}")

    def rows() -> Iterator[tuple[int, dict[str, str]]]:
        start = reader.line_num + 1
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                raise DataError(f"{path}: line {start}: not valid CSV: {e}") from None
            line, start = start, reader.line_num + 1
            if not row:  # a blank line
                continue
            if len(row) != len(header):
                raise DataError(f"{path}: line {line}: {len(row)} fields, header has "
                                f"{len(header)}")
            yield line, dict(zip(header, row))

    return header, rows()


def _nonempty(path: Path, line: int, column: str, value: str) -> str:
    if not value.strip():
        raise DataError(f"{path}: line {line}: empty {column}")
    return value


def _find_duplicates(
    path: Path, clip_id: str, captions: list[str], lines: list[int], policy: DuplicatePolicy
) -> list[DuplicateCaption]:
    """Repeated captions of one clip, by the lines they come from; raise if told to."""
    if policy not in ("error", "report"):
        raise DataError(f"{path}: duplicates must be 'error' or 'report', got {policy!r}")
    seen: dict[str, list[int]] = {}
    for cap, line in zip(captions, lines):
        seen.setdefault(cap, []).append(line)
    found = [DuplicateCaption(str(path), clip_id, cap, tuple(ls))
             for cap, ls in seen.items() if len(ls) > 1]
    if found and policy == "error":
        raise DataError("duplicate captions (pass duplicates='report' to keep them):\n"
                        + "\n".join(str(d) for d in found))
    return found


_CAPTION_COL = re.compile(r"caption_([1-9][0-9]*)")


@TABLE_READERS.register("clotho")
def read_clotho(
    csv_path: str | Path,
    audio_dir: str | Path | None = None,
    missing: MissingPolicy = "error",
    duplicates: DuplicatePolicy = "error",
) -> CaptionTable:
    """Read a Clotho caption CSV (``file_name, caption_1 .. caption_N``), one clip per row.

    The file name is the clip id, kept byte for byte. With ``audio_dir`` the audio paths are
    resolved under it and checked (``missing``); without it they stay relative.
    """
    path = Path(csv_path)
    header, rows = _csv_rows(path, ["file_name", "caption_1"])
    numbers = sorted(int(m.group(1)) for h in header if (m := _CAPTION_COL.fullmatch(h)))
    gaps = [f"caption_{k}" for k in range(1, numbers[-1] + 1) if k not in numbers]
    if gaps:
        raise DataError(f"{path}: missing column(s) {gaps}; header has {header}")
    cap_cols = [f"caption_{k}" for k in numbers]
    clips: list[AudioCaptions] = []
    first_line: dict[str, int] = {}
    dups: list[DuplicateCaption] = []
    for line, row in rows:
        name = _nonempty(path, line, "file_name", row["file_name"])
        if name in first_line:
            raise DataError(f"{path}: lines {first_line[name]} and {line}: file {name!r} "
                            "listed twice")
        first_line[name] = line
        caps = [_nonempty(path, line, c, row[c]) for c in cap_cols]
        dups += _find_duplicates(path, name, caps, [line] * len(caps), duplicates)
        clips.append(AudioCaptions(audio=Path(name), captions=tuple(caps), clip_id=name,
                                   meta={"line": line}))
    root = Path(audio_dir) if audio_dir is not None else None
    return finish_table(clips, str(path), root, missing, tuple(dups))


def clotho_audio_dir(csv_path: str | Path) -> Path | None:
    """Clotho's layout puts ``<split>/`` beside ``clotho_captions_<split>.csv``: that folder when
    the table is so named and the folder exists, else None (the caller asks for --audio-dir)."""
    path = Path(csv_path).expanduser()
    m = re.fullmatch(r"clotho_captions_(.+)\.csv", path.name)
    if m is None or not (path.parent / m.group(1)).is_dir():
        return None
    return path.parent / m.group(1)


def write_clotho(table: CaptionTable, csv_path: str | Path) -> None:
    """Write ``table`` as a Clotho CSV (atomically), so any table can be read back by read_clotho.

    Clotho has one column per caption, so every clip must have the same number of captions.
    The file name written is the audio file's name.
    """
    counts = {len(c.captions) for c in table}
    if len(counts) > 1:
        raise DataError(f"{csv_path}: Clotho needs the same number of captions per clip, "
                        f"table {table.name!r} has {sorted(counts)}")
    n = counts.pop() if counts else 5
    if n == 0:
        raise DataError(f"{csv_path}: table {table.name!r} has clips without captions")
    buf = io.StringIO(newline="")
    w = csv.writer(buf, lineterminator="\n")  # "\n" line ends, as the published files
    w.writerow(["file_name"] + [f"caption_{k}" for k in range(1, n + 1)])
    for clip in table:
        w.writerow([clip.audio.name, *clip.captions])
    with atomic_write(csv_path, "wb") as f:
        f.write(buf.getvalue().encode("utf-8"))


def _audio_namer(
    rule: str | Callable[[dict[str, str]], str], path: Path
) -> Callable[[int, dict[str, str]], str]:
    """Turn a format string over the row's columns, or a callable on the row, into a namer."""
    if callable(rule):
        def call(line: int, row: dict[str, str]) -> str:
            name = rule(row)
            if not isinstance(name, str) or not name:
                raise DataError(f"{path}: line {line}: audio_name rule returned {name!r}")
            return name
        return call

    def fmt(line: int, row: dict[str, str]) -> str:
        try:
            return rule.format(**row)
        except KeyError as e:
            raise DataError(f"{path}: audio_name {rule!r} uses column {e.args[0]!r}, which "
                            f"the file does not have (columns: {sorted(row)})") from None
        except (IndexError, ValueError) as e:
            raise DataError(f"{path}: audio_name {rule!r} is not a valid format: {e}") from None
    return fmt


@TABLE_READERS.register("audiocaps")
def read_audiocaps(
    csv_path: str | Path,
    audio_dir: str | Path | None = None,
    audio_name: str | Callable[[dict[str, str]], str] = "{youtube_id}_{start_time}.wav",
    missing: MissingPolicy = "error",
    duplicates: DuplicatePolicy = "report",
) -> CaptionTable:
    """Read an AudioCaps CSV (``audiocap_id, youtube_id, start_time, caption``): row = caption.

    Rows of the same clip (youtube_id + start_time) are grouped in file order; clips are ordered
    by first appearance. ``audio_name`` maps a row to its audio file: a format string over the
    row's columns or a callable taking the row dict. Repeated captions are reported, not raised,
    by default: the official files contain identical captions under distinct ``audiocap_id``s
    (separate annotations; published caption counts include them).
    """
    path = Path(csv_path)
    _, rows = _csv_rows(path, ["audiocap_id", "youtube_id", "start_time", "caption"])
    namer = _audio_namer(audio_name, path)
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    id_line: dict[str, int] = {}
    for line, row in rows:
        cap_id = _nonempty(path, line, "audiocap_id", row["audiocap_id"])
        if cap_id in id_line:
            raise DataError(f"{path}: lines {id_line[cap_id]} and {line}: audiocap_id "
                            f"{cap_id!r} appears twice")
        id_line[cap_id] = line
        yid = _nonempty(path, line, "youtube_id", row["youtube_id"])
        start = _nonempty(path, line, "start_time", row["start_time"])
        caption = _nonempty(path, line, "caption", row["caption"])
        g = groups.get((yid, start))
        if g is None:
            g = groups[(yid, start)] = {"audio": namer(line, row), "captions": [], "lines": [],
                                        "ids": []}
        g["captions"].append(caption)
        g["lines"].append(line)
        g["ids"].append(cap_id)
    clips, dups = [], []
    for (yid, start), g in groups.items():
        clip_id = f"{yid}_{start}"
        dups += _find_duplicates(path, clip_id, g["captions"], g["lines"], duplicates)
        clips.append(AudioCaptions(
            audio=Path(g["audio"]), captions=tuple(g["captions"]), clip_id=clip_id,
            meta={"youtube_id": yid, "start_time": start, "audiocap_ids": tuple(g["ids"]),
                  "lines": tuple(g["lines"])},
        ))
    root = Path(audio_dir) if audio_dir is not None else None
    return finish_table(clips, str(path), root, missing, tuple(dups))


def _pairs_csv(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    _, rows = _csv_rows(path, ["audio", "caption"])
    yield from rows


def _pairs_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    for n, raw in enumerate(_open_text(path).splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: line {n}: not valid JSON: {e.msg}") from None
        if not isinstance(obj, dict):
            raise DataError(f"{path}: line {n}: expected a JSON object, got "
                            f"{type(obj).__name__}")
        absent = [k for k in ("audio", "caption") if k not in obj]
        if absent:
            raise DataError(f"{path}: line {n}: missing key(s) {absent}")
        for k in ("audio", "caption"):
            if not isinstance(obj[k], str):
                raise DataError(f"{path}: line {n}: {k!r} must be a string, got {obj[k]!r}")
        yield n, obj


_PAIR_PARSERS = {".csv": _pairs_csv, ".jsonl": _pairs_jsonl}


@TABLE_READERS.register("pairs")
def read_pairs(
    path: str | Path,
    audio_dir: str | Path | None = None,
    missing: MissingPolicy = "error",
    duplicates: DuplicatePolicy = "error",
) -> CaptionTable:
    """Read a user's own (audio, caption) list: CSV with ``audio,caption`` columns, or JSONL.

    Captions are grouped per audio path (clip id = the path as written). Relative paths resolve
    against ``audio_dir``, by default the file's own folder, so a folder of audio plus a list is
    self-contained. Extra columns/keys go into ``meta`` as tuples aligned with the captions.
    The file's suffix (``.csv`` or ``.jsonl``) says how to parse it.
    """
    path = Path(path)
    parse = _PAIR_PARSERS.get(path.suffix.lower())
    if parse is None:
        raise DataError(f"{path}: pairs files must end in .csv or .jsonl, got {path.suffix!r}")
    groups: dict[str, dict[str, Any]] = {}
    for line, row in parse(path):
        audio = _nonempty(path, line, "audio", row["audio"])
        caption = _nonempty(path, line, "caption", row["caption"])
        g = groups.setdefault(audio, {"captions": [], "lines": [], "extra": []})
        g["captions"].append(caption)
        g["lines"].append(line)
        g["extra"].append({k: v for k, v in row.items() if k not in ("audio", "caption")})
    clips, dups = [], []
    for audio, g in groups.items():
        dups += _find_duplicates(path, audio, g["captions"], g["lines"], duplicates)
        keys = sorted({k for e in g["extra"] for k in e})
        meta: dict[str, Any] = {k: tuple(e.get(k) for e in g["extra"]) for k in keys}
        meta["lines"] = tuple(g["lines"])
        clips.append(AudioCaptions(audio=Path(audio), captions=tuple(g["captions"]),
                                   clip_id=audio, meta=meta))
    root = Path(audio_dir) if audio_dir is not None else path.parent
    return finish_table(clips, str(path), root, missing, tuple(dups))


@TABLE_READERS.register("wavcaps")
def read_wavcaps(
    json_path: str | Path,
    audio_dir: str | Path | None = None,
    audio_ext: str = ".flac",
    missing: MissingPolicy = "error",
    duplicates: DuplicatePolicy = "error",
) -> CaptionTable:
    """Read one WavCaps source file (``json_files/<source>/*_final.json``: ``{"data": [{"id",
    "caption", ...}]}``), one clip and one caption per entry, in file order.

    The clip id is the entry's ``id`` without a ``.wav`` suffix (the AudioSet_SL file writes
    ``"Y7fmOlUlwoNg.wav"``, the others bare ids such as ``"180913"``); its audio is
    ``<id><audio_ext>`` (the released audio is FLAC; the DCASE 2025 baseline converts it to MP3,
    ``audio_ext=".mp3"``). Other keys (duration, title, tags, ...) go into ``meta``.
    """
    path = Path(json_path)
    try:
        doc = json.loads(_open_text(path))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON: {e.msg} (line {e.lineno})") from None
    entries = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise DataError(f"{path}: expected a JSON object with a 'data' list (a WavCaps json file)")
    clips: list[AudioCaptions] = []
    first: dict[str, int] = {}
    for i, entry in enumerate(entries):
        where = f"{path}: data[{i}]"
        if not isinstance(entry, dict):
            raise DataError(f"{where}: expected an object, got {type(entry).__name__}")
        for key in ("id", "caption"):
            if not isinstance(entry.get(key), str) or not entry[key].strip():
                raise DataError(f"{where}: {key!r} must be a non-empty string, got {entry.get(key)!r}")
        clip_id = entry["id"][:-4] if entry["id"].endswith(".wav") else entry["id"]
        if clip_id in first:
            raise DataError(f"{where}: id {clip_id!r} already at data[{first[clip_id]}]")
        first[clip_id] = i
        meta = {k: v for k, v in entry.items() if k not in ("id", "caption")}
        meta["index"] = i
        clips.append(AudioCaptions(audio=Path(clip_id + audio_ext), captions=(entry["caption"],),
                                   clip_id=clip_id, meta=meta))
    if duplicates not in ("error", "report"):  # one caption per clip: nothing can repeat
        raise DataError(f"{path}: duplicates must be 'error' or 'report', got {duplicates!r}")
    root = Path(audio_dir) if audio_dir is not None else None
    return finish_table(clips, str(path), root, missing, ())


def read_exclusion_list(path: str | Path) -> frozenset[str]:
    """Clip ids from a CSV whose first column holds them under a header (the DCASE 2025
    baseline's ``dcase2025_task6_excluded_freesound_ids.csv``: ``sound_id``) or from a plain
    list, one id per line (``#`` starts a comment)."""
    path = Path(path)
    lines = [ln.strip() for ln in _open_text(path).splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    if path.suffix.lower() == ".csv":
        rows = list(csv.reader(lines))
        if not rows:
            raise DataError(f"{path}: empty exclusion list (expected a header, then ids)")
        return frozenset(r[0].strip() for r in rows[1:] if r and r[0].strip())
    return frozenset(lines)


def exclude_clips(table: CaptionTable, ids: frozenset[str] | set[str]) -> tuple[CaptionTable, int]:
    """``table`` without the clips whose file name up to its first dot (the baseline's rule:
    ``"354184.flac"`` -> ``"354184"``), or whose clip id, is in ``ids``; and how many went."""
    kept = [c for c in table.clips if c.clip_id not in ids and c.audio.name.split(".")[0] not in ids]
    return CaptionTable(kept, name=table.name, report=table.report), len(table) - len(kept)


def read_table(path: str | Path, format: TableFormat, exclude: str | Path | None = None,
               **kwargs: Any) -> CaptionTable:
    """Read a caption table in the named ``format`` (the caller says which; no guessing by name).

    ``kwargs`` go to the format's reader (``audio_dir``, ``missing``, ``duplicates``, ...).
    ``exclude`` names an exclusion list (:func:`read_exclusion_list`); its clips are left out
    and the count is printed (to stderr), so a run's log says what it did not train on.
    """
    reader = TABLE_READERS.get(format)
    table = reader(Path(path).expanduser(), **kwargs)
    if exclude is not None:
        before = table.num_captions
        table, n = exclude_clips(table, read_exclusion_list(exclude))
        print(f"{path}: excluded {n} clips ({before - table.num_captions} captions) listed in {exclude}",
              file=sys.stderr)
    return table
