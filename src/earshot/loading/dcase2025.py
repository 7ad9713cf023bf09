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
:func:`import_dcase2025_baseline` writes it as an earshot checkpoint directory that ``earshot
evaluate`` takes. RoBERTa's tokenizer (``roberta-large``, which the baseline uses for both
sizes) must be in the local Hugging Face cache.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from earshot.errors import WeightsError
from earshot.models.audio.passt import convert_passt_state_dict, read_torch_dict
from earshot.weights.passt import ROBERTA, baseline_model_config

__all__ = ["ROBERTA", "baseline_model_config", "convert_dcase2025_baseline_state_dict",
           "import_dcase2025_baseline"]

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


def import_dcase2025_baseline(ckpt: str | Path, out_dir: str | Path, tokenizer: str = "roberta-large",
                              roberta: dict[str, Any] | str | None = None,
                              passt: dict[str, Any] | None = None) -> Path:
    """Read the baseline's ``.ckpt`` (``weights_only=True``), load it strictly into the earshot
    model and save that as a checkpoint directory; returns ``out_dir``. The RoBERTa size is read
    from the checkpoint's text projection unless ``roberta`` is given."""
    from earshot.models import checkpoint
    from earshot.models.biencoder import create_model

    ckpt = Path(ckpt)
    sd = convert_dcase2025_baseline_state_dict(read_torch_dict(ckpt, "baseline checkpoint"))
    if roberta is None:
        width = sd.get("text_head.proj.weight")
        roberta = "base" if width is not None and width.shape[1] == 768 else "large"
    model = create_model(baseline_model_config(roberta, tokenizer, passt), load_weights=False)
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(sd)), sorted(set(sd) - set(own))
    if missing or unexpected:
        raise WeightsError(f"{ckpt}: does not match the baseline model: missing {missing[:8]}, "
                           f"unexpected {unexpected[:8]}")
    model.load_state_dict(sd, strict=True)
    tau = 1.0 / math.exp(float(sd["log_logit_scale"]))
    return checkpoint.save(model.eval(), out_dir, {"source": f"dcase2025_task6_baseline {ckpt.name}", "tau": tau})
