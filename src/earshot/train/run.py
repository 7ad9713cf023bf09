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
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from torch.utils.data import DataLoader

from earshot.config import apply_overrides, from_dict, to_dict
from earshot.data.dataset import CaptionDataset, ClipDataset, collate_clips
from earshot.errors import ConfigError
from earshot.models import checkpoint
from earshot.models.biencoder import BiEncoder, create_model
from earshot.threads import use_threads
from earshot.train.averaging import average_state_dicts, model_state_from_lightning
from earshot.train.config import TrainConfig
from earshot.train.data import (
    CaptionInputs,
    cached_audio_outputs,
    cached_text_outputs,
    collate_inputs,
    load_split,
    resolve_split,
)
from earshot.train.module import MONITOR, RetrievalModule
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


def load_config(data: dict[str, Any], overrides: list[str] = ()) -> TrainConfig:
    """A TrainConfig from YAML data plus ``key=value`` overrides."""
    return from_dict(TrainConfig, apply_overrides(copy.deepcopy(data), list(overrides)), "config")


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True,
          callbacks: list[L.Callback] | None = None) -> dict[str, Path]:
    """Train (every stage, in order) and return the paths of the final models."""
    if not cfg.stages:
        return _train_stage(cfg, resume, progress, callbacks)
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
        result = _train_stage(stage_cfg, resume, progress, callbacks)
        previous = result["averaged"]
    return result


def _deep_merge(base: dict, over: dict) -> dict:
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _deep_merge(base[k], v)
        else:
            base[k] = v
    return base


def _train_stage(cfg: TrainConfig, resume: bool, progress: bool,
                 callbacks: list[L.Callback] | None) -> dict[str, Path]:
    out = Path(cfg.out_dir)
    ckpt_dir = out / "checkpoints"
    last = ckpt_dir / "last.ckpt"
    if resume and not last.is_file():
        raise ConfigError(f"--resume: no {last} to resume from")
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    model = _initial_model(cfg)
    if cfg.epochs == 0:  # zero-shot: the (pretrained) model as it is
        paths = {"best": checkpoint.save(model, out / "best", {"source": "untrained"})}
        paths["averaged"] = checkpoint.save(model, out / "averaged", {"source": "untrained"})
        return paths
    train_loader, val_loader, val_table, val_text = _loaders(cfg, model, progress)
    module = RetrievalModule(model, cfg, val_table, val_text)

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
        logger=[CSVLogger(out, name="logs", version=""), TensorBoardLogger(out, name="logs", version="")],
        enable_progress_bar=progress, enable_model_summary=False, log_every_n_steps=10,
        num_sanity_val_steps=0, deterministic=False,
    )
    # heads on cached tower outputs: batch-32 matmuls, one thread (see earshot.threads)
    with use_threads("heads" if cfg.audio_cached and cfg.text_cached else "train"):
        trainer.fit(module, train_loader, val_loader, ckpt_path=str(last) if resume else None)
    return _finish(cfg, module.model, best, out)


def _initial_model(cfg: TrainConfig) -> BiEncoder:
    if cfg.init_from:
        start = checkpoint.load(cfg.init_from)
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
    d = replace(d, train=resolve_split(d.train, d.root), val=resolve_split(d.val, d.root) if d.val else None)
    train_table = load_split(d.train)
    val_table = load_split(d.val) if d.val else None
    root = Path(cfg.cache.dir) if cfg.cache.dir else cache_dir() / "towers"
    common = dict(seed=cfg.seed, num_workers=d.num_workers, progress=progress)

    audio_views = waves = None
    if cfg.audio_cached:
        audio_views = cached_audio_outputs(
            model, train_table, d.train.audio_dir, root, seconds=d.clip_seconds, train=True,
            views=cfg.cache.audio_views, specaugment=cfg.cache.specaugment, **common)
    else:
        waves = CaptionDataset(train_table, d.train.audio_dir, "waveform", model.sample_rate, d.clip_seconds,
                               train=d.random_crop, seed=cfg.seed,
                               cache=_waveform_cache(cfg, d.train.audio_dir, train_table, model.sample_rate, progress))
    text = cached_text_outputs(model, train_table, root, progress) if cfg.text_cached else None
    inputs = CaptionInputs(train_table.caption_clip_indices(), audio_views, waves, text,
                           None if cfg.text_cached else train_table.captions(), cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    workers = 0 if cfg.audio_cached else d.num_workers
    train_loader = DataLoader(inputs, batch_size=cfg.batch_size, shuffle=True, generator=gen,
                              num_workers=workers, collate_fn=collate_inputs,
                              drop_last=len(inputs) > cfg.batch_size)
    if val_table is None:
        return train_loader, None, None, None

    val_text = cached_text_outputs(model, val_table, root, progress) if cfg.text_cached else None
    if cfg.audio_cached:
        va = cached_audio_outputs(model, val_table, d.val.audio_dir, root, seconds=d.eval_seconds,
                                  views=1, train=False, **common)
        val_loader = DataLoader(va[:, 0], batch_size=256)  # (b, Da) batches of cached outputs
    else:
        vds = ClipDataset(val_table, d.val.audio_dir, "waveform", model.sample_rate, d.eval_seconds,
                          cache=_waveform_cache(cfg, d.val.audio_dir, val_table, model.sample_rate, progress))
        val_loader = DataLoader(vds, batch_size=16 if d.eval_seconds else 1, num_workers=d.num_workers,
                                collate_fn=collate_clips)
    return train_loader, val_loader, val_table, val_text


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
    result["best"] = checkpoint.save(model, out / "best", {"source": Path(paths[0]).name})
    model.load_state_dict(average_state_dicts(states), strict=True)
    result["averaged"] = checkpoint.save(model, out / "averaged", {"averaged": [Path(p).name for p in paths]})
    summary = {"best": str(result["best"]), "averaged": str(result["averaged"]),
               "top_k": {Path(p).name: float(s) for p, s in ranked}}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return result
