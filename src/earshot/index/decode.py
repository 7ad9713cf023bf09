"""Decoding and framing one file: the work the indexer hands to its worker processes.

Kept free of torch and FAISS (numpy, soundfile and soxr only) so that worker processes start
quickly and stay small; the parent process does all encoding.

Every file is distrusted: its header is checked against :class:`Limits` before a single sample
is decoded (a 180 kB FLAC can declare 2^36 samples, a WAV 0 Hz or 1000 channels), samples are
read in blocks and mixed down as they come (so memory follows the mono length, never what the
header claims), and every failure becomes a short human reason instead of an exception. The
server decodes uploads through the same :func:`load_checked`.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import signal
import struct
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from earshot.audio.framing import pad_end, seconds_to_samples, sliding_windows
from earshot.audio.io import check_readable, resample, wav_data_shortfall
from earshot.errors import AudioError
from earshot.utils import sha256_file

LONG_PATH = 1000  # bytes: from here on files are opened through a Python file object
BLOCK_FRAMES = 1 << 16  # frames decoded per read: bounds the transient (T, C) buffer
PEAKS = 200  # envelope points kept per file (200 bytes in the index)


@dataclass(frozen=True)
class Limits:
    """What a file's header may declare before anything is decoded."""

    max_duration_s: float = 4 * 3600.0  # longer recordings are refused, not allocated
    max_channels: int = 64
    min_rate: int = 1000  # Hz
    max_rate: int = 768_000  # Hz

    @property
    def max_samples(self) -> int:
        """Declared frames x channels allowed: the duration limit at 48 kHz stereo."""
        return int(self.max_duration_s * 48_000 * 2)


@dataclass(frozen=True)
class Framing:
    """How a recording is cut into windows (deterministic: same file, same windows)."""

    sample_rate: int  # Hz the model expects
    window_s: float  # window length, seconds
    hop_s: float  # hop between window starts, seconds
    min_s: float = 1.0  # shorter clips are zero-padded at the end to this length
    limits: Limits = Limits()
    stream_after_s: float | None = None  # longer files are streamed by the indexer, not decoded whole


@dataclass
class Decoded:
    """A decoded file ready to encode, or the reason it cannot be, or "content unchanged"."""

    rel: str  # path relative to the indexed root
    size: int
    mtime_ns: int
    sha256: str = ""
    windows: list[np.ndarray] | None = None  # each (L,), float32; all L equal except a short clip
    starts: np.ndarray | None = None  # (W,) seconds
    ends: np.ndarray | None = None  # (W,) seconds, clipped to the duration
    duration: float = 0.0  # seconds
    sample_rate: int = 0  # the file's own rate
    channels: int = 0
    peaks: np.ndarray | None = None  # (PEAKS,) uint8 waveform envelope for the page's strip
    error: str | None = None  # why the file was skipped
    unchanged: bool = False  # same content hash as already indexed: nothing to encode
    long: bool = False  # longer than Framing.stream_after_s: the indexer streams it (WindowStream)
    note: str | None = None  # indexed, but not as the header says (a truncated WAV)


def fmt_duration(seconds: float) -> str:
    h, rest = divmod(int(round(seconds)), 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}"


def _peek_header(path: Path) -> tuple[int, int, int | None] | str | None:
    """(sample rate, channels, frames or None) straight from a WAV or FLAC header, a reason the
    header is impossible, or None (not a header this reads).

    libsndfile answers a 0 Hz or 2^31 Hz WAV with "SF_INFO struct incomplete"; reading the
    few header bytes ourselves lets the reason say what is actually wrong.
    """
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
            pos = 12
            while pos + 8 <= 1 << 20:
                f.seek(pos)
                hdr = f.read(8)
                if len(hdr) < 8:
                    return None
                cid, size = struct.unpack("<4sI", hdr)
                if cid == b"fmt ":
                    body = f.read(16)
                    if len(body) < 16:
                        return None
                    tag, ch, rate, _, align, bits = struct.unpack("<HHIIHH", body)
                    why = _impossible_depth(tag, bits)
                    return why if why else (rate, ch, None)
                pos += 8 + size + (size & 1)
            return None
        if head[:4] == b"fLaC" and len(head) >= 26:
            x = int.from_bytes(head[18:26], "big")  # STREAMINFO: rate 20, ch-1 3, bps-1 5, total 36 bits
            rate, ch, total = x >> 44, ((x >> 41) & 7) + 1, x & ((1 << 36) - 1)
            return rate, ch, (total or None)
    return None


