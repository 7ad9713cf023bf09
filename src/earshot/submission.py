"""DCASE language-based audio retrieval submissions: write the top-10 CSV, and score one.

A submission is a CSV with the header ``caption,file_name_1,...,file_name_10`` and one row per
query caption, listing the 10 retrieved audio files best first. The ground truth is a
Clotho-format CSV (``file_name,caption_1,...,caption_5``) in which every caption is a query whose
relevant audio file is its row's file name. Both are read and written with the ``csv`` module, so
names containing commas, quotes or leading spaces survive unchanged (no stripping).

How queries are matched, compared with the official DCASE 2022 script (``eval_script.py`` in
xieh97/dcase2022-audio-retrieval): the official script builds ``{caption text: file name}`` from
the ground truth and ``{caption text: ranked files}`` from the submission, then scores every
distinct caption text once. Queries are therefore matched by exact caption text, and a caption
text that appears for two files keeps only the *last* file (a later dict entry overwrites an
earlier one). The Clotho evaluation and validation sets have no such duplicates (so every choice
gives the official numbers there), but the development set has 16 caption texts shared by two
files. Here a duplicated caption text is still one query (its submission row cannot say which of
its copies it answers), and by default (``duplicate_captions="union"``) *all* its files are
relevant: R@k counts a hit if any is in the top k, and AP@10 is the multi-relevant DCASE 2025
definition (see :mod:`earshot.metrics`). ``duplicate_captions="last"`` reproduces the official
script exactly.

Scores are per-query means with jackknife 95% confidence half-widths (``.../ci95``), as the
official script reports them.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from earshot.errors import DataError
from earshot.metrics import scores_from_ranks, summarize
from earshot.relevance import RULES, Queries, resolve_queries
from earshot.utils import atomic_write

__all__ = [
    "TOP_K",
    "GroundTruth",
    "load_ground_truth",
    "read_queries",
    "read_submission",
    "score_submission",
    "write_ranked_submission",
    "write_submission",
]

TOP_K = 10  # the DCASE submission format lists exactly 10 files per query
HEADER = ["caption"] + [f"file_name_{i}" for i in range(1, TOP_K + 1)]


@dataclass(frozen=True)
class GroundTruth:
    """Queries of a Clotho-format caption CSV, in file order, with their relevant files."""

    queries: list[str]  # distinct caption texts, first-seen order
    relevant: dict[str, frozenset[str]]  # caption text -> relevant file names
    line: dict[str, int]  # caption text -> 1-based line of its first occurrence
    files: frozenset[str]  # every audio file name in the ground truth
    pairs: tuple[tuple[str, str], ...] = ()  # (file name, caption) of every caption, file order


def _read_rows(path: Path) -> list[tuple[int, list[str]]]:
    """All CSV records of ``path`` with the 1-based line on which each ends."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"{str(path)!r}: file not found") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{str(path)!r}: not UTF-8 text ({e.reason})") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    rows: list[tuple[int, list[str]]] = []
    try:
        for row in reader:
            if row:  # blank lines carry no record
                rows.append((reader.line_num, row))
    except csv.Error as e:
        raise DataError(f"{str(path)!r} line {reader.line_num}: malformed CSV ({e})") from None
    return rows


def load_ground_truth(
    path: str | Path, duplicate_captions: Literal["union", "last"] = "union"
) -> GroundTruth:
    """Read a Clotho-format ground-truth CSV (``file_name`` plus ``caption_*`` columns).

    ``duplicate_captions`` says what a caption text shared by several files means (module
    docstring): ``"union"`` makes all of them relevant, ``"last"`` keeps the last file only, as the
    official DCASE 2022 script does.
    """
    path = Path(path)
    if duplicate_captions not in ("union", "last"):
        raise DataError(f"duplicate_captions must be 'union' or 'last', got {duplicate_captions!r}")
    rows = _read_rows(path)
    if not rows:
        raise DataError(f"{str(path)!r}: empty file, expected a header file_name,caption_1,...")
    _, header = rows[0]
    if "file_name" not in header:
        raise DataError(f"{str(path)!r} line 1: no 'file_name' column in header {header}")
    file_col = header.index("file_name")
    cap_cols = [i for i, h in enumerate(header) if h.startswith("caption")]
    if not cap_cols:
        raise DataError(f"{str(path)!r} line 1: no caption_* columns in header {header}")
    queries: list[str] = []
    relevant: dict[str, set[str]] = {}
    first_line: dict[str, int] = {}
    file_line: dict[str, int] = {}
    pairs: list[tuple[str, str]] = []
    for line, row in rows[1:]:
        if len(row) != len(header):
            raise DataError(
                f"{str(path)!r} line {line}: {len(row)} fields, the header has {len(header)}"
            )
        name = row[file_col]
        if not name:
            raise DataError(f"{str(path)!r} line {line}: empty file_name")
        if name in file_line:
            raise DataError(
                f"{str(path)!r} line {line}: file {name!r} already listed on line {file_line[name]}"
            )
        file_line[name] = line
        for col in cap_cols:
            cap = row[col]
            if not cap:
                raise DataError(f"{str(path)!r} line {line}: empty {header[col]}")
            pairs.append((name, cap))
            if cap not in relevant:
                queries.append(cap)
                relevant[cap] = set()
                first_line[cap] = line
            if duplicate_captions == "last":
                relevant[cap] = {name}
            else:
                relevant[cap].add(name)
    if not queries:
        raise DataError(f"{str(path)!r}: no captions below the header")
    return GroundTruth(
        queries=queries,
        relevant={c: frozenset(f) for c, f in relevant.items()},
        line=first_line,
        files=frozenset(file_line),
        pairs=tuple(pairs),
    )


