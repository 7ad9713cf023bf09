"""Torch datasets over a caption table: one item per caption (training) or per clip (encoding).

A training batch needs each caption with its clip's audio and the clip's index, so a loss can
tell captions of the same clip apart (they are not negatives of each other). Evaluation encodes
each clip once, hence the separate :class:`ClipDataset`.

Training crops are random but reproducible: the generator for item ``i`` in epoch ``e`` is seeded
with ``(seed, e, i)``, so the crops do not depend on worker count or iteration order.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal, NamedTuple, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from earshot.audio.framing import fixed_frame, random_crop, seconds_to_samples
from earshot.audio.frontend import num_frames
from earshot.audio.io import load_audio
from earshot.data.cache import FeatureCache
from earshot.data.records import CaptionTable, resolve_audio
from earshot.errors import ConfigError, DataError

Mode = Literal["waveform", "features"]


class CaptionItem(NamedTuple):
    """One caption with its clip's audio: ``audio`` is ``(T,)`` or ``(frames, n_mels)``."""

    audio: Tensor
    caption: str
    clip_index: int
    length: int  # samples (or frames) of real audio in ``audio``; the rest is crop padding


class CaptionBatch(NamedTuple):
    """A collated batch: audio ``(B, T)`` or ``(B, frames, n_mels)``, captions, clip indices."""

    audio: Tensor
    captions: list[str]
    clip_indices: Tensor  # int64
    lengths: Tensor  # (B,) int64: each row's true length before zero padding


class ClipItem(NamedTuple):
    """One clip's audio and its index in the table."""

    audio: Tensor
    clip_index: int
    length: int  # samples (or frames) of real audio in ``audio``; the rest is crop padding


class ClipBatch(NamedTuple):
    audio: Tensor  # (B, T) or (B, frames, n_mels)
    clip_indices: Tensor  # (B,) int64
    lengths: Tensor  # (B,) int64: each row's true length before zero padding


def _stack(arrays: Sequence[Tensor]) -> Tensor:
    shapes = {tuple(a.shape) for a in arrays}
    if len(shapes) > 1:
        raise DataError(f"cannot batch audio of different shapes {sorted(shapes)}; set "
                        "clip_seconds so clips are framed to one length, or use batch_size=1")
    return torch.stack(list(arrays))


def collate(items: Sequence[CaptionItem]) -> CaptionBatch:
    """Stack a list of :class:`CaptionItem` into a :class:`CaptionBatch` (for DataLoader)."""
    return CaptionBatch(
        audio=_stack([it.audio for it in items]),
        captions=[it.caption for it in items],
        clip_indices=torch.tensor([it.clip_index for it in items], dtype=torch.long),
        lengths=torch.tensor([it.length for it in items], dtype=torch.long),
    )


def collate_clips(items: Sequence[ClipItem]) -> ClipBatch:
    """Stack a list of :class:`ClipItem` into a :class:`ClipBatch` (for DataLoader)."""
    return ClipBatch(
        audio=_stack([it.audio for it in items]),
        clip_indices=torch.tensor([it.clip_index for it in items], dtype=torch.long),
        lengths=torch.tensor([it.length for it in items], dtype=torch.long),
    )


def _crop_frames(feats: np.ndarray, length: int, rng: np.random.Generator | None,
                 floor: float) -> np.ndarray:
    """``length`` frames of ``(frames, n_mels)`` log-mels: a random window, or the first ones.

    Short clips are padded with ``floor``, the dB value the front end gives silence, so padding
    means the same thing as the zero samples a waveform crop pads with.
    """
    n = feats.shape[0]
    if n < length:
        pad = np.full((length - n, feats.shape[1]), floor, dtype=feats.dtype)
        return np.concatenate([feats, pad], axis=0)
    start = int(rng.integers(0, n - length + 1)) if rng is not None else 0
    return feats[start : start + length]


