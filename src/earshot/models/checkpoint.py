"""Self-describing checkpoints: ``save(model, dir)`` and ``load(dir)`` with no other flags.

A checkpoint is a directory with ``model.safetensors`` (all weights) and ``config.json`` (the
bi-encoder config, the audio front-end settings, the earshot and torch versions). Loading never
reads pretrained files again: the safetensors file holds every weight.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

import earshot
from earshot.config import from_dict, to_dict
from earshot.errors import WeightsError
from earshot.models.biencoder import BiEncoder, BiEncoderConfig, create_model
from earshot.utils import atomic_write

FORMAT = "earshot.biencoder/1"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


def describe(model: BiEncoder, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON document stored beside the weights."""
    return {
        "format": FORMAT,
        "config": to_dict(model.cfg),
        "frontend": model.audio_encoder.frontend_settings(),
        "earshot_version": earshot.__version__,
        "torch_version": torch.__version__,
        **(extra or {}),
    }


def save(model: BiEncoder, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model`` to directory ``path`` atomically (each file replaced whole)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    # safetensors refuses aliased tensors; clone so tied weights are stored (and checked) twice.
    state = _unalias(state)
    with atomic_write(path / WEIGHTS_FILE) as f:
        f.write(safetensors_bytes(state, metadata={"format": FORMAT}))
    with atomic_write(path / CONFIG_FILE, "w") as f:
        json.dump(describe(model, extra), f, indent=2, sort_keys=True)
    return path


def read_config(path: str | Path) -> dict[str, Any]:
    """The stored JSON document of a checkpoint directory."""
    path = Path(path)
    try:
        doc = json.loads((path / CONFIG_FILE).read_text())
    except FileNotFoundError:
        raise WeightsError(f"{path}: not an earshot checkpoint (no {CONFIG_FILE})") from None
    except json.JSONDecodeError as e:
        raise WeightsError(f"{path / CONFIG_FILE}: not valid JSON: {e}") from None
    if doc.get("format") != FORMAT:
        raise WeightsError(f"{path}: unknown checkpoint format {doc.get('format')!r}")
    return doc


def load(path: str | Path, map_location: str | torch.device = "cpu") -> BiEncoder:
    """Restore a model saved by :func:`save`, strictly, in eval mode."""
    path = Path(path).expanduser()
    doc = read_config(path)
    cfg = from_dict(BiEncoderConfig, doc["config"], "config")
    model = create_model(cfg, load_weights=False)
    try:
        state = load_file(str(path / WEIGHTS_FILE), device=str(map_location))
    except FileNotFoundError:
        raise WeightsError(f"{path}: missing {WEIGHTS_FILE}") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise WeightsError(f"{path / WEIGHTS_FILE}: does not match its config: {e}") from None
    return model.to(map_location).eval()


def _unalias(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    seen: dict[int, str] = {}
    out = {}
    for k, v in state.items():
        ptr = v.untyped_storage().data_ptr()
        out[k] = v.clone() if ptr in seen and v.numel() else v
        seen.setdefault(ptr, k)
    return out