def read_submission(path: str | Path, ground_truth: GroundTruth) -> dict[str, list[str]]:
    """Read and validate a submission against ``ground_truth``: caption -> 10 ranked file names.

    Raises DataError naming the file and the 1-based line for: a wrong header, a row without
    exactly 10 file names, an empty cell, a file listed twice in one row, a file name the ground
    truth does not know, a caption the ground truth does not have, a caption given twice with
    different rankings, and (naming the ground-truth lines) captions with no row at all.
    """
    path = Path(path)
    rows = _read_rows(path)
    where = repr(str(path))
    if not rows:
        raise DataError(f"{where}: empty file, expected the header {','.join(HEADER)}")
    _, header = rows[0]
    if header != HEADER:
        raise DataError(
            f"{where} line 1: header must be {','.join(HEADER)}; got {','.join(header)}"
        )
    ranked: dict[str, list[str]] = {}
    seen_line: dict[str, int] = {}
    for line, row in rows[1:]:
        if len(row) != TOP_K + 1:
            raise DataError(
                f"{where} line {line}: expected a caption and {TOP_K} file names, "
                f"got {len(row) - 1} file name(s)"
            )
        caption, files = row[0], row[1:]
        if not caption:
            raise DataError(f"{where} line {line}: empty caption")
        for pos, name in enumerate(files, start=1):
            if not name:
                raise DataError(f"{where} line {line}: file_name_{pos} is empty")
            if name not in ground_truth.files:
                raise DataError(
                    f"{where} line {line}: file_name_{pos} {name!r} is not in the ground truth"
                )
        if len(set(files)) != len(files):
            dup = next(f for i, f in enumerate(files) if f in files[:i])
            raise DataError(f"{where} line {line}: file {dup!r} is listed twice in one row")
        if caption not in ground_truth.relevant:
            raise DataError(f"{where} line {line}: caption {caption!r} is not in the ground truth")
        if caption in ranked:
            if ranked[caption] != files:
                raise DataError(
                    f"{where} line {line}: caption {caption!r} was already ranked differently "
                    f"on line {seen_line[caption]}"
                )
            continue
        ranked[caption] = files
        seen_line[caption] = line
    missing = [q for q in ground_truth.queries if q not in ranked]
    if missing:
        shown = ", ".join(f"{q!r} (ground-truth line {ground_truth.line[q]})" for q in missing[:3])
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise DataError(
            f"{where}: {len(missing)} ground-truth caption(s) have no row: {shown}{more}"
        )
    return ranked


def score_submission(
    ground_truth_csv: str | Path,
    submission_csv: str | Path,
    duplicate_captions: Literal["union", "last"] = "union",
    relevance: str | Path = "clip",
) -> dict[str, float]:
    """Score a DCASE submission: R@1, R@5, R@10 and mAP@10 with jackknife 95% half-widths.

    ``relevance`` is the rule of :mod:`earshot.relevance`, the same one ``earshot evaluate``
    takes: ``clip`` (each caption of the ground truth is a query for its own file; a repeated
    caption text is several queries answered by its one submission row), ``caption`` (each
    distinct text once, all its files relevant; ``duplicate_captions="last"`` keeps the last
    file only, as the official DCASE 2022 script does), or a relevance CSV whose queries replace
    the ground truth's captions (its files must be ground-truth files).

    Returns ``{"R@1", "R@1/ci95", ..., "mAP@10", "mAP@10/ci95", "n_queries"}``; on the DCASE 2022
    baseline output it gives the published 0.03 / 0.11 / 0.19 / 0.07.
    """
    gt = load_ground_truth(ground_truth_csv, duplicate_captions)
    if duplicate_captions == "last":
        queries = Queries(tuple(gt.queries), tuple(gt.relevant[q] for q in gt.queries))
    else:
        queries = resolve_queries(relevance, gt.pairs)
    if str(relevance) not in RULES:  # the file's queries are the ones the submission must answer
        unknown = sorted({n for rel in queries.relevant for n in rel} - gt.files)
        if unknown:
            raise DataError(f"{str(relevance)!r}: relevant file(s) not in {str(ground_truth_csv)!r}: "
                            f"{', '.join(map(repr, unknown[:3]))}")
        # rows for the ground truth's other captions may stay in the submission; they are not scored
        gt = GroundTruth(queries=list(queries.texts), relevant=gt.relevant | dict(zip(queries.texts, queries.relevant)),
                         line={t: i + 2 for i, t in enumerate(queries.texts)}, files=gt.files)
    ranked = read_submission(submission_csv, gt)
    ranks = [[pos for pos, name in enumerate(ranked[text], start=1) if name in rel]
             for text, rel in zip(queries.texts, queries.relevant)]
    per_query = scores_from_ranks(ranks, [len(r) for r in queries.relevant], ks=(1, 5, 10), map_k=TOP_K)
    del per_query["rank"]  # ranks beyond 10 are unknown, so medR/meanR are not defined here
    out = summarize(per_query)
    out["n_queries"] = len(queries)
    return out


