"""Training examples for a moment head, from cached features, and lighthouse's batching.

One example per query: the recording's window features (the audio tower's output on
``spec.window_s`` windows at ``spec.hop_s``, cached per recording), the query's text features
and its windows. :func:`collate` pads a batch and builds lighthouse's targets
(``training/dataset.py``): spans as (center, width) normalised by ``L * clip_length`` (at most
``max_windows`` of them, a random subset when there are more), and saliency labels from the
first window (``get_saliency_labels_sub_as_query``: two random positive windows inside, two
random negatives outside, and the 0/1 ``saliency_all_labels``).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from earshot.moments.data import MomentRecording
from earshot.moments.head import FeatureSpec, frame_inputs, text_features, window_text_similarity
from earshot.moments.qddetr import span_xx_to_cxw

__all__ = ["MomentExample", "build_examples", "collate", "saliency_labels"]


@dataclass
class MomentExample:
    """One query over one recording, as features."""

    qid: str
    audio: torch.Tensor  # (L, Da) window features
    text: torch.Tensor  # (Lq, Dt) token (or pooled) features
    windows: list[tuple[float, float]]  # relevant [start, end] seconds
    duration: float  # L * clip_length seconds (what spans are normalised by)
    sim: torch.Tensor | None = None  # (L,) window-text similarity (FeatureSpec.similarity)


def build_examples(retriever: Any, recordings: Sequence[MomentRecording], spec: FeatureSpec,
                   max_q_l: int = 32, progress: Callable[[int, int], None] | None = None) -> list[MomentExample]:
    """Features of every query of ``recordings`` (audio windows cached per file)."""
    from earshot.moments.features import window_features

    window = spec.window_config()
    out = []
    for i, rec in enumerate(recordings):
        audio = torch.as_tensor(window_features(retriever, rec.audio, window))
        if audio.shape[0] > spec.max_windows:  # lighthouse crops features to max_a_l too
            audio = audio[: spec.max_windows]
        queries = [q.query for q in rec.queries]
        texts = text_features(retriever, queries, spec.text)
        sims = window_text_similarity(retriever, audio, queries) if spec.similarity else [None] * len(texts)
        for q, t, sim in zip(rec.queries, texts, sims):
            out.append(MomentExample(qid=str(q.qid), audio=audio, text=t[:max_q_l],
                                     windows=[tuple(w) for w in q.windows],
                                     duration=audio.shape[0] * spec.hop_s, sim=sim))
        if progress is not None:
            progress(i + 1, len(recordings))
    return out


def saliency_labels(window: tuple[float, float], ctx_l: int, clip_len: float, rng: random.Random,
                    max_n: int = 2) -> tuple[list[int], list[int], torch.Tensor]:
    """lighthouse's ``get_saliency_labels_sub_as_query``: positive and negative window indices
    and the 0/1 label of every window."""
    gt_st = int(window[0] / clip_len)
    gt_ed = max(0, min(int(window[1] / clip_len), ctx_l) - 1)
    if gt_st > gt_ed:
        gt_st = gt_ed
    pos = rng.sample(range(gt_st, gt_ed + 1), k=max_n) if gt_st != gt_ed else [gt_st, gt_st]
    pool = list(range(0, gt_st)) + list(range(gt_ed + 1, ctx_l))
    neg = rng.sample(pool, k=max_n) if len(pool) >= max_n else pos
    labels = torch.zeros(ctx_l)
    labels[gt_st:gt_ed + 1] = 1
    return pos, neg, labels


def collate(batch: Sequence[MomentExample], clip_len: float = 1.0, max_windows: int = 5,
            rng: random.Random | None = None) -> dict[str, Any]:
    """A padded batch: ``inputs`` for :class:`~earshot.moments.qddetr.QDDETR` and ``targets``
    for :class:`~earshot.moments.qddetr.SetCriterion`."""
    rng = rng or random.Random()
    B = len(batch)
    L = max(e.audio.shape[0] for e in batch)
    Lq = max(e.text.shape[0] for e in batch)
    aud = torch.zeros(B, L, batch[0].audio.shape[1])
    txt = torch.zeros(B, Lq, batch[0].text.shape[1])
    vid = torch.zeros(B, L, 2 if batch[0].sim is None else 3)
    vmask, tmask = torch.zeros(B, L), torch.zeros(B, Lq)
    sal_all = torch.zeros(B, L)
    spans, pos, neg = [], [], []
    for i, e in enumerate(batch):
        n, m = e.audio.shape[0], e.text.shape[0]
        aud[i, :n], vid[i, :n], vmask[i, :n] = e.audio, frame_inputs(n, e.sim), 1
        txt[i, :m], tmask[i, :m] = torch.nn.functional.normalize(e.text.float(), dim=-1, eps=1e-5), 1
        wins = list(e.windows)
        if len(wins) > max_windows:
            rng.shuffle(wins)
            wins = wins[:max_windows]
        spans.append(span_xx_to_cxw(torch.tensor(wins, dtype=torch.float32) / (n * clip_len)))
        p, q, lab = saliency_labels(e.windows[0], n, clip_len, rng)
        pos.append(p)
        neg.append(q)
        sal_all[i, :n] = lab
    return {"inputs": dict(src_txt=txt, src_txt_mask=tmask, src_vid=vid, src_vid_mask=vmask, src_aud=aud),
            "targets": (spans, torch.tensor(pos), torch.tensor(neg), sal_all),
            "qids": [e.qid for e in batch]}
