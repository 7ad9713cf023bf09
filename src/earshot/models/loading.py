"""One entry point that opens whatever a user names as "the model".

A directory is an earshot checkpoint (``checkpoint.load``); a ``.json``/``.yaml`` file is an
ensemble manifest (``earshot.ensemble``). Callers (evaluate, submit, index, serve) use this and
never need to know which they got: both present ``sample_rate``, ``embed_audio`` and
``embed_text`` (or ``similarity``) (STYLE.md convention 2).
"""

from __future__ import annotations

from pathlib import Path

from earshot.errors import WeightsError


def load_retriever(path: str | Path):
    """Open a checkpoint directory or an ensemble manifest file."""
    p = Path(path).expanduser()
    if p.is_dir():
        from earshot.models import checkpoint

        return checkpoint.load(p)
    if p.is_file() and p.suffix.lower() in (".json", ".yaml", ".yml"):
        from earshot.ensemble import load_ensemble

        return load_ensemble(p)
    if not p.exists():
        raise WeightsError(f"{p}: no such model (expected a checkpoint directory or an ensemble manifest)")
    raise WeightsError(f"{p}: not a checkpoint directory nor an ensemble manifest (.json/.yaml)")
