"""Training a QD-DETR moment head (lighthouse's recipe) with Lightning on cached features.

The towers stay frozen: every recording's window features and every query's text features are
computed once (earshot's tower cache), then the head trains on them, as lighthouse trains on
pre-extracted CLAP features. Optimiser and schedule as lighthouse's ``training/train.py``:
AdamW (lr, weight decay), StepLR by ``lr_drop`` epochs, gradient norm clipped at ``grad_clip``.
Lightning gives DDP (``devices: N``; each rank draws its share of the queries) and bf16
(``precision: bf16-mixed``).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from earshot.errors import ConfigError
from earshot.moments.dataset import MomentExample, collate
from earshot.moments.head import FeatureSpec, MomentHead
from earshot.moments.qddetr import QDDETR, LossConfig, QDDETRConfig, SetCriterion
from earshot.threads import use_threads

__all__ = ["KeepBestOnValidation", "MomentDataConfig", "MomentOptimConfig", "MomentTrainConfig", "MomentHeadModule",
           "fit_moment_head", "load_moment_config"]


@dataclass(frozen=True)
class MomentDataConfig:
    """Annotation files (lighthouse JSON Lines) and their audio folders."""

    train: str = ""  # training annotations
    train_audio: str = ""  # their recordings
    val: str = ""  # validation annotations (optional)
    val_audio: str = ""
    on_bad_window: str = "error"  # a window past its recording: error | clip | drop (reported)


@dataclass(frozen=True)
class MomentOptimConfig:
    """lighthouse ``configs/base.yml`` optimisation values."""

    lr: float = 1e-4
    wd: float = 1e-4  # AdamW weight decay
    lr_drop: int = 400  # StepLR step (epochs)
    grad_clip: float = 0.1  # max gradient norm


@dataclass(frozen=True)
class MomentTrainConfig:
    """A moment-head training run (presets: configs/amr_clotho_moment.yaml, amr_castella.yaml)."""

    model: QDDETRConfig = field(default_factory=QDDETRConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    # lighthouse's AMR features: MS-CLAP 2023 on unpadded 1 s windows resampled by the sinc filter
    features: FeatureSpec = field(default_factory=lambda: FeatureSpec(retriever="msclap_2023", pad="none",
                                                                      resampler="sinc"))
    data: MomentDataConfig = field(default_factory=MomentDataConfig)
    optim: MomentOptimConfig = field(default_factory=MomentOptimConfig)
    n_epoch: int = 200  # epochs
    bsz: int = 32  # batch size (per device)
    max_windows: int = 5  # target windows per query (a random subset when more)
    clip_length: float = 1.0  # seconds per feature window step (= features.hop_s)
    seed: int = 2023
    precision: str = "32-true"  # Lightning precision: 32-true | bf16-mixed
    accelerator: str = "auto"
    devices: int = 1  # > 1: DDP
    keep_best: bool = True  # with validation data: the epoch with the best validation mAP/avg (lighthouse keeps its best checkpoint)
    # > 0: an exponential moving average of the weights (this decay per optimiser step; earshot's,
    # as DINO-DETR trains) is what is validated, kept and returned; 0: the raw weights (lighthouse)
    ema_decay: float = 0.0
    out_dir: str = "runs/moments/qd_detr"

    def __post_init__(self) -> None:
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"ema_decay must be in [0, 1), got {self.ema_decay}")


def load_moment_config(path: str | Path, overrides: Sequence[str] = ()) -> MomentTrainConfig:
    """A preset YAML (+ ``key.sub=value`` overrides) as a typed config; unknown keys are errors."""
    from earshot.config import apply_overrides, from_dict, load_yaml

    return from_dict(MomentTrainConfig, apply_overrides(load_yaml(path), list(overrides)), str(path))


class MomentHeadModule(L.LightningModule):
    """QD-DETR + lighthouse's criterion; one optimiser step per batch of queries."""

    def __init__(self, cfg: MomentTrainConfig):
        super().__init__()
        self.cfg = cfg
        self.qddetr = QDDETR(cfg.model)
        self.criterion = SetCriterion(cfg.loss, dec_layers=cfg.model.dec_layers, aux_loss=cfg.model.aux_loss)
        self.ema = None
        if cfg.ema_decay > 0:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            # W_ema <- decay * W_ema + (1 - decay) * W after every step (the first step's weights
            # start it); no gradients, so DDP leaves it alone and every rank averages the same steps
            self.ema = AveragedModel(self.qddetr, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
            self.ema.requires_grad_(False)

    @property
    def scored(self) -> QDDETR:
        """The weights validation scores and training returns: the average when ``ema_decay`` > 0."""
        return self.qddetr if self.ema is None else self.ema.module

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.ema is not None:
            self.ema.update_parameters(self.qddetr)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        out = self.qddetr(**batch["inputs"], with_negatives=True)
        total, parts = self.criterion(out, *batch["targets"])
        bs = len(batch["qids"])
        self.log("train/loss", total, prog_bar=True, on_step=True, on_epoch=True, batch_size=bs, sync_dist=True)
        for k in ("loss_span", "loss_giou", "loss_label", "loss_saliency"):
            self.log(f"train/{k}", parts[k], batch_size=bs, sync_dist=True)
        return total

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        out = self.scored(**batch["inputs"], with_negatives=True)  # the weights validation scores
        total, _ = self.criterion(out, *batch["targets"])
        self.log("val/loss", total, prog_bar=True, batch_size=len(batch["qids"]), sync_dist=True)

    def configure_optimizers(self):
        params = [p for p in self.qddetr.parameters() if p.requires_grad]
        # fused: one kernel per step instead of a Python loop over ~200 tensors, which took more
        # than half of a CPU training step (py-spy, the demo head). Lightning refuses a fused
        # optimizer with gradient clipping under mixed precision (it unscales inside its step):
        # there the multi-tensor (foreach) path, also without the per-tensor loop
        fused = (not str(self.cfg.precision).endswith("-mixed")
                 and all(p.device.type in ("cpu", "cuda") and p.dtype == torch.float32 for p in params))
        opt = torch.optim.AdamW(params, lr=self.cfg.optim.lr, weight_decay=self.cfg.optim.wd,
                                fused=fused, foreach=not fused)
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.StepLR(opt, self.cfg.optim.lr_drop)}


