"""A plain-PyTorch BERT sentence encoder for answering text queries quickly.

``earshot search`` embeds one short query. Opening the ``sbert`` tower for that imports
sentence-transformers and transformers (about 3 s on a laptop CPU, with "Loading weights" bars)
before any work is done. A Sentence-BERT pipeline of the common shape (BERT -> mean pooling
[-> Normalize], e.g. all-MiniLM-L6-v2) is small enough to run directly: this module builds the
same computation from ``torch`` and the ``tokenizers`` library alone, reading the pipeline's
own ``config.json``, ``tokenizer.json`` and pooling settings. Its parameter names are those of
the ``sbert`` tower (``st.0.model.<Hugging Face BertModel names>``), so an earshot checkpoint's
text weights load into it strictly. A test checks it against the ``sbert`` tower (max abs
difference below 1e-5). Pipelines of any other shape are refused (:func:`plain_sbert_supported`)
and the caller keeps the full tower.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from earshot.models.base import TextEncoder


@dataclass(frozen=True)
class BertShape:
    """The facts of a Hugging Face ``BertConfig`` that the forward pass needs."""

    vocab_size: int  # rows of the word embedding
    hidden_size: int  # width of every token state
    num_hidden_layers: int  # transformer layers
    num_attention_heads: int  # heads per layer
    intermediate_size: int  # feed-forward width
    max_position_embeddings: int  # longest input, tokens
    type_vocab_size: int  # token-type (segment) embeddings
    layer_norm_eps: float  # LayerNorm epsilon


def _read_json(path: Path) -> dict | list | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def plain_sbert_supported(folder: str | Path) -> bool:
    """True when the Sentence-BERT folder is BERT -> mean pooling [-> Normalize] with a
    ``tokenizer.json``: the pipelines this module reproduces exactly."""
    folder = Path(folder)
    modules = _read_json(folder / "modules.json")
    config = _read_json(folder / "config.json")
    if not isinstance(modules, list) or not isinstance(config, dict):
        return False
    kinds = [m.get("type", "").rsplit(".", 1)[-1] for m in modules]
    if kinds not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
        return False
    if modules[0].get("path", "") not in ("", "."):
        return False
    pooling = _read_json(folder / modules[1]["path"] / "config.json") or {}
    modes = [k for k, v in pooling.items() if k.startswith("pooling_mode") and v]
    return (modes == ["pooling_mode_mean_tokens"] and config.get("model_type") == "bert"
            and config.get("hidden_act") == "gelu"
            and config.get("position_embedding_type", "absolute") == "absolute"
            and (folder / "tokenizer.json").is_file())


class _Embeddings(nn.Module):
    def __init__(self, s: BertShape):
        super().__init__()
        self.word_embeddings = nn.Embedding(s.vocab_size, s.hidden_size)
        self.position_embeddings = nn.Embedding(s.max_position_embeddings, s.hidden_size)
        self.token_type_embeddings = nn.Embedding(s.type_vocab_size, s.hidden_size)
        self.LayerNorm = nn.LayerNorm(s.hidden_size, eps=s.layer_norm_eps)

    def forward(self, ids: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(ids.shape[1], device=ids.device)  # (L,)
        x = self.word_embeddings(ids) + self.position_embeddings(pos) + self.token_type_embeddings(types)
        return self.LayerNorm(x)  # (B, L, H)


class _SelfAttention(nn.Module):
    def __init__(self, s: BertShape):
        super().__init__()
        self.heads = s.num_attention_heads
        self.query = nn.Linear(s.hidden_size, s.hidden_size)
        self.key = nn.Linear(s.hidden_size, s.hidden_size)
        self.value = nn.Linear(s.hidden_size, s.hidden_size)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, n, h = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, n, self.heads, h // self.heads).transpose(1, 2)  # (B, heads, L, dh)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(h // self.heads) + bias  # (B, heads, L, L)
        ctx = scores.softmax(-1) @ v  # (B, heads, L, dh)
        return ctx.transpose(1, 2).reshape(b, n, h)  # (B, L, H)


class _Residual(nn.Module):
    """dense -> add the block's input -> LayerNorm (BERT's ``*Output`` modules)."""

    def __init__(self, cin: int, cout: int, eps: float):
        super().__init__()
        self.dense = nn.Linear(cin, cout)
        self.LayerNorm = nn.LayerNorm(cout, eps=eps)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + skip)


class _Attention(nn.Module):
    def __init__(self, s: BertShape):
        super().__init__()
        self.self = _SelfAttention(s)
        self.output = _Residual(s.hidden_size, s.hidden_size, s.layer_norm_eps)


class _Intermediate(nn.Module):
    def __init__(self, s: BertShape):
        super().__init__()
        self.dense = nn.Linear(s.hidden_size, s.intermediate_size)


class _Layer(nn.Module):
    def __init__(self, s: BertShape):
        super().__init__()
        self.attention = _Attention(s)
        self.intermediate = _Intermediate(s)
        self.output = _Residual(s.intermediate_size, s.hidden_size, s.layer_norm_eps)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        a = self.attention.output(self.attention.self(x, bias), x)  # (B, L, H)
        return self.output(F.gelu(self.intermediate.dense(a)), a)  # exact (erf) GELU, as "gelu"


class _Encoder(nn.Module):
    def __init__(self, s: BertShape):
        super().__init__()
        self.layer = nn.ModuleList(_Layer(s) for _ in range(s.num_hidden_layers))


class _Pooler(nn.Module):
    """BERT's [CLS] pooler: kept only so the stored weights load strictly; mean pooling never
    uses it."""

    def __init__(self, s: BertShape):
        super().__init__()
        self.dense = nn.Linear(s.hidden_size, s.hidden_size)


class Bert(nn.Module):
    """BertModel's token states, with Hugging Face's parameter names."""

    def __init__(self, s: BertShape):
        super().__init__()
        self.embeddings = _Embeddings(s)
        self.encoder = _Encoder(s)
        self.pooler = _Pooler(s)

    def forward(self, ids: torch.Tensor, types: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.embeddings(ids, types)  # (B, L, H)
        bias = (1.0 - mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min  # (B, 1, 1, L)
        for layer in self.encoder.layer:
            x = layer(x, bias)
        return x  # (B, L, H)


class _TransformerModule(nn.Module):
    """Stands where sentence-transformers' ``Transformer`` module stands (``st.0``)."""

    def __init__(self, s: BertShape):
        super().__init__()
        self.model = Bert(s)


