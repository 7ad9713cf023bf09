"""Evaluate a retriever on a caption table: encode each clip and each caption once, score all.

A retriever is anything with ``sample_rate``, ``embed_audio(waves) -> (N, D)`` and
``embed_text(texts) -> (Q, D)``: a single model, an averaged checkpoint or an ensemble. Two
optional hooks let a retriever whose score is not one dot product plug in unchanged (an
``earshot.ensemble.Ensemble`` defines both): ``encode_clips(table, audio_dir, clip_seconds,
batch_size, num_workers, progress)`` (each member decodes at its own sample rate) and
``similarity(text, audio) -> (Q, N)`` (score fusion). Single models keep the dot product.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from earshot.data.dataset import ClipDataset, collate_clips
from earshot.data.records import CaptionTable
from earshot.metrics import bidirectional_metrics_from_ranks, relevant_ranks
from earshot.relevance import Queries, relevant_indices, resolve_queries


class Retriever(Protocol):
    sample_rate: int

    def embed_audio(self, waveforms: torch.Tensor | Sequence[np.ndarray], batch_size: int = 32) -> torch.Tensor: ...

    def embed_text(self, texts: Sequence[str], batch_size: int = 128) -> torch.Tensor: ...


@dataclass
class EvalResult:
    metrics: dict[str, float]  # flat: t2a/R@1, t2a/mAP@10, a2t/..., with .../ci95
    similarity: torch.Tensor  # (captions, clips)
    t2a_ranks: np.ndarray  # rank (1-based) of each query's best-ranked relevant clip
    queries: Queries | None = None  # the queries (rows of similarity) and their relevant clips


def encode_clips(
    model: Retriever,
    table: CaptionTable,
    audio_dir: str | Path | None = None,
    clip_seconds: float | None = None,
    batch_size: int = 16,
    num_workers: int = 0,
    progress: bool = True,
) -> torch.Tensor:
    """(N, D) embeddings of every clip, decoded in ``num_workers`` processes.

    ``clip_seconds=None`` encodes whole clips one at a time (no padding alters an embedding);
    a number frames each clip deterministically to that length and batches them. A retriever
    with its own ``encode_clips`` (an ensemble of members at different sample rates) does it.
    """
    own = getattr(model, "encode_clips", None)
    if own is not None:
        return own(table, audio_dir, clip_seconds, batch_size, num_workers, progress)
    ds = ClipDataset(table, audio_dir, "waveform", model.sample_rate, clip_seconds)
    bs = batch_size if clip_seconds is not None else 1
    loader = DataLoader(ds, batch_size=bs, num_workers=num_workers, collate_fn=collate_clips)
    from earshot.models.biencoder import BiEncoder

    # A bi-encoder gets each frame's true length (PaSST counts its segments from it); other
    # retrievers embed what they are given.
    with_lengths = isinstance(model, BiEncoder) and clip_seconds is not None
    out = []
    for batch in tqdm(loader, desc="encoding audio", unit="batch", disable=not progress):
        extra = {"lengths": batch.lengths} if with_lengths else {}
        out.append(model.embed_audio(batch.audio, batch_size=bs, **extra))
    return torch.cat(out) if out else torch.empty(0)


AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")


def file_table(audio_dir: str | Path) -> CaptionTable:
    """Every audio file directly in ``audio_dir`` as a clip (sorted by name), for ranking files
    that have no captions (a DCASE test set). Each clip carries its file name as a placeholder
    caption, since a table's clips need one; only the audio side is used."""
    from earshot.data.records import AudioCaptions
    from earshot.errors import DataError

    names = sorted(p.name for p in Path(audio_dir).iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)
    if not names:
        raise DataError(f"{audio_dir}: no audio files ({', '.join(AUDIO_SUFFIXES)})")
    return CaptionTable([AudioCaptions(Path(n), (n,), n) for n in names], name=str(audio_dir))


