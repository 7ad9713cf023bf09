"""LAION-CLAP's audio tower on the transformers implementation (``ClapAudioModelWithProjection``),
with the two weight converters LAION's files need (registered here, beside the architecture).
The front end is ``clap_frontend.py``, the text tower ``earshot/models/text/clap.py``, the
Hugging Face folder reader ``earshot/loading/hf_clap.py``.

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

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from earshot.audio.framing import window_starts
from earshot.config import from_dict, to_dict
from earshot.errors import ConfigError, DataError, WeightsError
from earshot.models.base import AudioEncoder, register_audio_encoder
from earshot.models.audio.clap_frontend import (ClapFrontendConfig, ClapLogMel, fusion_crop_starts, int16_roundtrip,  # noqa: F401
                                               pad_to_window)
from earshot.models.converters import read_state_dict, register_converter
from earshot.models.text.clap import ClapTextTower, clap_roberta, load_roberta_tokenizer  # noqa: F401

__all__ = [
    "ClapAudioTower",
    "ClapFrontendConfig",
    "ClapLogMel",
    "ClapTextTower",
    "convert_clap_hf_state_dict",
    "convert_laion_clap_state_dict",
    "split_clap_state_dict",
]


# --- towers ----------------------------------------------------------------------------------


def _audio_config(config: Mapping[str, Any] | None):
    from transformers import ClapAudioConfig

    from earshot.models.hf_config import strict_hf_config

    return strict_hf_config(ClapAudioConfig, config, "clap_htsat.config")


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
_PADDINGS = ("repeatpad", "repeat", "pad", "none")


def _check_padding(padding: str) -> str:
    if padding not in _PADDINGS:
        raise ConfigError(f"clap_htsat: padding must be one of {_PADDINGS}, got {padding!r}")
    return padding


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

    # forward(waveform, padding=...) overrides the front end's padding for one call
    # (earshot.moments' lighthouse windows: padding="none")
    accepts_padding = True

    def features(self, waveform: Tensor, padding: str | None = None) -> tuple[Tensor, Tensor]:
        """``(B, T)`` -> (input_features ``(B, C, frames, n_mels)``, is_longer ``(B, 1)``) for
        clips up to one window (padded as ``padding``, default the front end's) or, with fusion,
        of any length."""
        fe = self.frontend_cfg
        padding = _check_padding(fe.padding if padding is None else padding)
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
            if padding == "none":  # the clip's own frames; HTSAT interpolates them to its input
                if t <= fe.n_fft // 2:  # the centred STFT reflects n_fft/2 samples
                    raise DataError(f"clap_htsat: padding='none' needs clips longer than "
                                    f"{fe.n_fft // 2} samples, got {t}")
                mel = self.logmel(waveform)  # (B, frames <= window frames, M)
            else:
                mel = self.logmel(pad_to_window(waveform, n, padding))  # (B, frames, M)
        feats = mel[:, None].expand(-1, 4 if fe.fusion else 1, -1, -1)  # (B, C, frames, M)
        return feats, torch.zeros(b, 1, dtype=torch.bool, device=mel.device)

    def _embed(self, waveform: Tensor, padding: str | None = None) -> Tensor:
        feats, longer = self.features(waveform, padding)
        out = self.model(input_features=feats, is_longer=longer)
        return out.audio_embeds if self.projection else out.pooler_output  # (B, D)

    def forward(self, waveform: Tensor, padding: str | None = None) -> Tensor:
        """``(B, T)`` -> ``(B, D)``; ``padding`` overrides ``frontend.padding`` for clips
        shorter than the window (``"none"``: unpadded, as lighthouse feeds MS-CLAP 2023)."""
        if waveform.dim() != 2:
            raise DataError(f"clap_htsat: expected (B, T) waveforms, got {tuple(waveform.shape)}")
        fe = self.frontend_cfg
        n = fe.window_samples
        b, t = waveform.shape
        if fe.laion_int16_roundtrip:
            waveform = int16_roundtrip(waveform)
        if t <= n or fe.fusion:
            return self._embed(waveform, padding)  # (B, D)
        starts = window_starts(t, n, max(1, int(round(fe.window_hop_s * fe.sample_rate))), pad_last=False)
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


# LAION-AI/CLAP (src/laion_clap/clap_module/{model.py,htsat.py}) names, and exactly which keys
# are ignored, and why (any other key that fits nowhere is an error):
# * audio_branch.tscam_conv.{weight,bias}, audio_branch.head.{weight,bias}: HTSAT's AudioSet
#   classifier (htsat.py: tscam_conv = Conv2d(num_features, num_classes), head = Linear), not on
#   the embedding path (CLAP reads the pooled "embedding" before it);
# * {text,audio}_transform.sequential.{0,3}.{weight,bias}: model.py's MLPLayers([d, d, d])
#   "transform" heads (Linear, ReLU, Dropout, Linear), used by LAION's training losses only;
# * audio_branch.layers.N.blocks.M.attn_mask: the shifted-window mask buffer, which transformers
#   recomputes from the window sizes.
# torchlibrosa's STFT/mel tensors are checked against the front end (_check_torchlibrosa) and
# dropped. Both logit scales (logit_scale_a, logit_scale_t) must be present in a whole file.
_LAION_IGNORED = re.compile(r"^(audio_branch\.(tscam_conv|head)\.(weight|bias)"
                            r"|(text|audio)_transform\.sequential\.(0|3)\.(weight|bias)"
                            r"|audio_branch\.layers\.\d+\.blocks\.\d+\.attn_mask)$")
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


def convert_laion_clap_state_dict(sd: Mapping[str, Tensor], frontend: ClapFrontendConfig | None,
                                  whole: bool = True) -> dict[str, Tensor]:
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
    ``whole``: ``sd`` is a whole CLAP file, so both logit scales must be in it (MS-CLAP 2023
    passes its HTSAT alone).
    """
    sd = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in sd.items()}
    out: dict[str, Tensor] = {}
    frontend_keys = {}
    for key, value in sd.items():
        if _LAION_IGNORED.match(key):
            continue
        if key.startswith(("audio_branch.head.", "audio_branch.tscam_conv.")):
            raise WeightsError(f"LAION-CLAP: unexpected key {key!r} (the AudioSet head holds only weight and bias)")
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
    missing_scales = [k for k in _SCALE_KEYS if k not in out]
    if whole and missing_scales:
        raise WeightsError(f"LAION-CLAP: missing {missing_scales} (a whole CLAP file has both logit scales)")
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