class AudioSource:
    """Gets the array for clip ``i``: from the cache when given, else decoded from its file.

    Shared by both datasets so a cached and an uncached run frame clips identically.
    """

    def __init__(self, table: CaptionTable, audio_dir: str | Path | None, mode: Mode,
                 sample_rate: int, clip_seconds: float | None, cache: FeatureCache | None):
        if mode not in ("waveform", "features"):
            raise ConfigError(f"dataset mode must be 'waveform' or 'features', got {mode!r}")
        if clip_seconds is not None and clip_seconds <= 0:
            raise ConfigError(f"clip_seconds must be positive or None, got {clip_seconds}")
        want_kind = "waveform" if mode == "waveform" else "logmel"
        if mode == "features" and cache is None:
            raise ConfigError("mode='features' reads log-mels from a FeatureCache(kind='logmel'); "
                              "pass cache=")
        if cache is not None:
            if cache.kind != want_kind:
                raise ConfigError(f"mode={mode!r} needs a cache of kind {want_kind!r}, "
                                  f"got {cache.kind!r}")
            if cache.settings.sample_rate != sample_rate:
                raise ConfigError(f"cache sample_rate {cache.settings.sample_rate} != dataset "
                                  f"sample_rate {sample_rate}")
        self.table, self.audio_dir, self.mode = table, audio_dir, mode
        self.sample_rate, self.clip_seconds, self.cache = sample_rate, clip_seconds, cache
        self.length: int | None = None  # samples or frames per item; None = whole clip
        self.floor = 0.0
        if clip_seconds is not None:
            samples = seconds_to_samples(clip_seconds, sample_rate)
            if mode == "waveform":
                self.length = samples
            else:
                fe = cache.settings.frontend  # type: ignore[union-attr]
                self.length = num_frames(samples, fe)
                self.floor = 10.0 * math.log10(fe.amin) - 10.0 * math.log10(max(fe.amin, fe.ref))

    def array(self, clip_index: int, rng: np.random.Generator | None) -> Tensor:
        """Clip ``clip_index``'s audio, cropped or framed (zero-padded when short)."""
        return self.item(clip_index, rng)[0]

    def item(self, clip_index: int, rng: np.random.Generator | None) -> tuple[Tensor, int]:
        """(audio, true length): the array :meth:`array` gives and how many of its samples (or
        frames) are the clip's, the rest being padding. A model that needs a clip's duration
        (PaSST's segment rule) gets it from here, never from where trailing zeros begin."""
        clip = self.table[clip_index]
        if self.cache is not None:
            arr = np.asarray(self.cache.get(clip.clip_id))
        else:
            arr = load_audio(resolve_audio(clip, self.audio_dir), self.sample_rate, mono=True)
        true_length = int(arr.shape[0])
        if self.length is not None:
            true_length = min(true_length, self.length)
            if self.mode == "features":
                arr = _crop_frames(arr, self.length, rng, self.floor)
            elif rng is not None:
                arr = random_crop(arr, self.length, rng)
            else:
                arr = fixed_frame(arr, self.length)
        # Copy: the cache hands out read-only memory maps and torch wants writable memory.
        return torch.from_numpy(np.array(arr, dtype=np.float32, copy=True)), true_length


class CaptionDataset(Dataset[CaptionItem]):
    """One item per caption: ``(audio, caption, clip_index)``, in the table's query order.

    ``mode="waveform"`` yields ``(T,)`` waveforms at ``sample_rate`` (decoded from the files, or
    from a waveform :class:`FeatureCache`); ``mode="features"`` yields ``(frames, n_mels)`` log-mels
    from a log-mel cache. With ``train=True`` each item is a random ``clip_seconds`` crop seeded
    by ``(seed, epoch, index)`` (call :meth:`set_epoch` each epoch); otherwise the deterministic
    framing (the clip's start, zero-padded). ``clip_seconds=None`` yields whole clips.
    """

    def __init__(
        self,
        table: CaptionTable,
        audio_dir: str | Path | None = None,
        mode: Mode = "waveform",
        sample_rate: int = 32000,
        clip_seconds: float | None = 10.0,
        train: bool = True,
        seed: int = 0,
        cache: FeatureCache | None = None,
    ):
        self.table = table
        self.train = train
        self.seed = seed
        self.epoch = 0
        self._source = AudioSource(table, audio_dir, mode, sample_rate, clip_seconds, cache)

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose crops to draw (with persistent workers, before they start)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.table.num_captions

    def rng(self, index: int) -> np.random.Generator | None:
        """The generator for item ``index`` this epoch (None when not training)."""
        if not self.train:
            return None
        return np.random.default_rng([self.seed, self.epoch, index])

    def __getitem__(self, index: int) -> CaptionItem:
        if not 0 <= index < len(self):
            raise IndexError(f"caption index {index} out of range 0..{len(self) - 1}")
        clip_index, k = self.table.caption_position(index)
        audio, length = self._source.item(clip_index, self.rng(index))
        return CaptionItem(audio, self.table[clip_index].captions[k], clip_index, length)


class ClipDataset(Dataset[ClipItem]):
    """One item per clip, deterministically framed: what encoding an evaluation corpus needs.

    Same sources as :class:`CaptionDataset`; ``clip_seconds=None`` yields whole clips (encode with
    ``batch_size=1`` then, or the lengths will not stack).
    """

    def __init__(
        self,
        table: CaptionTable,
        audio_dir: str | Path | None = None,
        mode: Mode = "waveform",
        sample_rate: int = 32000,
        clip_seconds: float | None = 10.0,
        cache: FeatureCache | None = None,
    ):
        self.table = table
        self._source = AudioSource(table, audio_dir, mode, sample_rate, clip_seconds, cache)

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, index: int) -> ClipItem:
        if not 0 <= index < len(self):
            raise IndexError(f"clip index {index} out of range 0..{len(self) - 1}")
        audio, length = self._source.item(index, None)
        return ClipItem(audio, index, length)
