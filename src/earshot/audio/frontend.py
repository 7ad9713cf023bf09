"""PANNs' log-mel front end as an nn.Module: torchlibrosa-exact features, computed with a real FFT.

PANNs (Kong et al., 2020) and every DCASE 6b baseline built on them compute their input features
with torchlibrosa, which evaluates the STFT as a 1-D convolution against a dense DFT matrix. That
is exact but slow (about 1 GFLOP per 10 s clip). Here the same features come from ``torch.fft.rfft`` on framed blocks:
the window, padding, power, mel filterbank (librosa's slaney scale and norm, rebuilt in numpy so
that ``src/`` never imports librosa) and dB conversion are the same, so a pretrained CNN sees the
numbers it was trained on. :func:`torchlibrosa_buffers` rebuilds torchlibrosa's own tensors so a
checkpoint converter can verify that a foreign checkpoint was trained with these settings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from earshot.errors import ConfigError, EarshotError
from earshot.threads import use_threads

__all__ = [
    "FrontendConfig",
    "LogMelFrontend",
    "hann_window",
    "hz_to_mel",
    "mel_filterbank",
    "mel_to_hz",
    "num_frames",
    "torchlibrosa_buffers",
]


@dataclass(frozen=True)
class FrontendConfig:
    sample_rate: int = 32000  # Hz the waveform arrives at
    n_fft: int = 1024  # FFT size
    win_length: int = 1024  # Hann window length
    hop_length: int = 320  # 10 ms at 32 kHz
    n_mels: int = 64  # mel bands
    fmin: float = 50.0  # lowest mel edge, Hz
    fmax: float = 14000.0  # highest mel edge, Hz
    center: bool = True  # pad n_fft // 2 on both sides (reflect), as librosa
    pad_mode: str = "reflect"
    amin: float = 1e-10  # floor inside log10
    ref: float = 1.0
    top_db: float | None = None  # PANNs applies no top-dB clipping

    def __post_init__(self) -> None:
        # Checked here so a bad YAML preset fails when it is read, not deep inside torch.stft.
        def bad(field: str, why: str) -> ConfigError:
            return ConfigError(f"FrontendConfig.{field}={getattr(self, field)!r}: {why}")

        for field in ("sample_rate", "n_fft", "win_length", "hop_length", "n_mels"):
            if getattr(self, field) <= 0:
                raise bad(field, "must be positive")
        if self.win_length > self.n_fft:
            raise bad("win_length", f"must not exceed n_fft={self.n_fft}")
        if not 0.0 <= self.fmin < self.fmax:
            raise bad("fmin", f"need 0 <= fmin < fmax={self.fmax}")
        if self.fmax > self.sample_rate / 2:
            raise bad("fmax", f"above the Nyquist frequency {self.sample_rate / 2} Hz")
        if self.pad_mode not in ("reflect", "constant"):
            raise bad("pad_mode", "must be 'reflect' or 'constant' (torchlibrosa's choices)")
        if self.amin <= 0:
            raise bad("amin", "must be positive (it is the floor inside log10)")
        if self.ref <= 0:
            raise bad("ref", "must be positive")
        if self.top_db is not None and self.top_db < 0:
            raise bad("top_db", "must be non-negative or None")

    @property
    def n_freq(self) -> int:
        """Number of one-sided STFT bins, ``n_fft // 2 + 1``."""
        return self.n_fft // 2 + 1


# --- mel scale (librosa's "slaney" / Auditory Toolbox scale unless htk=True) -----------------

_F_SP = 200.0 / 3  # Hz per mel in the linear region
_MIN_LOG_HZ = 1000.0  # start of the log region
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = math.log(6.4) / 27.0