def write_submission(
    path: str | Path, captions: Sequence[str], file_names_ranked: Sequence[Sequence[str]]
) -> None:
    """Write a DCASE submission CSV atomically (a crash never leaves a half-written file).

    ``file_names_ranked[q]`` lists the 10 best files for ``captions[q]``, best first. A caption
    repeated with the identical ranking is written once (the scorer matches rows by caption text);
    repeated with a different ranking, or a row without 10 distinct non-empty names, is a DataError.
    """
    if len(captions) != len(file_names_ranked):
        raise DataError(
            f"{len(captions)} captions but {len(file_names_ranked)} rankings for {str(path)!r}"
        )
    rows: list[list[str]] = []
    written: dict[str, int] = {}
    for q, (caption, files) in enumerate(zip(captions, file_names_ranked)):
        files = [str(f) for f in files]
        if not isinstance(caption, str) or not caption:
            raise DataError(f"query {q}: caption must be a non-empty string, got {caption!r}")
        if len(files) != TOP_K:
            raise DataError(f"query {q} ({caption!r}): {len(files)} file names, need {TOP_K}")
        if any(not f for f in files):
            raise DataError(f"query {q} ({caption!r}): empty file name")
        if len(set(files)) != TOP_K:
            raise DataError(f"query {q} ({caption!r}): a file is listed twice")
        if caption in written:
            if rows[written[caption]][1:] != files:
                raise DataError(
                    f"query {q}: caption {caption!r} was already given a different ranking"
                )
            continue
        written[caption] = len(rows)
        rows.append([caption, *files])
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(HEADER)
    writer.writerows(rows)
    with atomic_write(path, "wb") as f:
        f.write(buf.getvalue().encode("utf-8"))


def write_ranked_submission(path: str | Path, captions: Sequence[str], file_names: Sequence[str],
                            similarity) -> None:
    """The ``TOP_K`` best files per caption (rows of ``similarity``, ``(Q, N)`` over
    ``file_names``) as a DCASE submission CSV, each distinct caption once (its first row)."""
    import torch

    sim = torch.as_tensor(similarity)
    if sim.shape != (len(captions), len(file_names)):
        raise DataError(f"similarity is {tuple(sim.shape)}, expected ({len(captions)}, {len(file_names)})")
    if len(file_names) < TOP_K:
        raise DataError(f"{path}: a submission lists {TOP_K} files per caption; only "
                        f"{len(file_names)} files to rank")
    top = torch.topk(sim, k=TOP_K, dim=1).indices  # (Q, 10)
    kept, ranked, seen = [], [], set()
    for q, cap in enumerate(captions):
        if cap in seen:
            continue
        seen.add(cap)
        kept.append(cap)
        ranked.append([file_names[int(i)] for i in top[q]])
    write_submission(path, kept, ranked)


def read_queries(path: str | Path) -> list[str]:
    """Captions to rank for: a CSV with a ``caption`` column (DCASE's retrieval captions file)
    or a Clotho-format table (every caption of every row), blank ones dropped, in file order."""
    path = Path(path).expanduser()
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            if "caption" in header:
                queries = [row["caption"] for row in reader]
            elif "caption_1" in header:
                queries = [row[c] for row in reader for c in header if c.startswith("caption_")]
            else:
                raise DataError(f"{path}: needs a 'caption' column (or Clotho's caption_1..); "
                                f"header is {header}")
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    queries = [q for q in queries if q and q.strip()]
    if not queries:
        raise DataError(f"{path}: no captions")
    return queries
