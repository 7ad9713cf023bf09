"""Builders shared by the reliability tests: a tiny untrained model, generated sounds, an index,
and the `earshot` command run as a real process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

SR = 16000
MODEL = {"audio": {"name": "small_cnn", "options": {"channels": [8, 16], "sample_rate": SR}},
         "text": {"name": "bow", "options": {"dim": 32}}, "embed_dim": 16}
FAST = {"window_s": 2.0, "hop_s": 1.0, "workers": 0, "batch_size": 8}
CLI = [sys.executable, "-c", "from earshot.app.cli import main; main()"]


def save_model(path: Path, seed: int = 0) -> Path:
    import torch

    from earshot.models import checkpoint
    from earshot.models.biencoder import create_model

    torch.manual_seed(seed)
    return checkpoint.save(create_model(MODEL), path)


def tone(freq: float, seconds: float, sr: int = SR) -> np.ndarray:
    return (0.3 * np.sin(2 * np.pi * freq * np.arange(int(seconds * sr)) / sr)).astype(np.float32)


def noise(seconds: float, seed: int, sr: int = SR) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * sr))).astype(np.float32)


def write_sounds(root: Path, n: int = 6, offset: int = 0) -> list[str]:
    root.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        name = f"s{i + offset:02d}.wav"
        wave = tone(150 + 97 * (i + offset), 1.0 + 0.5 * (i % 4)) if i % 2 else noise(1.5 + 0.5 * (i % 3), i + offset)
        sf.write(root / name, wave, SR)
        names.append(name)
    return names


def build(root: Path, out: Path, model: Path, **cfg) -> "object":
    from earshot.index import IndexConfig, index_folder, open_encoder

    return index_folder(root, open_encoder(model), out, IndexConfig(**{**FAST, **cfg}))


def cli(*args: str, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "250", "NO_COLOR": "1", **kw.pop("env", {})}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, env=env, **kw)


@pytest.fixture(scope="session")
def rel_model(tmp_path_factory) -> Path:
    """A tiny untrained checkpoint (import this fixture into a test module to use it)."""
    return save_model(tmp_path_factory.mktemp("rel_model") / "tiny", seed=0)