def _loader(examples: list[MomentExample], cfg: MomentTrainConfig, shuffle: bool, seed: int) -> DataLoader:
    rng = random.Random(seed)  # saliency positives/negatives and window subsets, seeded
    coll = lambda b: collate(b, cfg.clip_length, cfg.max_windows, rng)  # noqa: E731
    if not shuffle:  # validation: every rank scores every query
        return DataLoader(examples, batch_size=cfg.bsz, shuffle=False, num_workers=0, collate_fn=coll)
    # training: global batches of bsz x devices from one seeded order, each rank its slice, so
    # N processes take the optimisation steps one process takes with an N times larger batch
    from earshot.train.data import GlobalBatchSampler

    world = max(1, cfg.devices)
    batches = GlobalBatchSampler(len(examples), cfg.bsz * world, seed, drop_last=False)
    return DataLoader(examples, batch_sampler=batches, num_workers=0, collate_fn=coll)


class KeepBestOnValidation(L.Callback):
    """Score the validation queries after every epoch (R1 / mAP as ``moments score``) and put
    the weights of the epoch with the best ``metric`` back when training ends, as lighthouse
    keeps its best checkpoint by validation mAP. ``history``: (epoch, scores) per epoch."""

    def __init__(self, val: list[MomentExample], clip_length: float, metric: str = "mAP/avg"):
        self.val, self.clip_length, self.metric = val, clip_length, metric
        self.best: tuple[float, int, dict[str, torch.Tensor]] | None = None
        self.history: list[tuple[int, dict[str, float]]] = []

    def on_train_epoch_end(self, trainer: L.Trainer, module: "MomentHeadModule") -> None:
        from earshot.moments.metrics import score_moments

        model = module.scored
        head = MomentHead(model, module.cfg.features)
        was = model.training
        preds = {e.qid: head.predict_features(e.audio, [e.text], sims=None if e.sim is None else [e.sim])[0]
                 for e in self.val}
        model.train(was)
        scores = score_moments({e.qid: [list(w) for w in e.windows] for e in self.val}, preds)
        epoch = trainer.current_epoch
        self.history.append((epoch, scores))
        module.log(f"val/{self.metric}", scores[self.metric], rank_zero_only=True)
        if self.best is None or scores[self.metric] > self.best[0]:
            state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            self.best = (scores[self.metric], epoch, state)

    def on_train_end(self, trainer: L.Trainer, module: "MomentHeadModule") -> None:
        if self.best is not None:
            module.qddetr.load_state_dict(self.best[2])


