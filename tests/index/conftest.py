"""Shared builders for the index tests: a tiny untrained model and a folder of generated sounds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

SR = 16000  # the tiny model's rate
MODEL = {"audio": {"name": "small_cnn", "options": {"channels": [8, 16], "sample_rate": SR}},
         "text": {"name": "bow", "options": {"dim": 32}}, "embed_dim": 16}


def save_model(path: Path, seed: int) -> Path:
    from earshot.models import checkpoint
    from earshot.models.biencoder import create_model

    torch.manual_seed(seed)
    return checkpoint.save(create_model(MODEL), path)


def tone(freq: float, seconds: float, sr: int = SR, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def noise(seconds: float, seed: int, sr: int = SR, amp: float = 0.1) -> np.ndarray:
    return (amp * np.random.default_rng(seed).standard_normal(int(seconds * sr))).astype(np.float32)


def write_sounds(root: Path) -> dict[str, np.ndarray]:
    """Five good files (two sample rates, stereo, a subfolder, a name with a space) -> waves."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "sub").mkdir(exist_ok=True)
    good = {
        "beep.wav": (tone(440, 1.5), SR),
        "hum.flac": (tone(110, 3.0), SR),
        "sub/noise.wav": (noise(2.5, 1), SR),
        "sub/ long walk.wav": (np.concatenate([noise(2.0, 2), tone(880, 2.0), noise(2.0, 3)]), SR),
        "chirp44.wav": (np.tile(tone(1000, 0.5, 22050), 4), 22050),
    }
    for rel, (wave, sr) in good.items():
        sf.write(root / rel, wave, sr)
    stereo = np.stack([tone(300, 2.0), tone(600, 2.0)], axis=1)
    sf.write(root / "sub" / "stereo.wav", stereo, SR)
    return {rel: w for rel, (w, _) in good.items()}


def write_bad(root: Path) -> dict[str, str]:
    """Bad files -> a word their reason must contain."""
    (root / "empty.wav").write_bytes(b"")
    sf.write(root / "nan.wav", np.array([0.1, np.nan, 0.2] * 2000, dtype=np.float32), SR, subtype="FLOAT")
    (root / "garbage.flac").write_bytes(b"this is not audio at all" * 40)
    (root / "notes.txt").write_text("recorded on a Tuesday")
    return {"empty.wav": "empty file", "nan.wav": "non-finite", "garbage.flac": "cannot decode",
            "notes.txt": "unsupported"}


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    return save_model(tmp_path_factory.mktemp("model") / "tiny", seed=0)


@pytest.fixture(scope="session")
def other_model_dir(tmp_path_factory) -> Path:
    return save_model(tmp_path_factory.mktemp("model") / "other", seed=1)


@pytest.fixture(scope="session")
def encoder(model_dir):
    from earshot.index import open_encoder

    return open_encoder(model_dir)


class CountingEncoder:
    """Wraps an encoder, counting the windows and texts it embeds; can fail after N calls."""

    def __init__(self, inner, fail_after: int | None = None):
        self.inner = inner
        self.model_id, self.model_path = inner.model_id, inner.model_path
        self.sample_rate, self.dim, self.normalize = inner.sample_rate, inner.dim, inner.normalize
        self.audio_calls = 0
        self.windows = 0
        self.texts = 0
        self.fail_after = fail_after

    def embed_audio(self, waves, batch_size=16):
        if self.fail_after is not None and self.audio_calls >= self.fail_after:
            raise KeyboardInterrupt("simulated kill")
        self.audio_calls += 1
        self.windows += len(waves)
        return self.inner.embed_audio(waves, batch_size=batch_size)

    def embed_text(self, texts):
        self.texts += len(texts)
        return self.inner.embed_text(texts)


class BandEncoder:
    """A tiny deterministic encoder for wiring tests (STYLE 13): the unit-length vector of a
    window's spectral energy in ``dim`` equal bands up to Nyquist. A text mentioning "beep"
    embeds as the band of ``BEEP_HZ``; any other text as flat noise. Used instead of the demo
    model because 11 hours of audio must index in seconds, and because its geometry is known:
    white noise scores about 1/sqrt(dim) against a band, a tone in that band about 1."""

    model_id, model_path, normalize = "test:band-energy", "", True
    BEEP_HZ = 290.0

    def __init__(self, sample_rate: int = 1000, dim: int = 16):
        self.sample_rate, self.dim = sample_rate, dim

    def band(self, hz: float) -> int:
        return int(hz / (self.sample_rate / 2) * self.dim)

    def embed_audio(self, waves, batch_size=16):
        out = np.zeros((len(waves), self.dim), dtype=np.float32)
        for i, w in enumerate(waves):
            power = np.abs(np.fft.rfft(np.asarray(w, dtype=np.float64))) ** 2
            edges = np.linspace(0, len(power), self.dim + 1).astype(int)
            e = np.add.reduceat(power, edges[:-1])[: self.dim]
            out[i] = e / max(np.linalg.norm(e), 1e-12)
        return out

    def embed_text(self, texts):
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            if "beep" in t:
                out[i, self.band(self.BEEP_HZ)] = 1.0
            else:
                out[i] = 1 / np.sqrt(self.dim)
        return out


class SpectrumEncoder:
    """A deterministic encoder for duplicate tests (STYLE 13): a window's log band energies
    (``dim`` linear bands, floored 40 dB below the loudest, mean removed) at unit length. Gain
    leaves it unchanged, trims and resampling nearly so; sounds of different spectra differ.
    The repository's untrained and one-epoch models map all generated sounds to cosines above
    0.999 of each other (measured), so they cannot show a threshold at work."""

    model_id, model_path, normalize = "test:log-spectrum", "", True

    def __init__(self, sample_rate: int = 16000, dim: int = 48):
        self.sample_rate, self.dim = sample_rate, dim

    def embed_audio(self, waves, batch_size=16):
        out = np.zeros((len(waves), self.dim), dtype=np.float32)
        for i, w in enumerate(waves):
            power = np.abs(np.fft.rfft(np.asarray(w, dtype=np.float64))) ** 2
            edges = np.linspace(0, len(power), self.dim + 1).astype(int)
            e = np.add.reduceat(power, edges[:-1])[: self.dim]
            v = 10 * np.log10(e + e.max() * 1e-4 + 1e-20)
            v -= v.mean()
            out[i] = v / max(np.linalg.norm(v), 1e-12)
        return out

    def embed_text(self, texts):
        return np.zeros((len(texts), self.dim), dtype=np.float32)
