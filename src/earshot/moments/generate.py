"""Clotho-Moment-style long recordings: captioned clips placed at random times on a background.

Clotho-Moment (lighthouse) overlays Clotho clips on 60 s backgrounds with a foreground level
``fg_dB`` in [-5, 5] dB relative to the background. :func:`generate_moments` does the same from
any caption table with audio (the Clotho layout, or the synthetic corpus of
``earshot data synth``) and any folder of background recordings, or generated ambience (shaped
noise and hum) when none is given:

* each recording holds 1-N events, each one clip of the table with one of its captions as the
  query; its leading and trailing silence (below -50 dB of its peak) are trimmed so the
  annotated window is where the sound is;
* events are placed at random non-overlapping times (``overlap=True``: anywhere);
* each event's level: its active RMS (``earshot.data.synth.active_level``) is ``fg_dB`` above the
  background's RMS over the event's window, ``fg_dB`` uniform in ``fg_db_range``;
* the mixture is scaled down (all of it, so ``fg_dB`` holds) if its peak would pass 0.95.

Output: ``audio/<vid>.wav`` and ``moments.jsonl`` (lighthouse layout + ``fg_dB`` and the source
``clip``). Deterministic by seed (each recording from its own seeded stream); resumable: a
recording whose audio and annotation are both on disk is skipped, a settings file refuses a
rerun into the same folder with other settings.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from earshot.errors import ConfigError, DataError
from earshot.utils import atomic_write

__all__ = ["MomentGenConfig", "MomentGenSummary", "generate_moments", "MOMENTS_FILE"]

MOMENTS_FILE = "moments.jsonl"
SETTINGS_FILE = "moments_settings.json"
GENERATOR_VERSION = 1  # bump when generated content changes
PEAK_LIMIT = 0.95
TRIM_DB = 50.0  # event edges quieter than this below the event's peak envelope are trimmed
MIN_EVENT_S = 0.5  # trimming never leaves less (a lone click keeps half a second around it)


@dataclass(frozen=True)
class MomentGenConfig:
    """How to build the long recordings."""

    recordings: int = 100  # how many long recordings
    duration_s: float = 60.0  # length of each recording (Clotho-Moment: 60 s)
    min_events: int = 1  # events per recording, drawn uniformly in [min_events, max_events]
    max_events: int = 3
    fg_db_range: tuple[float, float] = (-5.0, 5.0)  # event level over the background (dB)
    overlap: bool = False  # allow events to overlap each other
    max_event_s: float = 30.0  # a longer clip is cut to this (its first max_event_s seconds)
    sample_rate: int = 32000  # of the written recordings
    seed: int = 0

    def check(self) -> "MomentGenConfig":
        if self.recordings < 1:
            raise ConfigError(f"recordings must be >= 1, got {self.recordings}")
        if self.duration_s <= 0 or self.max_event_s <= 0:
            raise ConfigError("duration_s and max_event_s must be positive")
        if not 1 <= self.min_events <= self.max_events:
            raise ConfigError(f"need 1 <= min_events <= max_events, got {self.min_events}, "
                              f"{self.max_events}")
        lo, hi = self.fg_db_range
        if not lo <= hi:
            raise ConfigError(f"fg_db_range must be (low, high), got {self.fg_db_range}")
        if self.sample_rate < 1000:
            raise ConfigError(f"sample_rate {self.sample_rate} is too low")
        return self


@dataclass(frozen=True)
class MomentGenSummary:
    """What :func:`generate_moments` left on disk."""

    out_dir: Path
    recordings: int
    queries: int
    generated: int  # written by this run
    skipped: int  # already complete from an earlier run
    seconds: float


def _ambience(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Generated background: coloured noise, sometimes with a hum, slowly varying in level."""
    from earshot.data.synth import _coloured_noise, _hum

    colour = ("hiss", "rush", "rumble")[int(rng.integers(3))]
    y = _coloured_noise(rng, n, sr, colour)
    if rng.random() < 0.5:
        y = y + 0.5 * _hum(float(rng.uniform(50, 200)), n, sr, rng)
    t = np.arange(n) / sr
    y = y * (1.0 + 0.3 * np.sin(2 * np.pi * rng.uniform(0.01, 0.1) * t + rng.uniform(0, 6.3)))
    return (0.05 * y / max(float(np.sqrt(np.mean(y**2))), 1e-12)).astype(np.float64)


