"""Small encoders for from-scratch CPU runs and wiring tests.

``small_cnn`` is a four-block log-mel CNN (about 0.4 M parameters, ~0.2 GFLOP per 10 s clip,
against CNN14's 42) that trains on the synthetic corpus in minutes on two cores. ``bow`` is a
hashed bag-of-words text encoder with no pretrained weights, for tests that need a text tower
without Sentence-BERT.
"""

from __future__ import annotations

import re
import zlib

import torch
import torch.nn.functional as F
from torch import nn

from earshot.audio.frontend import FrontendConfig, LogMelFrontend
from earshot.models.base import (
    AudioEncoder,
    TextEncoder,
    register_audio_encoder,
    register_text_encoder,
)


class _ConvBlock(nn.Module):
    """Two 3x3 conv + BN + ReLU layers, then 2x2 average pooling (the PANNs block, smaller)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return F.avg_pool2d(x, 2)


class SmallCNN(AudioEncoder):
    """Log-mel -> BN over mel bins -> conv blocks -> mean over frequency -> max+mean over time."""

    def __init__(
        self,
        channels: tuple[int, ...] = (32, 64, 128, 256),
        sample_rate: int = 32000,
        n_mels: int = 64,
        specaugment: bool = False,
        fmax: float | None = None,
    ):
        super().__init__()
        self.sample_rate = sample_rate
        self.embed_dim = channels[-1]
        # PANNs' 14 kHz top edge, lowered to Nyquist for lower rates
        fmax = min(14000.0, sample_rate / 2) if fmax is None else fmax
        self.frontend_cfg = FrontendConfig(sample_rate=sample_rate, n_mels=n_mels, fmax=fmax)
        self.frontend = LogMelFrontend(self.frontend_cfg)
        self.bn0 = nn.BatchNorm2d(n_mels)
        self.specaugment: nn.Module = nn.Identity()
        if specaugment:
            from earshot.audio.specaugment import SpecAugment

            self.specaugment = SpecAugment()
        chans = (1, *channels)
        self.blocks_ = nn.ModuleList(_ConvBlock(a, b) for a, b in zip(chans[:-1], chans[1:]))

    def blocks(self) -> list[nn.Module]:
        return [self.bn0, *self.blocks_]

    def frontend_settings(self) -> dict:
        from earshot.config import to_dict

        return {"sample_rate": self.sample_rate, "logmel": to_dict(self.frontend_cfg)}

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        x = self.frontend(waveform)  # (B, T, M)
        x = self.specaugment(x)
        # BatchNorm over mel bins, as PANNs' bn0: (B, M, T, 1) -> back to (B, 1, T, M)
        x = self.bn0(x.transpose(1, 2).unsqueeze(3)).squeeze(3).transpose(1, 2).unsqueeze(1)
        for block in self.blocks_:
            x = block(x)  # (B, C, T', M')
        x = x.mean(dim=3)  # (B, C, T')
        return x.amax(dim=2) + x.mean(dim=2)  # (B, C)


@register_audio_encoder("small_cnn")
def small_cnn(
    channels: tuple[int, ...] | list[int] = (32, 64, 128, 256),
    sample_rate: int = 32000,
    n_mels: int = 64,
    specaugment: bool = False,
    fmax: float | None = None,
) -> SmallCNN:
    """A small log-mel CNN trained from scratch (no pretrained weights)."""
    return SmallCNN(tuple(channels), sample_rate, n_mels, specaugment, fmax)


_TOKEN = re.compile(r"[a-z0-9]+")


class BagOfWords(TextEncoder):
    """Hashed unigram+bigram bag of words -> EmbeddingBag (mean) -> (B, dim).

    Deterministic hashing (crc32) so a saved model encodes the same text the same way in any
    process, whatever PYTHONHASHSEED is.
    """

    def __init__(self, dim: int = 256, buckets: int = 1 << 15, bigrams: bool = True):
        super().__init__()
        self.embed_dim = dim
        self.buckets = buckets
        self.bigrams = bigrams
        self.embedding = nn.EmbeddingBag(buckets, dim, mode="mean")
        nn.init.normal_(self.embedding.weight, std=dim**-0.5)

    def blocks(self) -> list[nn.Module]:
        return [self.embedding]

    def token_ids(self, text: str) -> list[int]:
        words = _TOKEN.findall(text.lower())
        grams = words + ([f"{a} {b}" for a, b in zip(words, words[1:])] if self.bigrams else [])
        return [zlib.crc32(g.encode()) % self.buckets for g in grams] or [0]

    def forward(self, texts: list[str]) -> torch.Tensor:
        ids = [self.token_ids(t) for t in texts]
        device = self.embedding.weight.device
        flat = torch.tensor([i for row in ids for i in row], dtype=torch.long, device=device)
        offsets = torch.tensor([0, *[len(r) for r in ids[:-1]]], device=device).cumsum(0)
        return self.embedding(flat, offsets)  # (B, dim)


@register_text_encoder("bow")
def bow(dim: int = 256, buckets: int = 1 << 15, bigrams: bool = True) -> BagOfWords:
    """Hashed bag-of-words text encoder (no pretrained weights; for tests and tiny runs)."""
    return BagOfWords(dim, buckets, bigrams)
