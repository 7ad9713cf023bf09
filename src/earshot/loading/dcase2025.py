"""The DCASE 2025 Task 6 baseline's trained checkpoint as an earshot bi-encoder.

CPJKU ``dcase2025_task6_baseline`` publishes a Lightning checkpoint of its model trained on Clotho,
AudioCaps and WavCaps (README: "A checkpoint of the model trained on Clotho, AudioCaps, WavCaps is
available here", a cloud.cp.jku.at share; registry entry ``dcase2025_baseline``, no digest
published). Its ``state_dict`` (``d25_t6/retrieval_module.py``) holds

* ``audio_embedding_model.model.model.*``: PaSST-S inside the baseline's segment wrapper
  (``_orig_mod.`` after the prefix when trained with ``--compile``);
* ``text_embedding_model.*``: ``RobertaModel(add_pooling_layer=False)`` (large, or base with
  ``--roberta_base``; ``_orig_mod.`` when compiled);
* ``audio_projection.*`` (768 -> 1024) and ``text_projection.*`` (1024 or 768 -> 1024);
* ``tau``: the temperature (fixed at 0.05 unless trained).

:func:`convert_dcase2025_baseline_state_dict` maps that onto the bi-encoder that
:func:`baseline_model_config` describes (``passt`` + ``hf_transformer`` built from RoBERTa's
published architecture, linear heads, normalised, fixed temperature), and
:func:`earshot.loading.openers.import_dcase2025_baseline` writes it as an earshot checkpoint
directory that ``earshot evaluate`` takes (it builds models, so it lives with the openers: this
module, which the resolver imports to recognise the format, builds none). RoBERTa's tokenizer (``roberta-large``, which the baseline uses for both
sizes) must be in the local Hugging Face cache.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from earshot.errors import WeightsError
from earshot.models.audio.passt import convert_passt_state_dict
from earshot.models.converters import read_state_dict, register_converter
from earshot.weights.passt import ROBERTA, baseline_model_config

__all__ = ["ROBERTA", "baseline_model_config", "convert_dcase2025_baseline_state_dict",
           "read_dcase2025_baseline", "roberta_from_state_dict"]

# RoBERTa's published architectures (Hugging Face roberta-large / roberta-base config.json)
_AUDIO = "audio_embedding_model.model.model."
_TEXT = "text_embedding_model."



def convert_dcase2025_baseline_state_dict(sd: Mapping[str, Any]) -> dict[str, Tensor]:
    """The baseline's Lightning ``state_dict`` (or the whole checkpoint) -> earshot bi-encoder keys.

    Pure. Every key must be one of the groups above; anything else is an error naming it."""
    if "state_dict" in sd and isinstance(sd["state_dict"], Mapping):
        sd = sd["state_dict"]
    audio: dict[str, Tensor] = {}
    out: dict[str, Tensor] = {}
    unknown = []
    for key, value in sd.items():
        if not isinstance(value, Tensor):
            raise WeightsError(f"baseline checkpoint entry {key!r} is a {type(value).__name__}, not a tensor")
        if key.startswith(_AUDIO):
            audio[key[len(_AUDIO):]] = value
        elif key.startswith(_TEXT):
            rest = key[len(_TEXT):].replace("_orig_mod.", "", 1)
            if rest.endswith(("position_ids", "token_type_ids")):  # buffers transformers rebuilds
                continue
            out[f"text_encoder.hf.{rest}"] = value
        elif key.startswith(("audio_projection.", "text_projection.")):
            side, param = key.split(".", 1)
            out[f"{side.split('_')[0]}_head.proj.{param}"] = value
        elif key == "tau":
            out["log_logit_scale"] = torch.log(1.0 / value.detach().abs().reshape(()).double()).float()
        else:
            unknown.append(key)
    if unknown:
        raise WeightsError(f"unexpected keys in the baseline checkpoint: {sorted(unknown)[:8]}")
    out.update({f"audio_encoder.{k}": v for k, v in convert_passt_state_dict(audio).items()})
    return out


def read_dcase2025_baseline(path: str | Path) -> dict[str, Tensor]:
    """The baseline ``.ckpt``'s state dict, converted to the earshot bi-encoder's keys."""
    return convert_dcase2025_baseline_state_dict(read_state_dict(path, what="DCASE 2025 baseline checkpoint"))


def roberta_from_state_dict(sd: Mapping[str, Tensor], where: str | Path = "baseline checkpoint",
                            known: tuple[Mapping[str, Any], ...] = ()) -> dict[str, Any]:
    """The RoBERTa architecture a converted baseline state dict holds, read from its shapes
    (hidden size, layers, feed-forward width, vocabulary, positions): RoBERTa-large, or base
    with ``--roberta_base``. Attention heads cannot be read from weights: they are the published
    architecture's of that hidden size (or of a ``known`` architecture of that size)."""
    pre = "text_encoder.hf."
    try:
        vocab, hidden = sd[pre + "embeddings.word_embeddings.weight"].shape
        positions = sd[pre + "embeddings.position_embeddings.weight"].shape[0]
        inter = sd[pre + "encoder.layer.0.intermediate.dense.weight"].shape[0]
    except KeyError as e:
        raise WeightsError(f"{where}: no RoBERTa weights ({e.args[0]} missing)") from None
    layers = 1 + max(int(k[len(pre + "encoder.layer."):].split(".")[0]) for k in sd
                     if k.startswith(pre + "encoder.layer."))
    published = next((dict(a) for a in (*known, *ROBERTA.values()) if a.get("hidden_size") == hidden), None)
    if published is None:
        raise WeightsError(f"{where}: RoBERTa of hidden size {hidden} is neither roberta-base (768) nor "
                           f"roberta-large (1024); its attention heads cannot be read from the weights")
    return {**published, "vocab_size": int(vocab), "num_hidden_layers": layers,
            "intermediate_size": int(inter), "max_position_embeddings": int(positions)}


def _adapt(cfg: dict, path: Path) -> dict:
    # The registry's config is RoBERTa-large; a --roberta_base checkpoint holds base (768 wide).
    cfg = dict(cfg)
    text = dict(cfg["text"])
    options = dict(text.get("options", {}))
    options["config"] = roberta_from_state_dict(read_dcase2025_baseline(path), path, known=(options.get("config") or {},))
    text["options"] = options
    cfg["text"] = text
    return cfg


def _looks_like_baseline(obj: Any) -> bool:
    sd = obj.get("state_dict") if isinstance(obj, Mapping) else None
    return isinstance(sd, Mapping) and any(k.startswith(_AUDIO) for k in sd) and any(k.startswith(_TEXT) for k in sd)


register_converter("dcase2025_baseline", model=lambda path, model: read_dcase2025_baseline(path), detect=_looks_like_baseline,
                   adapt=_adapt)(None)
