"""From results to the next step: CSV, JSON and M3U playlists of hits, and copying them out.

Paths in exports are absolute (the indexed root joined with each hit's relative path), so a
playlist or a spreadsheet opened elsewhere still finds the files; M3U entries carry an
``#EXTINF`` line (duration, name) and, for players that honour it, ``#EXTVLCOPT:start-time``
at the best moment.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path
from typing import Any, Sequence

from earshot.errors import EarshotError

FORMATS: tuple[str, ...] = ("table", "json", "csv", "m3u")
CSV_COLUMNS = ("rank", "score", "path", "file", "duration", "window_start", "window_end", "moments",
               "words_score", "fused")


def _moments_text(hit) -> str:
    return " ".join(f"{m.start:.2f}-{m.end:.2f}" for m in hit.moments)


def to_json(hits: Sequence, root: str | Path, **context: Any) -> str:
    """``{**context, "results": [hit dicts with "file" (absolute path) added]}``."""
    return json.dumps({**context, "results": [{**h.to_dict(), "file": str(Path(root) / h.path)} for h in hits]},
                      indent=2)


def to_csv(hits: Sequence, root: str | Path) -> str:
    """One row per hit (:data:`CSV_COLUMNS`); moments as ``start-end`` pairs in seconds."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for h in hits:
        w.writerow([h.rank, f"{h.score:.6f}", h.path, str(Path(root) / h.path), f"{h.duration:.3f}",
                    f"{h.window_start:.3f}", f"{h.window_end:.3f}", _moments_text(h),
                    "" if h.words_score is None else f"{h.words_score:.6f}",
                    "" if h.fused is None else f"{h.fused:.6f}"])
    return buf.getvalue()


def to_m3u(hits: Sequence, root: str | Path) -> str:
    """An extended M3U playlist of the hits, best first."""
    lines = ["#EXTM3U"]
    for h in hits:
        lines.append(f"#EXTINF:{int(round(h.duration))},{Path(h.path).name}")
        if h.window_start > 0:
            lines.append(f"#EXTVLCOPT:start-time={h.window_start:.3f}")
        lines.append(str(Path(root) / h.path))
    return "\n".join(lines) + "\n"


def copy_hits(hits: Sequence, root: str | Path, dest: str | Path) -> list[Path]:
    """Copy each hit's file into ``dest`` keeping its folders below the root; returns the
    copies. An existing file of the same name is never overwritten (an error names it)."""
    dest = Path(dest).expanduser()
    if dest.exists() and not dest.is_dir():
        raise EarshotError(f"--copy-to {dest}: is a file; give a folder")
    plan = [(Path(root) / h.path, dest / h.path) for h in hits]
    clash = [str(d) for _, d in plan if d.exists()]
    if clash:
        raise EarshotError(f"--copy-to {dest}: would overwrite {clash[0]}" +
                           (f" and {len(clash) - 1} more" if len(clash) > 1 else "") + "; choose an empty folder")
    for src, dst in plan:
        if not src.is_file():
            raise EarshotError(f"{src}: was indexed but is no longer on disk; re-index")
    out = []
    for src, dst in plan:
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
        out.append(dst)
    return out
