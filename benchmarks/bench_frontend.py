"""Log-mel front end speed: earshot (blocked float64 rFFT) vs torchlibrosa (conv DFT) vs librosa.

Same 10 s clips at 32 kHz, PANNs settings, batch 1 and 8. The implementations run in interleaved
rounds (each round calls every one once, in a shuffled order), and each speed-up is the median of
the per-round ratios with its IQR: on a shared machine a round's implementations see the same
load. Accuracy: the max |dB| difference to torchlibrosa on the bench clips, on every real sample
in ``../shared/data/audio_samples`` and on generated near-silent input (around the -100 dB clamp).

Threads: earshot's front end runs on the count :mod:`earshot.threads` gives it (1 unless
``EARSHOT_THREADS``). torchlibrosa runs twice per round: as PANNs run it (torch's default thread
count: the goal figures) and on earshot's count (context: the method alone, same cores); librosa
runs as its users get it: numpy's FFT (one thread) and numpy's BLAS for the mel product (its
default thread count, which is what makes its batch-8 time spread on a busy machine). ``earshot_f32fft`` (the
float32 FFT, ``fft_double=False``) is context: faster, but 2.4e-3 dB off on a real sample.
``run() -> dict`` is what ``benchmarks/run.py`` calls; ``python benchmarks/bench_frontend.py``
prints the figures. torchlibrosa and librosa are benchmark/test-only dependencies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from common import figure, interleaved, ratio_stats, summarize

from earshot.audio.frontend import FrontendConfig, LogMelFrontend
from earshot.threads import threads_for, use_threads

SECONDS = 10.0
SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "audio_samples"
SPEED_GOAL_TL, SPEED_GOAL_LR, DB_GOAL = ">= 5", ">= 2", "<= 1e-3"


def _reference_modules(cfg: FrontendConfig) -> tuple[torch.nn.Module, torch.nn.Module]:
    from torchlibrosa.stft import LogmelFilterBank, Spectrogram

    spec = Spectrogram(n_fft=cfg.n_fft, hop_length=cfg.hop_length, win_length=cfg.win_length,
                       window="hann", center=cfg.center, pad_mode=cfg.pad_mode,
                       freeze_parameters=True)
    logmel = LogmelFilterBank(sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels,
                              fmin=cfg.fmin, fmax=cfg.fmax, ref=cfg.ref, amin=cfg.amin,
                              top_db=cfg.top_db, freeze_parameters=True)
    return spec.eval(), logmel.eval()


def accuracy_inputs(sample_rate: int, seed: int = 1) -> dict[str, np.ndarray]:
    """Every real sample in ../shared (when present) and generated near-silent input: noise at
    1e-5 (quiet), 3e-6 (half the bands at the -100 dB amin clamp) and digital silence."""
    out: dict[str, np.ndarray] = {}
    if SAMPLES.is_dir():
        from earshot.audio.io import load_audio

        for p in sorted(SAMPLES.iterdir()):
            if p.suffix.lower() in (".wav", ".flac", ".ogg", ".mp3"):
                out[p.name] = np.asarray(load_audio(p, sample_rate), dtype=np.float32)
    rng = np.random.default_rng(seed)
    n = int(SECONDS * sample_rate)
    for level in (1e-5, 3e-6):
        out[f"noise at {level:g}"] = (level * rng.standard_normal(n)).astype(np.float32)
    out["digital silence"] = np.zeros(n, dtype=np.float32)
    return out


def run(quick: bool = False, batches: tuple[int, ...] = (1, 8), seed: int = 0) -> dict[str, Any]:
    import librosa

    cfg = FrontendConfig()
    ours = LogMelFrontend(cfg).eval()
    ours_f32 = LogMelFrontend(cfg, fft_double=False).eval()
    spec, logmel = _reference_modules(cfg)
    rng = np.random.default_rng(seed)
    n = int(SECONDS * cfg.sample_rate)
    threads = threads_for("frontend")
    figures: list[dict[str, Any]] = []
    raw: dict[str, Any] = {"threads": threads, "clip_seconds": SECONDS}

    def librosa_logmel(clips: np.ndarray) -> list[np.ndarray]:
        out = []
        for clip in clips:
            mel = librosa.feature.melspectrogram(
                y=clip, sr=cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop_length,
                win_length=cfg.win_length, window="hann", center=cfg.center,
                pad_mode=cfg.pad_mode, power=2.0, n_mels=cfg.n_mels, fmin=cfg.fmin,
                fmax=cfg.fmax,
            )
            out.append(librosa.power_to_db(mel, ref=cfg.ref, amin=cfg.amin, top_db=cfg.top_db).T)
        return out

    def torchlibrosa(x: torch.Tensor) -> torch.Tensor:  # as PANNs run it: default threads
        return logmel(spec(x))[:, 0]

    def torchlibrosa_same_threads(x: torch.Tensor) -> torch.Tensor:
        with use_threads("frontend"):
            return logmel(spec(x))[:, 0]

    worst: dict[str, tuple[float, str]] = {}
    with torch.inference_mode():
        for b in batches:
            clips = (0.1 * rng.standard_normal((b, n))).astype(np.float32)
            x = torch.from_numpy(clips)
            fns: dict[str, Callable[[], Any]] = {
                "earshot": lambda: ours(x),
                "earshot_f32fft": lambda: ours_f32(x),
                "torchlibrosa": lambda: torchlibrosa(x),
                "torchlibrosa_same_threads": lambda: torchlibrosa_same_threads(x),
                "librosa": lambda: librosa_logmel(clips),
            }
            rounds = (9 if quick else 31) if b == 1 else (3 if quick else 9)
            times = interleaved(fns, repeats=rounds, warmup=1, seed=b)
            for name, ts in times.items():
                st = summarize(ts)
                raw[f"b{b}/{name}"] = st.as_dict(scale=1000.0)
            for name in ("earshot", "earshot_f32fft"):
                peers = [("torchlibrosa", SPEED_GOAL_TL), ("librosa", SPEED_GOAL_LR)]
                if name == "earshot":
                    peers.append(("torchlibrosa_same_threads", None))
                for peer, goal in peers:
                    r = ratio_stats(times[peer], times[name])
                    ctx = (f"{1000 * summarize(times[name]).median:.1f} vs "
                           f"{1000 * summarize(times[peer]).median:.1f} ms median; ratio of minima "
                           f"{min(times[peer]) / min(times[name]):.2f}")
                    label = "earshot" if name == "earshot" else "earshot float32 FFT (context)"
                    peer_label = {"torchlibrosa_same_threads": f"torchlibrosa on {threads} thread(s) (context)"}.get(peer, peer)
                    figures.append(figure(f"b{b} {label} speed-up vs {peer_label}", r.median,
                                          goal=goal if name == "earshot" else None, spread=r.iqr,
                                          n=r.n, context=ctx))
            ref = torchlibrosa(x)
            for name, fn in (("earshot", ours), ("earshot_f32fft", ours_f32)):
                d = float((fn(x) - ref).abs().max())
                if d > worst.get(name, (-1.0, ""))[0]:
                    worst[name] = (d, f"b{b} bench clips")
        for label, wave in accuracy_inputs(cfg.sample_rate).items():
            xw = torch.from_numpy(wave)[None]
            ref = torchlibrosa(xw)
            for name, fn in (("earshot", ours), ("earshot_f32fft", ours_f32)):
                d = float((fn(xw) - ref).abs().max())
                raw[f"max_abs_db/{name}/{label}"] = d
                if d > worst.get(name, (-1.0, ""))[0]:
                    worst[name] = (d, label)
    for name, goal in (("earshot", DB_GOAL), ("earshot_f32fft", None)):
        d, where = worst[name]
        figures.append(figure(f"{'earshot' if goal else 'earshot float32 FFT (context)'} max |dB| vs "
                              "torchlibrosa (bench clips, real samples, near-silent input)", d, unit="dB",
                              goal=goal, context=f"worst: {where}"))
    notes = [f"10 s clips at 32 kHz; earshot on {threads} torch thread(s) (the front end's thread policy), "
             f"torchlibrosa on torch's default {torch.get_num_threads()} (as PANNs run it; goal rows) and on "
             f"{threads} (context rows), librosa as installed (numpy FFT, numpy's BLAS at its default threads); "
             "interleaved rounds in shuffled order, "
             "speed-up = median of per-round ratios (spread: its IQR)",
             f"accuracy inputs: {len(accuracy_inputs(cfg.sample_rate))} (real samples in ../shared "
             f"{'found' if SAMPLES.is_dir() else 'NOT found'}, noise at 1e-5 and 3e-6, silence)"]
    return {"figures": figures, "notes": notes, "raw": raw}


if __name__ == "__main__":
    import sys

    result = run(quick="--quick" in sys.argv)
    print("\n".join(result["notes"]))
    for f in result["figures"]:
        print(f"{f['name']:<95} {f['value']:>9.4g} {f['unit']:<3} goal {f['goal'] or '-':<7} "
              f"met {f['met']!s:<5} IQR {f['spread'] or 0:.3g}  {f['context']}")
