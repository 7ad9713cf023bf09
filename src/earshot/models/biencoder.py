"""The bi-encoder: an audio tower and a text tower, each with a projection head into one space.

The model returns embeddings and a logit scale, never a loss (losses are pure functions in
``earshot.losses``). Towers come from the encoder registries; pretrained weights are loaded by
``earshot.loading.pretrained`` through one converter per source.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any, Iterator, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from earshot.config import from_dict
from earshot.errors import ConfigError
from earshot.models.base import AudioEncoder, TextEncoder, create_audio_encoder, create_text_encoder
from earshot.models.heads import HeadConfig, ProjectionHead


@dataclass(frozen=True)
class TowerConfig:
    name: str  # a registered encoder (`earshot models` lists them)
    options: dict[str, Any] = field(default_factory=dict)  # keyword arguments of its factory
    weights: str | None = None  # pretrained file path, or a name from `earshot weights list`
    weights_format: str | None = None  # converter (panns, audioclip_audio, ...); default: the registry entry's
    train: Literal["all", "none", "last_n"] = "all"  # which tower parameters train; heads always do
    train_last_n: int = 0  # with train=last_n: how many of the tower's last blocks train


@dataclass(frozen=True)
class BiEncoderConfig:
    audio: TowerConfig  # audio tower
    text: TowerConfig  # text tower
    embed_dim: int = 1024  # dimension of the shared space
    audio_head: HeadConfig = field(default_factory=HeadConfig)  # projection of the audio tower
    text_head: HeadConfig = field(default_factory=HeadConfig)  # projection of the text tower
    normalize: bool = True  # L2-normalise both embeddings (cosine similarity)
    temperature: float = 0.07  # initial softmax temperature; logit scale = 1 / temperature
    learn_temperature: bool = True  # train the logit scale (CLIP) or keep it fixed
    max_logit_scale: float = 100.0  # clamp of the learnt logit scale (CLIP uses 100)

    def __post_init__(self) -> None:
        if self.embed_dim <= 0:
            raise ConfigError(f"embed_dim must be positive, got {self.embed_dim}")
        if not 0 < self.temperature:
            raise ConfigError(f"temperature must be positive, got {self.temperature}")
        for tower in (self.audio, self.text):
            if tower.train == "last_n" and tower.train_last_n < 1:
                raise ConfigError(f"{tower.name}: train=last_n needs train_last_n >= 1")


class BiEncoder(nn.Module):
    """Audio tower + text tower + projection heads + logit scale."""

    def __init__(self, cfg: BiEncoderConfig, audio: AudioEncoder, text: TextEncoder):
        super().__init__()
        self.cfg = cfg
        self.audio_encoder = audio
        self.text_encoder = text
        self.audio_head = ProjectionHead(audio.embed_dim, cfg.embed_dim, cfg.audio_head)
        self.text_head = ProjectionHead(text.embed_dim, cfg.embed_dim, cfg.text_head)
        scale = torch.tensor(math.log(1.0 / cfg.temperature))
        if cfg.learn_temperature:
            self.log_logit_scale = nn.Parameter(scale)
        else:
            self.register_buffer("log_logit_scale", scale)
        apply_freezing(self.audio_encoder, cfg.audio)
        apply_freezing(self.text_encoder, cfg.text)

    # -- facts callers need -------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return self.audio_encoder.sample_rate

    @property
    def embed_dim(self) -> int:
        return self.cfg.embed_dim

    def logit_scale(self) -> torch.Tensor:
        """exp(log scale), clamped to ``max_logit_scale`` (CLIP's guard against divergence)."""
        return self.log_logit_scale.exp().clamp(max=self.cfg.max_logit_scale)

    def train(self, mode: bool = True) -> "BiEncoder":
        # A fully frozen tower stays in eval mode while the heads train: its BatchNorm statistics
        # and dropout must be those its embeddings were (or will be) cached with.
        super().train(mode)
        for tower, tcfg in ((self.audio_encoder, self.cfg.audio), (self.text_encoder, self.cfg.text)):
            if tcfg.train == "none":
                tower.eval()
        return self

    # -- differentiable encoding --------------------------------------------------------------
    def project_audio(self, features: torch.Tensor, normalize: bool | None = None) -> torch.Tensor:
        """Audio-tower outputs (B, Da) -> shared space (B, D). Used directly on cached outputs."""
        return self._finish(self.audio_head(features), normalize)

    def project_text(self, features: torch.Tensor, normalize: bool | None = None) -> torch.Tensor:
        """Text-tower outputs (B, Dt) -> shared space (B, D)."""
        return self._finish(self.text_head(features), normalize)

    def audio_features(self, waveform: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Audio-tower outputs (B, Da) of waveforms (B, T); ``lengths`` (B,): each row's true
        length in samples before zero padding, passed to a tower that uses it
        (``takes_lengths``, PaSST's segment rule); None: each row's full width."""
        if lengths is not None and self.audio_encoder.takes_lengths:
            return self.audio_encoder(waveform, lengths)
        return self.audio_encoder(waveform)

    def encode_audio(self, waveform: torch.Tensor, normalize: bool | None = None,
                     lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Waveforms (B, T) at ``sample_rate`` -> embeddings (B, D); ``lengths`` as in
        :meth:`audio_features` (the loaders' ``CaptionBatch.lengths``)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.cfg.audio.train != "none"):
            feats = self.audio_features(waveform, lengths)  # (B, Da)
        return self.project_audio(feats, normalize)

    def encode_text(self, texts: Sequence[str], normalize: bool | None = None) -> torch.Tensor:
        """Captions -> embeddings (B, D)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.cfg.text.train != "none"):
            feats = self.text_encoder(list(texts))  # (B, Dt)
        return self.project_text(feats, normalize)

    def forward(
        self, waveform: torch.Tensor, texts: Sequence[str]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns (audio (B, D), text (B, D), logit scale ()): the inputs of every loss."""
        return self.encode_audio(waveform), self.encode_text(texts), self.logit_scale()

    def _finish(self, z: torch.Tensor, normalize: bool | None) -> torch.Tensor:
        if self.cfg.normalize if normalize is None else normalize:
            z = F.normalize(z, dim=-1)
        return z

    # -- inference: batched, no autograd ------------------------------------------------------
    @torch.inference_mode()
    def embed_audio(
        self, waveforms: torch.Tensor | Sequence[np.ndarray], batch_size: int = 32,
        lengths: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Embed many clips in batches under inference mode -> (N, D) on the CPU. Clips of
        different lengths are batched with others of the same length, so no padding changes
        any embedding. ``lengths`` (N,): true lengths of zero-padded frames (a loader's
        ``ClipBatch.lengths``), for towers that use them."""
        if not isinstance(waveforms, torch.Tensor):
            waveforms = [torch.as_tensor(np.asarray(w, dtype=np.float32)) for w in waveforms]
        by_length: dict[int, list[int]] = {}
        for i, wave in enumerate(waveforms):
            by_length.setdefault(int(wave.shape[-1]), []).append(i)
        out = torch.empty(len(waveforms), self.embed_dim)
        device = _device(self)
        with _evaluating(self):
            for idx in by_length.values():
                for start in range(0, len(idx), batch_size):
                    chunk = idx[start : start + batch_size]
                    batch = torch.stack([waveforms[i] for i in chunk])  # (b, T)
                    lens = None if lengths is None else lengths[chunk].to(device)
                    out[chunk] = self.encode_audio(batch.to(device), lengths=lens).to("cpu", torch.float32)
        return out

    @torch.inference_mode()
    def embed_text(self, texts: Sequence[str], batch_size: int = 128) -> torch.Tensor:
        """Embed many captions in batches under inference mode -> (N, D) on the CPU.

        Captions are batched in order of length (as sentence-transformers' ``encode`` does), so
        a batch pads to a similar length, and returned in the caller's order.
        """
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = torch.empty(len(texts), self.embed_dim)
        with _evaluating(self):
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                out[idx] = self.encode_text([texts[i] for i in idx]).to("cpu", torch.float32)
        return out


@contextlib.contextmanager
def _evaluating(model: nn.Module) -> Iterator[None]:
    """Eval mode for the block, then the caller's mode again (also after an error)."""
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


def _device(module: nn.Module) -> torch.device:
    p = next(module.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def apply_freezing(tower: nn.Module, cfg: TowerConfig) -> None:
    """Set requires_grad on a tower by its policy: all, none, or the last N blocks."""
    tower.requires_grad_(cfg.train == "all")
    if cfg.train == "last_n":
        blocks = tower.blocks()
        if cfg.train_last_n > len(blocks):
            raise ConfigError(
                f"{cfg.name}: train_last_n={cfg.train_last_n} but the tower has {len(blocks)} blocks"
            )
        for block in blocks[-cfg.train_last_n :]:
            block.requires_grad_(True)
    for module in tower.unused_modules():
        module.requires_grad_(False)


def create_model(cfg: BiEncoderConfig | dict[str, Any], load_weights: bool = True) -> BiEncoder:
    """Build a bi-encoder from its config; with ``load_weights``, towers naming pretrained
    weights load them strictly through their source's converter."""
    if isinstance(cfg, dict):
        cfg = from_dict(BiEncoderConfig, cfg, "model")
    audio = create_audio_encoder(cfg.audio.name, **cfg.audio.options)
    text = create_text_encoder(cfg.text.name, **cfg.text.options)
    for tower, tcfg in ((audio, cfg.audio), (text, cfg.text)):
        if load_weights and tcfg.weights:
            from earshot.loading.pretrained import load_tower_weights

            load_tower_weights(tower, tcfg)
    return BiEncoder(cfg, audio, text)
