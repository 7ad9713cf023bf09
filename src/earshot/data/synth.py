"""A procedurally generated, captioned audio corpus shaped exactly like Clotho.

Why it exists: no real dataset can be downloaded here, yet every stage (readers, front end,
training, evaluation, search) needs audio whose content is *known*. Each clip is a short scene
built from a few audible events (beeps, chirps, clicks, noise bursts, hums, rhythmic pulses),
optionally over a continuous background, with attributes a listener can hear: pitch band,
loudness, tempo, count, direction and order. Five captions per clip paraphrase that content with
different synonyms and sentence templates, so a model must learn the content, not the wording.

The corpus is written as Clotho v2.1 lays it out (``clotho_captions_<split>.csv`` with
``file_name,caption_1..caption_5`` plus one audio folder per split) and deliberately varies what
readers must cope with: wav/flac/ogg, 32/44.1/48 kHz, mono/stereo, and file names containing a
comma, a double quote or a leading space. ``metadata.jsonl`` records every generation parameter
(event times, onsets, frequencies) so tests can check the audio against the captions.

Everything is a pure function of ``(seed, clip index)``: the same arguments give byte-identical
CSVs and identical audio samples, and a killed run can be resumed (files appear atomically).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import soundfile as sf

from earshot.errors import ConfigError, DataError
from earshot.utils import atomic_write

SPLITS: tuple[str, ...] = ("development", "validation", "evaluation")
SYNTH_VERSION = 1  # bump when the generated content changes; stored in synth.json
MANIFEST = "synth.json"
METADATA = "metadata.jsonl"

FG_KINDS: tuple[str, ...] = ("beep", "chirp", "click", "noise", "hum", "pulse")
BG_KINDS: tuple[str, ...] = ("hum", "noise")
NOISE_COLOURS: tuple[str, ...] = ("hiss", "rush", "rumble")

# Frequency bands (Hz) the pitch words stand for; wide gaps between them keep them audible.
PITCH_BANDS: dict[str, tuple[float, float]] = {
    "low": (180.0, 350.0),
    "mid": (600.0, 1200.0),
    "high": (2500.0, 4500.0),
}
PULSE_BANDS: dict[str, tuple[float, float]] = {  # percussive pulses sit lower than beeps
    "low": (60.0, 140.0),
    "mid": (300.0, 600.0),
    "high": (1500.0, 3000.0),
}
HUM_F0: tuple[float, float] = (50.0, 150.0)  # a hum is always low: fundamental + harmonics
TEMPO_BPM: dict[str, tuple[float, float]] = {"slow": (50.0, 80.0), "fast": (160.0, 240.0)}
LEVEL_DBFS: dict[str, float] = {"quiet": -40.0, "loud": -18.0}  # RMS of the active frames
PEAK_LIMIT = 0.95  # peak normalisation ceiling: never clip

# Every content word a caption may use, keyed by "attribute:value". A caption of a clip contains,
# for each attribute of each event, at least one of these (as a word prefix: "beep" covers
# "beeps"); tests and analyses read the table instead of re-deriving the wording.
SYNONYMS: dict[str, tuple[str, ...]] = {
    "kind:beep": ("beep", "bleep", "tone"),
    "kind:chirp": ("chirp", "sweep", "whistle"),
    "kind:click": ("click", "tick", "snap"),
    "kind:hum": ("hum", "drone", "buzz"),
    "kind:pulse": ("pulse", "thump", "knock"),
    "colour:hiss": ("hiss", "white noise"),
    "colour:rush": ("rush", "whoosh"),
    "colour:rumble": ("rumble", "rumbling"),
    "pitch:low": ("low", "low-pitched", "deep"),
    "pitch:mid": ("mid-pitched", "medium-pitched", "middle"),
    "pitch:high": ("high", "high-pitched", "shrill"),
    "tempo:slow": ("slow", "leisurely", "unhurried"),
    "tempo:fast": ("fast", "quick", "rapid"),
    "direction:rising": ("rising", "rise", "upward", "ascending"),
    "direction:falling": ("falling", "fall", "downward", "descending"),
    "loudness:quiet": ("quiet", "soft", "faint"),
    "loudness:loud": ("loud", "strong", "blaring"),
    "count:1": ("one", "a single", "once"),
    "count:2": ("two", "a pair of", "twice"),
    "count:3": ("three",),
    "count:4": ("four",),
    "count:5": ("five",),
}

_COUNT_NP = {1: ("one", "a single"), 2: ("two", "a pair of"), 3: ("three",), 4: ("four",),
             5: ("five",)}
_TIMES = {1: "once", 2: "twice", 3: "three times", 4: "four times", 5: "five times"}
_TEMPO_ADV = {"fast": ("quickly", "rapidly", "fast"),
              "slow": ("slowly", "leisurely", "at an unhurried pace")}
_DIR_ADJ = {"rising": ("rising", "upward", "ascending"),
            "falling": ("falling", "downward", "descending")}
_DIR_VERB = {"rising": ("rises", "rise"), "falling": ("falls", "fall")}  # (singular, plural)
_PITCH_ADJ = {"low": ("low", "low-pitched", "deep"), "mid": ("mid-pitched", "medium-pitched"),
              "high": ("high", "high-pitched", "shrill")}
_NOISE_MASS = {"hiss": ("hiss", "white noise", "hissing noise"),
               "rush": ("rushing noise", "rushing air"),
               "rumble": ("rumbling noise", "low rumbling")}
_NOISE_COUNT = {"hiss": ("hiss",), "rush": ("whoosh", "rush of noise"), "rumble": ("rumble",)}
_LOUD_SUFFIX = {"quiet": (", all quiet", ", all very faint", ", played softly", ", heard faintly"),
                "loud": (", all very loud", ", played loudly", ", loud throughout", ", blaring")}


# ---------------------------------------------------------------------------------------------
# Public results


@dataclass(frozen=True)
class SynthSummary:
    """What :func:`generate_corpus` wrote: counts per split, formats, total duration, timing."""

    out_dir: Path  # corpus root (CSVs, metadata.jsonl, one audio folder per split)
    clips: int  # clips in the corpus
    generated: int  # audio files written by this call
    skipped: int  # audio files already present from an earlier (interrupted) run
    clips_per_split: dict[str, int] = field(default_factory=dict)  # split -> clips
    captions_per_split: dict[str, int] = field(default_factory=dict)  # split -> captions
    duration_s: dict[str, float] = field(default_factory=dict)  # split -> total seconds of audio
    formats: dict[str, int] = field(default_factory=dict)  # "wav"/"flac"/"ogg" -> files
    sample_rates: dict[int, int] = field(default_factory=dict)  # Hz -> files
    channels: dict[int, int] = field(default_factory=dict)  # 1 or 2 -> files
    seconds: float = 0.0  # wall-clock time of the call

    @property
    def total_duration_s(self) -> float:
        """Seconds of audio over all splits."""
        return float(sum(self.duration_s.values()))


def caption_csv_name(split: str) -> str:
    """The Clotho file name of a split's caption table."""
    return f"clotho_captions_{split}.csv"


