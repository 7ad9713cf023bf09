"""The distillation stage: a teacher's in-batch audio-caption similarities as soft targets.

Primus et al. (DCASE 2024 workshop; ``OptimusPrimus/salsa``, the DCASE 2024 Task 8 winner)
train retrieval models as usual, then train again with the loss ``distill``: the targets of each
batch are the softened similarities that an ensemble of the first-stage models gives to the
batch's clips and captions. Here the teacher is anything :func:`earshot.loading.retriever.load_retriever`
opens (an ensemble manifest or a checkpoint). It embeds every training clip and caption once;
the two matrices are kept in the ensemble's :class:`~earshot.ensemble.SimilarityCache` keyed by
the teacher's content hash and the table's, so a rerun (or a second student) encodes nothing.

The teacher's similarity of clip ``i`` and caption ``j`` is the dot product of its embeddings.
For an ensemble that is the weighted mean of its members' similarities (its ``mean`` rule,
salsa's choice, cosine for normalised members) whatever rule the manifest names for ranking:
``zmean`` and ``rrf`` normalise over a whole corpus and have no in-batch meaning.

Hook: ``TrainConfig.distill`` (``earshot.train.config.DistillConfig``); ``run._train_stage`` calls
:func:`with_teacher`, which swaps in a loader that also yields caption indices and a
:class:`DistillModule`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from earshot.data.records import CaptionTable
from earshot.ensemble import SimilarityCache, table_fingerprint
from earshot.errors import ConfigError
from earshot.train.collectives import gather_rows
from earshot.train.config import TrainConfig
from earshot.train.data import collate_inputs, load_splits
from earshot.train.module import RetrievalModule


def teacher_identity(teacher: Any, source: str | Path) -> str:
    """Content hash of what scores: the teacher's :meth:`ModelRef.identity` (any kind: a
    checkpoint, a manifest, a CLAP folder, a registry name)."""
    from earshot.loading.resolve import resolve

    return resolve(source).identity()


def teacher_embeddings(
    teacher: Any,
    identity: str,
    table: CaptionTable,
    audio_dir: str | Path | None,
    clip_seconds: float | None,
    cache: SimilarityCache,
    num_workers: int = 0,
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(clips, D)`` and ``(captions, D)`` teacher embeddings of ``table``: read from ``cache``
    when this teacher embedded this table before, else computed once and stored."""
    from earshot.evaluation import encode_clips

    doc = {"v": 1, "teacher": identity, "table": table_fingerprint(table, audio_dir), "clip_seconds": clip_seconds}
    key = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()
    dim = int(teacher.embed_dim)
    audio = cache.get(f"{key}-audio", (len(table), dim))
    text = cache.get(f"{key}-text", (table.num_captions, dim))
    if audio is None:
        audio = encode_clips(teacher, table, audio_dir, clip_seconds, num_workers=num_workers,
                             progress=progress).float()
        cache.put(f"{key}-audio", audio)
    if text is None:
        text = teacher.embed_text(table.captions()).float()
        cache.put(f"{key}-text", text)
    return audio, text


class _WithCaptionIndex(Dataset):
    """The training items plus each one's caption index (rows of the teacher's text matrix)."""

    def __init__(self, inner: Dataset):
        self.inner = inner

    def __len__(self) -> int:
        return len(self.inner)

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.inner, "set_epoch"):
            self.inner.set_epoch(epoch)

    def __getitem__(self, q: int):
        return (*self.inner[q], q)


def _collate(items):
    audio, text, clips, lengths = collate_inputs([item[:4] for item in items])
    return audio, text, clips, lengths, torch.tensor([item[4] for item in items], dtype=torch.long)


class DistillModule(RetrievalModule):
    """:class:`RetrievalModule` whose loss also gets the teacher's ``(B, B)`` similarities of the
    batch's clips (rows) and captions (columns)."""

    def __init__(self, base: RetrievalModule, teacher_audio: torch.Tensor, teacher_text: torch.Tensor):
        super().__init__(base.model, base.cfg, base.val_table, base.val_text)
        # constants, not parameters: never in checkpoints, moved to the device with the batch
        self.teacher_audio = teacher_audio  # (clips, D)
        self.teacher_text = teacher_text  # (captions, D)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        audio, text, clip_ids, lengths, captions = batch
        a, t = self._embed(audio, text, lengths)  # (B, D)
        a, t, clip_ids = self._global_batch(a, t, clip_ids)  # (B_global, D) under DDP
        if not (self.cfg.local_loss or self.trainer.world_size == 1):
            captions = gather_rows(captions)  # rank order, as the embeddings
        ta = self.teacher_audio[clip_ids.cpu()].to(a.device)  # (B, Dt)
        tt = self.teacher_text[captions.cpu()].to(a.device)  # (B, Dt)
        out = self.loss_fn(a, t, clip_ids, teacher=ta @ tt.T, temperature=1.0 / self.model.logit_scale())
        return self._logged(out, len(clip_ids))


def with_teacher(cfg: TrainConfig, loader: DataLoader, module: RetrievalModule,
                 progress: bool = True) -> tuple[DataLoader, DistillModule]:
    """The training loader with caption indices and the distillation module for ``cfg.distill``."""
    from earshot.loading.retriever import load_retriever

    d = cfg.distill
    if d is None:
        raise ConfigError("with_teacher needs a config with distill: set")
    table, audio_dir, _, _ = load_splits(cfg.data)
    teacher = load_retriever(d.teacher)
    cache = SimilarityCache(d.cache_dir) if d.cache_dir else SimilarityCache()
    audio, text = teacher_embeddings(teacher, teacher_identity(teacher, d.teacher), table, audio_dir,
                                     d.clip_seconds, cache, cfg.data.num_workers, progress)
    del teacher
    # the same (global, DDP-sliced, seeded) batches as the plain loader, plus caption indices
    wrapped = DataLoader(_WithCaptionIndex(loader.dataset), batch_sampler=loader.batch_sampler,
                         num_workers=loader.num_workers, collate_fn=_collate)
    return wrapped, DistillModule(module, audio, text)

