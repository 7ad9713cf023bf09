"""MS-CLAP 2022 (Elizalde et al., ICASSP 2023; microsoft/CLAP ``msclap``) as an earshot
bi-encoder: earshot's CNN14 at 44.1 kHz + BERT-base (CLS token) + MS-CLAP's projections as
``residual`` heads, loaded strictly from ``CLAP_weights_2022.pth`` by
:func:`convert_msclap_state_dict`.

Preprocessing (``msclap/configs/config_2022.yml`` and ``models/audio.py``): 44.1 kHz, torchlibrosa
STFT with ``n_fft = win_length = window_size = 1024`` (the config's ``n_fft: 1028`` is never
read), hop 320, 64 slaney mels 50-14000 Hz, 5 s clips; text ``bert-base-uncased`` with
``text_len`` 100. MS-CLAP repeats a short clip and cuts it to 5 s (no zero padding), as here; a
longer clip gets one random 5 s crop there, while earshot takes 5 s windows at a 2.5 s hop (the
last aligned to the clip's end) and averages their CNN14 embeddings before the projection.

The tokenizer is bert-base-uncased's WordPiece vocabulary, which the offline
all-MiniLM-L6-v2 package ships unchanged (30,522 lower-cased entries; [CLS]=101, [SEP]=102,
[PAD]=0), so MS-CLAP needs no tokenizer download.

MS-CLAP 2023 (HTSAT at 44.1 kHz, 7 s, 50-8000 Hz + GPT-2 with last-token pooling) is not
converted yet: its registry entry is listed, but not loadable.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from earshot.audio.frontend import FrontendConfig
from earshot.errors import ConfigError, WeightsError
from earshot.models.base import register_audio_encoder, register_text_encoder
from earshot.models.clap import read_torch_checkpoint, window_starts
from earshot.models.panns import Cnn14, convert_panns_state_dict
from earshot.models.text import HFTransformerEncoder, default_sbert_path

__all__ = ["MSCLAP_2022_FRONTEND", "MSClapCnn14", "biencoder_state_dict",
           "convert_msclap_state_dict", "read_msclap_checkpoint"]

MSCLAP_2022_FRONTEND = FrontendConfig(sample_rate=44100, n_fft=1024, win_length=1024,
                                      hop_length=320, n_mels=64, fmin=50.0, fmax=14000.0)


class MSClapCnn14(Cnn14):
    """CNN14 that sees MS-CLAP's fixed-length clips: ``(B, T)`` -> ``(B, 2048)`` fc1 embedding,
    short clips repeated to ``clip_s``, long ones averaged over ``clip_s`` windows."""

    def __init__(self, clip_s: float = 5.0, window_hop_s: float = 2.5, **options: Any):
        super().__init__(**options)
        if clip_s <= 0 or window_hop_s <= 0:
            raise ConfigError("msclap_cnn14: clip_s and window_hop_s must be positive")
        self.clip_samples = int(round(clip_s * self.sample_rate))
        self.hop_samples = int(round(window_hop_s * self.sample_rate))

    def frontend_settings(self) -> dict[str, Any]:
        return {**super().frontend_settings(), "clip_samples": self.clip_samples,
                "window_hop_samples": self.hop_samples}

    def forward(self, waveform: Tensor) -> Tensor:
        b, t = waveform.shape
        n = self.clip_samples
        if t <= n:
            reps = -(-n // t)  # ceil: MS-CLAP's repeat_factor
            return super().forward(waveform.repeat(1, reps)[:, :n])  # (B, D)
        starts = window_starts(t, n, self.hop_samples)
        windows = torch.stack([waveform[:, s : s + n] for s in starts], dim=1)  # (B, W, n)
        z = super().forward(windows.reshape(b * len(starts), n))  # (B*W, D)
        return z.reshape(b, len(starts), -1).mean(dim=1)  # (B, D): mean over windows


@register_audio_encoder("msclap_cnn14")
def msclap_cnn14(frontend: dict[str, Any] | None = None, clip_s: float = 5.0,
                 window_hop_s: float = 2.5, spec_augment: bool = False) -> MSClapCnn14:
    """MS-CLAP 2022's audio tower (CNN14, 44.1 kHz front end by default, fc1 embedding)."""
    fe = MSCLAP_2022_FRONTEND if frontend is None else frontend
    return MSClapCnn14(clip_s=clip_s, window_hop_s=window_hop_s, frontend=fe,
                       spec_augment=spec_augment).to(memory_format=torch.channels_last)


