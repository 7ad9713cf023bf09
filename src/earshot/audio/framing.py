"""Cutting waveforms to the fixed lengths a batch needs: random crops, fixed frames, windows.

Training takes a random ``length``-sample window of each clip (a cheap augmentation, and the
batch needs one shape); evaluation must be deterministic, so it takes a fixed frame; long
recordings are embedded window by window. Short clips are zero-padded AT THE END in every case,
so the audio always starts at sample 0 and a padded clip's content lines up with the unpadded one.
All functions act on the last axis, so ``(T,)`` and ``(C, T)`` both work.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from earshot.errors import EarshotError

__all__ = [
    "fixed_frame",
    "fixed_frame_seconds",
    "pad_end",
    "random_crop",
    "random_crop_seconds",
    "seconds_to_samples",
    "sliding_windows",
    "sliding_windows_seconds",
    "window_starts",
]


def _positive(name: str, value: int) -> int:
    if int(value) != value or value <= 0:
        raise EarshotError(f"{name} must be a positive whole number of samples, got {value!r}")
    return int(value)


def seconds_to_samples(seconds: float, sample_rate: int) -> int:
    """Nearest whole number of samples for ``seconds`` (10 s at 32 kHz: 320000)."""
    if seconds <= 0 or sample_rate <= 0:
        raise EarshotError(f"need positive seconds and sample_rate, got {seconds}, {sample_rate}")
    return _positive("length", max(1, round(seconds * sample_rate)))


def pad_end(wave: np.ndarray, length: int) -> np.ndarray:
    """Zero-pad the last axis at the end up to ``length`` (a copy; longer input is kept whole)."""
    short = length - wave.shape[-1]
    if short <= 0:
        return wave.copy()
    widths = [(0, 0)] * (wave.ndim - 1) + [(0, short)]
    return np.pad(wave, widths)


def random_crop(wave: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """A window of exactly ``length`` samples starting at a uniform random offset.

    Every start in ``[0, T - length]`` is equally likely; input shorter than ``length`` is
    zero-padded at the end (and no random number is drawn). Same generator state, same crop.
    """
    length = _positive("length", length)
    total = wave.shape[-1]
    if total <= length:
        return pad_end(wave, length)
    start = int(rng.integers(0, total - length + 1))
    return wave[..., start : start + length].copy()


def fixed_frame(
    wave: np.ndarray, length: int, mode: Literal["start", "center"] = "start"
) -> np.ndarray:
    """A deterministic ``length``-sample frame for evaluation: the first or the central one.

    Input shorter than ``length`` is zero-padded at the end whatever the mode.
    """
    length = _positive("length", length)
    if mode not in ("start", "center"):
        raise EarshotError(f"fixed_frame mode={mode!r}: expected 'start' or 'center'")
    total = wave.shape[-1]
    if total <= length:
        return pad_end(wave, length)
    start = 0 if mode == "start" else (total - length) // 2
    return wave[..., start : start + length].copy()


def window_starts(total: int, window: int, hop: int, pad_last: bool = True) -> list[int]:
    """Starts of the windows that cover ``total`` samples: 0, hop, 2·hop, ... while a window
    fits, then one more if samples remain, at the next hop (``pad_last``: zero-padded at the
    end) or at ``total - window`` (the last window aligned to the recording's end, as CLAP's
    and MS-CLAP's long-clip windows are). One window at 0 when the recording fits in one."""
    window = _positive("window", window)
    hop = _positive("hop", hop)
    if total <= window:
        return [0]
    starts = list(range(0, total - window + 1, hop))
    if starts[-1] + window < total:
        starts.append(starts[-1] + hop if pad_last else total - window)
    return starts


def sliding_windows(
    wave: np.ndarray, window: int, hop: int, pad_last: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Cover a long recording with windows: ``(windows (N, [C,] window), starts (N,))``.

    Windows start at 0, hop, 2·hop, ... while they fit. If samples remain after the last full
    window, one more window covers them: with ``pad_last`` it starts at the next hop and is
    zero-padded at the end; without, it is the last ``window`` samples (start ``T - window``), so
    it overlaps its neighbour more but holds no padding. A recording no longer than one window
    gives one window starting at 0. Every sample lies in at least one window.
    """
    window = _positive("window", window)
    hop = _positive("hop", hop)
    if hop > window:
        raise EarshotError(f"hop={hop} > window={window} would skip samples between windows")
    total = wave.shape[-1]
    if total <= window:
        return pad_end(wave, window)[None], np.zeros(1, dtype=np.int64)
    starts = window_starts(total, window, hop, pad_last)
    padded = pad_end(wave, starts[-1] + window)
    windows = np.stack([padded[..., s : s + window] for s in starts])
    return windows, np.asarray(starts, dtype=np.int64)


def random_crop_seconds(
    wave: np.ndarray, seconds: float, sample_rate: int, rng: np.random.Generator
) -> np.ndarray:
    """:func:`random_crop` with the length given in seconds."""
    return random_crop(wave, seconds_to_samples(seconds, sample_rate), rng)


def fixed_frame_seconds(
    wave: np.ndarray,
    seconds: float,
    sample_rate: int,
    mode: Literal["start", "center"] = "start",
) -> np.ndarray:
    """:func:`fixed_frame` with the length given in seconds."""
    return fixed_frame(wave, seconds_to_samples(seconds, sample_rate), mode)


def sliding_windows_seconds(
    wave: np.ndarray,
    window_s: float,
    hop_s: float,
    sample_rate: int,
    pad_last: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`sliding_windows` in seconds: returns the windows and their start times in seconds."""
    windows, starts = sliding_windows(
        wave,
        seconds_to_samples(window_s, sample_rate),
        seconds_to_samples(hop_s, sample_rate),
        pad_last,
    )
    return windows, starts / float(sample_rate)
