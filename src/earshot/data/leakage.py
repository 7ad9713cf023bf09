"""Clips shared between a training table and an evaluation table (train/test leakage).

Two tables can share a clip under another name (a copy renamed, the same Freesound file in two
datasets) or under the same name in another folder. Both are reported: by file name, and by
audio content (SHA-256 of the file bytes). Only files whose byte size occurs on both sides are
hashed (identical bytes have identical sizes), so the check costs a directory listing and a
few reads, not a pass over the whole corpus.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from earshot.data.records import CaptionTable, resolve_audio


@dataclass(frozen=True)
class Overlap:
    """What a training and an evaluation table share (clip ids, train side first)."""

    by_name: tuple[tuple[str, str], ...]  # same file name
    by_content: tuple[tuple[str, str], ...]  # identical audio bytes
    unreadable: int  # files that could not be sized or hashed (missing audio)

    @property
    def clips(self) -> set[str]:
        """Training clip ids that appear in the evaluation table either way."""
        return {a for a, _ in self.by_name} | {a for a, _ in self.by_content}

    def __bool__(self) -> bool:
        return bool(self.by_name or self.by_content)

    def describe(self, train_name: str, eval_name: str, show: int = 5) -> str:
        """A human summary naming a few examples."""
        lines = [f"{len(self.clips)} clip(s) of {train_name} also appear in {eval_name}: "
                 f"{len(self.by_name)} by file name, {len(self.by_content)} by audio content"]
        for label, pairs in (("same name", self.by_name), ("same audio", self.by_content)):
            for a, b in pairs[:show]:
                lines.append(f"  {label}: {a!r} ~ {b!r}")
            if len(pairs) > show:
                lines.append(f"  ... and {len(pairs) - show} more ({label})")
        return "\n".join(lines)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _sized(table: CaptionTable, audio_dir: str | Path | None) -> tuple[dict[int, list[tuple[str, Path]]], int]:
    by_size: dict[int, list[tuple[str, Path]]] = defaultdict(list)
    bad = 0
    for clip in table:
        path = resolve_audio(clip, audio_dir)
        try:
            by_size[path.stat().st_size].append((clip.clip_id, path))
        except OSError:
            bad += 1
    return by_size, bad


def find_overlap(train: CaptionTable, train_audio_dir: str | Path | None,
                 other: CaptionTable, other_audio_dir: str | Path | None) -> Overlap:
    """Clips of ``train`` that ``other`` also holds, by file name and by audio content."""
    names = {Path(c.audio).name: c.clip_id for c in other}
    by_name = tuple((c.clip_id, names[Path(c.audio).name]) for c in train if Path(c.audio).name in names)
    sizes_a, bad_a = _sized(train, train_audio_dir)
    sizes_b, bad_b = _sized(other, other_audio_dir)
    by_content: list[tuple[str, str]] = []
    digests: dict[Path, str] = {}

    def digest(path: Path) -> str | None:
        if path not in digests:
            try:
                digests[path] = _sha256(path)
            except OSError:
                return None
        return digests[path]

    for size in sorted(set(sizes_a) & set(sizes_b)):
        theirs: dict[str, list[str]] = defaultdict(list)
        for clip_id, path in sizes_b[size]:
            d = digest(path)
            if d is not None:
                theirs[d].append(clip_id)
        for clip_id, path in sizes_a[size]:
            for match in theirs.get(digest(path) or "", []):
                by_content.append((clip_id, match))
    return Overlap(by_name, tuple(by_content), bad_a + bad_b)


@dataclass(frozen=True)
class LeakageCheck:
    """What :func:`check_leakage` found between two caption tables."""

    overlap: Overlap  # the shared clips (falsy when none)
    train_clips: int  # clips in the training table
    eval_clips: int  # clips in the evaluation table


def check_leakage(train: str | Path, evaluation: str | Path, fmt: str = "clotho",
                  eval_format: str | None = None, train_audio_dir: str | Path | None = None,
                  eval_audio_dir: str | Path | None = None) -> LeakageCheck:
    """``earshot data check`` as one call: read both tables (``eval_format`` defaults to
    ``fmt``), find each one's audio (Clotho's ``<split>/`` folder beside
    ``clotho_captions_<split>.csv``, else the table's folder, unless given) and compare them by
    file name and audio content (:func:`find_overlap`)."""
    from earshot.data.readers import clotho_audio_dir, read_table

    train, evaluation = Path(train).expanduser(), Path(evaluation).expanduser()
    a = read_table(train, format=fmt)
    b = read_table(evaluation, format=eval_format or fmt)
    overlap = find_overlap(a, train_audio_dir or clotho_audio_dir(train) or train.parent,
                           b, eval_audio_dir or clotho_audio_dir(evaluation) or evaluation.parent)
    return LeakageCheck(overlap, len(a), len(b))
