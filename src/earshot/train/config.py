"""The training config: one YAML file, typed, strict (unknown keys are errors)."""

from __future__ import annotations

from dataclasses import dataclass, field
import copy
from typing import Any, Literal

from earshot.config import apply_overrides, from_dict
from earshot.errors import ConfigError
from earshot.models.biencoder import BiEncoderConfig


@dataclass(frozen=True)
class SplitConfig:
    table: str  # caption table file (Clotho CSV, AudioCaps CSV, or pairs CSV/JSONL)
    audio_dir: str | None = None  # folder the table's audio names are relative to
    format: Literal["clotho", "audiocaps", "pairs"] = "clotho"  # how to read `table`


@dataclass(frozen=True)
class DataConfig:
    train: SplitConfig  # training split
    root: str = "."  # relative table and audio paths resolve under it (one --set moves a preset)
    val: SplitConfig | None = None  # validation split (monitored: val/t2a/mAP@10)
    clip_seconds: float = 10.0  # training crop length (AudioCLIP F1: 10, F2: 20)
    random_crop: bool = True  # random crops with end padding; False: deterministic start frames
    eval_seconds: float | None = None  # validation framing; None = whole clips, one at a time
    num_workers: int = 0  # decoding processes for data loaders
    cache_audio: bool = False  # decode + resample each clip once into a waveform cache (end to end)


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 1e-4  # Adam learning rate (both seeds)
    weight_decay: float = 0.0  # Adam weight decay
    scheduler: Literal["plateau", "cosine", "none"] = "plateau"  # plateau: on val mAP@10
    plateau_factor: float = 0.1  # ReduceLROnPlateau factor
    plateau_patience: int = 3  # ReduceLROnPlateau patience, epochs
    warmup_steps: int = 0  # linear warm-up from 0 (AudioCLIP seed uses warm-up)
    min_lr: float = 0.0  # cosine floor
    grad_clip: float | None = 2.0  # gradient-norm clipping; None = off


@dataclass(frozen=True)
class LossConfig:
    name: str = "infonce"  # a registered loss (earshot.losses.LOSSES)
    options: dict[str, Any] = field(default_factory=dict)  # its keyword options (margin, ...)


@dataclass(frozen=True)
class CacheConfig:
    enabled: bool = True  # a frozen tower runs once per item; its cached outputs feed the heads
    dir: str | None = None  # where; default <cache_dir>/towers
    audio_views: int = 1  # cached random-crop (+SpecAugment) views per clip for training
    specaugment: bool = False  # apply SpecAugment to the cached training views (PANNs towers)


@dataclass(frozen=True)
class TrainConfig:
    model: BiEncoderConfig  # the bi-encoder to train
    data: DataConfig  # what to train and validate on
    loss: LossConfig = field(default_factory=LossConfig)  # training objective
    optim: OptimConfig = field(default_factory=OptimConfig)  # optimiser and schedule
    cache: CacheConfig = field(default_factory=CacheConfig)  # frozen-tower output cache
    epochs: int = 20  # passes over the training captions; 0 = build (and load weights) only
    batch_size: int = 32  # captions per step
    seed: int = 0  # everything random derives from it
    precision: str = "auto"  # auto: bf16-mixed on a GPU, 32-true on CPU; or any Lightning value
    accelerator: str = "auto"  # Lightning accelerator
    devices: Any = "auto"  # Lightning devices (int, list or "auto"); >1 runs DDP
    num_nodes: int = 1  # Lightning multi-node DDP
    top_k: int = 5  # keep the k best checkpoints by val mAP@10 and average them (AudioCLIP: 5)
    save_every_n_steps: int | None = None  # also write last.ckpt every n steps (resume mid-epoch)
    init_from: str | None = None  # start from this earshot checkpoint (multi-stage training)
    out_dir: str = "runs/train"  # checkpoints, logs, final models
    stages: list[dict[str, Any]] = field(default_factory=list)  # run stages in order, each a
    # set of overrides of this config, each starting from the previous stage's averaged model

    def __post_init__(self) -> None:
        if self.epochs < 0 or self.batch_size < 2:
            raise ConfigError("epochs must be >= 0 and batch_size >= 2 (a batch needs negatives)")
        if self.top_k < 1:
            raise ConfigError("top_k must be >= 1")

    @property
    def audio_cached(self) -> bool:
        """The audio tower is frozen and its outputs come from the cache."""
        return self.cache.enabled and self.model.audio.train == "none"

    @property
    def text_cached(self) -> bool:
        """The text tower is frozen and its outputs come from the cache."""
        return self.cache.enabled and self.model.text.train == "none"


def load_config(data: dict[str, Any], overrides: list[str] = ()) -> TrainConfig:
    """A TrainConfig from YAML data plus ``key=value`` overrides (no Lightning import, so the
    CLI can check a config before paying for one)."""
    return from_dict(TrainConfig, apply_overrides(copy.deepcopy(data), list(overrides)), "config")