def read_laion_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """The state dict inside a LAION-CLAP ``.pt`` file: as LAION's trainer saves it
    (``{"epoch", "name", "state_dict", "optimizer"}``, the optimizer's ``lr`` a numpy.float64)
    or a bare one."""
    return read_state_dict(path, "state_dict", "LAION-CLAP checkpoint")


def read_hf_clap_weights(path: str | Path) -> dict[str, Tensor]:
    """``ClapModel`` weights from a folder or a ``model.safetensors``/``pytorch_model.bin`` file."""
    p = Path(path).expanduser()
    if p.is_dir():
        p = next((p / n for n in ("model.safetensors", "pytorch_model.bin") if (p / n).is_file()), p)
    return read_state_dict(p, what="CLAP weights file")


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


# --- registered converters (earshot.models.converters) ----------------------------------------


def _looks_like_laion_clap(obj: Any) -> bool:
    sd = obj.get("state_dict", obj) if isinstance(obj, Mapping) else {}
    keys = [k[len("module."):] if k.startswith("module.") else k for k in sd] if isinstance(sd, Mapping) else []
    return any(k.startswith("audio_branch.") for k in keys) and any(k.startswith("text_branch.") for k in keys)


def _looks_like_clap_hf(obj: Any) -> bool:
    return (isinstance(obj, Mapping) and any(k.startswith("audio_model.audio_encoder.") for k in obj)
            and any(k.startswith("text_model.") for k in obj))


