"""Duplicate detection at the issue's size (issue 20): 10^5 files, about 1% planted near copies.

The index is a real index directory written without audio by :func:`bench_library.synthetic_index`
(generated names, D = 64, one window a file); a planted copy is another file's embedding plus
noise of norm 0.1 (cosine ~0.995) and 0.2 s shorter, as a trimmed or re-encoded copy. Figures:
``find_duplicates`` time, and the precision/recall of the planted pairs. Every duration differs,
so no file is decoded for the exact check (none exists). 100,000 [20,000] files. ``run() -> dict``.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_library import _FixedText, synthetic_index
from common import figure


LOADS = (0,)  # 10^5 files: idle only

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
    return {"figures": duplicates_at(20_000 if quick else 100_000)}


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
