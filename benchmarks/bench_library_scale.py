"""A sound library at the issue's sizes (issue 20): hybrid queries over 10^6 files, duplicates in 10^5.

Both indexes are real index directories (SQLite rows, FTS5 words, both vector files) written
without audio by :func:`bench_library.synthetic_index`: generated names, D = 64 embeddings,
rows written in the layout ``Store.put_file`` writes, then the library's own ``words.sync``,
``write_vectors`` and ``write_windows``. Memory stays bounded by a 50,000-file block while
writing; the largest resident parts are the two FAISS indexes (10^6 x 64 floats each, ~0.3 GB).

- **hybrid query**: 1,000,000 [100,000] files of one window each (a library of one-shots);
  p50 latency of ``Index.search`` in hybrid, meaning and words modes, and with a filter (a
  fixed-vector text encoder stands in for the model, so only ranking is timed).
- **duplicates**: 100,000 [20,000] files of which about 1% are planted near copies of another
  file (embedding plus noise of norm 0.1, cosine ~0.995, 0.2 s shorter); ``find_duplicates``
  time, and the precision/recall of the planted pairs (no audio exists, so no file is decoded
  for the exact check: every duration differs).

``run() -> dict``; each part builds its index, measures, and deletes it.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_library import _FixedText, hybrid_queries, synthetic_index
from common import figure


def hybrid_at(n_files: int) -> list[dict[str, Any]]:
    from earshot.index import Index

    tmp = Path(tempfile.mkdtemp(prefix="earshot-bench-library-scale-"))
    try:
        t = time.perf_counter()
        synthetic_index(tmp / "ix", n_files, per_file=1)
        figs = [figure("library index build (no audio)", time.perf_counter() - t, unit="s", n=1,
                       context=f"{n_files:,} files, 1 window each, D=64: SQLite rows, FTS5, both vector files")]
        with Index.open(tmp / "ix", _FixedText(64)) as ix:
            figs += hybrid_queries(ix, n_files)
        return figs
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def duplicates_at(n_files: int) -> list[dict[str, Any]]:
    from earshot.index import Index
    from earshot.index.duplicates import NEAR_THRESHOLD, find_duplicates

    tmp = Path(tempfile.mkdtemp(prefix="earshot-bench-duplicates-"))
    try:
        planted = synthetic_index(tmp / "ix", n_files, per_file=1, near_copies=0.01)
        with Index.open(tmp / "ix", _FixedText(64)) as ix:
            t = time.perf_counter()
            report = find_duplicates(ix)
            dup_s = time.perf_counter() - t
        found = {(a, b) for g in report.groups for i, a in enumerate(g.paths) for b in g.paths[i + 1:]}
        truth = {tuple(sorted(p)) for p in planted}
        hit = len(found & truth)
        ctx = f"{n_files:,} files, {len(truth)} planted near copies, threshold {NEAR_THRESHOLD}"
        return [
            figure("duplicate detection", dup_s, unit="s", n=1, context=f"{ctx}; FAISS range search (IVF)"),
            figure("duplicate detection per file", 1e6 * dup_s / n_files, unit="us", n=1, context=ctx),
            figure("duplicates: recall of planted pairs", hit / max(len(truth), 1), goal=">= 0.99", n=len(truth),
                   context=ctx),
            figure("duplicates: precision of pairs found", hit / max(len(found), 1), goal=">= 0.99", n=len(found),
                   context=ctx),
        ]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(quick: bool = False) -> dict[str, Any]:
    figs = duplicates_at(20_000 if quick else 100_000)
    figs += hybrid_at(100_000 if quick else 1_000_000)
    return {"figures": figs}


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