# bert-base-uncased (transformers' BertConfig defaults are exactly bert-base).
_BERT_BASE: dict[str, Any] = {"model_type": "bert"}


@register_text_encoder("msclap_bert")
def msclap_bert(config: dict[str, Any] | None = None, tokenizer: str | None = None,
                max_length: int = 100) -> HFTransformerEncoder:
    """MS-CLAP 2022's text tower: BERT (bert-base by default) with the CLS token of the last
    layer, captions truncated to ``max_length`` (MS-CLAP's ``text_len``)."""
    cfg = {**_BERT_BASE, **(config or {})}
    return HFTransformerEncoder(config=cfg, tokenizer=tokenizer or str(default_sbert_path()),
                                pooling="cls", max_length=max_length)


def read_msclap_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """``torch.load(path)["model"]`` of an MS-CLAP file, with ``weights_only=True``."""
    return read_torch_checkpoint(path, "model", "MS-CLAP")


_PREFIXES = {
    "audio_encoder.projection.": "audio_head.proj.",
    "caption_encoder.projection.": "text_head.proj.",
    "caption_encoder.base.": "text_encoder.hf.",
}


def convert_msclap_state_dict(sd: Mapping[str, Tensor],
                              frontend: FrontendConfig = MSCLAP_2022_FRONTEND) -> dict[str, Tensor]:
    """MS-CLAP 2022 state dict (``CLAP_weights_2022.pth["model"]``) -> earshot bi-encoder keys.

    ``audio_encoder.base.*`` goes through :func:`convert_panns_state_dict` (its torchlibrosa
    tensors are checked against ``frontend``, then dropped) to ``audio_encoder.*``;
    ``caption_encoder.base.*`` -> ``text_encoder.hf.*`` (BERT; the old constant
    ``embeddings.position_ids`` buffer is checked and dropped); the two ``projection`` modules ->
    the ``residual`` heads; ``logit_scale`` (a log scale) -> ``log_logit_scale``.
    """
    sd = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in sd.items()}
    audio = {k[len("audio_encoder.base."):]: v for k, v in sd.items()
             if k.startswith("audio_encoder.base.")}
    out = {f"audio_encoder.{k}": v for k, v in convert_panns_state_dict(audio, frontend).items()}
    for key, value in sd.items():
        if key.startswith("audio_encoder.base."):
            continue
        if key == "logit_scale":
            out["log_logit_scale"] = value.reshape(())
            continue
        if key == "caption_encoder.base.embeddings.position_ids":
            if not torch.equal(value.long().reshape(-1), torch.arange(value.numel())):
                raise WeightsError("MS-CLAP: caption_encoder.base.embeddings.position_ids is not 0..n-1")
            continue
        prefix = next((p for p in _PREFIXES if key.startswith(p)), None)
        if prefix is None:
            raise WeightsError(f"MS-CLAP: unexpected key {key!r}")
        out[_PREFIXES[prefix] + key[len(prefix):]] = value
    return out


def biencoder_state_dict(sd: Mapping[str, Tensor], model) -> dict[str, Tensor]:
    """The converted state dict for ``model`` (an earshot MS-CLAP bi-encoder): what
    :func:`convert_msclap_state_dict` gives, with the model's own front end."""
    return convert_msclap_state_dict(sd, model.audio_encoder.frontend_cfg)


def load_msclap_tower(tower, path: str | Path) -> None:
    """Load one tower (``msclap_cnn14`` or ``msclap_bert``) from an MS-CLAP file, strictly."""
    from earshot.models.base import AudioEncoder

    fe = tower.frontend_cfg if isinstance(tower, AudioEncoder) else MSCLAP_2022_FRONTEND
    sd = convert_msclap_state_dict(read_msclap_checkpoint(path), fe)
    prefix = "audio_encoder." if isinstance(tower, AudioEncoder) else "text_encoder."
    part = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    try:
        tower.load_state_dict(part, strict=True)
    except RuntimeError as e:
        raise WeightsError(f"{path}: MS-CLAP weights do not fit {type(tower).__name__}: {e}") from None