def load_metadata(out_dir: str | Path) -> list[dict[str, Any]]:
    """Read ``metadata.jsonl``: one dict per clip (file name, split, events, captions, ...)."""
    path = Path(out_dir) / METADATA
    if not path.is_file():
        raise DataError(f"{path}: no synthetic-corpus metadata here (run `earshot data synth`)")
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise DataError(f"{path}, line {n}: not JSON ({e})") from None
    return rows


# ---------------------------------------------------------------------------------------------
# Clip specification (attributes, timing) -- pure functions of an rng


def _rng(seed: int, *parts: int) -> np.random.Generator:
    return np.random.default_rng([seed, *parts])


def _sample_attributes(rng: np.random.Generator) -> dict[str, Any]:
    """Draw what a clip contains: loudness, 1-3 foreground events in order, a background."""
    loudness = str(rng.choice(("quiet", "loud")))
    n_fg = int(rng.choice((1, 2, 3), p=(0.3, 0.45, 0.25)))
    # Distinct kinds per clip, so each caption's wording maps to one event unambiguously.
    kinds = [str(k) for k in rng.choice(FG_KINDS, size=n_fg, replace=False)]
    bg_options = [k for k in BG_KINDS if k not in kinds]
    bg_kind = None
    if bg_options and rng.random() < 0.45:
        bg_kind = str(rng.choice(bg_options))
    events = [{"kind": k, "attributes": _event_attributes(k, rng)} for k in kinds]
    background = None
    if bg_kind is not None:
        attrs = ({"pitch": "low"} if bg_kind == "hum"
                 else {"colour": str(rng.choice(NOISE_COLOURS))})
        background = {"kind": bg_kind, "attributes": attrs}
    return {"loudness": loudness, "events": events, "background": background}


def _event_attributes(kind: str, rng: np.random.Generator) -> dict[str, Any]:
    if kind == "beep":
        attrs: dict[str, Any] = {"pitch": str(rng.choice(("low", "mid", "high")))}
        if rng.random() < 0.5:
            attrs["count"] = int(rng.integers(1, 6))
        else:
            attrs["tempo"] = str(rng.choice(("slow", "fast")))
        return attrs
    if kind == "chirp":
        return {"direction": str(rng.choice(("rising", "falling"))),
                "count": int(rng.integers(1, 4))}
    if kind == "click":
        return {"count": int(rng.integers(1, 6))}
    if kind == "noise":
        return {"colour": str(rng.choice(NOISE_COLOURS)), "count": int(rng.integers(1, 4))}
    if kind == "hum":
        return {"pitch": "low"}
    if kind == "pulse":
        return {"pitch": str(rng.choice(("low", "mid", "high"))),
                "tempo": str(rng.choice(("slow", "fast")))}
    raise ValueError(kind)


def _signature(attrs: dict[str, Any]) -> str:
    """The audible content of a clip; two clips with one signature would be indistinguishable."""
    return json.dumps([attrs["loudness"], attrs["events"], attrs["background"]], sort_keys=True)


