"""MS-CLAP 2022 and 2023 (Elizalde et al., ICASSP 2023 / 2024; microsoft/CLAP ``msclap``) as
earshot bi-encoders. 2022: earshot's CNN14 at 44.1 kHz + BERT-base (CLS token) + MS-CLAP's projections as
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

MS-CLAP 2023: HTSAT (transformers' ``ClapAudioModel``, i.e. ``clap_htsat`` with
``projection=False``; 768-d latent output) + GPT-2 (``msclap_gpt2``: the hidden state of the
last non-pad token, captions followed by `` <|endoftext|>``, pad token ``!``, 77 tokens) + the
same residual projections. Its audio arrives at 44.1 kHz in 7 s clips, but MS-CLAP's
``HTSATWrapper`` builds its torchlibrosa front end from ``msclap/models/config.py``
(``sample_rate = 32000``, ``fmax = 14000``), not from ``config_2023.yml`` (44100, 8000): the
mel filters are those of a 32 kHz signal applied to 44.1 kHz spectra. earshot reproduces that
(``mel_sample_rate=32000``), and the converter checks it against the checkpoint's own
torchlibrosa tensors.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from earshot.audio.frontend import FrontendConfig
from torch import nn

from earshot.errors import ConfigError, DataError, WeightsError
from earshot.models.base import TextEncoder, register_audio_encoder, register_text_encoder
from earshot.models.clap import read_torch_checkpoint, window_starts
from earshot.models.panns import Cnn14, convert_panns_state_dict
from earshot.models.text import HFTransformerEncoder, default_sbert_path

__all__ = ["MSCLAP_2022_FRONTEND", "MSCLAP_2023_FRONTEND", "MSClapCnn14", "MSClapGPT2", "biencoder_state_dict",
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
                max_length: int | None = None) -> HFTransformerEncoder:
    """MS-CLAP 2022's text tower: BERT (bert-base by default) with the CLS token of the last
    layer. MS-CLAP pads captions to ``text_len`` (100) but never truncates them, so a longer
    caption is read whole; here captions are cut only at ``max_length``, by default the model's
    position limit (``max_position_embeddings``, 512), with ``[SEP]`` kept at the end."""
    cfg = {**_BERT_BASE, **(config or {})}
    limit = int(cfg.get("max_position_embeddings", 512))
    if max_length is not None and not 2 <= max_length <= limit:
        raise ConfigError(f"msclap_bert.max_length: must be in [2, {limit}] (the position limit), "
                          f"got {max_length}")
    return HFTransformerEncoder(config=cfg, tokenizer=tokenizer or str(default_sbert_path()),
                                pooling="cls", max_length=max_length or limit)


class MSClapGPT2(TextEncoder):
    """MS-CLAP 2023's text tower: GPT-2, the hidden state of the last non-pad token.

    MS-CLAP appends `` <|endoftext|>`` to each caption, pads with ``!`` (id 0 in GPT-2's
    vocabulary) and takes position ``count(ids != 0) - 1``; GPT-2 is causal, so the padding
    after that position changes nothing and batches pad only to their longest caption.
    MS-CLAP pads to ``text_len`` (77) without truncating, so a longer caption is read whole;
    here a caption is cut only at ``max_length`` (default: the model's ``n_positions``, 1024),
    and then its last token, the pooled ``<|endoftext|>``, is kept in the last position.
    """

    output_normalized = False

    def __init__(self, config: Mapping[str, Any] | None = None, tokenizer: str | None = None,
                 max_length: int | None = None):
        super().__init__()
        from transformers import GPT2Config, GPT2Model, GPT2TokenizerFast

        from earshot.models.pretrained import downloaded_file

        from earshot.models.hf_config import strict_hf_config

        self.hf = GPT2Model(strict_hf_config(GPT2Config, config, "msclap_gpt2.config"))
        if tokenizer is None:
            raise ConfigError("msclap_gpt2: needs tokenizer=<folder, tokenizer.json or the "
                              "registry name 'gpt2_tokenizer'>")
        path = Path(tokenizer).expanduser()
        if not path.exists():
            path = downloaded_file(tokenizer, "msclap_gpt2 tokenizer")
        try:
            if path.is_file():
                tok = GPT2TokenizerFast(tokenizer_file=str(path))
            else:
                tok = GPT2TokenizerFast(vocab=str(path / "vocab.json"), merges=str(path / "merges.txt"))
        except (OSError, ValueError, TypeError) as e:
            raise WeightsError(f"{path}: not a GPT-2 tokenizer ({e})") from None
        tok.add_special_tokens({"pad_token": "!"})  # as MS-CLAP (CLAPWrapper.load_clap)
        self.tokenizer = tok
        limit = int(self.hf.config.n_positions)
        if max_length is not None and not 2 <= max_length <= limit:
            raise ConfigError(f"msclap_gpt2.max_length: must be in [2, {limit}] (n_positions), "
                              f"got {max_length}")
        self.max_length = max_length or limit
        self.embed_dim = int(self.hf.config.n_embd)

    def blocks(self) -> list[nn.Module]:
        return list(self.hf.h)

    def forward(self, texts: list[str]) -> Tensor:
        if isinstance(texts, str) or not texts or not all(isinstance(t, str) for t in texts):
            raise DataError("msclap_gpt2 takes a non-empty list of strings")
        device = self.hf.wte.weight.device
        rows = self.tokenizer([t + " <|endoftext|>" for t in texts])["input_ids"]
        n = self.max_length
        rows = [r if len(r) <= n else r[: n - 1] + r[-1:] for r in rows]  # keep the pooled end token
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=device)  # (B, L)
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=device)
        hidden = self.hf(input_ids=ids, attention_mask=mask).last_hidden_state
        last = (ids != self.tokenizer.pad_token_id).sum(-1) - 1  # (B,)
        return hidden[torch.arange(ids.shape[0], device=device), last].float()  # (B, H)


@register_text_encoder("msclap_gpt2")
def msclap_gpt2(config: dict[str, Any] | None = None, tokenizer: str | None = None,
                max_length: int | None = None) -> MSClapGPT2:
    """MS-CLAP 2023's GPT-2 text tower (gpt2-small by default: GPT2Config's defaults)."""
    return MSClapGPT2(config, tokenizer, max_length)


def read_msclap_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """``torch.load(path)["model"]`` of an MS-CLAP file, with ``weights_only=True``."""
    return read_torch_checkpoint(path, "model", "MS-CLAP")


_PREFIXES = {
    "audio_encoder.projection.": "audio_head.proj.",
    "caption_encoder.projection.": "text_head.proj.",
    "caption_encoder.base.": "text_encoder.hf.",
}


def convert_msclap_state_dict(sd: Mapping[str, Tensor],
                              frontend: FrontendConfig | Any = MSCLAP_2022_FRONTEND) -> dict[str, Tensor]:
    """MS-CLAP state dict (``CLAP_weights_202x.pth["model"]``) -> earshot bi-encoder keys.

    2022: ``audio_encoder.base.*`` (CNN14) goes through :func:`convert_panns_state_dict` (its
    torchlibrosa tensors checked against ``frontend``, a FrontendConfig, then dropped) to
    ``audio_encoder.*``; ``caption_encoder.base.*`` (BERT) -> ``text_encoder.hf.*``.
    2023: ``audio_encoder.base.htsat.*`` (HTSAT, LAION's names) goes through
    :func:`convert_laion_clap_state_dict` (``frontend`` a ClapFrontendConfig) to
    ``audio_encoder.model.audio_encoder.*``; ``caption_encoder.base.*`` (GPT-2) ->
    ``text_encoder.hf.*``. Both: the old constant buffers (BERT's ``position_ids``, GPT-2's
    ``attn.bias``/``attn.masked_bias``) are checked and dropped; the two ``projection``
    modules -> the ``residual`` heads; ``logit_scale`` (a log scale) -> ``log_logit_scale``.
    """
    sd = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in sd.items()}
    if not any(k.startswith("audio_encoder.base.") for k in sd):  # text side only
        out, audio_prefix = {}, "audio_encoder.base."
    elif any(k.startswith("audio_encoder.base.htsat.") for k in sd):
        from earshot.models.clap import ClapFrontendConfig, convert_laion_clap_state_dict

        htsat = {"audio_branch." + k[len("audio_encoder.base.htsat."):]: v for k, v in sd.items()
                 if k.startswith("audio_encoder.base.htsat.")}
        fe = frontend if isinstance(frontend, ClapFrontendConfig) else ClapFrontendConfig(
            **MSCLAP_2023_FRONTEND)
        out = {"audio_encoder.model." + k[len("audio_model."):]: v
               for k, v in convert_laion_clap_state_dict(htsat, fe).items()}
        audio_prefix = "audio_encoder.base.htsat."
    else:
        audio = {k[len("audio_encoder.base."):]: v for k, v in sd.items()
                 if k.startswith("audio_encoder.base.")}
        out = {f"audio_encoder.{k}": v for k, v in convert_panns_state_dict(audio, frontend).items()}
        audio_prefix = "audio_encoder.base."
    for key, value in sd.items():
        if key.startswith(audio_prefix):
            continue
        if key == "logit_scale":
            out["log_logit_scale"] = value.reshape(())
            continue
        if key == "caption_encoder.base.embeddings.position_ids":
            if not torch.equal(value.long().reshape(-1), torch.arange(value.numel())):
                raise WeightsError("MS-CLAP: caption_encoder.base.embeddings.position_ids is not 0..n-1")
            continue
        if _GPT2_BUFFER.match(key):
            if key.endswith(".attn.bias") and not torch.equal(value.bool(), torch.ones_like(value, dtype=torch.bool).tril()):
                raise WeightsError(f"MS-CLAP: {key} is not GPT-2's causal mask")
            continue
        prefix = next((p for p in _PREFIXES if key.startswith(p)), None)
        if prefix is None:
            raise WeightsError(f"MS-CLAP: unexpected key {key!r}")
        out[_PREFIXES[prefix] + key[len(prefix):]] = value
    return out


# Constant buffers older transformers saved with GPT-2 (a causal mask and -1e4).
_GPT2_BUFFER = re.compile(r"^caption_encoder\.base\.h\.\d+\.attn\.(bias|masked_bias)$")

# MS-CLAP 2023's audio preprocessing (see the module docstring for mel_sample_rate).
MSCLAP_2023_FRONTEND: dict[str, Any] = {
    "sample_rate": 44100, "n_fft": 1024, "hop_length": 320, "n_mels": 64, "fmin": 50.0,
    "fmax": 14000.0, "mel_sample_rate": 32000, "max_length_s": 7.0, "mel_scale": "slaney",
    "padding": "repeat", "fusion": False, "window_hop_s": 3.5}


def biencoder_state_dict(sd: Mapping[str, Tensor], model) -> dict[str, Tensor]:
    """The converted state dict for ``model`` (an earshot MS-CLAP bi-encoder): what
    :func:`convert_msclap_state_dict` gives, with the model's own front end."""
    return convert_msclap_state_dict(sd, model.audio_encoder.frontend_cfg)


def load_msclap_tower(tower, path: str | Path) -> None:
    """Load one tower (``msclap_cnn14`` or ``msclap_bert``) from an MS-CLAP file, strictly."""
    from earshot.models.base import AudioEncoder

    raw = read_msclap_checkpoint(path)
    if isinstance(tower, AudioEncoder):
        sd = convert_msclap_state_dict(raw, tower.frontend_cfg)
    else:  # the text tower needs (and checks) no audio front end
        sd = convert_msclap_state_dict({k: v for k, v in raw.items()
                                        if not k.startswith(("audio_encoder.", "module.audio_encoder."))})
    prefix = "audio_encoder." if isinstance(tower, AudioEncoder) else "text_encoder."
    part = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    try:
        tower.load_state_dict(part, strict=True)
    except RuntimeError as e:
        raise WeightsError(f"{path}: MS-CLAP weights do not fit {type(tower).__name__}: {e}") from None