def hz_to_mel(freqs: np.ndarray | float, htk: bool = False) -> np.ndarray:
    """Hz to mel: slaney (linear below 1 kHz, logarithmic above) or HTK (2595·log10(1 + f/700))."""
    f = np.asarray(freqs, dtype=np.float64)
    if htk:
        return 2595.0 * np.log10(1.0 + f / 700.0)
    mels = f / _F_SP
    log_region = f >= _MIN_LOG_HZ
    # np.maximum keeps log() quiet for the entries np.where discards.
    logs = _MIN_LOG_MEL + np.log(np.maximum(f, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP
    return np.where(log_region, logs, mels)


def mel_to_hz(mels: np.ndarray | float, htk: bool = False) -> np.ndarray:
    """The inverse of :func:`hz_to_mel`."""
    m = np.asarray(mels, dtype=np.float64)
    if htk:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    freqs = _F_SP * m
    logs = _MIN_LOG_HZ * np.exp(_LOGSTEP * (m - _MIN_LOG_MEL))
    return np.where(m >= _MIN_LOG_MEL, logs, freqs)


def mel_filterbank(
    sample_rate: int,
    n_fft: int,
    n_mels: int,
    fmin: float = 0.0,
    fmax: float | None = None,
    htk: bool = False,
    norm: str | None = "slaney",
) -> np.ndarray:
    """Triangular mel filters, shape ``(n_mels, n_fft // 2 + 1)``, float32.

    Matches ``librosa.filters.mel`` (defaults: slaney scale, slaney area normalisation),
    including its float32 rounding, so PANNs checkpoints' stored ``melW`` compares exactly.
    """
    if fmax is None:
        fmax = sample_rate / 2.0
    if norm not in (None, "slaney"):
        raise ConfigError(f"mel norm={norm!r}: expected 'slaney' or None")
    fft_freqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sample_rate)  # (n_freq,)
    # n_mels + 2 edges: band i rises from edge i to i+1 and falls to i+2.
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin, htk), hz_to_mel(fmax, htk), n_mels + 2), htk)
    widths = np.diff(edges)  # (n_mels + 1,)
    ramps = edges[:, None] - fft_freqs[None, :]  # (n_mels + 2, n_freq)
    rising = -ramps[:n_mels] / widths[:n_mels, None]
    falling = ramps[2:] / widths[1:, None]
    # librosa stores the triangles in float32 first and normalises in place; do the same so the
    # result is bit-identical, not merely close.
    weights = np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)
    if norm == "slaney":
        # Each triangle gets unit area in Hz, so wide high bands are not louder than narrow ones.
        weights *= (2.0 / (edges[2:] - edges[:n_mels]))[:, None]
    return weights


def hann_window(win_length: int) -> np.ndarray:
    """Periodic ("fftbins") Hann window in float64, as scipy/librosa build it for an STFT."""
    # scipy evaluates 0.5 + 0.5·cos over linspace(-pi, pi, N + 1) and drops the last point.
    phase = np.linspace(-np.pi, np.pi, win_length + 1)[:-1]
    return 0.5 + 0.5 * np.cos(phase)


def _padded_window(cfg: FrontendConfig) -> np.ndarray:
    """The Hann window centred in ``n_fft`` samples (zeros either side when win_length < n_fft)."""
    window = np.zeros(cfg.n_fft, dtype=np.float64)
    left = (cfg.n_fft - cfg.win_length) // 2
    window[left : left + cfg.win_length] = hann_window(cfg.win_length)
    return window


def num_frames(num_samples: int, cfg: FrontendConfig = FrontendConfig()) -> int:
    """Frames the front end yields for ``num_samples`` samples (1001 for 10 s at 32 kHz)."""
    if cfg.center:
        return 1 + num_samples // cfg.hop_length
    return 1 + (num_samples - cfg.n_fft) // cfg.hop_length


def torchlibrosa_buffers(cfg: FrontendConfig = FrontendConfig()) -> dict[str, Tensor]:
    """torchlibrosa's fixed tensors for ``cfg``, keyed as they appear in a PANNs checkpoint.

    ``spectrogram_extractor.stft.conv_real.weight`` / ``conv_imag.weight`` are the windowed DFT
    kernels, shape ``(n_fft // 2 + 1, 1, n_fft)``; ``logmel_extractor.melW`` is the filterbank,
    shape ``(n_fft // 2 + 1, n_mels)``. A converter compares a checkpoint's copies with these to
    prove the checkpoint expects our features, then drops them (our front end needs no weights).
    """
    n = np.arange(cfg.n_fft)
    # Same arithmetic as torchlibrosa (omega ** (n·k) in complex128) so the float32 values agree
    # to the last bit, not just to rounding.
    omega = np.exp(-2 * np.pi * 1j / cfg.n_fft)
    dft = np.power(omega, n[:, None] * n[None, : cfg.n_freq])  # (n_fft, n_freq)
    kernels = (dft * _padded_window(cfg)[:, None]).T  # (n_freq, n_fft)
    mel = mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.fmin, cfg.fmax)
    return {
        "spectrogram_extractor.stft.conv_real.weight": torch.tensor(
            np.real(kernels), dtype=torch.float32
        )[:, None, :],
        "spectrogram_extractor.stft.conv_imag.weight": torch.tensor(
            np.imag(kernels), dtype=torch.float32
        )[:, None, :],
        "logmel_extractor.melW": torch.from_numpy(np.ascontiguousarray(mel.T)),
    }