def _min_length(ev: dict[str, Any]) -> float:
    a = ev["attributes"]
    if "tempo" in a:
        return 4.0
    if ev["kind"] == "hum":
        return 2.0
    per = {"beep": 0.35, "click": 0.3, "chirp": 0.6, "noise": 0.9}[ev["kind"]]
    return a["count"] * per + 0.2


def _layout(attrs: dict[str, Any], rng: np.random.Generator, min_dur: float,
            max_dur: float) -> tuple[float, list[dict[str, Any]]]:
    """Place the foreground events one after another; return duration and timed events."""
    events = attrs["events"]
    n = len(events)
    mins = np.array([_min_length(e) for e in events])
    gaps = rng.uniform(0.2, 0.6, size=n + 1)
    duration = float(rng.uniform(min_dur, max_dur))
    duration = max(duration, float(mins.sum() + gaps.sum()))
    slack = duration - mins.sum() - gaps.sum()
    shares = rng.dirichlet(np.ones(n + 1)) * slack  # the last share lengthens the tail
    timed = []
    t = float(gaps[0])
    for i, ev in enumerate(events):
        seg = float(mins[i] + shares[i])
        timed.append(_place(ev, t, t + seg, rng))
        t += seg + float(gaps[i + 1])
    return round(duration, 3), timed