class PlainSentenceBERT(TextEncoder):
    """BERT -> mean pooling [-> L2 normalisation], tokenised by ``tokenizers``: the ``sbert``
    tower's output for pipelines that :func:`plain_sbert_supported` accepts."""

    def __init__(self, folder: str | Path):
        super().__init__()
        from tokenizers import Tokenizer

        folder = Path(folder)
        config = json.loads((folder / "config.json").read_text())
        shape = BertShape(**{k: config[k] for k in BertShape.__dataclass_fields__})
        self.st = nn.ModuleList([_TransformerModule(shape)])
        self.embed_dim = shape.hidden_size
        modules = json.loads((folder / "modules.json").read_text())
        self.output_normalized = len(modules) == 3
        st_cfg = _read_json(folder / "sentence_bert_config.json") or {}
        max_len = int(st_cfg.get("max_seq_length") or shape.max_position_embeddings)
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=min(max_len, shape.max_position_embeddings))
        self.tokenizer.enable_padding(pad_id=int(config.get("pad_token_id", 0)))

    def blocks(self) -> list[nn.Module]:
        return list(self.st[0].model.encoder.layer)

    def unused_modules(self) -> list[nn.Module]:
        return [self.st[0].model.pooler]

    def forward(self, texts: list[str]) -> torch.Tensor:
        enc = self.tokenizer.encode_batch(list(texts))
        device = self.st[0].model.embeddings.word_embeddings.weight.device
        ids = torch.tensor([e.ids for e in enc], device=device)  # (B, L)
        types = torch.tensor([e.type_ids for e in enc], device=device)  # (B, L)
        mask = torch.tensor([e.attention_mask for e in enc], device=device)  # (B, L)
        states = self.st[0].model(ids, types, mask)  # (B, L, H)
        m = mask[..., None].to(states.dtype)  # (B, L, 1)
        out = (states * m).sum(1) / m.sum(1).clamp(min=1e-9)  # (B, H) mean over real tokens
        return F.normalize(out, dim=-1) if self.output_normalized else out
