"""Filters on what a search may return: ``--where "duration<2 and channels=2" --folder Foley/Doors``.

A small grammar, compiled to one SQL condition over the index's ``files`` table (and the
``tags`` table that :mod:`earshot.index.words` fills), so the allowed files are known before
any vector is ranked and k results come back whenever k matching files exist::

    where     := condition ("and" condition)*
    condition := field op value
    op        := "<" | "<=" | ">" | ">=" | "=" | "!=" | "~"      (~ : contains, text fields)
    value     := number [unit] | word | "quoted text"

Fields: ``duration`` (seconds; units ms, s, min, h), ``sample_rate`` or ``rate`` (Hz; ``44.1k``),
``channels``, ``format`` (the file's suffix: wav, flac, mp3, ...), ``folder`` (a path prefix),
``modified`` (a date, ``2024-05-01`` or ``2024-05-01T13:00``, UTC), ``path`` and ``name`` (text), and
the tag fields ``title``, ``artist``, ``album``, ``genre``, ``comment``, ``description``.
``or`` and parentheses are not part of the grammar (and are refused by name).
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass

from earshot.errors import EarshotError

TAG_FIELDS = ("title", "artist", "album", "genre", "comment", "description")
_NUMERIC = {"duration": "duration", "sample_rate": "sample_rate", "rate": "sample_rate", "channels": "channels"}
_TEXT = ("format", "folder", "path", "name", *TAG_FIELDS)
FIELDS = (*_NUMERIC, "modified", *_TEXT)
_OPS = ("<=", ">=", "!=", "<", ">", "=", "~")
_DURATION_UNITS = {"": 1.0, "s": 1.0, "ms": 1e-3, "min": 60.0, "m": 60.0, "h": 3600.0}
_TOKEN = re.compile(r"\s*(?:(?P<str>\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*')|(?P<op><=|>=|!=|<|>|=|~)|"
                    r"(?P<word>[^\s<>=!~\"']+))")


@dataclass(frozen=True)
class Condition:
    field: str
    op: str
    value: str


@dataclass(frozen=True)
class Filter:
    """What a search may return; empty means everything."""

    where: str | None = None  # the --where expression
    folder: str | None = None  # a folder prefix, relative to the indexed root

    def __bool__(self) -> bool:
        return bool((self.where or "").strip() or (self.folder or "").strip("/ "))


def parse(where: str) -> list[Condition]:
    """The conditions of a ``--where`` expression; a clear error names what is wrong and where."""
    text = where.strip()
    tokens: list[tuple[str, str, int]] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise EarshotError(f"--where {where!r}: cannot read {text[pos:pos + 20]!r} (character {pos + 1})")
        kind = m.lastgroup or "word"
        raw = m.group(kind)
        if kind == "str":
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        tokens.append((kind, raw, m.start(kind) + 1))
        pos = m.end()
    conds: list[Condition] = []
    i = 0
    while i < len(tokens):
        if conds:
            kind, word, at = tokens[i]
            if kind == "word" and word.lower() == "or":
                raise EarshotError(f"--where {where!r}: 'or' is not supported (character {at}); "
                                   "conditions are joined with 'and'")
            if kind != "word" or word.lower() != "and":
                raise EarshotError(f"--where {where!r}: expected 'and' before {word!r} (character {at})")
            i += 1
        fk, field, fat = tokens[i]
        if fk != "word" or field.lower() not in FIELDS:
            raise EarshotError(f"--where {where!r}: unknown field {field!r} (character {fat}); "
                               f"fields: {', '.join(FIELDS)}")
        if i + 1 >= len(tokens) or tokens[i + 1][0] != "op":
            got = repr(tokens[i + 1][1]) if i + 1 < len(tokens) else "nothing"
            raise EarshotError(f"--where {where!r}: expected an operator ({' '.join(_OPS)}) after "
                               f"{field!r}, got {got} (like duration<2)")
        op = tokens[i + 1][1]
        if i + 2 >= len(tokens) or tokens[i + 2][0] == "op":
            raise EarshotError(f"--where {where!r}: expected a value after {field}{op} (like duration<2)")
        value = tokens[i + 2][1]
        conds.append(Condition(field.lower(), op, value))
        i += 3
    if not conds:
        raise EarshotError(f"--where {where!r}: empty; give conditions like \"duration<2 and channels=2\"")
    return conds


def _number(cond: Condition, where: str) -> float:
    value = cond.value.strip().lower()
    if cond.field == "duration":
        m = re.fullmatch(r"([0-9]*\.?[0-9]+)\s*(ms|s|min|m|h)?", value)
        if m:
            return float(m.group(1)) * _DURATION_UNITS[m.group(2) or ""]
    elif cond.field in ("sample_rate", "rate"):
        m = re.fullmatch(r"([0-9]*\.?[0-9]+)\s*(k|khz|hz)?", value)
        if m:
            return float(m.group(1)) * (1000.0 if m.group(2) in ("k", "khz") else 1.0)
    else:
        m = re.fullmatch(r"[0-9]+", value)
        if m:
            return float(value)
    raise EarshotError(f"--where {where!r}: {cond.field} needs a number, got {cond.value!r}"
                       + (" (seconds; or with ms, s, min, h)" if cond.field == "duration" else ""))


def _date_ns(cond: Condition, where: str) -> int:
    try:
        when = _dt.datetime.fromisoformat(cond.value)
    except ValueError:
        raise EarshotError(f"--where {where!r}: modified needs a date like 2024-05-01 or "
                           f"2024-05-01T13:00, got {cond.value!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.timezone.utc)
    return int(when.timestamp() * 1e9)


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _folder_sql(prefix: str) -> tuple[str, list]:
    p = prefix.strip().strip("/")
    return "files.path LIKE ? ESCAPE '\\'", [_like(p) + "/%"]


def compile_filter(flt: Filter) -> tuple[str, list]:
    """(SQL condition over ``files``, its parameters); ("1", []) when nothing is filtered."""
    parts: list[str] = []
    params: list = []
    if flt.folder and flt.folder.strip("/ "):
        sql, p = _folder_sql(flt.folder)
        parts.append(sql)
        params += p
    for c in parse(flt.where) if (flt.where or "").strip() else []:
        sql, p = _condition_sql(c, flt.where or "")
        parts.append(sql)
        params += p
    return (" AND ".join(parts) or "1"), params


def _condition_sql(c: Condition, where: str) -> tuple[str, list]:
    ops = {"=": "=", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
    if c.field in _NUMERIC:
        if c.op == "~":
            raise EarshotError(f"--where {where!r}: '~' (contains) is for text fields, not {c.field}")
        col = _NUMERIC[c.field]
        value = _number(c, where)
        if c.op in ("=", "!=") and col == "duration":  # durations are never exact: within 5 ms
            return (f"{'NOT ' if c.op == '!=' else ''}(ABS(files.duration - ?) <= 0.005)", [value])
        return f"files.{col} {ops[c.op]} ?", [value]
    if c.field == "modified":
        if c.op == "~":
            raise EarshotError(f"--where {where!r}: '~' (contains) is for text fields, not modified")
        ns = _date_ns(c, where)
        if c.op in ("=", "!="):  # the whole day (or minute) named
            span = 86_400 * 10**9 if len(c.value) <= 10 else 60 * 10**9
            sql = "(files.mtime_ns >= ? AND files.mtime_ns < ?)"
            return (("NOT " + sql) if c.op == "!=" else sql), [ns, ns + span]
        return f"files.mtime_ns {ops[c.op]} ?", [ns]
    if c.op in ("<", "<=", ">", ">="):
        raise EarshotError(f"--where {where!r}: {c.field} is text; use =, != or ~ (contains)")
    if c.field == "format":
        if c.op == "~":
            raise EarshotError(f"--where {where!r}: format takes = or != (like format=wav)")
        ext = "." + c.value.lower().lstrip(".")
        sql = "lower(files.path) LIKE ? ESCAPE '\\'"
        return (("NOT " + sql) if c.op == "!=" else sql), ["%" + _like(ext)]
    if c.field == "folder":
        if c.op == "~":
            return "files.path LIKE ? ESCAPE '\\'", ["%" + _like(c.value) + "%/%"]
        sql, p = _folder_sql(c.value)
        return (("NOT " + sql) if c.op == "!=" else sql), p
    if c.field in ("path", "name"):
        col = "files.path"
        if c.op == "~":
            return f"{col} LIKE ? ESCAPE '\\'", ["%" + _like(c.value) + "%"]
        if c.field == "name":  # the last path component
            sql = f"({col} = ? OR {col} LIKE ? ESCAPE '\\')"
            p = [c.value, "%/" + _like(c.value)]
        else:
            sql, p = f"{col} = ?", [c.value]
        return (("NOT " + sql) if c.op == "!=" else sql), p
    # a tag: some value of that tag matches (case-insensitive)
    if c.op == "~":
        cond, p = "lower(t.value) LIKE ? ESCAPE '\\'", ["%" + _like(c.value.lower()) + "%"]
    else:
        cond, p = "lower(t.value) = ?", [c.value.lower()]
    sql = f"EXISTS (SELECT 1 FROM tags t WHERE t.file_id = files.id AND t.key = ? AND {cond})"
    return (("NOT " + sql) if c.op == "!=" else sql), [c.field, *p]
