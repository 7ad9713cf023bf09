"""Run a training config: build data and model, fit with Lightning, average the top-k.

Outputs under ``out_dir``: ``checkpoints/`` (Lightning, written atomically, ``last.ckpt`` for
``--resume``), ``logs/`` (CSV and TensorBoard), ``best/`` and ``averaged/`` (earshot
checkpoints that ``earshot evaluate`` and ``earshot index`` take).
"""

from __future__ import annotations

import copy
from dataclasses import replace
import json
import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader

from earshot.config import from_dict, to_dict
from earshot.data.dataset import CaptionDataset, ClipDataset, collate_clips
from earshot.errors import ConfigError
from earshot.models import checkpoint
from earshot.models.biencoder import BiEncoder, create_model
from earshot.threads import use_threads
from earshot.train.averaging import average_state_dicts, model_state_from_lightning
from earshot.train.checks import check_config, check_out_dir, clear_run
from earshot.train.config import TrainConfig, load_config  # noqa: F401  (load_config: public here too)
from earshot.train.data import (
    CaptionInputs,
    GlobalBatchSampler,
    ShardSampler,
    cached_audio_outputs,
    cached_text_outputs,
    collate_inputs,
    load_split,
    load_splits,
    resolve_split,
)
from earshot.train.module import MONITOR, RetrievalModule
from earshot.train.progress import KeepingCSVLogger, checkpoint_step, quiet_third_party
from earshot.utils import cache_dir


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoints written to a temporary file and renamed: a kill mid-write never
    leaves a truncated ``last.ckpt`` for ``--resume`` to choke on."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        torch.save(checkpoint, tmp)
        os.replace(tmp, path)


@quiet_third_party()
def train(cfg: TrainConfig, resume: bool = False, progress: bool = True,
          callbacks: list[L.Callback] | None = None, overwrite: bool = False) -> dict[str, Path]:
    """Train (every stage, in order) and return the paths of the final models.

    A folder that already holds a run is refused unless ``resume`` (continue it) or
    ``overwrite`` (delete it first) says what to do with it."""
    if not cfg.stages:
        return _train_stage(cfg, resume, progress, callbacks, overwrite)
    base = {k: v for k, v in to_dict(cfg).items() if k != "stages"}
    previous: Path | None = Path(cfg.init_from) if cfg.init_from else None
    result: dict[str, Path] = {}
    for i, stage in enumerate(cfg.stages):
        stage = dict(stage)
        name = str(stage.pop("name", f"stage{i + 1}"))
        data = _deep_merge(copy.deepcopy(base), stage)
        data["out_dir"] = str(Path(cfg.out_dir) / name)
        data["init_from"] = str(previous) if previous else None
        stage_cfg = from_dict(TrainConfig, data, f"stages[{i}]")
        result = _train_stage(stage_cfg, resume, progress, callbacks, overwrite)
        previous = result["averaged"]
    return result


SEED_METRICS = ("t2a/R@1", "t2a/R@5", "t2a/R@10", "t2a/mAP@10", "a2t/R@1", "a2t/R@5", "a2t/R@10", "a2t/mAP@10")


