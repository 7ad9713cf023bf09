"""Open only the text half of a model: what a text query needs, nothing else.

Searching an index by text needs each model's text tower and text head, never its audio tower
(a CNN14 is 80 M parameters to build and read). :func:`load_text_side` opens a checkpoint with
the audio side left out (``loading.retriever.load_text_retriever`` routes every kind here): its
``embed_text`` gives the same embeddings as the full model's, and ``embed_audio`` raises. A Sentence-BERT tower of the common
shape runs as :class:`earshot.models.text.bert.PlainSentenceBERT` (no sentence-transformers import,
no loading bars); other text towers are built from their registry as usual.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from earshot.config import from_dict
from earshot.errors import WeightsError
from earshot.models.base import AudioEncoder, create_text_encoder
from earshot.models.biencoder import BiEncoder, BiEncoderConfig

_AUDIO_PREFIXES = ("audio_encoder.", "audio_head.")


class _NoAudio(AudioEncoder):
    """Placeholder audio tower: carries the facts (width, rate), refuses to encode."""

    def __init__(self, embed_dim: int, sample_rate: int):
        super().__init__()
        self.embed_dim, self.sample_rate = embed_dim, sample_rate

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        raise WeightsError("this model was opened for text queries only (load_text_retriever); "
                           "open it with load_retriever to encode audio")

    def blocks(self) -> list[nn.Module]:
        return []


def _text_tower(cfg: BiEncoderConfig):
    if cfg.text.name == "sbert" and not cfg.text.weights:
        from earshot.models.text.bert import PlainSentenceBERT, plain_sbert_supported
        from earshot.models.text.towers import default_sbert_path

        folder = Path(cfg.text.options.get("model") or default_sbert_path())
        if folder.is_dir() and plain_sbert_supported(folder):
            return PlainSentenceBERT(folder)
    return create_text_encoder(cfg.text.name, **cfg.text.options)


def load_text_side(path: str | Path) -> BiEncoder:
    """The checkpoint at ``path`` with only its text tower, text head and logit scale loaded
    (strictly: every stored text weight is used, and nothing but the audio side is missing)."""
    from safetensors import safe_open

    from earshot.models.checkpoint import WEIGHTS_FILE, read_config

    path = Path(path).expanduser()
    doc = read_config(path)
    cfg = from_dict(BiEncoderConfig, doc["config"], "config")
    audio_dim = _audio_width(path / WEIGHTS_FILE)
    model = BiEncoder(cfg, _NoAudio(audio_dim, int(doc.get("frontend", {}).get("sample_rate", 0)) or 1),
                      _text_tower(cfg))
    try:
        with safe_open(str(path / WEIGHTS_FILE), "pt") as f:
            state = {k: f.get_tensor(k) for k in f.keys() if not k.startswith(_AUDIO_PREFIXES)}
    except FileNotFoundError:
        raise WeightsError(f"{path}: missing {WEIGHTS_FILE}") from None
    missing, unexpected = model.load_state_dict(state, strict=False)
    wrong = [k for k in missing if not k.startswith(_AUDIO_PREFIXES)] + list(unexpected)
    if wrong:
        raise WeightsError(f"{path}: text weights do not match the text tower: {sorted(wrong)[:8]}")
    return model.eval()


def _audio_width(weights: Path) -> int:
    """Input width of the stored audio head (its first weight's second dimension)."""
    from safetensors import safe_open

    try:
        with safe_open(str(weights), "pt") as f:
            keys = sorted(k for k in f.keys() if k.startswith("audio_head.") and k.endswith("weight"))
            return int(f.get_slice(keys[0]).get_shape()[-1]) if keys else 1
    except FileNotFoundError:
        raise WeightsError(f"{weights}: no such file") from None
