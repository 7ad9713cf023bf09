"""Moment retrieval annotations and predictions in lighthouse's JSON Lines layout.

One query per line: ``qid``, ``query`` (the text), ``vid`` (the recording), ``duration``
(seconds) and ``relevant_windows`` ``[[start, end], ...]`` (seconds); Clotho-Moment adds
``fg_dB``. Predictions carry ``qid``, ``query``, ``vid`` and ``pred_relevant_windows``
``[[start, end, score], ...]`` ranked best first (what DCASE 2026 submissions hold).

Every reader checks every line and raises :class:`~earshot.errors.DataError` naming the file,
the line and the field; nothing is dropped or repaired silently. A window lying past the
recording (CASTELLA's released train file has ``[299, 4800]`` in a 299 s recording) is an error
by default; ``on_bad_window="clip"`` cuts it to ``[0, duration]`` and ``"drop"`` leaves it out,
each change reported with its file and line (a query left with no window is left out, reported).
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from earshot.errors import AudioError, DataError
from earshot.utils import atomic_write

__all__ = ["BAD_WINDOW_POLICIES", "DEFAULT_EXTENSIONS", "MomentQuery", "MomentRecording", "read_annotations",
           "read_moments", "read_predictions", "write_predictions", "windows_by_qid"]

DEFAULT_EXTENSIONS: tuple[str, ...] = (".wav", ".flac", ".ogg", ".mp3")  # tried in this order
DURATION_TOLERANCE_S = 1.0  # CASTELLA's durations are whole seconds of recordings cut to the second
# CASTELLA's released windows end up to 2 s past the annotated duration (test: 99 windows, val:
# 12); they are kept as written (the metric of record uses them so) when within this margin.
WINDOW_TOLERANCE_S = 2.0
# What to do with a window outside [0, duration + tolerance]: refuse the file, cut the window
# to the recording, or leave the window out (each change reported with its file and line).
BAD_WINDOW_POLICIES: tuple[str, ...] = ("error", "clip", "drop")


@dataclass(frozen=True)
class MomentQuery:
    """One annotated query: a text and where in one recording it happens."""

    qid: str | int  # as written in the file (QVHighlights uses ints, CASTELLA strings)
    query: str  # the text
    vid: str  # recording id; the audio is <vid><extension> in the audio folder
    duration: float  # seconds, as annotated
    windows: tuple[tuple[float, float], ...]  # relevant [start, end] in seconds
    fg_db: float | None = None  # Clotho-Moment: foreground level relative to the background
    line: int = 0  # 1-based line in its file, for messages
    source: str = ""  # the file it came from


@dataclass(frozen=True)
class MomentRecording:
    """A recording of a moment data set with its audio file and every query about it."""

    vid: str
    audio: Path | None  # None when read without an audio folder
    duration: float  # annotated seconds
    queries: tuple[MomentQuery, ...] = field(default=())


def _where(path: Path, line: int) -> str:
    return f"{path}:{line}"


def _number(value: Any, where: str, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DataError(f"{where}: {name} must be a finite number, got {value!r}")
    return float(value)


def _json_lines(path: Path) -> Iterable[tuple[int, dict]]:
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    with open(path, encoding="utf-8") as f:
        for n, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as e:
                raise DataError(f"{_where(path, n)}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise DataError(f"{_where(path, n)}: expected a JSON object, got {type(row).__name__}")
            yield n, row


def _field(row: dict, name: str, where: str) -> Any:
    if name not in row:
        raise DataError(f"{where}: missing field {name!r}")
    return row[name]


def _qid(row: dict, where: str) -> str | int:
    qid = _field(row, "qid", where)
    if isinstance(qid, bool) or not isinstance(qid, (str, int)):
        raise DataError(f"{where}: qid must be a string or an integer, got {qid!r}")
    return qid


def _windows(value: Any, where: str, name: str, width: int) -> list[list[float]]:
    if not isinstance(value, list) or not value:
        raise DataError(f"{where}: {name} must be a non-empty list of windows, got {value!r}")
    out = []
    for i, w in enumerate(value):
        if not isinstance(w, list) or len(w) != width:
            raise DataError(f"{where}: {name}[{i}] must be a list of {width} numbers, got {w!r}")
        nums = [_number(x, where, f"{name}[{i}]") for x in w]
        start, end = nums[0], nums[1]
        if not start < end:
            raise DataError(f"{where}: {name}[{i}] = {w!r}: start must be before end")
        if start < 0:
            raise DataError(f"{where}: {name}[{i}] = {w!r} starts before 0")
        out.append(nums)
    return out


def _outside(wins: list[list[float]], duration: float, margin: float) -> list[int]:
    return [i for i, w in enumerate(wins) if w[1] > duration + margin]


def _repair(wins: list[list[float]], bad: list[int], duration: float, policy: str, where: str,
            report: Callable[[str], None]) -> list[list[float]]:
    # "clip": cut to [0, duration] (a window left empty goes); "drop": leave the window out.
    keep = []
    for i, w in enumerate(wins):
        if i not in bad:
            keep.append(w)
            continue
        cut = [w[0], min(w[1], duration)]
        if policy == "clip" and cut[0] < cut[1]:
            report(f"{where}: relevant_windows[{i}] = {w!r} clipped to {cut!r} (duration {duration:g} s)")
            keep.append(cut)
        else:
            why = " (nothing left after clipping)" if policy == "clip" else ""
            report(f"{where}: relevant_windows[{i}] = {w!r} dropped: outside [0, {duration:g}] s{why}")
    return keep


def _warn(message: str) -> None:
    warnings.warn(message, stacklevel=3)


def read_annotations(path: str | Path, window_tolerance_s: float = WINDOW_TOLERANCE_S,
                     require_windows: bool = True, on_bad_window: str = "error",
                     report: Callable[[str], None] | None = None) -> list[MomentQuery]:
    """Every query of a lighthouse-layout annotation file, in file order, validated:
    windows inside ``[0, duration + window_tolerance_s]``, start < end, qids unique.
    ``require_windows=False`` also reads query files without ``relevant_windows`` (what a
    system is given to predict on); windows present are still checked.

    ``on_bad_window``: a window ending past ``duration + window_tolerance_s`` is an error
    (``"error"``), is cut to ``[0, duration]`` (``"clip"``; one left empty is dropped) or is left
    out (``"drop"``); a query left without windows is left out. Each change is passed to
    ``report`` as ``file:line: ...`` (default: a :class:`UserWarning` each)."""
    if on_bad_window not in BAD_WINDOW_POLICIES:
        raise DataError(f"on_bad_window must be one of {', '.join(BAD_WINDOW_POLICIES)}, got {on_bad_window!r}")
    report = report or _warn
    path = Path(path)
    out: list[MomentQuery] = []
    seen: dict[str, int] = {}
    for n, row in _json_lines(path):
        where = _where(path, n)
        qid = _qid(row, where)
        if str(qid) in seen:
            raise DataError(f"{where}: qid {qid!r} already used on line {seen[str(qid)]}")
        seen[str(qid)] = n
        query = _field(row, "query", where)
        vid = _field(row, "vid", where)
        if not isinstance(query, str) or not query.strip():
            raise DataError(f"{where}: query must be a non-empty string, got {query!r}")
        if not isinstance(vid, str) or not vid or "/" in vid or vid in (".", ".."):
            raise DataError(f"{where}: vid must be a file stem, got {vid!r}")
        duration = _number(_field(row, "duration", where), where, "duration")
        if duration <= 0:
            raise DataError(f"{where}: duration must be positive, got {duration:g}")
        if "relevant_windows" in row or require_windows:
            wins = _windows(_field(row, "relevant_windows", where), where, "relevant_windows", 2)
            bad = _outside(wins, duration, window_tolerance_s)
            if bad and on_bad_window == "error":
                w = wins[bad[0]]
                raise DataError(f"{where}: relevant_windows[{bad[0]}] = {w!r} lies outside the recording "
                                f"[0, {duration:g}] s (windows may end at most {window_tolerance_s:g} s "
                                f"late; see window_tolerance_s). To load the file anyway, choose "
                                f"on_bad_window='clip' or 'drop' (CLI: --on-bad-window clip|drop); "
                                f"each change is reported")
            if bad:
                wins = _repair(wins, bad, duration, on_bad_window, where, report)
                if not wins:
                    report(f"{where}: query {qid!r} left out: none of its windows lies in the recording")
                    continue
        else:
            wins = []
        fg = row.get("fg_dB")
        out.append(MomentQuery(qid=qid, query=query, vid=vid, duration=duration,
                               windows=tuple((w[0], w[1]) for w in wins),
                               fg_db=None if fg is None else _number(fg, where, "fg_dB"),
                               line=n, source=str(path)))
    if not out:
        raise DataError(f"{path}: no queries")
    return out


def find_audio(audio_dir: Path, vid: str, extensions: Sequence[str]) -> Path | None:
    """The first ``<vid><ext>`` present in ``audio_dir``, trying ``extensions`` in order."""
    for ext in extensions:
        p = audio_dir / f"{vid}{ext if ext.startswith('.') else '.' + ext}"
        if p.is_file():
            return p
    return None


def read_moments(jsonl: str | Path, audio_dir: str | Path,
                 extensions: Sequence[str] = DEFAULT_EXTENSIONS,
                 tolerance_s: float = DURATION_TOLERANCE_S,
                 window_tolerance_s: float = WINDOW_TOLERANCE_S,
                 require_windows: bool = True, on_bad_window: str = "error",
                 report: Callable[[str], None] | None = None) -> list[MomentRecording]:
    """The recordings of an annotation file with their audio, in first-mention order.

    ``vid`` -> ``audio_dir/<vid><ext>`` for the first of ``extensions`` present; every query of a
    recording must state the same duration, and the audio's real duration (read from the header)
    must agree with it within ``tolerance_s``. All problems are collected and raised together,
    each naming its file and line (a missing recording names the lines that need it).
    ``on_bad_window`` / ``report``: as :func:`read_annotations`.
    """
    jsonl, audio_dir = Path(jsonl), Path(audio_dir)
    if not audio_dir.is_dir():
        raise DataError(f"{audio_dir}: audio folder not found")
    from earshot.audio.io import audio_info

    queries = read_annotations(jsonl, window_tolerance_s, require_windows, on_bad_window, report)
    by_vid: dict[str, list[MomentQuery]] = {}
    for q in queries:
        by_vid.setdefault(q.vid, []).append(q)
    problems: list[str] = []
    out = []
    for vid, qs in by_vid.items():
        lines = ", ".join(str(q.line) for q in qs[:5]) + (" ..." if len(qs) > 5 else "")
        where = f"{jsonl}:{lines}"
        durations = {q.duration for q in qs}
        if len(durations) > 1:
            problems.append(f"{where}: recording {vid!r} annotated with different durations "
                            f"{sorted(durations)}")
            continue
        audio = find_audio(audio_dir, vid, extensions)
        if audio is None:
            problems.append(f"{where}: no audio for {vid!r} in {audio_dir} "
                            f"(tried {', '.join(extensions)})")
            continue
        try:
            real = audio_info(audio).duration
        except AudioError as e:
            problems.append(f"{where}: {e}")
            continue
        if abs(real - qs[0].duration) > tolerance_s:
            problems.append(f"{where}: {audio} lasts {real:.3f} s but the annotation says "
                            f"{qs[0].duration:g} s (tolerance {tolerance_s:g} s)")
            continue
        out.append(MomentRecording(vid=vid, audio=audio, duration=qs[0].duration, queries=tuple(qs)))
    if problems:
        more = f"\n... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise DataError(f"{len(problems)} problem(s) in {jsonl}:\n" + "\n".join(problems[:20]) + more)
    return out


def read_predictions(path: str | Path) -> dict[str, list[list[float]]]:
    """qid (as a string) -> ranked ``[[start, end, score], ...]`` of a prediction file.
    Each window must have start < end and a start >= 0; qids must be unique."""
    path = Path(path)
    out: dict[str, list[list[float]]] = {}
    lines: dict[str, int] = {}
    for n, row in _json_lines(path):
        where = _where(path, n)
        qid = str(_qid(row, where))
        if qid in out:
            raise DataError(f"{where}: qid {qid!r} already predicted on line {lines[qid]}")
        out[qid] = _windows(_field(row, "pred_relevant_windows", where), where,
                            "pred_relevant_windows", 3)
        lines[qid] = n
    if not out:
        raise DataError(f"{path}: no predictions")
    return out


def windows_by_qid(queries: Sequence[MomentQuery]) -> dict[str, list[list[float]]]:
    """Ground truth keyed as :func:`read_predictions` keys predictions (qid as a string)."""
    return {str(q.qid): [list(w) for w in q.windows] for q in queries}


def write_predictions(path: str | Path, rows: Iterable[dict[str, Any]]) -> int:
    """Write prediction rows (``qid``, ``query``, ``vid``, ``pred_relevant_windows``) as JSON
    Lines atomically; returns the number written."""
    n = 0
    with atomic_write(Path(path), "w") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n
