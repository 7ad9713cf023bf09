"""LAION-CLAP towers on the transformers implementation (``ClapAudioModelWithProjection``,
``ClapTextModelWithProjection``), with the two weight converters LAION's files need.

Nothing here re-implements HTSAT: the towers hold transformers' modules, so published weights
load into the same parameters that ``ClapModel`` uses (the keys of ``ClapModel``'s state dict
split by prefix: ``audio_model.*``/``audio_projection.*`` for audio, ``text_model.*``/
``text_projection.*`` for text). Each tower already ends in CLAP's own projection, so in a
bi-encoder its head is ``identity`` and the shared space is CLAP's (512-d for LAION's models).

What earshot adds is the preprocessing as part of the weights, computed with ``torch.stft``
instead of transformers' per-frame numpy loop, and deterministic inference:

* clips up to the model's window (10 s at 48 kHz) are repeat-padded exactly as
  ``ClapFeatureExtractor(padding="repeatpad")`` does;
* longer clips to an *unfused* model are cut into windows (hop = half a window, the last window
  aligned to the clip's end) and the embedding is the mean of the L2-normalised window
  embeddings; LAION's code and ``ClapFeatureExtractor(truncation="rand_trunc")`` take one random
  10 s crop instead, so two calls on the same file disagree;
* longer clips to a *fused* model get the fusion input LAION designed (the whole clip's mel
  squeezed to 10 s plus three 10 s crops from the front, middle and back thirds), but with each
  crop taken at the middle of its third instead of at a random position; short clips are marked
  "not longer" (transformers marks one random clip of an all-short batch as longer, which makes a
  clip's embedding depend on its batch).

Mel settings follow the feature extractor: an unfused model reads slaney-normalised librosa mel
filters (the torchlibrosa front end inside LAION's HTSAT), a fused model reads HTK filters
without normalisation (torchaudio's, used by LAION's fusion data pipeline).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from earshot.config import from_dict, to_dict
from earshot.errors import AudioError, ConfigError, DataError, WeightsError
from earshot.models.base import AudioEncoder, TextEncoder, register_audio_encoder, register_text_encoder

__all__ = [
    "ClapAudioTower",
    "ClapFrontendConfig",
    "ClapLogMel",
    "ClapTextTower",
    "convert_clap_hf_state_dict",
    "convert_laion_clap_state_dict",
    "read_hf_clap_folder",
    "split_clap_state_dict",
]


# --- preprocessing ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ClapFrontendConfig:
    sample_rate: int = 48000  # Hz the waveform must arrive at (LAION trained at 48 kHz)
    n_fft: int = 1024  # FFT size = Hann window length (periodic window, as the extractor)
    hop_length: int = 480  # 10 ms at 48 kHz
    n_mels: int = 64  # mel bands
    fmin: float = 50.0  # lowest mel edge, Hz (LAION's value; the extractor's default is 0)
    fmax: float = 14000.0  # highest mel edge, Hz
    max_length_s: float = 10.0  # the model's window; longer clips are windowed or fused
    mel_scale: Literal["slaney", "htk"] = "slaney"  # slaney+slaney norm (unfused), htk+no norm (fused)
    padding: Literal["repeatpad", "repeat", "pad"] = "repeatpad"  # how short clips reach the window
    fusion: bool = False  # build the 4-channel fusion input (fused checkpoints only)
    window_hop_s: float = 5.0  # unfused, clip > window: hop between windows (mean-pooled)
    mel_sample_rate: int | None = None  # rate the mel filters assume; None = sample_rate (MS-CLAP 2023: 32000)
    laion_int16_roundtrip: bool = False  # quantise audio to int16 first, as laion_clap's numpy route (docs/CLAP.md)

    def __post_init__(self) -> None:
        if self.sample_rate <= 0 or self.n_fft <= 0 or self.hop_length <= 0 or self.n_mels <= 0:
            raise ConfigError("ClapFrontendConfig: sample_rate, n_fft, hop_length, n_mels must be positive")
        if not 0 <= self.fmin < self.fmax <= self.filter_rate / 2:
            raise ConfigError(f"ClapFrontendConfig: need 0 <= fmin < fmax <= Nyquist, got "
                              f"{self.fmin}, {self.fmax}")
        if self.max_length_s <= 0 or self.window_hop_s <= 0:
            raise ConfigError("ClapFrontendConfig: max_length_s and window_hop_s must be positive")

    @property
    def filter_rate(self) -> int:
        """The sample rate the mel filterbank is built for."""
        return self.mel_sample_rate or self.sample_rate

    @property
    def window_samples(self) -> int:
        return int(round(self.max_length_s * self.sample_rate))

    @classmethod
    def from_feature_extractor(cls, doc: Mapping[str, Any], fusion: bool) -> "ClapFrontendConfig":
        """Settings from a ``preprocessor_config.json`` (``ClapFeatureExtractor`` keys)."""
        truncation = doc.get("truncation", "fusion")
        return cls(sample_rate=int(doc.get("sampling_rate", 48000)),
                   n_fft=int(doc.get("fft_window_size", 1024)),
                   hop_length=int(doc.get("hop_length", 480)),
                   n_mels=int(doc.get("feature_size", 64)),
                   fmin=float(doc.get("frequency_min", 0.0)),
                   fmax=float(doc.get("frequency_max", 14000.0)),
                   max_length_s=float(doc.get("max_length_s", 10)),
                   mel_scale="htk" if truncation == "fusion" else "slaney",
                   padding=doc.get("padding", "repeatpad"), fusion=fusion)


class ClapLogMel(nn.Module):
    """Waveform ``(B, T)`` -> log-mel ``(B, frames, n_mels)`` in dB, as ClapFeatureExtractor.

    Same window (periodic Hann), reflect centring, power spectrum, filters (transformers'
    ``mel_filter_bank``, so the numbers are the extractor's own) and ``10·log10(max(x, 1e-10))``,
    computed in float32 with ``torch.stft`` instead of a float64 per-frame numpy loop.
    """

    def __init__(self, cfg: ClapFrontendConfig):
        super().__init__()
        from transformers.audio_utils import mel_filter_bank

        self.cfg = cfg
        slaney = cfg.mel_scale == "slaney"
        mel = mel_filter_bank(num_frequency_bins=cfg.n_fft // 2 + 1, num_mel_filters=cfg.n_mels,
                              min_frequency=cfg.fmin, max_frequency=cfg.fmax,
                              sampling_rate=cfg.filter_rate, norm="slaney" if slaney else None,
                              mel_scale=cfg.mel_scale)
        self.register_buffer("mel", torch.tensor(mel, dtype=torch.float32), persistent=False)
        self.register_buffer("window", torch.hann_window(cfg.n_fft, periodic=True), persistent=False)

    def forward(self, waveform: Tensor) -> Tensor:
        spec = torch.stft(waveform.float(), self.cfg.n_fft, self.cfg.hop_length, window=self.window,
                          center=True, pad_mode="reflect", return_complex=True)  # (B, F, frames)
        power = spec.real.square() + spec.imag.square()  # (B, F, frames)
        mel = torch.matmul(power.transpose(1, 2), self.mel)  # (B, frames, n_mels)
        return 10.0 * torch.log10(mel.clamp(min=1e-10))


def pad_to_window(wave: Tensor, length: int, padding: str) -> Tensor:
    """``(B, T)`` with ``T <= length`` -> ``(B, length)`` as ClapFeatureExtractor pads."""
    t = wave.shape[-1]
    if t == 0:
        raise AudioError("<waveform>", "empty waveform")
    if padding == "repeat":
        wave = wave.repeat(1, length // t + 1)[:, :length]
    elif padding == "repeatpad":
        wave = wave.repeat(1, length // t)
    return F.pad(wave, (0, length - wave.shape[-1]))


def window_starts(total: int, window: int, hop: int) -> list[int]:
    """Window starts covering ``total`` samples; the last window ends at the clip's end."""
    starts = list(range(0, total - window + 1, hop))
    if starts[-1] != total - window:
        starts.append(total - window)
    return starts


def int16_roundtrip(waveform: Tensor) -> Tensor:
    """laion_clap's ``int16_to_float32(float32_to_int16(x))`` (``training/data.py``), which its
    ``get_audio_embedding_from_filelist`` / ``_from_data`` apply before the model: clip to
    [-1, 1], ``x * 32767`` in float32 cast to int16 (numpy's ``astype`` truncates toward zero),
    then ``/ 32767`` in float64 (numpy promotes), rounded to float32."""
    q = (waveform.float().clamp(-1.0, 1.0) * 32767.0).to(torch.int16)
    return (q.double() / 32767.0).to(waveform.dtype if waveform.is_floating_point() else torch.float32)


def fusion_crop_starts(total_frames: int, chunk_frames: int) -> tuple[int, int, int]:
    """Front/middle/back crop starts of LAION's fusion input, each the middle of its third of
    the possible starts (LAION draws each at random within its third)."""
    thirds = np.array_split(np.arange(total_frames - chunk_frames + 1), 3)
    return tuple(int(t[len(t) // 2]) if len(t) else 0 for t in thirds)  # type: ignore[return-value]


# --- towers ----------------------------------------------------------------------------------


def _audio_config(config: Mapping[str, Any] | None):
    from transformers import ClapAudioConfig

    from earshot.models.hf_config import strict_hf_config

    return strict_hf_config(ClapAudioConfig, config, "clap_htsat.config")


def _text_config(config: Mapping[str, Any] | None):
    from transformers import ClapTextConfig

    from earshot.models.hf_config import strict_hf_config

    return strict_hf_config(ClapTextConfig, config, "clap_roberta.config")


def _fast_attention_class():
    """transformers' HTSAT window attention with the product, bias, mask and softmax done by
    ``scaled_dot_product_attention`` (same numbers, max diff ~1e-8; ~25% less HTSAT time on a
    CPU). Made once, lazily, so importing this module does not import transformers."""
    global _FAST_ATTENTION
    if _FAST_ATTENTION is not None:
        return _FAST_ATTENTION
    from transformers.models.clap.modeling_clap import ClapAudioSelfAttention

    class SdpaClapAudioSelfAttention(ClapAudioSelfAttention):
        def forward(self, hidden_states, attention_mask=None, output_attentions=False):
            if output_attentions:  # the fused kernel does not return probabilities
                return super().forward(hidden_states, attention_mask, output_attentions)
            b, n, _ = hidden_states.shape  # (B*windows, tokens per window, C)
            shape = (b, n, -1, self.attention_head_size)
            q = self.query(hidden_states).view(shape).transpose(1, 2)  # (B*, H, N, d)
            k = self.key(hidden_states).view(shape).transpose(1, 2)
            v = self.value(hidden_states).view(shape).transpose(1, 2)
            bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
            bias = bias.view(n, n, -1).permute(2, 0, 1)  # (H, N, N)
            if attention_mask is None:
                mask = bias.unsqueeze(0).expand(b, -1, -1, -1)
            else:  # attention_mask: (windows, N, N), the same for every clip
                w = attention_mask.shape[0]
                mask = (bias.unsqueeze(0) + attention_mask.unsqueeze(1))  # (windows, H, N, N)
                mask = mask.unsqueeze(0).expand(b // w, -1, -1, -1, -1).reshape(b, -1, n, n)
            p = self.dropout.p if self.training else 0.0
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.to(q.dtype), dropout_p=p)
            return (out.transpose(1, 2).reshape(b, n, -1),)  # (B*, N, C)

    _FAST_ATTENTION = SdpaClapAudioSelfAttention
    return _FAST_ATTENTION


_FAST_ATTENTION = None


class ClapAudioTower(AudioEncoder):
    """HTSAT + CLAP's audio projection (transformers' ``ClapAudioModelWithProjection``):
    waveform ``(B, T)`` at 48 kHz -> ``(B, projection_dim)``, not normalised. With
    ``projection=False`` it is HTSAT alone (``ClapAudioModel``, ``(B, hidden_size)``), for
    models whose projection is an earshot head (MS-CLAP 2023)."""

    def __init__(self, config: Mapping[str, Any] | None = None,
                 frontend: ClapFrontendConfig | Mapping[str, Any] | None = None,
                 projection: bool = True):
        super().__init__()
        from transformers import ClapAudioModel, ClapAudioModelWithProjection

        hf_cfg = _audio_config(config)
        if isinstance(frontend, ClapFrontendConfig):
            fe = frontend
        else:
            fe = from_dict(ClapFrontendConfig, dict(frontend or {}), "clap_htsat.frontend")
        if fe.fusion != bool(hf_cfg.enable_fusion):
            raise ConfigError(f"clap_htsat: frontend.fusion={fe.fusion} but the model's "
                              f"enable_fusion={hf_cfg.enable_fusion}")
        if fe.n_mels != hf_cfg.num_mel_bins:
            raise ConfigError(f"clap_htsat: frontend.n_mels={fe.n_mels} but the model reads "
                              f"{hf_cfg.num_mel_bins} mel bins")
        self.projection = projection
        self.model = ClapAudioModelWithProjection(hf_cfg) if projection else ClapAudioModel(hf_cfg)
        fast = _fast_attention_class()
        for m in self.model.modules():  # same parameters and buffers, faster kernel
            if type(m) is fast.__bases__[0]:
                m.__class__ = fast
        self.frontend_cfg = fe
        self.logmel = ClapLogMel(fe)
        self.sample_rate = fe.sample_rate
        self.embed_dim = int(hf_cfg.projection_dim if projection else hf_cfg.hidden_size)

    @property
    def htsat(self) -> nn.Module:
        """transformers' ClapAudioEncoder (HTSAT) inside the tower."""
        return self.model.audio_model.audio_encoder if self.projection else self.model.audio_encoder

    def blocks(self) -> list[nn.Module]:
        return list(self.htsat.layers)

    def frontend_settings(self) -> dict[str, Any]:
        return {"kind": "clap_logmel", **to_dict(self.frontend_cfg)}

    def features(self, waveform: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, T)`` -> (input_features ``(B, C, frames, n_mels)``, is_longer ``(B, 1)``) for
        clips up to one window (padded) or, with fusion, of any length."""
        fe = self.frontend_cfg
        n = fe.window_samples
        b, t = waveform.shape
        if t > n and fe.fusion:
            mel = self.logmel(waveform)  # (B, frames, M)
            chunk = n // fe.hop_length + 1
            total = mel.shape[1]
            if total > chunk:
                starts = fusion_crop_starts(total, chunk)
                squeezed = F.interpolate(mel[:, None], size=(chunk, fe.n_mels), mode="bilinear",
                                         align_corners=False)[:, 0]  # (B, chunk, M)
                crops = [mel[:, s : s + chunk] for s in starts]
                feats = torch.stack([squeezed, *crops], dim=1)  # (B, 4, chunk, M)
                return feats, torch.ones(b, 1, dtype=torch.bool, device=mel.device)
            mel = mel[:, :chunk]
        else:
            if t > n:
                raise DataError(f"clap_htsat: {t} samples exceed the {n}-sample window")
            mel = self.logmel(pad_to_window(waveform, n, fe.padding))  # (B, frames, M)
        feats = mel[:, None].expand(-1, 4 if fe.fusion else 1, -1, -1)  # (B, C, frames, M)
        return feats, torch.zeros(b, 1, dtype=torch.bool, device=mel.device)

    def _embed(self, waveform: Tensor) -> Tensor:
        feats, longer = self.features(waveform)
        out = self.model(input_features=feats, is_longer=longer)
        return out.audio_embeds if self.projection else out.pooler_output  # (B, D)

    def forward(self, waveform: Tensor) -> Tensor:
        if waveform.dim() != 2:
            raise DataError(f"clap_htsat: expected (B, T) waveforms, got {tuple(waveform.shape)}")
        fe = self.frontend_cfg
        n = fe.window_samples
        b, t = waveform.shape
        if fe.laion_int16_roundtrip:
            waveform = int16_roundtrip(waveform)
        if t <= n or fe.fusion:
            return self._embed(waveform)  # (B, D)
        starts = window_starts(t, n, max(1, int(round(fe.window_hop_s * fe.sample_rate))))
        windows = torch.stack([waveform[:, s : s + n] for s in starts], dim=1)  # (B, W, n)
        z = self._embed(windows.reshape(b * len(starts), n))  # (B*W, D)
        if self.projection:  # already in the shared space: average directions
            z = F.normalize(z, dim=-1)
        return z.reshape(b, len(starts), -1).mean(dim=1)  # (B, D): mean over windows


@register_audio_encoder("clap_htsat")
def clap_htsat(config: dict[str, Any] | None = None, frontend: dict[str, Any] | None = None,
               projection: bool = True) -> ClapAudioTower:
    """LAION-CLAP's audio tower, randomly initialised from ``config`` (ClapAudioConfig keys);
    ``frontend``: ClapFrontendConfig keys; ``projection=False``: HTSAT without CLAP's
    projection. Published weights load through ``weights:``."""
    return ClapAudioTower(config, frontend, projection)


class ClapTextTower(TextEncoder):
    """RoBERTa + CLAP's text projection (``ClapTextModelWithProjection``) with its tokenizer:
    strings -> ``(B, projection_dim)``, not normalised. Captions are truncated to
    ``max_length`` tokens (77, LAION's ``tokenizer(..., max_length=77, truncation=True)``)."""

    output_normalized = False

    def __init__(self, config: Mapping[str, Any] | None = None, tokenizer: str | None = None,
                 max_length: int = 77):
        super().__init__()
        from transformers import ClapTextModelWithProjection

        hf_cfg = _text_config(config)
        self.model = ClapTextModelWithProjection(hf_cfg)
        self.tokenizer_source = tokenizer
        self.tokenizer = load_roberta_tokenizer(tokenizer)
        if len(self.tokenizer) > hf_cfg.vocab_size:
            raise ConfigError(f"clap_roberta: tokenizer has {len(self.tokenizer)} ids but the "
                              f"model's vocab_size is {hf_cfg.vocab_size}")
        self.max_length = max_length
        self.embed_dim = int(hf_cfg.projection_dim)

    def blocks(self) -> list[nn.Module]:
        return list(self.model.text_model.encoder.layer)

    def tokenize(self, texts: list[str]) -> dict[str, Tensor]:
        return dict(self.tokenizer(list(texts), padding=True, truncation=True,
                                   max_length=self.max_length, return_tensors="pt"))

    def forward(self, texts: list[str]) -> Tensor:
        if isinstance(texts, str) or not texts or not all(isinstance(t, str) for t in texts):
            raise DataError("clap_roberta takes a non-empty list of strings")
        device = self.model.text_projection.linear1.weight.device
        batch = {k: v.to(device) for k, v in self.tokenize(texts).items()}
        out = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        return out.text_embeds.float()  # (B, D)


def load_roberta_tokenizer(source: str | None):
    """RoBERTa's byte-level BPE tokenizer from a folder (a saved tokenizer, or ``vocab.json`` +
    ``merges.txt``), a ``tokenizer.json`` file, or the registry entry named ``source`` (the
    hub's ``tokenizer.json``, found in the cache)."""
    from transformers import AutoTokenizer, RobertaTokenizerFast

    if source is None:
        raise ConfigError("clap_roberta: needs tokenizer=<folder, tokenizer.json, or the "
                          "registry name 'laion_clap_tokenizer'>")
    path = Path(source).expanduser()
    if not path.exists():
        from earshot.models.pretrained import downloaded_file

        path = downloaded_file(source, "clap_roberta tokenizer")
    try:
        if path.is_file():
            return RobertaTokenizerFast(tokenizer_file=str(path))
        if (path / "tokenizer.json").is_file() or (path / "tokenizer_config.json").is_file():
            return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        return RobertaTokenizerFast(vocab=str(path / "vocab.json"), merges=str(path / "merges.txt"))
    except (OSError, ValueError, TypeError) as e:
        raise WeightsError(f"{path}: not a RoBERTa tokenizer ({e})") from None


@register_text_encoder("clap_roberta")
def clap_roberta(config: dict[str, Any] | None = None, tokenizer: str | None = None,
                 max_length: int = 77) -> ClapTextTower:
    """LAION-CLAP's text tower from ``config`` (ClapTextConfig keys) and a tokenizer folder."""
    return ClapTextTower(config, tokenizer, max_length)


# --- weights ---------------------------------------------------------------------------------

_AUDIO_PREFIXES = ("audio_model.", "audio_projection.")
_TEXT_PREFIXES = ("text_model.", "text_projection.")
_SCALE_KEYS = ("logit_scale_a", "logit_scale_t")


def split_clap_state_dict(sd: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[str, Tensor]]:
    """A ``ClapModel`` state dict -> (audio tower, text tower, logit scales). Every key must
    belong to one of them: an unknown key is an error, never silently dropped."""
    audio, text, scales, unknown = {}, {}, {}, []
    for k, v in sd.items():
        if k.startswith(_AUDIO_PREFIXES):
            audio[k] = v
        elif k.startswith(_TEXT_PREFIXES):
            text[k] = v
        elif k in _SCALE_KEYS:
            scales[k] = v
        else:
            unknown.append(k)
    if unknown:
        raise WeightsError(f"not a ClapModel state dict: unexpected keys {unknown[:8]}")
    return audio, text, scales


# LAION-AI/CLAP (src/laion_clap/clap_module/{model.py,htsat.py}) names, and why some are dropped:
# the AudioSet heads (tscam_conv, head) and the MLP "transform" heads are not on the embedding
# path; attn_mask is a buffer transformers recomputes; torchlibrosa's STFT/mel tensors are
# checked against the slaney front end (see _check_torchlibrosa) then dropped.
_LAION_DROPPED_PREFIXES = ("audio_branch.tscam_conv.", "audio_branch.head.", "text_transform.",
                           "audio_transform.")
_LAION_FRONTEND_PREFIX = "audio_branch."
_LAION_BLOCK = re.compile(r"^audio_branch\.layers\.(\d+)\.blocks\.(\d+)\.(.+)$")
_LAION_BLOCK_PARTS = {
    "norm1.": "layernorm_before.",
    "norm2.": "layernorm_after.",
    "attn.proj.": "attention.output.dense.",
    "attn.relative_position_bias_table": "attention.self.relative_position_bias_table",
    "attn.relative_position_index": "attention.self.relative_position_index",
    "mlp.fc1.": "intermediate.dense.",
    "mlp.fc2.": "output.dense.",
}
_LAION_PROJECTION = re.compile(r"^(audio|text)_projection\.(0|2)\.(weight|bias)$")


def convert_laion_clap_state_dict(sd: Mapping[str, Tensor],
                                  frontend: ClapFrontendConfig | None) -> dict[str, Tensor]:
    """LAION-CLAP ``.pt`` state dict (``ckpt["state_dict"]``, with or without DDP's ``module.``)
    -> transformers ``ClapModel`` keys, for strict loading.

    ``audio_branch.*`` -> ``audio_model.audio_encoder.*`` (``bn0`` -> ``batch_norm``; in each
    Swin block ``norm1/2`` -> ``layernorm_before/after``, ``attn.qkv`` split into
    ``attention.self.query/key/value``, ``attn.proj`` -> ``attention.output.dense``,
    ``mlp.fc1/fc2`` -> ``intermediate.dense``/``output.dense``); ``text_branch.*`` ->
    ``text_model.*``; ``*_projection.0/.2`` -> ``*_projection.linear1/linear2``. RoBERTa's
    ``position_ids``/``token_type_ids`` buffers are rebuilt (older checkpoints carry the first
    only). ``frontend`` is the audio front end the checkpoint's torchlibrosa tensors are checked
    against; None skips that check (loading the text tower alone, which has no front end).
    """
    sd = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in sd.items()}
    out: dict[str, Tensor] = {}
    frontend_keys = {}
    for key, value in sd.items():
        if key.startswith(_LAION_DROPPED_PREFIXES) or key.endswith(".attn_mask"):
            continue
        rest = key[len(_LAION_FRONTEND_PREFIX):]
        if key.startswith(_LAION_FRONTEND_PREFIX) and rest.startswith(("spectrogram_extractor.",
                                                                       "logmel_extractor.")):
            frontend_keys[rest] = value
            continue
        if key == "text_branch.embeddings.position_ids":
            continue  # rebuilt below
        if m := _LAION_PROJECTION.match(key):
            out[f"{m[1]}_projection.linear{1 if m[2] == '0' else 2}.{m[3]}"] = value
        elif m := _LAION_BLOCK.match(key):
            prefix = f"audio_model.audio_encoder.layers.{m[1]}.blocks.{m[2]}."
            part = m[3]
            if part.startswith("attn.qkv."):
                q, k_, v = value.chunk(3, dim=0)
                kind = part[len("attn.qkv."):]
                out[prefix + f"attention.self.query.{kind}"] = q
                out[prefix + f"attention.self.key.{kind}"] = k_
                out[prefix + f"attention.self.value.{kind}"] = v
                continue
            for old, new in _LAION_BLOCK_PARTS.items():
                if part.startswith(old):
                    out[prefix + new + part[len(old):]] = value
                    break
            else:
                raise WeightsError(f"LAION-CLAP: unknown Swin block key {key!r}")
        elif key.startswith("audio_branch."):
            rest = key[len("audio_branch."):]
            if rest.startswith("bn0."):
                rest = "batch_norm." + rest[len("bn0."):]
            out["audio_model.audio_encoder." + rest] = value
        elif key.startswith("text_branch."):
            out["text_model." + key[len("text_branch."):]] = value
        elif key in _SCALE_KEYS:
            out[key] = value
        else:
            raise WeightsError(f"LAION-CLAP: unexpected key {key!r}")
    if frontend_keys and frontend is not None:
        _check_torchlibrosa(frontend_keys, frontend)
    emb = "text_model.embeddings."
    if emb + "position_embeddings.weight" in out:
        n_pos = out[emb + "position_embeddings.weight"].shape[0]
        position_ids = torch.arange(n_pos).unsqueeze(0)
        old = sd.get("text_branch.embeddings.position_ids")
        if old is not None and not torch.equal(old.long().reshape(1, -1), position_ids):
            raise WeightsError("LAION-CLAP: text_branch.embeddings.position_ids is not 0..n-1")
        out[emb + "position_ids"] = position_ids
        out[emb + "token_type_ids"] = torch.zeros_like(position_ids)
    return out


def _check_torchlibrosa(found: Mapping[str, Tensor], fe: ClapFrontendConfig) -> None:
    # An unfused LAION HTSAT computes its mel inside the model with torchlibrosa; its tensors
    # must be the ones our slaney front end implies, or the checkpoint expects other features.
    from earshot.audio.frontend import FrontendConfig, torchlibrosa_buffers

    expected = torchlibrosa_buffers(FrontendConfig(sample_rate=fe.filter_rate, n_fft=fe.n_fft,
                                                   win_length=fe.n_fft, hop_length=fe.hop_length,
                                                   n_mels=fe.n_mels, fmin=fe.fmin, fmax=fe.fmax))
    if set(found) != set(expected):
        raise WeightsError(f"LAION-CLAP: front-end tensors {sorted(found)} are not torchlibrosa's "
                           f"{sorted(expected)}")
    for k, v in expected.items():
        if found[k].shape != v.shape or (found[k].float() - v).abs().max() > 1e-4:
            raise WeightsError(f"LAION-CLAP: audio_branch.{k} does not match the front end "
                               f"{fe} (other mel/FFT settings?)")


def convert_clap_hf_state_dict(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A transformers ``ClapModel`` state dict (the hub's ``pytorch_model.bin`` or
    ``model.safetensors``) -> the same keys, checked (every key belongs to a tower or is a logit
    scale) and completed with the constant ``token_type_ids`` buffer older files lack."""
    audio, text, scales = split_clap_state_dict(sd)
    return {**audio, **_text_part(text), **scales}


def read_torch_checkpoint(path: str | Path, key: str, what: str) -> dict[str, Tensor]:
    """The state dict under ``key`` in a torch pickle (or the file's dict itself when it has no
    such key), read with ``weights_only=True``; ``what`` names the format in errors."""
    try:
        ckpt = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as e:  # pickle/zip errors all mean the file is unusable
        raise WeightsError(f"{path}: not a readable {what} checkpoint ({e})") from None
    sd = ckpt.get(key, ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(sd, dict):
        raise WeightsError(f"{path}: expected a state dict (under {key!r}), found "
                           f"{type(ckpt).__name__}")
    return sd


def read_laion_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """The state dict inside a LAION-CLAP ``.pt`` file (``{"state_dict": ...}`` or a bare one)."""
    return read_torch_checkpoint(path, "state_dict", "LAION-CLAP")


@dataclass(frozen=True)
class HFClapFolder:
    """What a Hugging Face CLAP folder holds, read once."""

    path: Path
    audio_config: dict[str, Any]  # ClapAudioConfig keys (projection settings included)
    text_config: dict[str, Any]  # ClapTextConfig keys
    frontend: ClapFrontendConfig
    logit_scale_init: float
    weights: Path | None = None  # model.safetensors or pytorch_model.bin
    extra: dict[str, Any] = field(default_factory=dict)


def read_hf_clap_folder(path: str | Path) -> HFClapFolder:
    """Read ``config.json`` (+ ``preprocessor_config.json``) of a folder laid out as
    ``ClapModel.save_pretrained`` / the hub's ``laion/clap-*`` repositories."""
    from transformers import ClapConfig

    path = Path(path).expanduser()
    try:
        cfg = ClapConfig.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as e:
        raise WeightsError(f"{path}: not a CLAP folder ({e})") from None
    pre = path / "preprocessor_config.json"
    fusion = bool(cfg.audio_config.enable_fusion)
    frontend = (ClapFrontendConfig.from_feature_extractor(json.loads(pre.read_text()), fusion)
                if pre.is_file() else ClapFrontendConfig(mel_scale="htk" if fusion else "slaney",
                                                          fusion=fusion))
    weights = next((path / n for n in ("model.safetensors", "pytorch_model.bin")
                    if (path / n).is_file()), None)
    return HFClapFolder(path, _diff(cfg.audio_config), _diff(cfg.text_config), frontend,
                        float(cfg.logit_scale_init_value), weights)


def _diff(sub_config) -> dict[str, Any]:
    # Only what differs from transformers' defaults (plus the projection), so a stored earshot
    # config stays short and readable.
    d = sub_config.to_diff_dict()
    for k in ("model_type", "transformers_version", "architectures", "torch_dtype", "dtype",
              "_name_or_path", "output_hidden_states", "output_attentions", "return_dict"):
        d.pop(k, None)
    d["projection_dim"] = sub_config.projection_dim
    d["projection_hidden_act"] = sub_config.projection_hidden_act
    return json.loads(json.dumps(d))


def read_hf_clap_weights(path: str | Path) -> dict[str, Tensor]:
    """``ClapModel`` weights from a folder or a ``model.safetensors``/``pytorch_model.bin`` file."""
    p = Path(path).expanduser()
    if p.is_dir():
        p = next((p / n for n in ("model.safetensors", "pytorch_model.bin") if (p / n).is_file()), p)
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            return dict(load_file(str(p), device="cpu"))
        sd = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsError(f"{p}: not a readable CLAP weights file ({e})") from None
    if not isinstance(sd, dict):
        raise WeightsError(f"{p}: expected a state dict")
    return sd


def _text_part(text: Mapping[str, Tensor]) -> dict[str, Tensor]:
    part = dict(text)
    emb = "text_model.embeddings."
    # Files saved by older transformers lack the (constant, all-zero) token_type_ids buffer.
    if emb + "position_ids" in part and emb + "token_type_ids" not in part:
        part[emb + "token_type_ids"] = torch.zeros_like(part[emb + "position_ids"])
    return part


def load_clap_tower(tower: nn.Module, sd: Mapping[str, Tensor]) -> None:
    """Load the tower's part of a ``ClapModel`` state dict strictly."""
    audio, text, _ = split_clap_state_dict(sd)
    if isinstance(tower, ClapAudioTower):
        part = audio
    elif isinstance(tower, ClapTextTower):
        part = _text_part(text)
    else:
        raise ConfigError(f"CLAP weights need a clap_htsat or clap_roberta tower, got "
                          f"{type(tower).__name__}")
    try:
        tower.model.load_state_dict(part, strict=True)
    except RuntimeError as e:
        raise WeightsError(f"CLAP weights do not fit the {type(tower).__name__}: {e}") from None


def biencoder_state_dict(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A ``ClapModel`` state dict -> the state dict of earshot's CLAP bi-encoder (identity
    heads). The bi-encoder's logit scale is LAION's ``logit_scale_a`` (the audio-to-text one;
    a log scale, as earshot's ``log_logit_scale``)."""
    audio, text, scales = split_clap_state_dict(sd)
    out = {f"audio_encoder.model.{k}": v for k, v in audio.items()}
    out.update({f"text_encoder.model.{k}": v for k, v in _text_part(text).items()})
    if "logit_scale_a" not in scales:
        raise WeightsError("CLAP weights without logit_scale_a")
    out["log_logit_scale"] = scales["logit_scale_a"].reshape(())
    return out
