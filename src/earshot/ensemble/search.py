"""The combination search: per-member similarity matrices cached on disk, every subset
(or a greedy forward selection) scored from them."""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import torch

from earshot.data.records import CaptionTable
from earshot.ensemble.fingerprint import table_fingerprint
from earshot.ensemble.fusion import RRF_K, RULES, fuse
from earshot.ensemble.manifest import save_manifest
from earshot.errors import ConfigError
from earshot.metrics import bidirectional_metrics
from earshot.utils import atomic_write, cache_dir

GREEDY_ABOVE = 8  # more candidates than this: greedy forward selection instead of all subsets


# -- per-member similarity matrices, cached on disk --------------------------------------------


class SimilarityCache:
    """``(Q, N)`` float32 matrices as ``.npy`` files under ``root`` (default: the user cache's
    ``similarity/``), written atomically. A file of the wrong shape counts as absent."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else cache_dir() / "similarity"

    def path(self, key: str) -> Path:
        return self.root / f"{key}.npy"

    def get(self, key: str, shape: tuple[int, int]) -> torch.Tensor | None:
        p = self.path(key)
        if not p.is_file():
            return None
        try:
            arr = np.load(p, allow_pickle=False)
        except (OSError, ValueError):
            return None
        if tuple(arr.shape) != tuple(shape) or not np.isfinite(arr).all():
            return None
        return torch.from_numpy(np.array(arr, dtype=np.float32))

    def put(self, key: str, sim: torch.Tensor) -> Path:
        p = self.path(key)
        with atomic_write(p) as f:
            np.save(f, sim.detach().cpu().float().numpy(), allow_pickle=False)
        return p


def similarity_key(checkpoint: str | Path, table: CaptionTable, audio_dir: str | Path | None,
                   clip_seconds: float | None, precision: str = "fp32") -> str:
    """Cache key of one member's similarity matrix on one table at one precision."""
    from earshot.loading.resolve import resolve

    model = resolve(checkpoint).identity()  # any kind: checkpoint, CLAP folder, registry name, ...
    doc = {"v": 2, "model": model, "table": table_fingerprint(table, audio_dir),
           "clip_seconds": clip_seconds, "precision": precision}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def member_similarity(
    checkpoint_dir: str | Path,
    table: CaptionTable,
    audio_dir: str | Path | None = None,
    clip_seconds: float | None = None,
    cache: SimilarityCache | None = None,
    num_workers: int = 0,
    progress: bool = True,
    precision: str = "auto",
) -> torch.Tensor:
    """The ``(captions, clips)`` scores of one checkpoint on ``table``: read from ``cache`` when
    this checkpoint has scored this table before, else encoded once and stored there.

    ``precision`` is the audio towers' arithmetic, resolved as ``earshot evaluate`` resolves it
    (:mod:`earshot.models.inference`), so a search and an evaluation of its manifest agree."""
    from earshot.evaluation import encode_clips, similarity
    from earshot.models.inference import prepare_for_inference, resolve_precision
    from earshot.loading.retriever import load_retriever

    chosen = resolve_precision(precision)
    shape = (table.num_captions, len(table))
    key = similarity_key(checkpoint_dir, table, audio_dir, clip_seconds, chosen) if cache is not None else ""
    if cache is not None and (hit := cache.get(key, shape)) is not None:
        return hit
    model = prepare_for_inference(load_retriever(checkpoint_dir), chosen)
    audio = encode_clips(model, table, audio_dir, clip_seconds, num_workers=num_workers, progress=progress)
    text = model.embed_text(table.captions())
    sim = similarity(model, text, audio).float()  # (Q, N)
    if cache is not None:
        cache.put(key, sim)
    return sim


# -- the combination search --------------------------------------------------------------------


@dataclass(frozen=True)
class ComboScore:
    members: tuple[int, ...]  # indices into the candidate list, ascending
    metrics: dict[str, float] = field(hash=False)  # flat t2a/... and a2t/... metrics of the fusion

    @property
    def size(self) -> int:
        return len(self.members)


def _score(sims: Sequence[torch.Tensor], combo: tuple[int, ...], caption_clip: Sequence[int],
           rule: str, rrf_k: float) -> ComboScore:
    fused = fuse([sims[i] for i in combo], None, rule, rrf_k)
    return ComboScore(combo, bidirectional_metrics(fused, caption_clip))


def _order(results: list[ComboScore], metric: str) -> list[ComboScore]:
    # best metric first; on a tie the smaller, then the lexicographically first, combination
    return sorted(results, key=lambda r: (-r.metrics[metric], r.size, r.members))


