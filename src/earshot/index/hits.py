"""What a search returns: one :class:`Hit` per file (shared by ``search`` and ``ranking``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Hit:
    """One search result."""

    rank: int  # 1-based
    score: float  # similarity of the query and the clip embedding (cosine when normalised)
    id: int  # file id in the index (what the HTTP API exposes instead of a path)
    path: str  # relative to the indexed root
    duration: float  # seconds
    window_start: float  # seconds: the best-matching window of the file
    window_end: float  # seconds
    window_score: float  # similarity of the query and that window
    moments: tuple = ()  # moments.Moment spans where the query matches, best first (text/vector queries)
    words_score: float | None = None  # BM25 of the query's words (None: not found by words)
    fused: float | None = None  # reciprocal-rank-fusion score in hybrid mode (what the rank follows)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
