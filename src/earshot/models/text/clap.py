"""LAION-CLAP's text tower: RoBERTa + CLAP's text projection (transformers'
``ClapTextModelWithProjection``) and its byte-level BPE tokenizer."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from earshot.errors import ConfigError, DataError, WeightsError
from earshot.models.base import TextEncoder, register_text_encoder


def _text_config(config: Mapping[str, Any] | None):
    from transformers import ClapTextConfig

    from earshot.models.hf_config import strict_hf_config

    return strict_hf_config(ClapTextConfig, config, "clap_roberta.config")


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
        from earshot.loading.pretrained import downloaded_file

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