def search_combinations(
    sims: Sequence[torch.Tensor],
    caption_clip: Sequence[int],
    rule: str = "zmean",
    max_size: int = 5,
    greedy: bool | None = None,
    rrf_k: float = RRF_K,
    metric: str = "t2a/mAP@10",
) -> list[ComboScore]:
    """Score equal-weight fusions of the candidates' ``(Q, N)`` matrices ``sims``, best first.

    Every single model is scored (for comparison). Then either every combination of 2 to
    ``max_size`` members, or (``greedy``, default when there are more than 8 candidates) a
    forward selection: from the best single model, repeatedly add the candidate that raises
    ``metric`` most, stopping at ``max_size`` or when no addition helps. No encoder runs here.
    """
    n = len(sims)
    if n < 1:
        raise ConfigError("search_combinations: no candidates")
    if max_size < 1:
        raise ConfigError(f"max_size must be >= 1, got {max_size}")
    max_size = min(max_size, n)
    greedy = n > GREEDY_ABOVE if greedy is None else greedy
    done: dict[tuple[int, ...], ComboScore] = {}

    def score(combo: tuple[int, ...]) -> ComboScore:
        if combo not in done:
            done[combo] = _score(sims, combo, caption_clip, rule, rrf_k)
        return done[combo]

    singles = [score((i,)) for i in range(n)]
    if metric not in singles[0].metrics:
        raise ConfigError(f"unknown metric {metric!r}; one of {sorted(singles[0].metrics)}")
    if not greedy:
        for size in range(2, max_size + 1):
            for combo in itertools.combinations(range(n), size):
                score(combo)
    else:
        current = _order(singles, metric)[0]
        while current.size < max_size:
            tried = [score(tuple(sorted(current.members + (j,))))
                     for j in range(n) if j not in current.members]
            step = _order(tried, metric)[0]
            if step.metrics[metric] <= current.metrics[metric]:
                break
            current = step
    return _order(list(done.values()), metric)


@dataclass
class SearchReport:
    models: list[Path]  # the candidate checkpoints, in the order given
    results: list[ComboScore]  # every combination scored, best first (singles included)
    rule: str
    rrf_k: float
    metric: str
    data: str  # the validation table's name

    @property
    def best(self) -> ComboScore:
        """The best combination of two or more members (the best single if only one was given)."""
        multi = [r for r in self.results if r.size >= 2]
        return (multi or self.results)[0]

    def names(self, combo: ComboScore) -> list[str]:
        return [str(self.models[i]) for i in combo.members]

    def save(self, path: str | Path, combo: ComboScore | None = None) -> Path:
        """Write ``combo`` (default: :attr:`best`) as a manifest carrying its validation scores."""
        combo = combo or self.best
        validation = {"data": self.data, "metric": self.metric, "score": combo.metrics[self.metric],
                      "metrics": {k: v for k, v in combo.metrics.items() if "/ci95" not in k}}
        return save_manifest(path, [self.models[i] for i in combo.members], None, self.rule,
                             self.rrf_k, validation=validation)


def search_ensembles(
    models: Sequence[str | Path],
    table: CaptionTable,
    audio_dir: str | Path | None = None,
    rule: str = "zmean",
    max_size: int = 5,
    greedy: bool | None = None,
    rrf_k: float = RRF_K,
    clip_seconds: float | None = None,
    cache: SimilarityCache | None | Literal[False] = None,
    num_workers: int = 0,
    progress: bool = True,
    metric: str = "t2a/mAP@10",
    precision: str = "auto",
) -> SearchReport:
    """Find the best ensemble of checkpoint directories ``models`` on a validation ``table``.

    Each model is encoded once (or not at all when ``cache`` holds its matrix for this table;
    ``cache=None`` uses the user cache, ``False`` none), then :func:`search_combinations` fuses
    the matrices. ``report.save(path)`` writes the best as a manifest.
    """
    if rule not in RULES:
        raise ConfigError(f"fusion rule must be one of {list(RULES)}, got {rule!r}")
    paths = [Path(m) for m in models]
    if len(paths) < 2:
        raise ConfigError(f"an ensemble search needs at least 2 models, got {len(paths)}")
    if len({p.resolve() for p in paths}) != len(paths):
        raise ConfigError("the same checkpoint is listed twice among the models")
    for p in paths:
        if not p.is_dir():
            raise ConfigError(f"{p}: not a model directory (ensemble members are checkpoints or "
                              f"CLAP folders)")
    store = None if cache is False else (cache if cache is not None else SimilarityCache())
    sims = [member_similarity(p, table, audio_dir, clip_seconds, store, num_workers, progress, precision)
            for p in paths]
    results = search_combinations(sims, table.caption_clip_indices(), rule, max_size, greedy, rrf_k, metric)
    return SearchReport(paths, results, rule, rrf_k, metric, table.name)


def search_and_save(
    models: Sequence[str | Path],
    data: str | Path,
    out: str | Path = "ensemble.json",
    fmt: str = "clotho",
    audio_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    no_cache: bool = False,
    **options,
) -> tuple[SearchReport, Path]:
    """``earshot ensemble search`` as one call: check every model argument, the manifest path
    and the validation split (every missing audio file at once) before encoding anything, run
    :func:`search_ensembles` (``options``: its rule, sizes, framing, workers, precision,
    progress) with the similarity cache at ``cache_dir`` (the user cache by default; none with
    ``no_cache``), and save the best ensemble's manifest at ``out``. Returns (report, path)."""
    from earshot.evaluation import load_split
    from earshot.loading.resolve import check_model_argument
    from earshot.utils import check_out_file

    members = [check_model_argument(m) for m in models]
    out = check_out_file(out, "--out")
    table, root = load_split(data, fmt, audio_dir)
    cache = False if no_cache else SimilarityCache(cache_dir) if cache_dir is not None else None
    report = search_ensembles(members, table, root, cache=cache, **options)
    return report, report.save(out)