_DEPTHS = {1: (8, 16, 24, 32), 3: (32, 64), 0xFFFE: (8, 16, 24, 32, 64)}  # WAV format tag -> bits
_TAGS = {1: "PCM", 3: "float", 0xFFFE: "extensible"}


def _impossible_depth(tag: int, bits: int) -> str | None:
    """Why a WAV's bits per sample cannot be right (libsndfile reads a 7-bit "PCM" file as
    something), or None; formats other than PCM, float and extensible are left to the decoder."""
    allowed = _DEPTHS.get(tag)
    if allowed is None or bits in allowed:
        return None
    return (f"impossible bit depth in header: {bits} bits per sample for {_TAGS[tag]} WAV "
            f"(expected {', '.join(map(str, allowed))})")


def _check_declared(rate: int, channels: int, frames: int | None, limits: Limits) -> str | None:
    if rate == 0:
        return "sample rate 0 Hz in header"
    if not limits.min_rate <= rate <= limits.max_rate:
        return (f"sample rate {rate} Hz in header (expected {limits.min_rate // 1000} kHz to "
                f"{limits.max_rate // 1000} kHz)")
    if channels < 1 or channels > limits.max_channels:
        return f"{channels} channels in header (at most {limits.max_channels})"
    if frames is not None:
        if frames / rate > limits.max_duration_s:
            return (f"header declares {fmt_duration(frames / rate)} of audio; the limit is "
                    f"{fmt_duration(limits.max_duration_s)}")
        if frames * channels > limits.max_samples:
            return (f"header declares {frames} frames x {channels} channels, more than the limit of "
                    f"{limits.max_samples} samples")
    return None


_SNDFILE_WORDS = (
    ("Format not recognised", "not a recognised audio format"),
    ("not a regular file", "not a valid audio stream"),
    ("SF_INFO struct incomplete", "invalid header"),
    ("Unspecified internal error", "corrupt data"),
    ("lost sync", "corrupt or truncated data (the decoder lost sync)"),
    ("psf_fseek", "corrupt or truncated data (a seek past the end)"),
)


def human(reason: str) -> str:
    """libsndfile's wording (with the file name inside) -> a short reason without paths."""
    for needle, plain in _SNDFILE_WORDS:
        if needle in reason:
            return f"cannot decode: {plain}"
    reason = re.sub(r"Error opening .*?: ", "", reason)
    return reason.replace("(possibly a pipe?)", "").strip()


class LongFile(Exception):
    """Raised inside a decoding worker for a file longer than ``stream_after_s``: the indexer
    streams it block by block in the main process instead (see :class:`WindowStream`)."""


@dataclass
class _Opened:
    file: Any  # the open soundfile.SoundFile (read through a Python file object)
    raw: Any  # the Python file object it reads through (long paths only), else None
    rate: int
    channels: int
    declared: int | None  # frames the header declares (None: not in the header)
    note: str | None = None  # indexed, but not as the header says (a truncated WAV)


