"""A sound library at the issue's size (issue 20): hybrid queries over 10^6 files.

The index is a real index directory (SQLite rows, FTS5 words, both vector files) written
without audio by :func:`bench_library.synthetic_index`: generated names, D = 64 embeddings,
rows written in the layout ``Store.put_file`` writes, then the library's own ``words.sync``,
``write_vectors`` and ``write_windows``. Memory stays bounded by a 50,000-file block while
writing; the largest resident parts are the two FAISS indexes (10^6 x 64 floats each, ~0.3 GB).

- **hybrid query**: 1,000,000 [100,000] files of one window each (a library of one-shots);
  p50 latency of ``Index.search`` in hybrid, meaning and words modes, and with a filter (a
  fixed-vector text encoder stands in for the model, so only ranking is timed; 12 queries).

Duplicates at 10^5 files are ``bench_library_duplicates`` (each section has its own time-out).

``run() -> dict``; the index is built, measured and deleted.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_library import _FixedText, hybrid_queries, synthetic_index
from common import figure


TIMEOUT_S = 2400  # the 10^6-file index is built first (~13 min on 2 loaded cores)
LOADS = (0,)  # sizes and latencies at scale: idle only

def hybrid_at(n_files: int) -> list[dict[str, Any]]:
    from earshot.index import Index

    tmp = Path(tempfile.mkdtemp(prefix="earshot-bench-library-scale-"))
    try:
        t = time.perf_counter()
        synthetic_index(tmp / "ix", n_files, per_file=1)
        figs = [figure("library index build (no audio)", time.perf_counter() - t, unit="s", n=1,
                       context=f"{n_files:,} files, 1 window each, D=64: SQLite rows, FTS5, both vector files")]
        with Index.open(tmp / "ix", _FixedText(64)) as ix:
            figs += hybrid_queries(ix, n_files, n_queries=12)
        return figs
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(quick: bool = False) -> dict[str, Any]:
    return {"figures": hybrid_at(100_000 if quick else 1_000_000)}


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
