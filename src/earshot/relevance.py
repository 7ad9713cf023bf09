"""Which clips are relevant to which text query: one rule shared by evaluation and scoring.

The same model gets different mAP@10 depending on what a repeated caption means, so the rule
is an explicit choice, and ``earshot evaluate`` and ``earshot score`` build their queries with
this one module:

* ``clip`` (DCASE 2022-2024): every caption of every clip is a query; its one relevant clip is
  the clip it describes. A caption text that describes two clips is two queries.
* ``caption``: every distinct caption text is one query; every clip carrying that identical
  text is relevant.
* a CSV file of query -> relevant files, in the layout of DCASE 2025's ``metadata_eval.csv``
  (CPJKU/dcase2025_task6_baseline ``resources/metadata_eval.csv``): a header
  ``query,audio_filenames`` and, per row, the query text and a list of file names written as a
  Python/JSON list literal, e.g. ``"['a.wav', 'b c.wav']"``.
"""

from __future__ import annotations

import ast
import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from earshot.errors import DataError

RULES = ("clip", "caption")
RULE_HELP = ("clip: each caption's own clip (DCASE 2022-2024) | caption: every clip with the "
             "identical caption | FILE: CSV of query,audio_filenames (DCASE 2025 metadata_eval.csv)")


@dataclass(frozen=True)
class Queries:
    """Text queries in order, each with the names of its relevant files (clip ids)."""

    texts: tuple[str, ...]
    relevant: tuple[frozenset[str], ...]

    def __len__(self) -> int:
        return len(self.texts)


def queries_from_pairs(pairs: Iterable[tuple[str, str]], rule: str) -> Queries:
    """Queries from ``(file name, caption)`` pairs in caption order under ``clip`` or ``caption``."""
    pairs = list(pairs)
    if rule == "clip":
        return Queries(tuple(c for _, c in pairs), tuple(frozenset([f]) for f, _ in pairs))
    if rule == "caption":
        files: dict[str, set[str]] = {}
        for name, cap in pairs:
            files.setdefault(cap, set()).add(name)
        return Queries(tuple(files), tuple(frozenset(f) for f in files.values()))
    raise DataError(f"relevance rule must be one of {', '.join(RULES)} or a CSV file, got {rule!r}")


def read_relevance_file(path: str | Path) -> Queries:
    """A DCASE 2025 ``metadata_eval.csv``-style file: ``query`` and ``audio_filenames`` (a list).

    Errors name the file and line: a missing column, an unparsable or empty list, a query given
    twice.
    """
    path = Path(path)
    where = repr(str(path))
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        if "query" not in header or "audio_filenames" not in header:
            raise DataError(f"{where} line 1: needs the columns query,audio_filenames; header is {header}")
        texts: list[str] = []
        relevant: list[frozenset[str]] = []
        seen: dict[str, int] = {}
        for line, row in enumerate(reader, start=2):
            text, raw = row["query"], row["audio_filenames"]
            if not text:
                raise DataError(f"{where} line {line}: empty query")
            try:
                names = ast.literal_eval(raw) if raw and raw.strip().startswith("[") else None
            except (ValueError, SyntaxError):
                names = None
            if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
                raise DataError(f"{where} line {line}: audio_filenames must be a non-empty list of file "
                                f"names like ['a.wav', 'b.wav']; got {raw!r}")
            if text in seen:
                raise DataError(f"{where} line {line}: query {text!r} already given on line {seen[text]}")
            seen[text] = line
            texts.append(text)
            relevant.append(frozenset(names))
    if not texts:
        raise DataError(f"{where}: no queries below the header")
    return Queries(tuple(texts), tuple(relevant))


def resolve_queries(rule: str | Path, pairs: Iterable[tuple[str, str]]) -> Queries:
    """The queries of ``rule`` (``clip``, ``caption`` or a relevance CSV) for a set whose
    ``(file name, caption)`` pairs are ``pairs``."""
    if str(rule) in RULES:
        return queries_from_pairs(pairs, str(rule))
    if not Path(rule).is_file():
        raise DataError(f"relevance must be one of {', '.join(RULES)} or an existing CSV file; "
                        f"{str(rule)!r} is neither")
    return read_relevance_file(rule)


def relevant_indices(queries: Queries, clip_ids: Sequence[str], source: str = "") -> list[set[int]]:
    """Each query's relevant files as indices into ``clip_ids``; an unknown name is an error."""
    index = {c: i for i, c in enumerate(clip_ids)}
    out = []
    for text, names in zip(queries.texts, queries.relevant):
        unknown = sorted(n for n in names if n not in index)
        if unknown:
            raise DataError(f"{source or 'relevance'}: query {text!r} names file(s) not in the "
                            f"evaluation set: {', '.join(map(repr, unknown[:3]))}")
        out.append({index[n] for n in names})
    return out