def _background(files: Sequence[Path], rng: np.random.Generator, n: int, sr: int) -> tuple[np.ndarray, str]:
    if not files:
        return _ambience(rng, n, sr), "generated"
    from earshot.audio.io import load_audio

    path = files[int(rng.integers(len(files)))]
    wave = load_audio(path, sr).astype(np.float64)
    if len(wave) < n:  # loop a short background
        wave = np.tile(wave, -(-n // len(wave)))
    start = int(rng.integers(0, len(wave) - n + 1))
    return wave[start:start + n], path.name


def _trim(wave: np.ndarray, sr: int) -> np.ndarray:
    hop = max(1, sr // 100)
    m = len(wave) // hop
    if m == 0:
        return wave
    env = np.sqrt(np.mean(wave[: m * hop].reshape(m, hop) ** 2, axis=1))
    loud = np.nonzero(env >= env.max() * 10 ** (-TRIM_DB / 20))[0]
    if loud.size == 0:
        return wave
    a, b = loud[0] * hop, (loud[-1] + 1) * hop
    short = int(MIN_EVENT_S * sr) - (b - a)
    if short > 0:  # widen around the sound, within the clip
        a = max(0, a - short // 2)
        b = min(len(wave), a + int(MIN_EVENT_S * sr))
        a = max(0, b - int(MIN_EVENT_S * sr))
    return wave[a:b]


def event_level(wave: np.ndarray, sr: int) -> float:
    """The level ``fg_dB`` refers to: ``active_level`` (RMS of frames within 30 dB of the
    loudest 50 ms frame), or the plain RMS of an event shorter than two frames."""
    from earshot.data.synth import active_level

    if len(wave) < int(0.1 * sr):
        return float(np.sqrt(np.mean(wave**2)))
    return active_level(wave, sr)


def _place(lengths: list[int], n: int, overlap: bool, rng: np.random.Generator) -> list[int]:
    """Start sample of each event: anywhere (overlap), else in random order with random gaps."""
    if overlap:
        return [int(rng.integers(0, n - ln + 1)) for ln in lengths]
    free = n - sum(lengths)
    cuts = np.sort(rng.integers(0, free + 1, size=len(lengths)))  # gap boundaries
    order = rng.permutation(len(lengths))
    starts = [0] * len(lengths)
    pos = 0
    for rank, i in enumerate(order):
        starts[i] = pos + int(cuts[rank])
        pos += lengths[i]
    return starts


def _plan_events(rng: np.random.Generator, cfg: MomentGenConfig, n_clips: int) -> tuple[int, np.ndarray]:
    k = int(rng.integers(cfg.min_events, cfg.max_events + 1))
    return k, rng.choice(n_clips, size=min(k, n_clips), replace=False)


def _render(index: int, table, audio_root: Path | None, bg_files: Sequence[Path],
            cfg: MomentGenConfig) -> tuple[np.ndarray, list[dict[str, Any]], str, np.ndarray]:
    """One recording: (mixture, event rows, background name, the foreground track alone,
    scaled as in the mixture)."""
    from earshot.audio.io import load_audio
    from earshot.data.records import resolve_audio

    sr = cfg.sample_rate
    n = int(round(cfg.duration_s * sr))
    rng = np.random.default_rng([cfg.seed, index])
    bg, bg_name = _background(bg_files, rng, n, sr)
    k, picks = _plan_events(rng, cfg, len(table))
    events = []
    for c in picks:
        clip = table[int(c)]
        wave = load_audio(resolve_audio(clip, audio_root), sr).astype(np.float64)
        wave = _trim(wave, sr)[: int(cfg.max_event_s * sr)]
        events.append((clip, wave, clip.captions[int(rng.integers(len(clip.captions)))]))
    if not cfg.overlap:  # keep the first events that fit end to end
        total, kept = 0, []
        for ev in events:
            if total + len(ev[1]) <= n:
                kept.append(ev)
                total += len(ev[1])
        events = kept or [(events[0][0], events[0][1][:n], events[0][2])]
    events = [(c, w[:n], q) for c, w, q in events]
    starts = _place([len(w) for _, w, _ in events], n, cfg.overlap, rng)
    fg = np.zeros(n)
    rows = []
    lo, hi = cfg.fg_db_range
    for j, ((clip, wave, query), s) in enumerate(zip(events, starts)):
        fg_db = float(rng.uniform(lo, hi))
        bg_rms = float(np.sqrt(np.mean(bg[s : s + len(wave)] ** 2)))
        gain = bg_rms * 10 ** (fg_db / 20) / max(event_level(wave, sr), 1e-12)
        fg[s : s + len(wave)] += gain * wave
        rows.append({"start": s / sr, "end": (s + len(wave)) / sr, "query": query,
                     "clip": clip.clip_id, "fg_dB": fg_db, "j": j})
    mix = bg + fg
    peak = float(np.max(np.abs(mix)))
    scale = PEAK_LIMIT / peak if peak > PEAK_LIMIT else 1.0
    return (mix * scale).astype(np.float32), rows, bg_name, fg * scale


def _annotation_rows(vid: str, rows: list[dict[str, Any]], cfg: MomentGenConfig, bg: str) -> list[dict]:
    return [{"qid": f"{vid}_{r['j']}", "query": r["query"], "duration": cfg.duration_s, "vid": vid,
             "relevant_windows": [[round(r["start"], 3), round(r["end"], 3)]], "fg_dB": r["fg_dB"],
             "clip": r["clip"], "background": bg} for r in rows]


def generate_moments(out_dir: str | Path, captions: str | Path, audio_dir: str | Path | None = None,
                     backgrounds: str | Path | None = None,
                     config: MomentGenConfig = MomentGenConfig(),
                     progress: Callable[[int, int], None] | None = None) -> MomentGenSummary:
    """Write ``config.recordings`` long recordings and their ``moments.jsonl`` under ``out_dir``
    from the clips of a Clotho-layout caption CSV (audio in ``audio_dir``, default the
    ``<split>/`` folder beside the CSV) and the audio files of ``backgrounds`` (or generated
    ambience). Returns what is on disk; ``progress(done, total)`` after each recording."""
    from earshot.audio.io import SUPPORTED_SUFFIXES, save_audio
    from earshot.data.readers import clotho_audio_dir, read_clotho

    t0 = time.perf_counter()
    cfg = config.check()
    out_dir, captions = Path(out_dir), Path(captions)
    root = Path(audio_dir) if audio_dir is not None else clotho_audio_dir(captions)
    if root is None:
        raise DataError(f"{captions}: where is its audio? give the folder (audio_dir / --audio-dir)")
    table = read_clotho(captions, root)
    bg_files: list[Path] = []
    if backgrounds is not None:
        bdir = Path(backgrounds)
        if not bdir.is_dir():
            raise DataError(f"{bdir}: background folder not found")
        bg_files = sorted(p for p in bdir.iterdir() if p.suffix.lower() in SUPPORTED_SUFFIXES)
        if not bg_files:
            raise DataError(f"{bdir}: no audio files ({', '.join(SUPPORTED_SUFFIXES)})")
    settings = {"generator": "earshot.moments.generate", "version": GENERATOR_VERSION,
                "config": asdict(cfg), "captions": str(captions.resolve()),
                "backgrounds": [p.name for p in bg_files]}
    out_dir.mkdir(parents=True, exist_ok=True)
    sfile = out_dir / SETTINGS_FILE
    if sfile.is_file():
        old = json.loads(sfile.read_text())
        if old != json.loads(json.dumps(settings)):
            raise ConfigError(f"{out_dir} holds recordings made with other settings "
                              f"({sfile}); use another folder")
    else:
        with atomic_write(sfile, "w") as f:
            json.dump(settings, f, indent=1)
    (out_dir / "audio").mkdir(exist_ok=True)
    (out_dir / "annotations").mkdir(exist_ok=True)
    generated = skipped = 0
    lines: list[str] = []
    width = len(str(cfg.recordings - 1))
    for i in range(cfg.recordings):
        vid = f"moment_{cfg.seed}_{i:0{width}d}"
        wav, ann = out_dir / "audio" / f"{vid}.wav", out_dir / "annotations" / f"{vid}.jsonl"
        if wav.is_file() and ann.is_file():
            skipped += 1
        else:
            mix, rows, bg, _ = _render(i, table, root, bg_files, cfg)
            save_audio(wav, mix, cfg.sample_rate, subtype="PCM_16")
            with atomic_write(ann, "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in _annotation_rows(vid, rows, cfg, bg))
            generated += 1
        lines += ann.read_text().splitlines(keepends=True)
        if progress is not None:
            progress(i + 1, cfg.recordings)
    with atomic_write(out_dir / MOMENTS_FILE, "w") as f:
        f.writelines(lines)
    return MomentGenSummary(out_dir=out_dir, recordings=cfg.recordings, queries=len(lines),
                            generated=generated, skipped=skipped, seconds=time.perf_counter() - t0)