def laion_architecture(obj: Any) -> dict[str, Any]:
    """What a LAION-CLAP file is built as, read from its keys and tensor shapes (its
    ``state_dict`` as LAION's trainer saves it, or a bare one): fused or not, HTSAT's patch
    width, blocks per stage and heads per stage (the relative-position tables' columns), the
    RoBERTa text tower's width, depth and vocabulary, and the projection width. The values
    :func:`laion_config_architecture` gives for a model config, so a file no published digest
    names (a user's own LAION-trainer output) is matched to the registered architecture."""
    sd = obj.get("state_dict", obj) if isinstance(obj, Mapping) else {}
    sd = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in sd.items()}

    def shape(key: str) -> tuple[int, ...]:
        if key not in sd:
            raise WeightsError(f"LAION-CLAP file without {key!r}: not a whole CLAP model")
        return tuple(sd[key].shape)

    blocks: dict[int, set[int]] = {}
    for k in sd:
        if m := _LAION_BLOCK.match(k):
            blocks.setdefault(int(m[1]), set()).add(int(m[2]))
    stages = sorted(blocks)
    if stages != list(range(len(stages))) or not stages:
        raise WeightsError(f"LAION-CLAP file with HTSAT stages {stages}: not 0..n-1")
    text_layers = {int(m[1]) for k in sd if (m := re.match(r"^text_branch\.encoder\.layer\.(\d+)\.", k))}
    vocab, width = shape("text_branch.embeddings.word_embeddings.weight")
    return {
        "enable_fusion": any(k.startswith("audio_branch.patch_embed.fusion_model.") for k in sd),
        "patch_embeds_hidden_size": shape("audio_branch.patch_embed.proj.weight")[0],
        "depths": [len(blocks[i]) for i in stages],
        "num_attention_heads": [shape(f"audio_branch.layers.{i}.blocks.0.attn.relative_position_bias_table")[1]
                                for i in stages],
        "text_hidden_size": width, "text_layers": len(text_layers), "vocab_size": vocab,
        "projection_dim": shape("audio_projection.2.weight")[0],
    }


def laion_config_architecture(config: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`laion_architecture`'s values for a bi-encoder config (a registry entry's
    ``clap_htsat``/``clap_roberta`` options, transformers' defaults for what they leave out)."""
    from transformers import ClapAudioConfig, ClapTextConfig

    audio = ClapAudioConfig(**dict(config["audio"]["options"]["config"]))
    text = ClapTextConfig(**dict(config["text"]["options"]["config"]))
    return {"enable_fusion": bool(audio.enable_fusion), "patch_embeds_hidden_size": audio.patch_embeds_hidden_size,
            "depths": list(audio.depths), "num_attention_heads": list(audio.num_attention_heads),
            "text_hidden_size": text.hidden_size, "text_layers": text.num_hidden_layers,
            "vocab_size": text.vocab_size, "projection_dim": audio.projection_dim}


def _laion_model(path: Path, model: Any) -> dict:
    return biencoder_state_dict(convert_laion_clap_state_dict(read_laion_checkpoint(path),
                                                              model.audio_encoder.frontend_cfg))


def _clap_hf_model(path: Path, model: Any) -> dict:
    return biencoder_state_dict(convert_clap_hf_state_dict(read_hf_clap_weights(path)))


@register_converter("laion_clap", model=_laion_model, detect=_looks_like_laion_clap,
                    architecture=laion_architecture, config_architecture=laion_config_architecture)
def load_laion_clap_tower(tower: nn.Module, path: Path) -> None:
    """One tower from a LAION-CLAP ``.pt`` file, strictly."""
    fe = tower.frontend_cfg if isinstance(tower, ClapAudioTower) else None
    load_clap_tower(tower, convert_laion_clap_state_dict(read_laion_checkpoint(path), fe))


@register_converter("clap_hf", model=_clap_hf_model, detect=_looks_like_clap_hf)
def load_clap_hf_tower(tower: nn.Module, path: Path) -> None:
    """One tower from a Hugging Face CLAP folder or its weights file, strictly."""
    load_clap_tower(tower, convert_clap_hf_state_dict(read_hf_clap_weights(path)))