def _open_checked(path: Path, limits: Limits) -> _Opened:
    """Check ``path``'s header against ``limits`` and open it for block reads.

    The file is opened by Python and handed to libsndfile as a file object, so paths longer
    than libsndfile's own buffer (1024 characters) open too.
    """
    import soundfile as sf

    if path.is_file() and path.stat().st_size == 0:
        raise AudioError(path, "empty file")
    if path.is_file():
        peek = _peek_header(path)
        if isinstance(peek, str):
            raise AudioError(path, peek)
        if peek is not None:
            why = _check_declared(*peek, limits)
            if why:
                raise AudioError(path, why)
    try:
        check_readable(path, whole_wav=False)
        short = wav_data_shortfall(path) if path.suffix.lower() in (".wav", ".wave") else None
    except AudioError as e:
        raise AudioError(path, human(e.reason)) from None
    note = None
    if short is not None:  # libsndfile reads what is there; index that and say so
        declared_bytes, present = short
        note = (f"data chunk size unknown ({declared_bytes:#x} in header, a streaming writer's placeholder); "
                f"indexed the {present} bytes present" if declared_bytes in (0, 0xFFFFFFFF) else
                f"truncated WAV: header declares {declared_bytes} bytes of audio, only {present} are present; "
                "indexed what is there")
    # libsndfile copies the name into a 1024-byte buffer ("Supplied filename too long"): a
    # longer path is opened by Python and handed over as a file object.
    raw = open(path, "rb") if len(os.fsencode(str(path))) >= LONG_PATH else None
    try:
        f = sf.SoundFile(raw if raw is not None else str(path))
    except BaseException:
        if raw is not None:
            raw.close()
        raise
    declared = f.frames if 0 <= f.frames < 1 << 62 else None  # SF_COUNT_MAX: length not in header
    why = _check_declared(f.samplerate, f.channels, declared, limits)
    if why:
        _close(f, raw)
        raise AudioError(path, why)
    return _Opened(f, raw, int(f.samplerate), int(f.channels), declared, note)


def _close(f: Any, raw: Any) -> None:
    f.close()
    if raw is not None:
        raw.close()


def _mono_blocks(path: Path, opened: _Opened, limits: Limits, stream_after_s: float | None = None
                 ) -> Iterator[np.ndarray]:
    """The file's samples mixed down to mono, (B,) float32 per block, checked as they come.

    Raises :class:`LongFile` once more than ``stream_after_s`` seconds are declared or decoded.
    """
    cap = int(limits.max_duration_s * opened.rate)
    long_after = None if stream_after_s is None else int(stream_after_s * opened.rate)
    if long_after is not None and opened.declared is not None and opened.declared > long_after:
        raise LongFile(path)
    got = 0
    for block in opened.file.blocks(BLOCK_FRAMES, dtype="float32", always_2d=True):  # (B, C)
        if not np.isfinite(block).all():
            raise AudioError(path, "contains non-finite samples (NaN or inf)")
        got += len(block)
        if got > cap:
            raise AudioError(path, f"decodes to more than {fmt_duration(limits.max_duration_s)} of audio")
        if long_after is not None and got > long_after:
            raise LongFile(path)
        yield block.mean(axis=1)
    if got == 0:
        raise AudioError(path, "contains no audio (0 frames decoded; empty or truncated file)")
    if opened.declared is not None and got < opened.declared:
        raise AudioError(path, f"truncated: header declares {opened.declared} frames but only {got} decode")


def _guarded(path: Path, run):
    """Run ``run()``, turning every failure into an :class:`AudioError` with a human reason."""
    try:
        return run()
    except (AudioError, LongFile):
        raise
    except MemoryError:
        raise AudioError(path, "too large to decode in memory") from None
    except OSError as e:
        raise AudioError(path, f"cannot read file: {e.strerror or e}") from None
    except Exception as e:  # the decoder's own failures on crafted input: a reason, not a crash
        why = human(str(e)) or type(e).__name__
        raise AudioError(path, why if why.startswith("cannot decode") else f"cannot decode: {why}") from None


