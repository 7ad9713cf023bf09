"""MS-CLAP's text towers: ``msclap_bert`` (2022, BERT-base, CLS token) and ``msclap_gpt2``
(2023, GPT-2, the end-of-text token); their audio side and the converter are in
``earshot/models/audio/msclap.py``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from earshot.errors import ConfigError, DataError, WeightsError
from earshot.models.base import TextEncoder, register_text_encoder
from earshot.models.text.towers import HFTransformerEncoder, default_sbert_path


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

        from earshot.loading.pretrained import downloaded_file

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