_CPU_BLOCK_FRAMES = 256  # frames per FFT block on CPU (see LogMelFrontend._mel_power)


class LogMelFrontend(nn.Module):
    """Waveform ``(B, T)`` at ``cfg.sample_rate`` -> log-mel ``(B, frames, n_mels)`` in dB.

    Numerically the features of torchlibrosa's ``Spectrogram`` + ``LogmelFilterBank`` as PANNs
    configure them, but via a real FFT. The FFT runs in float64 by default: a float32 FFT's
    rounding error scales with the whole frame's energy, which puts bands 90-100 dB below the
    peak several millidecibels off (2.4e-3 dB on ``dcase2023_example.wav`` of the shared
    samples); in float64 they agree with a float64 librosa reference to ~1e-5 dB and the
    remaining difference to torchlibrosa is torchlibrosa's own float32 rounding. Everything after
    the FFT is float32 and exact enough: each bin's real and imaginary part is rounded once,
    squared (one more rounding) and summed with positive weights, so the relative error of a
    band's power stays ~1e-7 however quiet it is (1e-3 dB is 2.3e-4 relative).

    Speed on CPU comes from three choices (``benchmarks/bench_frontend.py`` measures them):
    frames are cut from the padded signal and transformed in blocks of ``_CPU_BLOCK_FRAMES`` so
    every intermediate stays in cache; bins above ``fmax`` and below ``fmin`` (weight zero in
    every mel band) are never squared or summed; and ``|X|^2 @ melW`` is one float32 matmul on
    the interleaved (re, im) pairs against ``melW`` with each row repeated, which sums the two
    squares inside the matmul instead of in a separate strided pass over complex numbers. It runs
    on the thread count :mod:`earshot.threads` picks for the front end (one, unless
    ``EARSHOT_THREADS`` says otherwise): its operations are too small to gain from a second
    thread and lose badly when that thread's core is busy.

    It has no trainable parameters and an empty state dict: ``melW`` is a non-persistent buffer
    (derived from ``cfg``; it follows ``.to(device)``), and autocast is switched off inside.
    """

    melW: Tensor

    def __init__(self, cfg: FrontendConfig = FrontendConfig(), fft_double: bool = True) -> None:
        """``fft_double``: run the FFT in float64 (see the class docstring); False trades the
        accuracy of very quiet bands for speed where float64 is slow (MPS, consumer GPUs)."""
        super().__init__()
        self.cfg = cfg
        self.fft_double = fft_double
        mel = mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.fmin, cfg.fmax)
        # A plain attribute, not a buffer, so .half()/.to(dtype) cannot round it; it is copied to
        # the input's device per call (n_fft values, negligible next to the signal).
        self.window = torch.from_numpy(_padded_window(cfg))  # (n_fft,) float64
        self.register_buffer(
            "melW", torch.from_numpy(np.ascontiguousarray(mel.T)), persistent=False
        )  # (n_freq, n_mels)
        # The bins some band weighs (the others are skipped) and melW over them with every row
        # twice, for the interleaved (re, im) squares: ``power @ melW == (re, im)^2 @ pairs``.
        used = np.flatnonzero(mel.any(axis=0))
        self._bins = (int(used[0]), int(used[-1]) + 1) if used.size else (0, 1)
        self._db_offset = 10.0 * math.log10(max(cfg.amin, cfg.ref))

    def _pair_weights(self, device: torch.device) -> Tensor:
        """``melW[lo:hi]`` with each row repeated: ``(2 * (hi - lo), n_mels)`` float32."""
        lo, hi = self._bins
        return self.melW[lo:hi].to(device=device, dtype=torch.float32).repeat_interleave(2, dim=0)

    def _frames(self, x: Tensor) -> Tensor:
        """``(b, T)`` -> overlapping frames ``(b, frames, n_fft)``, a view of the padded signal."""
        cfg = self.cfg
        if cfg.center:
            pad = cfg.n_fft // 2
            x = F.pad(x[:, None], (pad, pad), mode=cfg.pad_mode)[:, 0]  # (b, T + n_fft)
        return x.unfold(-1, cfg.n_fft, cfg.hop_length)  # (b, frames, n_fft)

    def _check_length(self, waveform: Tensor) -> None:
        cfg = self.cfg
        if cfg.center and cfg.pad_mode == "reflect" and waveform.shape[-1] <= cfg.n_fft // 2:
            raise EarshotError(
                f"waveform of {waveform.shape[-1]} samples is too short for reflect padding; "
                f"need more than {cfg.n_fft // 2} samples (pad or crop clips first)"
            )
        if not cfg.center and waveform.shape[-1] < cfg.n_fft:
            raise EarshotError(
                f"waveform of {waveform.shape[-1]} samples is shorter than n_fft={cfg.n_fft}"
            )

    def _fft_dtype(self, device: torch.device) -> torch.dtype:
        double = self.fft_double and device.type != "mps"  # MPS has no float64
        return torch.float64 if double else torch.float32

    def power_spectrogram(self, waveform: Tensor) -> Tensor:
        """|STFT|^2 as float32, ``(B, T) -> (B, frames, n_fft // 2 + 1)`` (all bins; the
        forward pass itself never forms this tensor)."""
        self._check_length(waveform)
        dtype = self._fft_dtype(waveform.device)
        # The input is rounded to float32 first, as torchlibrosa sees it.
        frames = self._frames(waveform.to(torch.float32).to(dtype))  # (B, frames, n_fft)
        spec = torch.fft.rfft(frames * self.window.to(frames), dim=-1)  # (B, frames, n_freq)
        return torch.view_as_real(spec).to(torch.float32).square().sum(-1)  # (B, frames, n_freq)

    def _mel_power(self, x: Tensor) -> Tensor:
        """Mel-band power ``(B, T) -> (B, frames, n_mels)`` float32 (see the class docstring).

        On CPU one clip and ``_CPU_BLOCK_FRAMES`` frames at a time: a whole float64 batch of
        10 s clips is 8 MiB of frames per clip and runs ~2x slower out of cache; accelerators
        take the whole batch in one go.
        """
        dtype = self._fft_dtype(x.device)
        lo, hi = self._bins
        pairs = self._pair_weights(x.device)  # (2 * (hi - lo), n_mels)
        window = self.window.to(device=x.device, dtype=dtype)  # (n_fft,)
        on_cpu = x.device.type == "cpu"
        rows = 1 if on_cpu else x.shape[0]
        out: Tensor | None = None
        for r in range(0, x.shape[0], rows):
            # The input is rounded to float32 first, as torchlibrosa sees it.
            frames = self._frames(x[r : r + rows].to(torch.float32).to(dtype))  # (b, F, n_fft)
            n = frames.shape[1]
            if out is None:
                out = torch.empty(x.shape[0], n, self.cfg.n_mels, device=x.device)
            block = _CPU_BLOCK_FRAMES if on_cpu else n
            for s in range(0, n, block):
                spec = torch.fft.rfft(frames[:, s : s + block] * window, dim=-1)  # (b, f, n_freq)
                ri = torch.view_as_real(spec[..., lo:hi]).to(torch.float32)  # (b, f, hi-lo, 2)
                ri = ri.square_().flatten(-2)  # (b, f, 2 * (hi - lo))
                torch.matmul(ri, pairs, out=out[r : r + rows, s : s + block])  # (b, f, n_mels)
        assert out is not None
        return out

    def power_to_db(self, mel: Tensor) -> Tensor:
        """librosa's power_to_db: 10·log10(max(x, amin)) - 10·log10(max(amin, ref)), top_db clip.

        As in torchlibrosa, top_db clips relative to the maximum of the whole batch.
        """
        db = 10.0 * torch.log10(torch.clamp(mel, min=self.cfg.amin)) - self._db_offset
        if self.cfg.top_db is not None:
            db = torch.clamp(db, min=db.max().item() - self.cfg.top_db)
        return db

    def forward(self, waveform: Tensor) -> Tensor:
        """Log-mel ``(B, T) -> (B, frames, n_mels)``; unbatched ``(T,) -> (frames, n_mels)``."""
        if waveform.dim() not in (1, 2):
            raise EarshotError(
                "LogMelFrontend expects a (T,) or (B, T) waveform, "
                f"got shape {tuple(waveform.shape)}"
            )
        unbatched = waveform.dim() == 1
        x = waveform[None] if unbatched else waveform  # (B, T)
        self._check_length(x)
        # Powers reach ~1e5 and dB needs the small ones too: never let autocast pick float16.
        with torch.autocast(device_type=x.device.type, enabled=False), use_threads("frontend"):
            mel = self._mel_power(x)  # (B, frames, n_mels)
            out = self.power_to_db(mel)  # (B, frames, n_mels)
        return out[0] if unbatched else out

    def extra_repr(self) -> str:
        c = self.cfg
        return (
            f"sample_rate={c.sample_rate}, n_fft={c.n_fft}, hop={c.hop_length}, "
            f"n_mels={c.n_mels}, fmin={c.fmin}, fmax={c.fmax}"
        )