def load_checked(path: str | Path, sample_rate: int, limits: Limits = Limits(),
                 stream_after_s: float | None = None, notes: list[str] | None = None
                 ) -> tuple[np.ndarray, int, int]:
    """Decode ``path`` to mono float32 at ``sample_rate``: (wave (T,), file's rate, channels).

    Raises :class:`AudioError` with a human reason for every bad input, whatever went wrong
    inside the decoder; nothing is allocated from what the header merely claims. Whole files
    only: long recordings go through :class:`WindowStream` (``stream_after_s`` raises
    :class:`LongFile` for them). What was odd but usable (a truncated WAV) goes to ``notes``.
    """
    path = Path(path)

    def run():
        opened = _open_checked(path, limits)
        if opened.note and notes is not None:
            notes.append(opened.note)
        try:
            wave = np.concatenate(list(_mono_blocks(path, opened, limits, stream_after_s)))  # (T,)
        finally:
            _close(opened.file, opened.raw)
        if opened.rate != sample_rate:
            wave = resample(wave, opened.rate, sample_rate)
        return np.ascontiguousarray(wave, dtype=np.float32), opened.rate, opened.channels

    return _guarded(path, run)


class WindowStream:
    """A recording decoded, mixed down, resampled and framed block by block.

    Memory is bounded by the window, not the file: one decoded block (:data:`BLOCK_FRAMES`), the
    resampler's state (soxr's streaming resampler gives the same samples as resampling the
    whole file at once), the samples of the windows not yet emitted, and a coarse envelope for
    the page's waveform strip. The windows are exactly those :func:`frame` cuts from the whole
    wave. After the iteration: ``duration``, ``sample_rate`` (the file's), ``channels`` and
    :meth:`peaks`.
    """

    def __init__(self, path: str | Path, framing: Framing):
        self.path = Path(path)
        self.framing = framing
        self.duration = 0.0
        self.sample_rate = 0
        self.channels = 0
        self.note: str | None = None  # indexed, but not as the header says (a truncated WAV)
        self._env = _Envelope()

    def windows(self, max_windows: int = 16) -> Iterator[tuple[list[np.ndarray], np.ndarray, np.ndarray]]:
        """(windows, starts (n,), ends (n,)) in seconds, at most ``max_windows`` at a time."""
        import soxr

        fr = self.framing
        sr = fr.sample_rate
        win = seconds_to_samples(fr.window_s, sr)
        hop = seconds_to_samples(fr.hop_s, sr)
        opened = _guarded(self.path, lambda: _open_checked(self.path, fr.limits))
        self.sample_rate, self.channels, self.note = opened.rate, opened.channels, opened.note
        rs = None if opened.rate == sr else soxr.ResampleStream(opened.rate, sr, 1, dtype="float32", quality="HQ")
        buf = np.zeros(0, dtype=np.float32)  # samples from absolute index `offset` on
        offset = 0
        next_start = 0
        pending: list[tuple[np.ndarray, int]] = []  # (window, start sample)

        def flush(force: bool):
            nonlocal pending
            while pending and (force or len(pending) >= max_windows):
                part, pending = pending[:max_windows], pending[max_windows:]
                starts = np.array([p[1] for p in part], dtype=np.float64) / sr
                yield [p[0] for p in part], starts, starts + win / sr

        blocks = _mono_blocks(self.path, opened, fr.limits)
        try:
            done = False
            while not done:
                block = _guarded(self.path, lambda: next(blocks, None))
                if block is None:
                    done = True
                    out = rs.resample_chunk(np.zeros(0, np.float32), last=True) if rs is not None else None
                else:
                    out = rs.resample_chunk(block, last=False) if rs is not None else block
                if out is not None and len(out):
                    out = np.asarray(out, dtype=np.float32)
                    self._env.add(out)
                    buf = np.concatenate([buf, out])
                total = offset + len(buf)
                while next_start + win <= total:
                    pending.append((buf[next_start - offset: next_start - offset + win].copy(), next_start))
                    next_start += hop
                keep_from = max(offset, min(next_start, total - win))  # the last window's samples stay
                buf, offset = buf[keep_from - offset:], keep_from
                if not done:
                    yield from flush(False)
        finally:
            _close(opened.file, opened.raw)
        total = offset + len(buf)
        self.duration = total / sr
        if total <= win:  # one window of the clip's own length, as frame() gives
            clip = buf if fr.min_s <= 0 else pad_end(buf, seconds_to_samples(fr.min_s, sr))
            yield [np.ascontiguousarray(clip, dtype=np.float32)], np.zeros(1), np.array([self.duration])
            return
        last_start = next_start - hop
        if last_start + win < total:  # one more window ending exactly at the end
            pending.append((buf[total - win - offset:].copy(), total - win))
        for w, s, e in flush(True):
            yield w, s, np.minimum(e, self.duration)

    def peaks(self, n: int = PEAKS) -> np.ndarray:
        """(n,) uint8 envelope like :func:`peaks`, from the coarse maxima kept while streaming
        (each of the n slices is exact to one envelope cell)."""
        return self._env.peaks(n)