def train_seeds(cfg: TrainConfig, seeds: list[int], progress: bool = True,
                callbacks: list[L.Callback] | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Train one model per seed (``out_dir/seed<N>``), evaluate each final (averaged) model
    on the validation split, and return the per-seed metrics with their mean and standard
    deviation (sample std, ddof=1), as the seed reports give them over random seeds.

    The summary is also written to ``out_dir/seeds.json``. Under DDP every rank trains; rank 0
    evaluates and writes.
    """
    import numpy as np
    from lightning.pytorch.utilities import rank_zero_only

    if not seeds:
        raise ConfigError("--seeds: give at least one seed")
    if cfg.data.val is None and cfg.data.random_split is None:
        raise ConfigError("--seeds reports validation metrics: the config needs data.val")
    per_seed: dict[str, dict[str, float]] = {}
    for seed in seeds:
        run_cfg = replace(cfg, seed=seed, out_dir=str(Path(cfg.out_dir) / f"seed{seed}"))
        paths = train(run_cfg, progress=progress, callbacks=callbacks, overwrite=overwrite)
        if rank_zero_only.rank == 0:
            per_seed[str(seed)] = _validate_final(run_cfg, paths["averaged"], progress)
    if rank_zero_only.rank != 0:
        return {}
    values = {k: np.array([m[k] for m in per_seed.values()]) for k in SEED_METRICS}
    summary = {
        "seeds": per_seed,
        "mean": {k: float(v.mean()) for k, v in values.items()},
        "std": {k: float(v.std(ddof=1)) if len(v) > 1 else 0.0 for k, v in values.items()},
    }
    (Path(cfg.out_dir) / "seeds.json").write_text(json.dumps(summary, indent=2))
    return summary


def _validate_final(cfg: TrainConfig, model_dir: Path, progress: bool) -> dict[str, float]:
    """Validation metrics of a saved model, framed as training validated (``eval_seconds``)."""
    from earshot.evaluation import evaluate

    _, _, val_table, val_dir = load_splits(cfg.data)
    result = evaluate(checkpoint.load(model_dir), val_table, val_dir, clip_seconds=cfg.data.eval_seconds,
                      num_workers=cfg.data.num_workers, progress=progress)
    return {k: float(result.metrics[k]) for k in SEED_METRICS}


def _deep_merge(base: dict, over: dict) -> dict:
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _deep_merge(base[k], v)
        else:
            base[k] = v
    return base


def _train_stage(cfg: TrainConfig, resume: bool, progress: bool,
                 callbacks: list[L.Callback] | None, overwrite: bool = False) -> dict[str, Path]:
    out = Path(cfg.out_dir).expanduser()
    ckpt_dir = out / "checkpoints"
    last = ckpt_dir / "last.ckpt"
    check_out_dir(out, resume, overwrite)
    check_config(cfg)
    if overwrite:
        clear_run(out)
    # workers=True: Lightning seeds every loader worker from (seed, rank, worker)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    model = _initial_model(cfg)
    if cfg.epochs == 0:  # zero-shot: the (pretrained) model as it is
        untrained = {"source": "untrained", "eval_seconds": cfg.data.eval_seconds}
        paths = {"best": checkpoint.save(model, out / "best", untrained)}
        paths["averaged"] = checkpoint.save(model, out / "averaged", untrained)
        return paths
    train_loader, val_loader, val_table, val_text = _loaders(cfg, model, progress)
    module = RetrievalModule(model, cfg, val_table, val_text)
    if cfg.distill is not None:  # second stage: a teacher's in-batch similarities are the targets
        from earshot.train.distill import with_teacher

        train_loader, module = with_teacher(cfg, train_loader, module, progress)

    has_val = val_loader is not None
    best = ModelCheckpoint(
        dirpath=ckpt_dir, filename="epoch{epoch:03d}-map{val/t2a/mAP@10:.4f}" if has_val else "epoch{epoch:03d}",
        auto_insert_metric_name=False, monitor=MONITOR if has_val else "train/loss_epoch",
        mode="max" if has_val else "min", save_top_k=cfg.top_k, save_last=True,
    )
    cbs: list[L.Callback] = [best, LearningRateMonitor("epoch")]
    if cfg.save_every_n_steps:
        cbs.append(ModelCheckpoint(dirpath=ckpt_dir, filename="step", every_n_train_steps=cfg.save_every_n_steps,
                                   save_top_k=1, save_last=True, enable_version_counter=False))
    trainer = L.Trainer(
        max_epochs=cfg.epochs,
        accelerator=cfg.accelerator, devices=cfg.devices, num_nodes=cfg.num_nodes,
        precision=_precision(cfg), gradient_clip_val=cfg.optim.grad_clip,
        callbacks=cbs + list(callbacks or []), plugins=[AtomicCheckpointIO()],
        logger=[KeepingCSVLogger(out, name="logs", version="",
                                 resume_step=checkpoint_step(last) if resume and last.is_file() else None),
                TensorBoardLogger(out, name="logs", version="")],
        enable_progress_bar=progress, enable_model_summary=False, log_every_n_steps=cfg.log_every_n_steps,
        num_sanity_val_steps=0, deterministic=_deterministic(cfg),
        # earshot's own samplers split batches and validation across ranks (train/data.py)
        use_distributed_sampler=False,
    )
    # heads on cached tower outputs: batch-32 matmuls, one thread (see earshot.threads)
    with use_threads("heads" if cfg.audio_cached and cfg.text_cached else "train"):
        trainer.fit(module, train_loader, val_loader, ckpt_path=str(last) if resume else None)
    paths = {"best": out / "best", "averaged": out / "averaged"}
    if trainer.is_global_zero:  # the other ranks hold the same weights; one process writes
        paths = _finish(cfg, module.model, best, out)
    trainer.strategy.barrier("earshot-finish")  # a next stage reads averaged/ on every rank
    return paths


def _deterministic(cfg: TrainConfig) -> bool:
    """Lightning's deterministic mode where it is cheap: on CPU always (same seed, same
    machine, same metrics); on GPUs only when asked, since deterministic cuDNN/cuBLAS kernels
    can cost a lot of speed."""
    if cfg.deterministic is not None:
        return cfg.deterministic
    return cfg.accelerator == "cpu" or (cfg.accelerator == "auto" and not torch.cuda.is_available())


def _initial_model(cfg: TrainConfig) -> BiEncoder:
    if cfg.init_from:
        from earshot.loading.retriever import load_retriever  # checkpoint, CLAP folder or name

        start = load_retriever(cfg.init_from)
        model = create_model(cfg.model, load_weights=False)
        model.load_state_dict(start.state_dict(), strict=True)
        return model
    return create_model(cfg.model)


def _precision(cfg: TrainConfig) -> str:
    if cfg.precision != "auto":
        return cfg.precision
    return "bf16-mixed" if torch.cuda.is_available() else "32-true"


def _loaders(cfg: TrainConfig, model: BiEncoder, progress: bool):
    """(train loader, val loader or None, val table or None, cached val text outputs or None)."""
    d = cfg.data
    train_table, train_dir, val_table, val_dir = load_splits(d)
    _warn_leakage(d, train_table, train_dir, val_table, val_dir)
    root = Path(cfg.cache.dir) if cfg.cache.dir else cache_dir() / "towers"
    common = dict(seed=cfg.seed, num_workers=d.num_workers, progress=progress)

    audio_views = waves = None
    if cfg.audio_cached:
        audio_views = cached_audio_outputs(
            model, train_table, train_dir, root, seconds=d.clip_seconds, train=True,
            views=cfg.cache.audio_views, specaugment=cfg.cache.specaugment, **common)
    else:
        waves = CaptionDataset(train_table, train_dir, "waveform", model.sample_rate, d.clip_seconds,
                               train=d.random_crop, seed=cfg.seed,
                               cache=_waveform_cache(cfg, train_dir, train_table, model.sample_rate, progress))
    text = cached_text_outputs(model, train_table, root, progress) if cfg.text_cached else None
    inputs = CaptionInputs(train_table.caption_clip_indices(), audio_views, waves, text,
                           None if cfg.text_cached else train_table.captions(), cfg.seed)
    workers = 0 if cfg.audio_cached else d.num_workers
    # batch_size is the global batch: under DDP each rank loads its slice of it
    batches = GlobalBatchSampler(len(inputs), cfg.batch_size, cfg.seed, drop_last=len(inputs) > cfg.batch_size)
    train_loader = DataLoader(inputs, batch_sampler=batches, num_workers=workers, collate_fn=collate_inputs)
    if val_table is None:
        return train_loader, None, None, None

    val_text = cached_text_outputs(model, val_table, root, progress) if cfg.text_cached else None
    if cfg.audio_cached:
        va = cached_audio_outputs(model, val_table, val_dir, root, seconds=d.eval_seconds,
                                  views=1, train=False, **common)
        # (b, Da) batches of cached outputs; under DDP each rank takes a contiguous shard
        val_loader = DataLoader(va[:, 0], batch_size=256, sampler=ShardSampler(len(val_table)))
    else:
        vds = ClipDataset(val_table, val_dir, "waveform", model.sample_rate, d.eval_seconds,
                          cache=_waveform_cache(cfg, val_dir, val_table, model.sample_rate, progress))
        val_loader = DataLoader(vds, batch_size=16 if d.eval_seconds else 1, num_workers=d.num_workers,
                                sampler=ShardSampler(len(vds)), collate_fn=collate_clips)
    return train_loader, val_loader, val_table, val_text


def _warn_leakage(d, train_table, train_dir, val_table, val_dir) -> None:
    """Warn loudly when the training clips also appear in the validation or a held-out table
    (by file name or audio content): the scores would measure memory, not retrieval."""
    from lightning.pytorch.utilities import rank_zero_warn

    from earshot.data.leakage import find_overlap

    others = [(val_table, val_dir, "the validation table")] if val_table is not None else []
    for split in d.held_out:
        split = resolve_split(split, d.root)
        others.append((load_split(split), split.audio_dir, split.table))
    for table, audio_dir, name in others:
        overlap = find_overlap(train_table, train_dir, table, audio_dir)
        if overlap:
            rank_zero_warn("\n" + "!" * 72 + "\nDATA LEAKAGE: " + overlap.describe("the training table", name)
                           + "\nScores on that table are not comparable (earshot data check).\n" + "!" * 72)


def _waveform_cache(cfg: TrainConfig, audio_dir: str | None, table, sample_rate: int, progress: bool):
    """Whole clips decoded once at the model's rate. Clip ids are only unique within a folder,
    so each audio folder gets its own cache; runs at the same rate share it."""
    if not cfg.data.cache_audio:
        return None
    import hashlib

    from earshot.data.cache import FeatureCache

    base = Path(cfg.cache.dir) if cfg.cache.dir else cache_dir() / "features"
    folder = hashlib.sha256(str(Path(audio_dir or ".").resolve()).encode()).hexdigest()[:16]
    cache = FeatureCache(base / folder, "waveform", {"sample_rate": sample_rate, "clip_seconds": None})
    cache.build(table, audio_dir, progress=progress)
    return cache


def _finish(cfg: TrainConfig, model: BiEncoder, best: ModelCheckpoint, out: Path) -> dict[str, Path]:
    """Save the best single checkpoint and the average of the top-k as earshot checkpoints."""
    ranked = sorted(best.best_k_models.items(), key=lambda kv: float(kv[1]), reverse=best.mode == "max")
    paths = [p for p, _ in ranked] or [best.last_model_path]
    result: dict[str, Path] = {}
    own = model.state_dict()  # frozen towers are not in the Lightning files: take them from here
    states = [{**own, **model_state_from_lightning(p)} for p in paths]
    model.load_state_dict(states[0], strict=True)
    framing = {"eval_seconds": cfg.data.eval_seconds}  # how validation framed clips: evaluate's default
    result["best"] = checkpoint.save(model, out / "best", {"source": Path(paths[0]).name, **framing})
    model.load_state_dict(average_state_dicts(states), strict=True)
    result["averaged"] = checkpoint.save(model, out / "averaged", {"averaged": [Path(p).name for p in paths],
                                                                  **framing})
    summary = {"best": str(result["best"]), "averaged": str(result["averaged"]),
               "top_k": {Path(p).name: float(s) for p, s in ranked}}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return result
