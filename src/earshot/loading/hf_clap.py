"""A folder laid out as a Hugging Face CLAP model (``ClapModel.save_pretrained``, the hub's
``laion/clap-*`` repositories): its configs, front end and weights file, read once."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from earshot.errors import WeightsError
from earshot.models.audio.clap_frontend import ClapFrontendConfig


@dataclass(frozen=True)
class HFClapFolder:
    """What a Hugging Face CLAP folder holds, read once."""

    path: Path
    audio_config: dict[str, Any]  # ClapAudioConfig keys (projection settings included)
    text_config: dict[str, Any]  # ClapTextConfig keys
    frontend: ClapFrontendConfig
    logit_scale_init: float
    weights: Path | None = None  # model.safetensors or pytorch_model.bin
    extra: dict[str, Any] = field(default_factory=dict)


def read_hf_clap_folder(path: str | Path) -> HFClapFolder:
    """Read ``config.json`` (+ ``preprocessor_config.json``) of a folder laid out as
    ``ClapModel.save_pretrained`` / the hub's ``laion/clap-*`` repositories."""
    from transformers import ClapConfig

    path = Path(path).expanduser()
    try:
        cfg = ClapConfig.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as e:
        raise WeightsError(f"{path}: not a CLAP folder ({e})") from None
    pre = path / "preprocessor_config.json"
    fusion = bool(cfg.audio_config.enable_fusion)
    frontend = (ClapFrontendConfig.from_feature_extractor(json.loads(pre.read_text()), fusion)
                if pre.is_file() else ClapFrontendConfig(mel_scale="htk" if fusion else "slaney",
                                                          fusion=fusion))
    weights = next((path / n for n in ("model.safetensors", "pytorch_model.bin")
                    if (path / n).is_file()), None)
    return HFClapFolder(path, _diff(cfg.audio_config), _diff(cfg.text_config), frontend,
                        float(cfg.logit_scale_init_value), weights)


def _diff(sub_config) -> dict[str, Any]:
    # Only what differs from transformers' defaults (plus the projection), so a stored earshot
    # config stays short and readable.
    d = sub_config.to_diff_dict()
    for k in ("model_type", "transformers_version", "architectures", "torch_dtype", "dtype",
              "_name_or_path", "output_hidden_states", "output_attentions", "return_dict"):
        d.pop(k, None)
    d["projection_dim"] = sub_config.projection_dim
    d["projection_hidden_act"] = sub_config.projection_hidden_act
    return json.loads(json.dumps(d))