class _Envelope:
    """Max |sample| per cell of ``cell`` samples. Cells start one sample wide and merge pairwise
    (the width doubles) whenever more than :data:`MAX_CELLS` would be kept, so memory stays
    fixed for any duration while each of the 200 slices spans hundreds of cells."""

    MAX_CELLS = 1 << 16

    def __init__(self):
        self.cell = 1
        self.cells = np.zeros(0, dtype=np.float32)
        self._rest = np.zeros(0, dtype=np.float32)  # |samples| of the unfinished cell
        self.total = 0

    def add(self, x: np.ndarray) -> None:
        a = np.concatenate([self._rest, np.abs(np.asarray(x, dtype=np.float32))])
        self.total += len(x)
        whole = len(a) // self.cell
        self.cells = np.concatenate([self.cells, a[: whole * self.cell].reshape(whole, self.cell).max(axis=1)])
        self._rest = a[whole * self.cell:]
        while len(self.cells) > self.MAX_CELLS:
            even = len(self.cells) // 2 * 2
            merged = self.cells[:even].reshape(-1, 2).max(axis=1)
            if even < len(self.cells):  # an odd last cell goes back to the unfinished samples
                self._rest = np.concatenate([np.full(self.cell, self.cells[-1], np.float32), self._rest])
            self.cells = merged
            self.cell *= 2
            whole = len(self._rest) // self.cell
            self.cells = np.concatenate([self.cells, self._rest[: whole * self.cell].reshape(whole, self.cell).max(axis=1)])
            self._rest = self._rest[whole * self.cell:]

    def peaks(self, n: int) -> np.ndarray:
        """Like :func:`peaks` of the whole wave: slice i covers samples [i*T//n, (i+1)*T//n),
        here rounded outwards to whole cells."""
        cells = np.concatenate([self.cells, [self._rest.max()] if len(self._rest) else []]).astype(np.float32)
        if self.total == 0 or len(cells) == 0:
            return np.zeros(n, dtype=np.uint8)
        bounds = (np.arange(n + 1, dtype=np.int64) * self.total) // n
        lo = np.minimum(bounds[:-1] // self.cell, len(cells) - 1)
        hi = np.maximum(lo + 1, -(-bounds[1:] // self.cell))
        env = np.array([cells[a:b].max() for a, b in zip(lo, hi)], dtype=np.float32)
        top = float(env.max())
        return np.round(255 * env / top).astype(np.uint8) if top > 0 else np.zeros(n, dtype=np.uint8)


def peaks(wave: np.ndarray, n: int = PEAKS) -> np.ndarray:
    """(n,) uint8 envelope of a mono waveform: the largest |sample| of each of n equal slices.

    Computed once while indexing and stored beside the embeddings (n bytes per file), so the
    page draws each result's waveform strip without decoding anything at query time. Scaled
    by the file's own peak so quiet recordings still show their shape.
    """
    if wave.size == 0:
        return np.zeros(n, dtype=np.uint8)
    starts = (np.arange(n, dtype=np.int64) * wave.size) // n  # a repeated start = a one-sample slice
    env = np.maximum.reduceat(np.abs(wave), starts)  # (n,)
    top = float(env.max())
    return np.round(255 * env / top).astype(np.uint8) if top > 0 else np.zeros(n, dtype=np.uint8)


def frame(wave: np.ndarray, framing: Framing) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Cut a mono waveform into windows: (windows, starts (W,), ends (W,)) in seconds.

    A clip no longer than one window is one window of its own length (padded up to ``min_s``),
    so short clips are embedded as they are, not diluted with silence. Longer recordings get
    windows at 0, hop, 2·hop, ... plus one ending exactly at the end (no padding), so every
    sample is covered and every window holds only real audio.
    """
    sr = framing.sample_rate
    win = seconds_to_samples(framing.window_s, sr)
    hop = seconds_to_samples(framing.hop_s, sr)
    total = wave.shape[-1]
    duration = total / sr
    if total <= win:
        short = pad_end(wave, seconds_to_samples(framing.min_s, sr)) if framing.min_s > 0 else wave
        return [np.ascontiguousarray(short, dtype=np.float32)], np.zeros(1), np.array([duration])
    windows, starts = sliding_windows(wave, win, hop, pad_last=False)  # (W, win), (W,)
    start_s = starts / sr
    return list(windows.astype(np.float32)), start_s, np.minimum(start_s + win / sr, duration)


@contextlib.contextmanager
def captured_stderr() -> Iterator[list[str]]:
    """Collect what C decoders (mpg123's "Note: Illegal Audio-MPEG-Header") write to fd 2.

    Only used where one thread decodes (the indexer's workers or its inline loop): the file
    descriptor is process-wide. The text lands in the yielded list when the block ends.
    """
    out: list[str] = []
    try:
        saved = os.dup(2)
    except OSError:
        yield out
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield out
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            out.append(tmp.read(4096).decode("utf-8", "replace"))


def decode(path: str, rel: str, size: int, mtime_ns: int, known_sha256: str | None, framing: Framing) -> Decoded:
    """Hash, decode, mix down, resample and frame one file (runs in a worker process).

    With ``known_sha256`` equal to the file's hash (only its mtime changed) nothing is decoded.
    Every failure, of any type, becomes ``Decoded.error`` instead of an exception, so one bad
    file never stops a run.
    """
    out = Decoded(rel=rel, size=size, mtime_ns=mtime_ns)
    chatter: list[str] = []
    try:
        out.sha256 = sha256_file(path)
        if known_sha256 is not None and out.sha256 == known_sha256:
            out.unchanged = True
            return out
        notes: list[str] = []
        with captured_stderr() as chatter:
            wave, out.sample_rate, out.channels = load_checked(path, framing.sample_rate, framing.limits,
                                                               framing.stream_after_s, notes)
        out.note = notes[0] if notes else None
    except LongFile:
        out.long = True
        return out
    except AudioError as e:
        out.error = e.reason
    except OSError as e:
        out.error = f"cannot read file: {e.strerror or e}"
    except Exception as e:  # noqa: BLE001 - every failure is a named skip, never a stopped run
        out.error = f"{type(e).__name__}: {e}"[:300]
    if out.error is not None:
        note = " ".join("".join(chatter).split())
        if note:
            out.error += f" (decoder said: {note[:160]})"
        return out
    out.duration = wave.shape[-1] / framing.sample_rate
    out.peaks = peaks(wave)
    out.windows, out.starts, out.ends = frame(wave, framing)
    return out


def decode_job(args: tuple) -> Decoded:
    """:func:`decode` with packed arguments (what the process pool maps over)."""
    return decode(*args)


def die_with_parent(parent_pid: int) -> None:
    """Process-pool initializer: a worker never outlives the indexer that forked it.

    ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` makes Linux kill the worker when its parent dies, even
    by ``kill -9``; elsewhere (or should prctl fail) a daemon thread polls the parent pid once a
    second. Both check that the parent is not already gone (the race before prctl).
    """
    # Ctrl-C reaches the whole process group: the indexer decides what happens (it stops the
    # workers); a worker dying of KeyboardInterrupt mid-call would only print a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent_pid:
        os._exit(1)

    def watch() -> None:
        import time

        while True:
            time.sleep(1.0)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="earshot-parent-watch", daemon=True).start()


def is_candidate(path: Path) -> bool:
    """Hidden files and folders (".DS_Store", ".git/") are not part of a sound collection."""
    return not path.name.startswith(".")
