"""The LightningModule: one training step, validation by retrieval metrics, the optimiser.

The step is short on purpose (STYLE.md rule 9): embed, loss, log. Mixed precision, DDP,
checkpointing and schedules belong to Lightning and to ``earshot.train.run``.
"""

from __future__ import annotations

import math

import lightning as L
import torch

from earshot.data.records import CaptionTable
from earshot.evaluation import evaluate_embeddings
from earshot.losses import create_loss, uses_temperature
from earshot.models.biencoder import BiEncoder
from earshot.train.config import TrainConfig
from earshot.train.collectives import gather_rows
from earshot.train.data import rank_shard

MONITOR = "val/t2a/mAP@10"


class RetrievalModule(L.LightningModule):
    """Wraps a :class:`BiEncoder`. A frozen, cached tower's side of each batch carries its
    outputs instead of waveforms or strings, and checkpoints leave frozen towers out."""

    def __init__(self, model: BiEncoder, cfg: TrainConfig, val_table: CaptionTable | None,
                 val_text: torch.Tensor | None = None):
        super().__init__()
        self.model = model
        self.cfg = cfg
        self.audio_cached = cfg.audio_cached
        self.text_cached = cfg.text_cached
        self.loss_fn = create_loss(cfg.loss.name, **cfg.loss.options)
        self.loss_takes_temperature = uses_temperature(cfg.loss.name)
        self.val_table = val_table
        self.val_text = val_text  # cached text-tower outputs of the validation captions
        self._val_audio: list[torch.Tensor] = []

    # -- training -------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        audio, text, clip_ids, lengths = batch
        a, t = self._embed(audio, text, lengths)  # (B, D)
        a, t, clip_ids = self._global_batch(a, t, clip_ids)  # (B_global, D) under DDP
        extra = {"temperature": 1.0 / self.model.logit_scale()} if self.loss_takes_temperature else {}
        return self._logged(self.loss_fn(a, t, clip_ids, **extra), len(clip_ids))

    def _embed(self, audio, text, lengths=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings of a batch: heads on cached tower outputs, or the whole towers (given
        each crop's true length, ``lengths``)."""
        a = (self.model.project_audio(audio) if self.audio_cached
             else self.model.encode_audio(audio, lengths=lengths))
        t = self.model.project_text(text) if self.text_cached else self.model.encode_text(text)
        return a, t

    def _logged(self, out, batch_size: int) -> torch.Tensor:
        """Log a loss output (total, named parts, logit scale) and return its total.

        sync_dist: the ranks' means (equal under the gathered loss; the global mean under
        local_loss)."""
        log = dict(batch_size=batch_size, sync_dist=True)
        self.log("train/loss", out.total, prog_bar=True, on_step=True, on_epoch=True, **log)
        for name, value in out.parts.items():
            self.log(f"train/{name}", value, on_step=False, on_epoch=True, **log)
        self.log("train/logit_scale", self.model.logit_scale(), on_step=False, on_epoch=True, **log)
        return out.total

    def _global_batch(self, a: torch.Tensor, t: torch.Tensor, clip_ids: torch.Tensor):
        """Every rank's embeddings and clip ids, in rank order (open_clip's gather_features).

        Each rank then computes the same loss over the global batch. The gather passes
        gradients back (summed over ranks) to the rows each rank produced, and DDP averages
        the parameter gradients, so the step equals one process's step on the whole batch.
        Clip ids are table indices, unique across ranks. ``local_loss`` keeps the old
        per-rank loss (each rank's batch only, gradients averaged by DDP).
        """
        if self.cfg.local_loss or self.trainer.world_size == 1:
            return a, t, clip_ids
        return gather_rows(a), gather_rows(t), gather_rows(clip_ids)  # (W*b, D), (W*b,)

    def on_train_epoch_start(self) -> None:
        # new crops / views / caption order each epoch, reproducibly
        loader = self.trainer.train_dataloader
        for obj in (getattr(loader, "dataset", None), getattr(loader, "batch_sampler", None)):
            if hasattr(obj, "set_epoch"):
                obj.set_epoch(self.current_epoch)

    # -- validation: encode every clip (steps) and every caption (epoch end), then rank ---------
    def validation_step(self, batch, batch_idx: int) -> None:
        if self.audio_cached:  # a (b, Da) tensor of cached tower outputs
            self._val_audio.append(self.model.project_audio(batch))
        else:  # a ClipBatch of waveforms
            self._val_audio.append(self.model.encode_audio(batch.audio, lengths=batch.lengths))

    def on_validation_epoch_end(self) -> None:
        """Rank the whole validation set: each rank embedded its shard of the clips (the
        loader's ShardSampler) and embeds its shard of the captions; the shards are gathered,
        so every rank computes and logs the same metrics on every clip and caption once."""
        if self.val_table is None:
            return
        n_clips, n_caps = len(self.val_table), self.val_table.num_captions
        audio = torch.cat(self._val_audio) if self._val_audio else None
        self._val_audio.clear()
        shard, width = rank_shard(n_caps), self.cfg.model.embed_dim
        if not shard:  # an empty shard (fewer captions than ranks)
            text = torch.zeros((0, width), device=self.device)
        elif self.text_cached:
            text = self.model.project_text(self.val_text[shard.start:shard.stop].to(self.device))
        else:
            text = self.model.embed_text(self.val_table.captions()[shard.start:shard.stop]).to(self.device)
        if audio is None:  # an empty shard (fewer clips than ranks)
            audio = torch.zeros((0, width), device=self.device)
        audio, text = self._gather_shards(audio, n_clips), self._gather_shards(text, n_caps)
        if audio is None or text is None:  # sanity-check / limited runs see a part of the data
            return
        result = evaluate_embeddings(audio, text, self.val_table)
        for key in ("t2a/R@1", "t2a/R@5", "t2a/R@10", "t2a/mAP@10", "a2t/R@1", "a2t/mAP@10"):
            # identical on every rank already; sync_dist's mean keeps them so (and quiet)
            self.log(f"val/{key}", result.metrics[key], prog_bar=key == "t2a/mAP@10", sync_dist=True)

    def _gather_shards(self, local: torch.Tensor, total: int) -> torch.Tensor | None:
        """The rows of all ranks' :func:`rank_shard` shards in order, (total, D); None when
        the shards do not add up to ``total`` rows (Lightning's limit_val_batches)."""
        world = self.trainer.world_size
        per = -(-total // world)
        expected = len(rank_shard(total))
        ok = torch.tensor([int(local.shape[0] == expected)], device=self.device)
        if world == 1:
            return local if bool(ok) else None
        if not bool(gather_rows(ok).min()):
            return None
        padded = local.new_zeros((per, local.shape[1]))
        padded[: local.shape[0]] = local
        return gather_rows(padded)[:total]  # (world * per, D) -> (total, D)

    # -- checkpoints: frozen towers are rebuilt from the config, not stored every epoch ------------
    def _frozen_prefixes(self) -> tuple[str, ...]:
        return tuple(f"model.{name}." for name, tower in
                     (("audio_encoder", self.cfg.model.audio), ("text_encoder", self.cfg.model.text))
                     if tower.train == "none")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        frozen = self._frozen_prefixes()
        if frozen:
            state = checkpoint["state_dict"]
            checkpoint["state_dict"] = {k: v for k, v in state.items() if not k.startswith(frozen)}
            checkpoint["earshot_frozen_prefixes"] = list(frozen)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # put the frozen towers' current (identical) weights back before the strict load
        own = self.state_dict()
        for key in own:
            if key.startswith(tuple(checkpoint.get("earshot_frozen_prefixes", ()))):
                checkpoint["state_dict"].setdefault(key, own[key])

    # -- optimiser and schedules -----------------------------------------------------------------
    def configure_optimizers(self):
        o = self.cfg.optim
        params = [p for p in self.model.parameters() if p.requires_grad]
        opt = _adam(params, o.lr, o.weight_decay)
        if o.scheduler == "plateau":
            # warm-up is applied by hand in on_train_batch_start: a LambdaLR beside the plateau
            # scheduler would overwrite the plateau's reductions at every step.
            has_val = self.val_table is not None
            plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
                opt, mode="max" if has_val else "min", factor=o.plateau_factor, patience=o.plateau_patience)
            monitor = MONITOR if has_val else "train/loss_epoch"
            return [opt], [{"scheduler": plateau, "monitor": monitor, "interval": "epoch"}]
        if o.scheduler == "none" and o.warmup_steps == 0 and o.warmup_epochs == 0:
            return opt
        total = max(1, int(self.trainer.estimated_stepping_batches))
        per_epoch = total / max(1, self.trainer.max_epochs or 1)
        warmup = o.warmup_steps + round(o.warmup_epochs * per_epoch)
        end = total if o.decay_epochs is None else warmup + max(1, round(o.decay_epochs * per_epoch))
        floor = o.min_lr / o.lr if o.lr else 0.0
        cosine = o.scheduler == "cosine"
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: lr_factor(step, warmup, end, cosine, floor))
        return [opt], [{"scheduler": sched, "interval": "step"}]

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        o = self.cfg.optim
        if o.scheduler == "plateau" and self.global_step <= o.warmup_steps and o.warmup_steps > 0:
            for group in self.optimizers().optimizer.param_groups:
                group["lr"] = o.lr * lr_factor(self.global_step, o.warmup_steps, 1, False)


def _adam(params, lr: float, weight_decay: float) -> torch.optim.Adam:
    """Adam with the fused kernel where torch has one for these tensors (CPU and CUDA): one
    kernel for all parameters instead of a Python loop over them."""
    try:
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, foreach=True)


def lr_factor(step: int, warmup: int, total: int, cosine: bool, floor: float = 0.0) -> float:
    """Learning-rate multiplier at ``step``: linear warm-up from 0 over ``warmup`` steps, then 1
    (or a cosine decay to ``floor`` by ``total``). A pure function, so it is tested directly."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if not cosine:
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
