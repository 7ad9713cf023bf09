"""Reading and writing audio files: decode, mix down, resample, and refuse bad files loudly.

Datasets for audio retrieval (Clotho, AudioCaps) arrive as WAV/FLAC/OGG/MP3 at 44.1 or 48 kHz,
while PANNs expect 32 kHz mono. Everything goes through :func:`load_audio`, so every model sees
audio decoded and resampled the same way (soundfile + soxr), and a broken file raises an
:class:`~earshot.errors.AudioError` naming it instead of training silently on zeros or NaN.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import soundfile as sf
import soxr

from earshot.errors import AudioError, EarshotError
from earshot.utils import atomic_write

__all__ = ["AudioInfo", "SUPPORTED_SUFFIXES", "audio_info", "load_audio", "resample", "save_audio"]

# Suffix -> soundfile format name. Files are recognised by suffix so that a stray ".txt" or
# ".xyz" in a dataset folder is reported as such rather than as "corrupt audio".
_READ_FORMATS = {
    ".wav": "WAV",
    ".wave": "WAV",
    ".flac": "FLAC",
    ".ogg": "OGG",
    ".oga": "OGG",
    ".mp3": "MP3",
    ".aif": "AIFF",
    ".aiff": "AIFF",
}
_WRITE_FORMATS = {".wav": "WAV", ".wave": "WAV", ".flac": "FLAC", ".ogg": "OGG", ".oga": "OGG"}
SUPPORTED_SUFFIXES: tuple[str, ...] = tuple(_READ_FORMATS)

Quality = Literal["QQ", "LQ", "MQ", "HQ", "VHQ"]


@dataclass(frozen=True)
class AudioInfo:
    """What a file holds, read from its header without decoding the samples."""

    frames: int  # samples per channel
    sample_rate: int  # Hz
    channels: int
    duration: float  # seconds, frames / sample_rate
    format: str  # soundfile's format name, e.g. "WAV", "FLAC", "OGG", "MP3"


def _format_for(path: Path, table: dict[str, str], action: str) -> str:
    fmt = table.get(path.suffix.lower())
    if fmt is None:
        known = ", ".join(sorted({s for s in table}))
        raise AudioError(
            path, f"unsupported audio format {path.suffix or '(no suffix)'!r} for {action}; "
            f"supported: {known}"
        )
    return fmt


def _check_readable(path: Path, whole_wav: bool = True) -> str:
    if not path.exists():
        raise AudioError(path, "no such file")
    if not path.is_file():
        raise AudioError(path, "not a regular file (a directory?)")
    fmt = _format_for(path, _READ_FORMATS, "reading")
    if fmt == "WAV" and whole_wav:
        _check_wav_complete(path)
    return fmt


def check_readable(path: str | Path, whole_wav: bool = True) -> str:
    """Raise :class:`AudioError` unless ``path`` is a regular file of a readable format (and,
    for WAV with ``whole_wav``, not truncated); return soundfile's format name. Reads only
    headers. The indexer passes ``whole_wav=False``: it indexes what a truncated WAV holds and
    says so (see :func:`wav_data_shortfall`)."""
    return _check_readable(Path(path), whole_wav)


def wav_data_shortfall(path: str | Path) -> tuple[int, int] | None:
    """(bytes the data chunk declares, bytes present) of a RIFF/WAVE file whose data chunk claims
    more than the file holds (0xFFFFFFFF or 0 included: a streaming writer's placeholder), else
    None (whole, or not a RIFF WAV)."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None  # RF64/W64 or not RIFF at all: leave the verdict to libsndfile
        size = path.stat().st_size
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk_id, chunk_size = struct.unpack("<4sI", f.read(8))
            if chunk_id == b"data":
                present = size - pos - 8
                if pos + 8 + chunk_size > size or (chunk_size == 0 and present > 0):
                    return chunk_size, present
                return None
            pos += 8 + chunk_size + (chunk_size & 1)  # chunks are word-aligned
    return None


def _check_wav_complete(path: Path) -> None:
    """Raise if a RIFF/WAVE file's data chunk claims more bytes than the file holds.

    libsndfile quietly shortens a truncated WAV to what is present, which would turn an
    interrupted download into a silently shorter clip; so the chunk sizes are checked here.
    0 and 0xFFFFFFFF are what streaming writers leave when the length is unknown: allowed.
    """
    try:
        short = wav_data_shortfall(path)
    except OSError as e:
        raise AudioError(path, f"cannot read file: {e.strerror or e}") from None
    if short is not None and short[0] not in (0, 0xFFFFFFFF):
        raise AudioError(path, f"truncated WAV: header declares {short[0]} bytes of audio "
                               f"but only {short[1]} are present")


def audio_info(path: str | Path) -> AudioInfo:
    """Frames, sample rate, channels, duration and format of an audio file (header only)."""
    path = Path(path)
    _check_readable(path)
    try:
        info = sf.info(str(path))
    except (sf.SoundFileError, RuntimeError) as e:
        raise AudioError(path, f"cannot decode: not a valid audio file or corrupt ({e})") from None
    duration = info.frames / info.samplerate if info.samplerate else 0.0
    return AudioInfo(
        frames=int(info.frames),
        sample_rate=int(info.samplerate),
        channels=int(info.channels),
        duration=float(duration),
        format=str(info.format),
    )


def resample(
    wave: np.ndarray, orig_rate: int, new_rate: int, quality: Quality = "HQ"
) -> np.ndarray:
    """Band-limited resampling with soxr along the last axis; ``(T,)`` or ``(C, T)``, float32."""
    if orig_rate <= 0 or new_rate <= 0:
        raise EarshotError(f"sample rates must be positive, got {orig_rate} -> {new_rate}")
    wave = np.asarray(wave, dtype=np.float32)
    if orig_rate == new_rate:
        return wave
    if wave.ndim == 1:
        return soxr.resample(wave, orig_rate, new_rate, quality=quality).astype(np.float32)
    # soxr wants (frames, channels)
    out = soxr.resample(np.ascontiguousarray(wave.T), orig_rate, new_rate, quality=quality)
    return np.ascontiguousarray(out.T, dtype=np.float32)


def load_audio(
    path: str | Path,
    sample_rate: int | None,
    mono: bool = True,
    quality: Quality = "HQ",
) -> np.ndarray:
    """Decode an audio file to float32 in [-1, 1]: ``(T,)`` if ``mono`` else ``(C, T)``.

    Multi-channel audio is mixed down by averaging the channels. ``sample_rate=None`` keeps the
    file's own rate; otherwise soxr resamples (``quality`` "HQ", or "VHQ" for the strictest
    passband). Empty, truncated, corrupt, missing, non-finite and unsupported files raise
    :class:`AudioError` with the reason.
    """
    path = Path(path)
    _check_readable(path)
    if sample_rate is not None and sample_rate <= 0:
        raise AudioError(path, f"requested sample_rate={sample_rate} must be positive")
    try:
        with sf.SoundFile(str(path)) as f:
            declared = f.frames
            rate = f.samplerate
            data = f.read(dtype="float32", always_2d=True)  # (T, C)
    except (sf.SoundFileError, RuntimeError) as e:
        raise AudioError(path, f"cannot decode: not a valid audio file or corrupt ({e})") from None
    if data.shape[0] == 0:
        raise AudioError(path, "contains no audio (0 frames decoded; empty or truncated file)")
    if data.shape[0] < declared:
        raise AudioError(
            path, f"truncated: header declares {declared} frames but only {data.shape[0]} decode"
        )
    if not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise AudioError(path, f"contains {bad} non-finite samples (NaN or inf)")
    wave = data.mean(axis=1) if mono else np.ascontiguousarray(data.T)  # (T,) or (C, T)
    if sample_rate is not None and sample_rate != rate:
        wave = resample(wave, rate, sample_rate, quality)
    return np.ascontiguousarray(wave, dtype=np.float32)


def save_audio(
    path: str | Path, wave: np.ndarray, sample_rate: int, subtype: str | None = None
) -> None:
    """Write ``(T,)`` or ``(C, T)`` audio atomically; the format (wav/flac/ogg) follows the suffix.

    ``subtype`` is soundfile's (e.g. "PCM_16", "FLOAT", "VORBIS"); None takes the format's
    default (16-bit PCM for WAV/FLAC, Vorbis for OGG). A crash never leaves a half-written file.
    """
    path = Path(path)
    fmt = _format_for(path, _WRITE_FORMATS, "writing")
    wave = np.asarray(wave)
    if wave.ndim not in (1, 2) or wave.size == 0:
        raise AudioError(path, f"expected a non-empty (T,) or (C, T) array, got shape {wave.shape}")
    if not np.isfinite(wave).all():
        raise AudioError(path, "refusing to write non-finite samples (NaN or inf)")
    if sample_rate <= 0:
        raise AudioError(path, f"sample_rate={sample_rate} must be positive")
    data = wave if wave.ndim == 1 else wave.T  # soundfile wants (T, C)
    try:
        with atomic_write(path, "wb") as f:
            sf.write(f, data, sample_rate, format=fmt, subtype=subtype)
    except (sf.SoundFileError, RuntimeError, ValueError, TypeError) as e:
        raise AudioError(path, f"cannot write {fmt}: {e}") from None