def _place(ev: dict[str, Any], t0: float, t1: float, rng: np.random.Generator) -> dict[str, Any]:
    """Choose onsets and the physical parameters (Hz, seconds) of one event in [t0, t1]."""
    kind, a = ev["kind"], ev["attributes"]
    seg = t1 - t0
    params: dict[str, Any] = {}
    if kind == "hum":
        params["f0_hz"] = float(rng.uniform(*HUM_F0))
        return {**ev, "start": t0, "end": t1, "onsets": [t0], "unit_s": seg, "params": params}
    if "tempo" in a:
        ioi = 60.0 / float(rng.uniform(*TEMPO_BPM[a["tempo"]]))
        unit = min(float(rng.uniform(0.08, 0.2)), 0.5 * ioi)
        if kind == "pulse":
            unit = min(float(rng.uniform(0.15, 0.3)), 0.8 * ioi)
        n = int((seg - unit) // ioi) + 1
    else:
        n = a["count"]
        lo_unit, hi_unit, lo_gap, hi_gap = {
            "beep": (0.08, 0.3, 0.15, 0.5), "click": (0.005, 0.005, 0.25, 0.7),
            "chirp": (0.3, 0.9, 0.1, 0.5), "noise": (0.5, 2.0, 0.2, 0.8)}[kind]
        unit = float(rng.uniform(lo_unit, hi_unit))
        ioi = min(unit + float(rng.uniform(lo_gap, hi_gap)), (seg - 0.05) / n)
        unit = min(unit, 0.7 * ioi)
    onsets = [round(t0 + k * ioi, 4) for k in range(n)]
    if kind in ("beep", "pulse"):
        band = (PITCH_BANDS if kind == "beep" else PULSE_BANDS)[a["pitch"]]
        params["frequency_hz"] = float(rng.uniform(*band))
    elif kind == "chirp":
        lo, hi = float(rng.uniform(300, 600)), float(rng.uniform(2000, 4000))
        params["from_hz"], params["to_hz"] = (lo, hi) if a["direction"] == "rising" else (hi, lo)
    return {**ev, "start": onsets[0], "end": round(onsets[-1] + unit, 4), "onsets": onsets,
            "unit_s": round(unit, 4), "params": params}


# ---------------------------------------------------------------------------------------------
# Captions


def _plural(noun: str) -> str:
    head, _, tail = noun.partition(" of ")  # "rush of noise" -> "rushes of noise"
    head = head + ("es" if head.endswith(("s", "sh", "z", "ch")) else "s")
    return f"{head} of {tail}" if tail else head


def _fix_articles(text: str) -> str:
    return re.sub(r"\b([Aa]) (?=[aeiouAEIOU])", r"\1n ", text)


def _pick(rng: np.random.Generator, options: tuple[str, ...] | list[str]) -> str:
    return str(options[int(rng.integers(len(options)))])


def _event_phrase(ev: dict[str, Any], rng: np.random.Generator, form: str, loud: str) -> str:
    """One event as a noun phrase (form="np") or a clause (form="clause").

    ``loud`` is a loudness adjective plus a space, or "" when loudness is said elsewhere.
    """
    kind, a = ev["kind"], ev["attributes"]
    L = loud
    if kind == "noise":
        colour, c = a["colour"], a["count"]
        mass = _pick(rng, _NOISE_MASS[colour])
        noun = _pick(rng, _NOISE_COUNT[colour])
        cw = _pick(rng, _COUNT_NP[c])
        bursts = "burst" if c == 1 else "bursts"
        if form == "np":
            return _pick(rng, [f"{cw} {L}{bursts} of {mass}",
                               f"{cw} {L}{noun if c == 1 else _plural(noun)}"])
        verb = "comes and goes" if c == 1 else "come and go"
        return _pick(rng, [f"{cw} {L}{bursts} of {mass} {verb}",
                           f"a {L}{noun} is heard {_TIMES[c]}"])
    noun = _pick(rng, SYNONYMS[f"kind:{kind}"])
    P = _pick(rng, _PITCH_ADJ[a["pitch"]]) + " " if "pitch" in a else ""
    if "tempo" in a:
        T = _pick(rng, SYNONYMS[f"tempo:{a['tempo']}"])
        adv = _pick(rng, _TEMPO_ADV[a["tempo"]])
        if form == "np":
            options = [f"a {L}{P}{noun} repeating {adv}", f"{T} {L}{P}{_plural(noun)}",
                       f"a {T} series of {L}{P}{_plural(noun)}"]
            if kind == "pulse":
                options.append(f"a {T} rhythm of {L}{P}{_plural(noun)}")
            return _pick(rng, options)
        return _pick(rng, [f"a {L}{P}{noun} repeats {adv}", f"{L}{P}{_plural(noun)} repeat {adv}",
                           f"a {L}{P}{noun} keeps sounding {adv}"])
    if kind == "hum":
        if form == "np":
            return _pick(rng, [f"a {L}{P}{noun}", f"a {L}steady {P}{noun}"])
        return _pick(rng, [f"a {L}{P}{noun} sounds", f"a {L}{P}{noun} goes on for a while",
                           f"a {L}steady {P}{noun} plays"])
    c = a["count"]
    D = _pick(rng, _DIR_ADJ[a["direction"]]) + " " if "direction" in a else ""
    cw = _pick(rng, _COUNT_NP[c])
    nc = noun if c == 1 else _plural(noun)
    once = "heard once" if c == 1 else f"repeated {_TIMES[c]}"
    if form == "np":
        return _pick(rng, [f"{cw} {L}{D}{P}{nc}", f"a {L}{D}{P}{noun} {once}"])
    if kind == "chirp":
        verb = _DIR_VERB[a["direction"]][0 if c == 1 else 1]
        return _pick(rng, [f"{cw} {L}{nc} {verb} in pitch",
                           f"a {L}{D}{noun} sounds {_TIMES[c]}"])
    be = "is" if c == 1 else "are"
    return _pick(rng, [f"a {L}{P}{noun} sounds {_TIMES[c]}", f"{cw} {L}{P}{nc} {be} heard"])


def _background_phrase(bg: dict[str, Any], rng: np.random.Generator) -> tuple[str, str]:
    """The background as (noun phrase, clause)."""
    if bg["kind"] == "hum":
        P = _pick(rng, _PITCH_ADJ["low"])
        noun = _pick(rng, SYNONYMS["kind:hum"])
        np_ = _pick(rng, [f"a {P} {noun}", f"a steady {P} {noun}", f"a constant {P} {noun}"])
    else:
        mass = _pick(rng, _NOISE_MASS[bg["attributes"]["colour"]])
        np_ = _pick(rng, [f"constant {mass}", f"steady {mass}", f"a continuous {mass}"])
    clause = _pick(rng, [f"{np_} continues in the background", f"{np_} plays throughout",
                         f"{np_} persists underneath"])
    return np_, clause


def _caption(clip: dict[str, Any], rng: np.random.Generator) -> str:
    """One caption naming every foreground event in order, the background and the loudness."""
    events = clip["events"]
    loud_word = _pick(rng, SYNONYMS[f"loudness:{clip['loudness']}"])
    inline = rng.random() < 0.6  # loudness as an adjective of the first event, or a suffix
    parts: list[str] = []
    for i, ev in enumerate(events):
        L = f"{loud_word} " if (inline and i == 0) else ""
        if i == 0:
            form = "np" if rng.random() < 0.5 else "clause"
            lead = "first, " if (len(events) == 3 and rng.random() < 0.3) else ""
            parts.append(lead + _event_phrase(ev, rng, form, L))
            continue
        last = i == len(events) - 1 and len(events) == 3
        conn = _pick(rng, [", then ", " followed by ", ", followed by ", ", and then ",
                           ", after which ", ", and finally " if last else ", next "])
        form = "np" if "followed" in conn else "clause" if "after which" in conn else (
            "np" if rng.random() < 0.5 else "clause")
        parts.append(conn + _event_phrase(ev, rng, form, L))
    text = "".join(parts)
    if clip["background"] is not None:
        bg_np, bg_clause = _background_phrase(clip["background"], rng)
        style = int(rng.integers(4))
        if style == 0:
            text = f"{text}, while {bg_clause}"
        elif style == 1:
            text = f"{text} over {bg_np}"
        elif style == 2:
            text = f"{text}, with {bg_np} in the background"
        else:
            text = f"while {bg_clause}, {text}"
    if not inline:
        text += _pick(rng, _LOUD_SUFFIX[clip["loudness"]])
    text = _fix_articles(text)
    text = text[0].upper() + text[1:]
    return text + ("." if rng.random() < 0.7 else "")


def _captions(clip: dict[str, Any], rng: np.random.Generator, n: int = 5) -> list[str]:
    """``n`` distinct paraphrases of one clip's content."""
    out: list[str] = []
    for _ in range(200):
        cap = _caption(clip, rng)
        if cap not in out:
            out.append(cap)
            if len(out) == n:
                return out
    raise RuntimeError(f"could not word {n} distinct captions for {clip['events']}")


# ---------------------------------------------------------------------------------------------
# Audio rendering (vectorised numpy)


def _ramp(n: int, ramp: int) -> np.ndarray:
    env = np.ones(n)
    ramp = max(1, min(ramp, n // 2))
    r = 0.5 - 0.5 * np.cos(np.pi * np.arange(ramp) / ramp)
    env[:ramp] = r
    env[n - ramp:] = r[::-1]
    return env


def _coloured_noise(rng: np.random.Generator, n: int, sr: int, colour: str) -> np.ndarray:
    """Unit-RMS noise shaped in the frequency domain: hiss (high), rush (pink), rumble (low)."""
    m = 1 << max(int(n - 1).bit_length(), 4)  # power-of-two FFT: odd lengths are slow
    spec = np.fft.rfft(rng.standard_normal(m))
    f = np.fft.rfftfreq(m, 1.0 / sr)
    f[0] = 1.0
    if colour == "hiss":
        shape = 1.0 / np.sqrt(1.0 + (1000.0 / f) ** 4) * (f <= 12000.0)
    elif colour == "rush":
        shape = f ** -0.5 * (f >= 100.0) * (f <= 10000.0)
    else:
        shape = (1.0 / f) * (f >= 25.0) / np.sqrt(1.0 + (f / 250.0) ** 4)
    y = np.fft.irfft(spec * shape, m)[:n]
    return y / max(float(np.sqrt(np.mean(y**2))), 1e-12)


def _add(out: np.ndarray, start: int, sig: np.ndarray) -> None:
    end = min(len(out), start + len(sig))
    if end > start:
        out[start:end] += sig[: end - start]


def _render_event(ev: dict[str, Any], sr: int, out: np.ndarray, rng: np.random.Generator) -> None:
    kind, p = ev["kind"], ev["params"]
    unit = int(round(ev["unit_s"] * sr))
    t = np.arange(max(unit, 1)) / sr
    if kind == "hum":
        n = int(round((ev["end"] - ev["start"]) * sr))
        _add(out, int(round(ev["start"] * sr)), 0.2 * _hum(p["f0_hz"], n, sr, rng)
             * _ramp(n, int(0.05 * sr)))
        return
    for onset in ev["onsets"]:
        s = int(round(onset * sr))
        if kind == "beep":
            phase = rng.uniform(0, 2 * np.pi)
            sig = 0.5 * np.sin(2 * np.pi * p["frequency_hz"] * t + phase) * _ramp(
                len(t), int(0.005 * sr))
        elif kind == "pulse":
            tau = min(0.06, ev["unit_s"] / 5)
            sig = 0.8 * np.exp(-t / tau) * np.sin(2 * np.pi * p["frequency_hz"] * t)
            sig *= _ramp(len(t), int(0.002 * sr)) if len(t) > 8 else 1.0
        elif kind == "chirp":
            f0, f1, dur = p["from_hz"], p["to_hz"], len(t) / sr
            k = np.log(f1 / f0)
            phase = 2 * np.pi * f0 * dur / k * (np.exp(t / dur * k) - 1.0)
            sig = 0.5 * np.sin(phase) * _ramp(len(t), int(0.01 * sr))
        elif kind == "click":
            tc = np.arange(int(0.005 * sr)) / sr
            sig = rng.standard_normal(len(tc)) * np.exp(-tc / 0.0015)
            sig = sig / np.max(np.abs(sig))
        elif kind == "noise":
            sig = 0.18 * _coloured_noise(rng, len(t), sr, ev["attributes"]["colour"])
            sig *= _ramp(len(t), int(0.02 * sr))
        else:  # pragma: no cover - kinds are validated when sampled
            raise ValueError(kind)
        _add(out, s, sig)


def _hum(f0: float, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS hum: fundamental plus five harmonics at 1/k, with a slow amplitude wobble.

    The waveform is periodic, so one period is tabulated and read at phase ``f0 * t`` (one
    interpolation instead of six sines over a 30 s clip).
    """
    grid = np.arange(_HUM_TABLE + 1) / _HUM_TABLE
    period = np.zeros(_HUM_TABLE + 1)
    for k in range(1, 7):
        period += np.sin(2 * np.pi * k * grid + rng.uniform(0, 2 * np.pi)) / k
    t = np.arange(n) / sr
    y = np.interp(np.mod(f0 * t, 1.0), grid, period)
    y *= 1.0 + 0.1 * np.sin(2 * np.pi * 0.3 * t)
    return y / max(float(np.sqrt(np.mean(y**2))), 1e-12)


_HUM_TABLE = 4096  # samples per tabulated hum period (interpolation error < -90 dB)


def active_level(wave: np.ndarray, sr: int, frame_s: float = 0.05, range_db: float = 30.0) -> float:
    """RMS over the frames within ``range_db`` of the loudest one (silence does not count).

    The loudness the captions speak of: it ignores the gaps between events, so a few loud clicks
    and a long loud hum both read as loud.
    """
    mono = wave if wave.ndim == 1 else wave.mean(axis=1)
    hop = max(1, int(frame_s * sr))
    n = len(mono) // hop
    energy = np.mean(mono[: n * hop].reshape(n, hop) ** 2, axis=1)
    active = energy[energy >= energy.max() * 10 ** (-range_db / 10)]
    return float(np.sqrt(active.mean())) if active.size else 0.0


def render_clip(clip: dict[str, Any], seed: int) -> np.ndarray:
    """Synthesise one clip from its metadata record: float32, (T,) mono or (T, 2) stereo."""
    sr = clip["sample_rate"]
    rng = _rng(seed, clip["index"], clip["attempt"], 2)
    out = np.zeros(int(round(clip["duration_s"] * sr)))
    for ev in clip["events"]:
        _render_event(ev, sr, out, rng)
    bg = clip["background"]
    if bg is not None:
        if bg["kind"] == "hum":
            sig = 0.05 * _hum(bg["params"]["f0_hz"], len(out), sr, rng)
        else:
            sig = 0.04 * _coloured_noise(rng, len(out), sr, bg["attributes"]["colour"])
        out += sig * _ramp(len(out), int(0.1 * sr))
    level = active_level(out, sr)
    out *= 10 ** (LEVEL_DBFS[clip["loudness"]] / 20) / max(level, 1e-12)
    if clip["channels"] == 2:
        out = out[:, None] * np.asarray(clip["channel_gains"])[None, :]
    peak = float(np.max(np.abs(out)))
    if peak > PEAK_LIMIT:
        out *= PEAK_LIMIT / peak
    return out.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Corpus


_FORMATS = {"wav": ("WAV", "PCM_16"), "flac": ("FLAC", "PCM_16"), "ogg": ("OGG", "VORBIS")}


def _file_name(index: int, local: int, ext: str) -> str:
    # A few awkward names per split, so every reader meets them: comma, quote, leading space.
    special = local % 100
    if special == 1:
        return f"synth_{index:05d}, with comma.{ext}"
    if special == 2:
        return f'synth_{index:05d} "quoted".{ext}'
    if special == 3:
        return f" synth_{index:05d} leading space.{ext}"
    return f"synth_{index:05d}.{ext}"


def _split_sizes(clips: int, splits: tuple[float, float, float]) -> list[int]:
    n_val = int(round(clips * splits[1]))
    n_eval = int(round(clips * splits[2]))
    return [clips - n_val - n_eval, n_val, n_eval]


def plan_corpus(clips: int, seed: int, splits: tuple[float, float, float] = (0.6, 0.2, 0.2),
                sample_rate: int = 32000, min_duration: float = 5.0,
                max_duration: float = 30.0) -> list[dict[str, Any]]:
    """Every clip's full metadata (content, timing, captions, file name, format) without audio.

    Cheap and deterministic: :func:`generate_corpus` renders audio from these records, and
    tests can compare two plans without touching the disk.
    """
    _validate(clips, splits, sample_rate, min_duration, max_duration)
    sizes = _split_sizes(clips, splits)
    rates = [sample_rate] + [r for r in (44100, 48000, 32000) if r != sample_rate][:2]
    seen: set[str] = set()
    plan = []
    index = 0
    for split, size in zip(SPLITS, sizes):
        for local in range(size):
            for attempt in range(1000):
                rng = _rng(seed, index, attempt)
                attrs = _sample_attributes(rng)
                if _signature(attrs) not in seen:
                    break
            seen.add(_signature(attrs))
            duration, events = _layout(attrs, rng, min_duration, max_duration)
            background = attrs["background"]
            if background is not None:
                params = ({"f0_hz": float(rng.uniform(*HUM_F0))}
                          if background["kind"] == "hum" else {})
                background = {**background, "start": 0.0, "end": duration, "params": params}
            fmt = str(rng.choice(list(_FORMATS), p=(0.78, 0.14, 0.08)))
            sr = int(rates[int(rng.choice(3, p=(0.7, 0.15, 0.15)))])
            channels = 2 if rng.random() < 0.2 else 1
            gains = [1.0, 1.0]
            if channels == 2:
                gains[int(rng.integers(2))] = round(float(rng.uniform(0.6, 1.0)), 3)
            clip = {"index": index, "attempt": attempt, "split": split,
                    "file_name": _file_name(index, local, fmt), "format": fmt,
                    "sample_rate": sr, "channels": channels, "channel_gains": gains,
                    "duration_s": duration, "loudness": attrs["loudness"], "events": events,
                    "background": background}
            clip["captions"] = _captions(clip, _rng(seed, index, attempt, 1))
            plan.append(clip)
            index += 1
    return plan


def _validate(clips: int, splits: tuple[float, float, float], sample_rate: int,
              min_duration: float, max_duration: float) -> None:
    if not isinstance(clips, int) or clips < 1:
        raise ConfigError(f"clips: expected a positive integer, got {clips!r}")
    if len(splits) != 3 or any(s < 0 for s in splits) or abs(sum(splits) - 1.0) > 1e-6:
        raise ConfigError(f"splits: expected three non-negative fractions summing to 1, "
                          f"got {tuple(splits)!r}")
    if sample_rate < 16000:
        raise ConfigError(f"sample_rate: at least 16000 Hz is needed for the high band, "
                          f"got {sample_rate}")
    if not 1.0 <= min_duration <= max_duration:
        raise ConfigError(f"min_duration/max_duration: need 1 <= min <= max, got "
                          f"{min_duration}, {max_duration}")


def _csv_bytes(rows: list[dict[str, Any]]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")  # Clotho's own files use bare newlines
    w.writerow(["file_name"] + [f"caption_{i}" for i in range(1, 6)])
    for clip in rows:
        w.writerow([clip["file_name"], *clip["captions"]])
    return buf.getvalue().encode("utf-8")


def _write_audio(path: Path, wave: np.ndarray, clip: dict[str, Any]) -> None:
    fmt, subtype = _FORMATS[clip["format"]]
    with atomic_write(path, "wb") as f:
        sf.write(f, wave, clip["sample_rate"], format=fmt, subtype=subtype)


def _remove_stale_temporaries(folder: Path, names: set[str]) -> None:
    """Delete half-written temporaries a killed run left beside *our* files (never others)."""
    if not folder.is_dir():
        return
    for entry in os.listdir(folder):
        if entry.endswith(".tmp") and any(entry.startswith(f".{n}.") for n in names):
            (folder / entry).unlink(missing_ok=True)


def _check_manifest(out_dir: Path, settings: dict[str, Any]) -> None:
    path = out_dir / MANIFEST
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            raise DataError(f"{path}: unreadable corpus manifest; delete the folder") from None
        if old != settings:
            diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
            raise DataError(f"{out_dir}: holds a synthetic corpus made with other settings "
                            f"({', '.join(diff)}); use another --out folder")
    else:
        with atomic_write(path, "wb") as f:
            f.write(json.dumps(settings, indent=2, sort_keys=True).encode("utf-8"))


def generate_corpus(out_dir: str | Path, clips: int, seed: int,
                    splits: tuple[float, float, float] = (0.6, 0.2, 0.2),
                    sample_rate: int = 32000, min_duration: float = 5.0,
                    max_duration: float = 30.0,
                    progress: Callable[[int, int], None] | None = None) -> SynthSummary:
    """Write the synthetic corpus under ``out_dir`` (or finish one a killed run left behind).

    Audio files appear atomically, so one that exists is complete and is skipped on a rerun;
    the CSVs and ``metadata.jsonl`` are written last. ``progress(done, total)`` is called after
    each clip. Returns what is on disk.
    """
    t_start = time.perf_counter()
    out_dir = Path(out_dir).expanduser()
    if out_dir.exists() and not out_dir.is_dir():
        from earshot.errors import DataError

        raise DataError(f"--out {out_dir}: is a file; give a folder for the corpus")
    splits = tuple(float(s) for s in splits)  # type: ignore[assignment]
    plan = plan_corpus(clips, seed, splits, sample_rate, min_duration, max_duration)
    settings = {"generator": "earshot.data.synth", "version": SYNTH_VERSION, "clips": clips,
                "seed": seed, "splits": list(splits), "sample_rate": sample_rate,
                "min_duration": min_duration, "max_duration": max_duration}
    out_dir.mkdir(parents=True, exist_ok=True)
    _check_manifest(out_dir, settings)
    for split in SPLITS:
        names = {c["file_name"] for c in plan if c["split"] == split}
        _remove_stale_temporaries(out_dir / split, names)
    generated = skipped = 0
    for done, clip in enumerate(plan, 1):
        path = out_dir / clip["split"] / clip["file_name"]
        if path.is_file():
            skipped += 1
        else:
            _write_audio(path, render_clip(clip, seed), clip)
            generated += 1
        if progress is not None:
            progress(done, len(plan))
    for split in SPLITS:
        rows = [c for c in plan if c["split"] == split]
        (out_dir / split).mkdir(exist_ok=True)
        with atomic_write(out_dir / caption_csv_name(split), "wb") as f:
            f.write(_csv_bytes(rows))
    lines = "".join(json.dumps(c, sort_keys=True) + "\n" for c in plan)
    with atomic_write(out_dir / METADATA, "wb") as f:
        f.write(lines.encode("utf-8"))
    return SynthSummary(
        out_dir=out_dir, clips=len(plan), generated=generated, skipped=skipped,
        clips_per_split={s: sum(c["split"] == s for c in plan) for s in SPLITS},
        captions_per_split={s: sum(len(c["captions"]) for c in plan if c["split"] == s)
                            for s in SPLITS},
        duration_s={s: round(sum(c["duration_s"] for c in plan if c["split"] == s), 3)
                    for s in SPLITS},
        formats=dict(sorted(Counter(c["format"] for c in plan).items())),
        sample_rates=dict(sorted(Counter(c["sample_rate"] for c in plan).items())),
        channels=dict(sorted(Counter(c["channels"] for c in plan).items())),
        seconds=time.perf_counter() - t_start,
    )


AUDIOCAPS_SPLITS = {"train": "development", "val": "validation", "test": "evaluation"}


def write_audiocaps_view(clotho_root: str | Path, out_dir: str | Path, sample_rate: int = 32000) -> dict[str, int]:
    """The synthetic corpus again in AudioCaps' layout, so the AudioCaps reader and the presets'
    AudioCaps stage (AudioCLIP-F2) run here too.

    Writes ``<out>/{train,val,test}.csv`` (``audiocap_id, youtube_id, start_time, caption``; one
    row per caption) and ``<out>/<split>/<youtube_id>_<start_time>.wav`` (mono wav at
    ``sample_rate``, AudioCaps' file naming). Resumable: files already written are kept.
    Returns the clip count per split.
    """
    import csv

    from earshot.audio.io import load_audio, save_audio
    from earshot.data.readers import read_clotho
    from earshot.utils import atomic_write

    clotho_root, out_dir = Path(clotho_root), Path(out_dir)
    counts: dict[str, int] = {}
    audiocap_id = 0
    for split, source in AUDIOCAPS_SPLITS.items():
        table = read_clotho(clotho_root / caption_csv_name(source))
        rows = []
        for clip in table:
            # the generator names every clip synth_<index>[ decoration].<ext>
            youtube_id = "synth" + re.search(r"synth_(\d+)", clip.clip_id).group(1)
            target = out_dir / split / f"{youtube_id}_0.wav"
            if not target.is_file():
                save_audio(target, load_audio(clotho_root / source / clip.audio, sample_rate), sample_rate)
            for caption in clip.captions:
                audiocap_id += 1
                rows.append([audiocap_id, youtube_id, 0, caption])
        with atomic_write(out_dir / f"{split}.csv", "w") as f:
            writer = csv.writer(f)
            writer.writerow(["audiocap_id", "youtube_id", "start_time", "caption"])
            writer.writerows(rows)
        counts[split] = len(table)
    return counts


# WavCaps' four sources: folder name, json file, how an id looks there
WAVCAPS_SOURCES = (("FreeSound", "fsd_final.json", "{n}"), ("BBC_Sound_Effects", "bbc_final.json", "0707{n:04d}"),
                   ("SoundBible", "sb_final.json", "{n}"), ("AudioSet_SL", "as_final.json", "Ysynth{n:07d}.wav"))
# the six AudioSet_SL files the DCASE 2025 baseline skips as unreadable (d25_t6/datasets/utils.py)
WAVCAPS_BROKEN_AUDIOSET_SL = ("YVcu0pVF1npM", "Y06-g5jz-OGc", "Y3sSblRfEG2o", "YWudGD6ZHRoY", "YFli8wjBFV2M",
                              "YmW3S0u8bj58")


def write_wavcaps_view(clotho_root: str | Path, out_dir: str | Path, sample_rate: int = 32000) -> dict[str, int]:
    """The synthetic development clips again in WavCaps' layout, so the WavCaps reader, the
    exclusion lists and the DCASE 2025 presets run here too.

    Clips go round-robin to the four sources: ``<out>/json_files/<Source>/<x>_final.json``
    (``{"data": [{"id", "caption", "duration"}]}``, each clip's first caption) and
    ``<out>/audio/<Source>/<id>.flac``. Also writes the two exclusion lists the presets name:
    ``dcase2025_task6_excluded_freesound_ids.csv`` (the first FreeSound clip, so exclusion is
    exercised) and ``excluded_audioset_sl_ids.txt`` (the baseline's six unreadable files).
    Resumable. Returns the clip count per source (before exclusion).
    """
    from earshot.audio.io import load_audio, save_audio
    from earshot.data.readers import read_clotho

    clotho_root, out_dir = Path(clotho_root), Path(out_dir)
    table = read_clotho(clotho_root / caption_csv_name("development"))
    entries: dict[str, list[dict[str, Any]]] = {s[0]: [] for s in WAVCAPS_SOURCES}
    for i, clip in enumerate(table):
        source, _, pattern = WAVCAPS_SOURCES[i % len(WAVCAPS_SOURCES)]
        n = int(re.search(r"synth_(\d+)", clip.clip_id).group(1))
        file_id = pattern.format(n=100000 + n)
        target = out_dir / "audio" / source / f"{file_id.removesuffix('.wav')}.flac"
        wave = load_audio(clotho_root / "development" / clip.audio, sample_rate)
        if not target.is_file():
            save_audio(target, wave, sample_rate)
        entries[source].append({"id": file_id, "caption": clip.captions[0],
                                "duration": round(len(wave) / sample_rate, 3)})
    for source, json_name, _ in WAVCAPS_SOURCES:
        with atomic_write(out_dir / "json_files" / source / json_name, "wb") as f:
            f.write(json.dumps({"num_captions_per_audio": 1, "data": entries[source]}, indent=1).encode("utf-8"))
    first = entries["FreeSound"][0]["id"] if entries["FreeSound"] else "0"
    with atomic_write(out_dir / "dcase2025_task6_excluded_freesound_ids.csv", "wb") as f:
        f.write(f"sound_id\n{first}\n".encode())
    with atomic_write(out_dir / "excluded_audioset_sl_ids.txt", "wb") as f:
        f.write(("\n".join(WAVCAPS_BROKEN_AUDIOSET_SL) + "\n").encode())
    return {source: len(items) for source, items in entries.items()}