def fit_moment_head(cfg: MomentTrainConfig, train: list[MomentExample], val: list[MomentExample] | None = None,
                    progress: bool = False, callbacks: Sequence[L.Callback] = ()) -> MomentHead:
    """Train a head on feature examples (see :func:`earshot.moments.dataset.build_examples`);
    returns it in eval mode with ``cfg.features`` as its recipe (not yet saved). With ``val``
    and ``cfg.keep_best``, the weights of the epoch with the best validation mAP/avg."""
    if not train:
        from earshot.errors import DataError

        raise DataError("no training examples")
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    module = MomentHeadModule(cfg)
    keep = [KeepBestOnValidation(val, cfg.clip_length)] if val and cfg.keep_best else []
    # QD-DETR carries parameters no loss reaches (lighthouse's unused text positions; the
    # saliency projections when lw_saliency is 0), which plain DDP refuses
    strategy = "ddp_find_unused_parameters_true" if cfg.devices > 1 else "auto"
    trainer = L.Trainer(max_epochs=cfg.n_epoch, accelerator=cfg.accelerator, devices=cfg.devices, strategy=strategy,
                        precision=cfg.precision, gradient_clip_val=cfg.optim.grad_clip,
                        logger=False, enable_checkpointing=False, enable_progress_bar=progress,
                        enable_model_summary=False, callbacks=keep + list(callbacks),  # validation scored before a callback prints the epoch
                        num_sanity_val_steps=0, deterministic=True, use_distributed_sampler=False)
    # one process on the CPU: the "heads" thread policy (earshot.threads). Measured with py-spy /
    # cProfile on the demo head (batch 16, 60 windows, 2 shared cores): 8.6 s per training step on
    # torch's default 2 threads against 2.0 s on one (every kernel waits at OpenMP's barrier for a
    # thread whose core another process holds); the kernels are (32 x 61 x 256) blocks
    cpu = cfg.devices <= 1 and (cfg.accelerator == "cpu" or (cfg.accelerator == "auto" and not torch.cuda.is_available()))
    with use_threads("heads") if cpu else contextlib.nullcontext():
        trainer.fit(module, _loader(train, cfg, True, cfg.seed),
                    _loader(val, cfg, False, cfg.seed + 1) if val else None)
    if module.ema is not None and not keep:  # no validation: the final average
        module.qddetr.load_state_dict(module.ema.module.state_dict())
    head = MomentHead(module.qddetr.eval().float(), cfg.features)
    head.validation = keep[0].history if keep else []  # (epoch, scores) per epoch
    return head


def train_moment_head(cfg: MomentTrainConfig, progress: bool = False, retriever: Any | None = None,
                      log=print) -> tuple[MomentHead, dict[str, float] | None]:
    """Read the data, compute (cached) features with ``cfg.features.retriever``'s towers, train,
    save the head to ``cfg.out_dir`` and score it on the validation data when given.
    Returns ``(head, validation scores or None)``."""
    import json

    from earshot.models.inference import prepare_for_inference
    from earshot.loading.retriever import load_retriever
    from earshot.moments.data import read_moments, windows_by_qid
    from earshot.moments.dataset import build_examples
    from earshot.moments.metrics import score_moments
    from earshot.moments.predict import predict_moments

    if retriever is None:
        retriever = prepare_for_inference(load_retriever(cfg.features.retriever), "fp32")
    bad = dict(on_bad_window=cfg.data.on_bad_window, report=lambda m: log(f"note: {m}"))
    train_recs = read_moments(cfg.data.train, cfg.data.train_audio, **bad)
    val_recs = read_moments(cfg.data.val, cfg.data.val_audio, **bad) if cfg.data.val else []
    log(f"features: {len(train_recs)} training recordings, {len(val_recs)} validation recordings")
    train = build_examples(retriever, train_recs, cfg.features, cfg.model.max_q_l)
    val = build_examples(retriever, val_recs, cfg.features, cfg.model.max_q_l) if val_recs else None
    log(f"training QD-DETR on {len(train)} queries, {cfg.n_epoch} epochs")
    head = fit_moment_head(cfg, train, val, progress)
    head._retriever = retriever
    out = Path(cfg.out_dir)
    head.save(out)
    scores = None
    if val_recs:
        rows = predict_moments(head, val_recs)
        gt = windows_by_qid([q for r in val_recs for q in r.queries])
        scores = score_moments(gt, {str(r["qid"]): r["pred_relevant_windows"] for r in rows})
        scores["n_queries"] = float(len(gt))
        (out / "val_scores.json").write_text(json.dumps(scores, indent=1))
    return head, scores