def similarity(model: Retriever | None, text: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
    """The (Q, N) caption-by-clip scores ``model`` gives to its own embeddings.

    A retriever's ``similarity`` method when it has one (an ensemble fuses its members' scores),
    else the dot product (cosine for normalised embeddings). Every scorer calls this, so no
    caller needs to know which kind of retriever it has.
    """
    own = getattr(model, "similarity", None) if model is not None else None
    if own is not None:
        return own(text, audio)
    return text.float() @ audio.float().T  # (Q, N)


def table_queries(table: CaptionTable, relevance: str | Path = "clip") -> Queries:
    """The text queries of ``table`` under a relevance rule (:mod:`earshot.relevance`)."""
    pairs = [(table[ci].clip_id, cap) for ci, _, cap in table.pairs()]
    return resolve_queries(relevance, pairs)


def evaluate_embeddings(
    audio: torch.Tensor,
    text: torch.Tensor,
    table: CaptionTable,
    map_k: int = 10,
    model: Retriever | None = None,
    extra_map_k: int | None = None,
    queries: Queries | None = None,
) -> EvalResult:
    """Metrics from precomputed clip (N, D) and query (Q, D) embeddings of ``table``, scored
    by ``model``'s :func:`similarity` (the dot product when ``model`` is None); ``extra_map_k``
    adds the multi-relevant mAP at another cut-off (DCASE 2025: 16) from the same ranking.

    ``queries`` says which texts the rows of ``text`` are and which clips each one finds
    relevant (default: the ``clip`` rule, one row per caption of the table). ``a2t`` ranks, for
    each clip that some query finds relevant, those queries among all queries.
    """
    queries = queries if queries is not None else table_queries(table, "clip")
    if text.shape[0] != len(queries):
        raise ValueError(f"{text.shape[0]} text embeddings for {len(queries)} queries")
    relevant = relevant_indices(queries, [c.clip_id for c in table], table.name)
    sim = similarity(model, text, audio)  # (Q, N)
    of_clip: list[set[int]] = [set() for _ in range(len(table))]
    for q, clips in enumerate(relevant):
        for c in clips:
            of_clip[c].add(q)
    with_queries = [c for c in range(len(table)) if of_clip[c]]
    t2a = relevant_ranks(sim, relevant)
    a2t = relevant_ranks(sim.T[with_queries], [of_clip[c] for c in with_queries])
    metrics = bidirectional_metrics_from_ranks(t2a, a2t, map_k=map_k)
    if extra_map_k:
        more = bidirectional_metrics_from_ranks(t2a, a2t, map_k=extra_map_k)
        metrics.update({k: v for k, v in more.items() if "mAP" in k})
    ranks = np.array([r[0] for r in t2a], dtype=np.int64)
    return EvalResult(metrics, sim, ranks, queries)


def evaluate(
    model: Retriever,
    table: CaptionTable,
    audio_dir: str | Path | None = None,
    clip_seconds: float | None = None,
    batch_size: int = 16,
    num_workers: int = 0,
    progress: bool = True,
    extra_map_k: int | None = None,
    relevance: str | Path = "clip",
) -> EvalResult:
    """Encode ``table`` with ``model`` and compute text-to-audio and audio-to-text metrics
    under the ``relevance`` rule (``clip``, ``caption`` or a relevance CSV)."""
    queries = table_queries(table, relevance)
    audio = encode_clips(model, table, audio_dir, clip_seconds, batch_size, num_workers, progress)
    text = model.embed_text(list(queries.texts))
    return evaluate_embeddings(audio, text, table, model=model, extra_map_k=extra_map_k, queries=queries)


def write_ranks(path: str | Path, result: EvalResult, file_names: Sequence[str]) -> None:
    """``ranks.csv``: for each query, its caption, its best-ranked relevant file and that file's
    rank (1-based), so a user sees which captions fail. Written atomically."""
    import csv

    from earshot.utils import atomic_write

    if result.queries is None:
        raise ValueError("write_ranks needs an EvalResult with its queries")
    with atomic_write(Path(path), "w") as f:
        w = csv.writer(f)
        w.writerow(["query", "caption", "file_name", "rank"])
        for q, text in enumerate(result.queries.texts):
            order = result.similarity[q].argsort(descending=True, stable=True).tolist()
            best = next(file_names[i] for i in order if file_names[i] in result.queries.relevant[q])
            w.writerow([q, text, best, int(result.t2a_ranks[q])])


def save_evaluation(out_dir: str | Path, result: EvalResult, file_names: Sequence[str]) -> Path:
    """``out_dir/metrics.json`` (the flat metrics) and ``out_dir/ranks.csv`` (:func:`write_ranks`);
    returns the folder."""
    import json

    from earshot.utils import atomic_write

    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(out / "metrics.json", "w") as f:
        json.dump(result.metrics, f, indent=2)
    write_ranks(out / "ranks.csv", result, file_names)
    return out


def load_split(data: str | Path, fmt: str = "clotho",
               audio_dir: str | Path | None = None) -> tuple[CaptionTable, Path]:
    """The caption table and its audio folder, with every missing audio file reported at once,
    before any model is loaded. Without ``audio_dir``, Clotho's ``<split>/`` folder beside
    ``clotho_captions_<split>.csv`` is the default, else the table's own folder."""
    from earshot.data.readers import clotho_audio_dir, read_table
    from earshot.errors import DataError

    data = Path(data).expanduser()
    if not data.is_file():
        raise DataError(f"{data}: no such caption table")
    table = read_table(data, format=fmt)
    if audio_dir is not None:
        root = Path(audio_dir).expanduser()
        if not root.is_dir():
            raise DataError(f"--audio-dir {root}: no such folder")
    else:
        root = clotho_audio_dir(data) or data.parent
    report = table.check_audio(root)
    if not report.ok:
        hint = "" if audio_dir is not None else (
            f"\n(looked in {root}; give the folder that holds the audio with --audio-dir)")
        raise DataError(f"{data}: {report}{hint}")
    return table, root


def evaluation_framing(model: str | Path, seconds: float | None) -> tuple[float | None, str]:
    """(clip seconds or None for whole clips, a line saying which and why): ``seconds`` when
    given (0 = whole clips), else the ``eval_seconds`` a trained checkpoint carries, so evaluate
    reproduces the validation figure it logged."""
    if seconds is not None:
        return (None, "whole clips (--seconds 0)") if seconds <= 0 else (seconds, f"{seconds:g} s crops (--seconds)")
    from earshot.loading.resolve import is_checkpoint
    from earshot.models import checkpoint

    model = Path(model)
    if model.is_dir() and is_checkpoint(model):
        stored = checkpoint.read_config(model).get("eval_seconds")
        if stored:
            return float(stored), (f"{float(stored):g} s crops, as this checkpoint was validated "
                                   "(--seconds 0 for whole clips)")
    return None, "whole clips (--seconds N to frame them)"


@dataclass(frozen=True)
class ModelEvaluation:
    """What :func:`evaluate_model` did."""

    result: EvalResult  # metrics, similarities, ranks and queries
    clip_names: list[str]  # clip ids in the similarity matrix's column order
    framing: str  # how clips were framed, and why


def evaluate_model(
    model: str | Path,
    data: str | Path,
    *,
    fmt: str = "clotho",
    audio_dir: str | Path | None = None,
    seconds: float | None = None,
    map_k: int | None = 16,
    out: str | Path | None = None,
    submission: str | Path | None = None,
    workers: int = 0,
    relevance: str | Path = "clip",
    progress: bool = True,
    precision: str = "auto",
    log: Callable[[str], None] | None = None,
) -> ModelEvaluation:
    """``earshot evaluate`` as one call: check the model argument, the output paths and the
    split (every missing audio file at once) before loading anything; frame clips as the
    checkpoint was validated unless ``seconds`` says otherwise (``log`` hears which); open the
    model through the one resolver; evaluate; write ``metrics.json`` + ``ranks.csv`` to ``out``
    and a DCASE submission to ``submission`` when given."""
    from earshot.loading.resolve import check_model_argument
    from earshot.loading.retriever import load_retriever
    from earshot.models.inference import prepare_for_inference
    from earshot.submission import write_ranked_submission
    from earshot.utils import check_out_file, check_out_folder

    model = check_model_argument(model)
    submission = check_out_file(submission, "--submission")
    out = check_out_folder(out, "--out")
    table, root = load_split(data, fmt, audio_dir)
    seconds, why = evaluation_framing(model, seconds)
    if log is not None:
        log(f"framing: {why}")
    retriever = prepare_for_inference(load_retriever(model), precision)
    result = evaluate(retriever, table, root, clip_seconds=seconds, num_workers=workers, extra_map_k=map_k,
                      relevance=relevance, progress=progress)
    names = [c.clip_id for c in table]
    if out is not None:
        save_evaluation(out, result, names)
    if submission is not None:
        write_ranked_submission(submission, list(result.queries.texts), names, result.similarity)
    return ModelEvaluation(result, names, why)


@dataclass(frozen=True)
class SubmissionRun:
    """What :func:`submit_model` wrote."""

    path: Path  # the submission CSV
    captions: int  # distinct captions ranked
    files: int  # audio files ranked for each


def submit_model(model: str | Path, captions: str | Path, audio_dir: str | Path | None = None,
                 out: str | Path = "submission.csv", seconds: float | None = None, workers: int = 0,
                 progress: bool = True, precision: str = "auto") -> SubmissionRun:
    """``earshot submit`` as one call: check the model argument, the output file, the captions
    file and the audio folder (Clotho's ``<split>/`` beside ``clotho_captions_<split>.csv`` when
    not given) before loading anything; then rank every file in the folder for each caption and
    write the 10 best per caption as a DCASE submission."""
    from earshot.data.readers import clotho_audio_dir
    from earshot.errors import DataError
    from earshot.loading.resolve import check_model_argument
    from earshot.loading.retriever import load_retriever
    from earshot.models.inference import prepare_for_inference
    from earshot.submission import read_queries, write_ranked_submission
    from earshot.utils import check_out_file

    model = check_model_argument(model)
    out = check_out_file(out, "--out")
    captions = Path(captions).expanduser()
    if not captions.is_file():
        raise DataError(f"--captions {captions}: no such file")
    if audio_dir is None:
        audio_dir = clotho_audio_dir(captions)
        if audio_dir is None:
            raise DataError(f"{captions}: which audio files should be ranked? give their folder "
                            f"with --audio-dir")
    audio_dir = Path(audio_dir).expanduser()
    if not audio_dir.is_dir():
        raise DataError(f"--audio-dir {audio_dir}: no such folder")
    queries = read_queries(captions)
    table = file_table(audio_dir)
    retriever = prepare_for_inference(load_retriever(model), precision)
    audio = encode_clips(retriever, table, audio_dir, seconds, num_workers=workers, progress=progress)
    sim = similarity(retriever, retriever.embed_text(queries), audio)
    write_ranked_submission(out, queries, [c.clip_id for c in table], sim)
    return SubmissionRun(out, len(set(queries)), len(table))
