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
    format: Literal["clotho", "audiocaps", "pairs", "wavcaps"] = "clotho"  # how to read `table`
    exclude: str | None = None  # list of clip ids left out as the table is read (count printed)
    audio_ext: str | None = None  # wavcaps only: audio file suffix (release: .flac; the DCASE 2025 baseline's copies: .mp3)

    def __post_init__(self) -> None:
        if self.audio_ext is not None:
            if self.format != "wavcaps":
                raise ConfigError(f"audio_ext: only a wavcaps table names its audio by id; "
                                  f"format {self.format!r} lists file names itself")
            if not self.audio_ext.startswith(".") or len(self.audio_ext) < 2:
                raise ConfigError(f"audio_ext: expected a suffix such as '.mp3', got {self.audio_ext!r}")


@dataclass(frozen=True)
class RandomSplitConfig:
    """Train and validation clips drawn at random from the union of ``tables`` (the AudioCLIP
    seed's 5719 / 200 split of its "development" clips). Whatever the union holds is training
    data: a union that includes an evaluation split leaks it (``earshot data check``)."""

    tables: list[SplitConfig]  # tables whose clips are pooled (clip ids must not collide)
    train_clips: int  # clips drawn for training
    val_clips: int  # clips drawn for validation (disjoint from the training clips)
    seed: int = 0  # the draw's seed (independent of the training seed)

    def __post_init__(self) -> None:
        if not self.tables or self.train_clips < 1 or self.val_clips < 1:
            raise ConfigError("random_split needs tables and positive train_clips and val_clips")


@dataclass(frozen=True)
class DataConfig:
    train: SplitConfig | None = None  # training split (None when random_split draws it)
    extra_train: list[SplitConfig] = field(default_factory=list)  # more training tables, joined
    # to `train` (the 2025 baseline: Clotho + AudioCaps + WavCaps sources)
    root: str = "."  # relative table and audio paths resolve under it (one --set moves a preset)
    val: SplitConfig | None = None  # validation split (monitored: val/t2a/mAP@10)
    clip_seconds: float = 10.0  # training crop length (AudioCLIP F1: 10, F2: 20)
    random_crop: bool = True  # random crops with end padding; False: deterministic start frames
    eval_seconds: float | None = None  # validation framing; None = whole clips, one at a time
    num_workers: int = 0  # decoding processes for data loaders
    cache_audio: bool = False  # decode + resample each clip once into a waveform cache (end to end)
    random_split: RandomSplitConfig | None = None  # draw train and val from a union of tables instead
    held_out: list[SplitConfig] = field(default_factory=list)  # evaluation tables this run must
    # not train on: training warns loudly about clips they share with the training table

    def __post_init__(self) -> None:
        if (self.train is None) == (self.random_split is None):
            raise ConfigError("data: give either train (+ val) or random_split, not both or neither")
        if self.random_split is not None and self.val is not None:
            raise ConfigError("data: random_split draws the validation clips; drop data.val")


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 1e-4  # Adam learning rate (both seeds)
    weight_decay: float = 0.0  # Adam weight decay
    scheduler: Literal["plateau", "cosine", "none"] = "plateau"  # plateau: on val mAP@10
    plateau_factor: float = 0.1  # ReduceLROnPlateau factor
    plateau_patience: int = 3  # ReduceLROnPlateau patience, epochs
    warmup_steps: int = 0  # linear warm-up from 0 (AudioCLIP seed uses warm-up)
    warmup_epochs: float = 0.0  # more warm-up, in epochs of steps (2025 baseline: 1)
    decay_epochs: float | None = None  # cosine reaches min_lr this many epochs after warm-up and
    # stays there (2025 baseline: 15 of 20); None: at the last step
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
class DistillConfig:
    teacher: str  # ensemble manifest (.json/.yaml) or checkpoint dir whose similarities are the targets
    clip_seconds: float | None = None  # teacher's framing of the training clips; None = whole clips
    cache_dir: str | None = None  # teacher embeddings; default the ensemble similarity cache


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
    local_loss: bool = False  # DDP: each rank's loss sees only its own part of the batch
    # (the old behaviour); default: embeddings and clip ids are gathered from all ranks
    deterministic: bool | None = None  # Lightning deterministic mode; None = on CPU only
    log_every_n_steps: int = 10  # how often step metrics (train/loss_step) are logged
    top_k: int = 5  # keep the k best checkpoints by val mAP@10 and average them (AudioCLIP: 5)
    save_every_n_steps: int | None = None  # also write last.ckpt every n steps (resume mid-epoch)
    init_from: str | None = None  # start from this earshot checkpoint (multi-stage training)
    out_dir: str = "runs/train"  # checkpoints, logs, final models
    stages: list[dict[str, Any]] = field(default_factory=list)  # run stages in order, each a
    # set of overrides of this config, each starting from the previous stage's averaged model
    distill: DistillConfig | None = None  # teacher of the loss "distill" (train/distill.py)

    def __post_init__(self) -> None:
        if self.epochs < 0 or self.batch_size < 2:
            raise ConfigError("epochs must be >= 0 and batch_size >= 2 (a batch needs negatives)")
        if self.top_k < 1:
            raise ConfigError("top_k must be >= 1")
        if (self.loss.name == "distill") != (self.distill is not None) and not self.stages:
            raise ConfigError("loss 'distill' and a 'distill:' section (its teacher) go together")

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
