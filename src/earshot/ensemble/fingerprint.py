"""Content fingerprints: what a checkpoint holds and what an evaluation of a table reads.

They key the similarity cache and let an index refuse a different model.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from earshot.data.records import CaptionTable, resolve_audio
from earshot.errors import ConfigError
from earshot.utils import sha256_file


def checkpoint_fingerprint(path: str | Path) -> str:
    """SHA-256 of a checkpoint's content (its config document and its weights file)."""
    from earshot.models import checkpoint

    path = Path(path)
    checkpoint.read_config(path)  # a clear error if it is no checkpoint
    h = hashlib.sha256()
    h.update((path / checkpoint.CONFIG_FILE).read_bytes())
    weights = path / checkpoint.WEIGHTS_FILE
    if not weights.is_file():
        raise ConfigError(f"{path}: missing {checkpoint.WEIGHTS_FILE}")
    h.update(sha256_file(weights).encode())
    return h.hexdigest()


def table_fingerprint(table: CaptionTable, audio_dir: str | Path | None = None) -> str:
    """SHA-256 of what an evaluation of ``table`` reads: clip ids, captions in query order, and
    each audio file's resolved path, size and modification time (a changed file changes it)."""
    h = hashlib.sha256()
    for clip in table:
        p = resolve_audio(clip, audio_dir)
        try:
            st = p.stat()
            stamp = [st.st_size, st.st_mtime_ns]
        except OSError:
            stamp = None  # decoding will raise AudioError naming the file
        h.update(json.dumps([clip.clip_id, str(p.resolve()), stamp, list(clip.captions)]).encode())
        h.update(b"\n")
    return h.hexdigest()
