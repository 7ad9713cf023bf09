"""LAION-CLAP's audio front end: the mel settings of ClapFeatureExtractor computed with
``torch.stft``, window padding, and the fusion crops (see ``clap.py`` for the reasons)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from earshot.errors import AudioError, ConfigError



@dataclass(frozen=True)
class ClapFrontendConfig:
    sample_rate: int = 48000  # Hz the waveform must arrive at (LAION trained at 48 kHz)
    n_fft: int = 1024  # FFT size = Hann window length (periodic window, as the extractor)
    hop_length: int = 480  # 10 ms at 48 kHz
    n_mels: int = 64  # mel bands
    fmin: float = 50.0  # lowest mel edge, Hz (LAION's value; the extractor's default is 0)
    fmax: float = 14000.0  # highest mel edge, Hz
    max_length_s: float = 10.0  # the model's window; longer clips are windowed or fused
    mel_scale: Literal["slaney", "htk"] = "slaney"  # slaney+slaney norm (unfused), htk+no norm (fused)
    # how short clips reach the window; "none": not at all, HTSAT stretches their log-mel to its
    # input (bicubic), as MS-CLAP's HTSATWrapper sees lighthouse's unpadded 1 s windows
    padding: Literal["repeatpad", "repeat", "pad", "none"] = "repeatpad"
    fusion: bool = False  # build the 4-channel fusion input (fused checkpoints only)
    window_hop_s: float = 5.0  # unfused, clip > window: hop between windows (mean-pooled)
    mel_sample_rate: int | None = None  # rate the mel filters assume; None = sample_rate (MS-CLAP 2023: 32000)
    laion_int16_roundtrip: bool = False  # quantise audio to int16 first, as laion_clap's numpy route (docs/CLAP.md)

    def __post_init__(self) -> None:
        if self.sample_rate <= 0 or self.n_fft <= 0 or self.hop_length <= 0 or self.n_mels <= 0:
            raise ConfigError("ClapFrontendConfig: sample_rate, n_fft, hop_length, n_mels must be positive")
        if not 0 <= self.fmin < self.fmax <= self.filter_rate / 2:
            raise ConfigError(f"ClapFrontendConfig: need 0 <= fmin < fmax <= Nyquist, got "
                              f"{self.fmin}, {self.fmax}")
        if self.max_length_s <= 0 or self.window_hop_s <= 0:
            raise ConfigError("ClapFrontendConfig: max_length_s and window_hop_s must be positive")

    @property
    def filter_rate(self) -> int:
        """The sample rate the mel filterbank is built for."""
        return self.mel_sample_rate or self.sample_rate

    @property
    def window_samples(self) -> int:
        return int(round(self.max_length_s * self.sample_rate))

    @classmethod
    def from_feature_extractor(cls, doc: Mapping[str, Any], fusion: bool) -> "ClapFrontendConfig":
        """Settings from a ``preprocessor_config.json`` (``ClapFeatureExtractor`` keys)."""
        truncation = doc.get("truncation", "fusion")
        return cls(sample_rate=int(doc.get("sampling_rate", 48000)),
                   n_fft=int(doc.get("fft_window_size", 1024)),
                   hop_length=int(doc.get("hop_length", 480)),
                   n_mels=int(doc.get("feature_size", 64)),
                   fmin=float(doc.get("frequency_min", 0.0)),
                   fmax=float(doc.get("frequency_max", 14000.0)),
                   max_length_s=float(doc.get("max_length_s", 10)),
                   mel_scale="htk" if truncation == "fusion" else "slaney",
                   padding=doc.get("padding", "repeatpad"), fusion=fusion)


class ClapLogMel(nn.Module):
    """Waveform ``(B, T)`` -> log-mel ``(B, frames, n_mels)`` in dB, as ClapFeatureExtractor.

    Same window (periodic Hann), reflect centring, power spectrum, filters (transformers'
    ``mel_filter_bank``, so the numbers are the extractor's own) and ``10·log10(max(x, 1e-10))``,
    computed in float32 with ``torch.stft`` instead of a float64 per-frame numpy loop.
    """

    def __init__(self, cfg: ClapFrontendConfig):
        super().__init__()
        from transformers.audio_utils import mel_filter_bank

        self.cfg = cfg
        slaney = cfg.mel_scale == "slaney"
        mel = mel_filter_bank(num_frequency_bins=cfg.n_fft // 2 + 1, num_mel_filters=cfg.n_mels,
                              min_frequency=cfg.fmin, max_frequency=cfg.fmax,
                              sampling_rate=cfg.filter_rate, norm="slaney" if slaney else None,
                              mel_scale=cfg.mel_scale)
        self.register_buffer("mel", torch.tensor(mel, dtype=torch.float32), persistent=False)
        self.register_buffer("window", torch.hann_window(cfg.n_fft, periodic=True), persistent=False)

    def forward(self, waveform: Tensor) -> Tensor:
        spec = torch.stft(waveform.float(), self.cfg.n_fft, self.cfg.hop_length, window=self.window,
                          center=True, pad_mode="reflect", return_complex=True)  # (B, F, frames)
        power = spec.real.square() + spec.imag.square()  # (B, F, frames)
        mel = torch.matmul(power.transpose(1, 2), self.mel)  # (B, frames, n_mels)
        return 10.0 * torch.log10(mel.clamp(min=1e-10))


def pad_to_window(wave: Tensor, length: int, padding: str) -> Tensor:
    """``(B, T)`` with ``T <= length`` -> ``(B, length)`` as ClapFeatureExtractor pads."""
    t = wave.shape[-1]
    if t == 0:
        raise AudioError("<waveform>", "empty waveform")
    if padding == "repeat":
        wave = wave.repeat(1, length // t + 1)[:, :length]
    elif padding == "repeatpad":
        wave = wave.repeat(1, length // t)
    return F.pad(wave, (0, length - wave.shape[-1]))


def int16_roundtrip(waveform: Tensor) -> Tensor:
    """laion_clap's ``int16_to_float32(float32_to_int16(x))`` (``training/data.py``), which its
    ``get_audio_embedding_from_filelist`` / ``_from_data`` apply before the model: clip to
    [-1, 1], ``x * 32767`` in float32 cast to int16 (numpy's ``astype`` truncates toward zero),
    then ``/ 32767`` in float64 (numpy promotes), rounded to float32."""
    q = (waveform.float().clamp(-1.0, 1.0) * 32767.0).to(torch.int16)
    return (q.double() / 32767.0).to(waveform.dtype if waveform.is_floating_point() else torch.float32)


def fusion_crop_starts(total_frames: int, chunk_frames: int) -> tuple[int, int, int]:
    """Front/middle/back crop starts of LAION's fusion input, each the middle of its third of
    the possible starts (LAION draws each at random within its third)."""
    thirds = np.array_split(np.arange(total_frames - chunk_frames + 1), 3)
    return tuple(int(t[len(t) // 2]) if len(t) else 0 for t in thirds)  # type: ignore[return-value]
