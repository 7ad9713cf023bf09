"""Load published weights into a tower: find the file, read it, convert it, load it strictly.

One loader per source format (STYLE.md rule 6), registered by the converter name the weights
registry records for each tower (``earshot.weights.WeightsEntry.towers[i].converter``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from torch import nn

from earshot.errors import ConfigError, WeightsError
from earshot.registry import Registry

WEIGHT_LOADERS: Registry[Callable[[nn.Module, Path], None]] = Registry("weights format")


@WEIGHT_LOADERS.register("panns")
def _load_panns(tower: nn.Module, path: Path) -> None:
    from earshot.models.audio.panns import load_panns_checkpoint

    load_panns_checkpoint(tower, path)


@WEIGHT_LOADERS.register("audioclip_audio")
def _load_audioclip_audio(tower: nn.Module, path: Path) -> None:
    from earshot.models.text.clip_text import read_audioclip_checkpoint
    from earshot.models.audio.esresnext import convert_audioclip_audio_state_dict

    sd = convert_audioclip_audio_state_dict(read_audioclip_checkpoint(path), tower.cfg)
    tower.load_state_dict(sd, strict=True)


@WEIGHT_LOADERS.register("passt")
def _load_passt(tower: nn.Module, path: Path) -> None:
    from earshot.models.audio.passt import PasstEncoder, load_passt_checkpoint

    if not isinstance(tower, PasstEncoder):
        raise ConfigError(f"PaSST weights need the passt encoder, got {type(tower).__name__}")
    load_passt_checkpoint(tower, path)


def _clip_text_tower(tower: nn.Module):
    from earshot.models.text.towers import CLIPTextEncoder

    if not isinstance(tower, CLIPTextEncoder):
        raise ConfigError(f"CLIP text weights need the clip_text encoder, got {type(tower).__name__}")
    return tower.model


@WEIGHT_LOADERS.register("audioclip_text")
def _load_audioclip_text(tower: nn.Module, path: Path) -> None:
    from earshot.models.text.clip_text import (
        convert_audioclip_text_state_dict,
        load_clip_text_state_dict,
        read_audioclip_checkpoint,
    )

    sd = convert_audioclip_text_state_dict(read_audioclip_checkpoint(path))
    load_clip_text_state_dict(_clip_text_tower(tower), sd)


@WEIGHT_LOADERS.register("openai_clip_text")
def _load_openai_clip_text(tower: nn.Module, path: Path) -> None:
    from earshot.models.text.clip_text import (
        convert_openai_clip_text_state_dict,
        load_clip_text_state_dict,
        read_openai_clip_checkpoint,
    )

    sd = convert_openai_clip_text_state_dict(read_openai_clip_checkpoint(path))
    load_clip_text_state_dict(_clip_text_tower(tower), sd)


@WEIGHT_LOADERS.register("clap_hf")
def _load_clap_hf(tower: nn.Module, path: Path) -> None:
    from earshot.models.audio.clap import convert_clap_hf_state_dict, load_clap_tower, read_hf_clap_weights

    load_clap_tower(tower, convert_clap_hf_state_dict(read_hf_clap_weights(path)))


@WEIGHT_LOADERS.register("laion_clap")
def _load_laion_clap(tower: nn.Module, path: Path) -> None:
    from earshot.models.audio.clap import (ClapAudioTower, convert_laion_clap_state_dict,
                                     load_clap_tower, read_laion_checkpoint)

    fe = tower.frontend_cfg if isinstance(tower, ClapAudioTower) else None
    load_clap_tower(tower, convert_laion_clap_state_dict(read_laion_checkpoint(path), fe))


@WEIGHT_LOADERS.register("msclap")
def _load_msclap(tower: nn.Module, path: Path) -> None:
    from earshot.models.audio.msclap import load_msclap_tower

    load_msclap_tower(tower, path)


def resolve_weights(name: str, weights: str, weights_format: str | None, kind: str) -> tuple[Path, str]:
    """(file, converter) for a tower config's ``weights``: a path, or a registry name whose file
    must already be in the cache (``earshot weights download NAME``)."""
    from earshot import weights as registry

    path = Path(weights).expanduser()
    if path.is_dir() and weights_format == "clap_hf":
        return path, weights_format  # a Hugging Face CLAP folder
    if path.is_file():
        if weights_format is None:
            raise ConfigError(f"{name}: weights file {path} needs weights_format "
                              f"(one of {WEIGHT_LOADERS.names()})")
        return path, weights_format
    if weights not in registry.WEIGHTS:
        raise WeightsError(f"{name}: weights {weights!r} is neither a file nor a known name; "
                           f"known: {', '.join(registry.list_weights())}")
    entry = registry.get_weights(weights)
    towers = [t for t in entry.towers if t.architecture == name and t.kind == kind]
    if not towers:
        raise ConfigError(f"weights {weights!r} hold no {kind} tower for {name!r} "
                          f"(they hold {[t.architecture for t in entry.towers]})")
    return downloaded_file(weights, name), weights_format or towers[0].converter


def downloaded_file(name: str, what: str) -> Path:
    """The cached file of registry entry ``name`` (``what`` needs it), or a WeightsError saying
    how to download it."""
    from earshot import weights as registry

    if name not in registry.WEIGHTS:
        raise WeightsError(f"{what}: {name!r} is neither a file, a folder nor a registry name")
    from earshot.weights.cache import locate_checked

    found = locate_checked(registry.get_weights(name))  # size every time, digest once: never loads a wrong file
    if found is None:
        raise WeightsError(f"{what}: {name!r} is not downloaded; run `earshot weights download "
                           f"{name}`")
    return found


def load_tower_weights(tower: nn.Module, cfg) -> None:
    """Load ``cfg.weights`` (TowerConfig) into ``tower`` strictly, through its converter."""
    from earshot.models.base import AudioEncoder

    kind = "audio" if isinstance(tower, AudioEncoder) else "text"
    path, fmt = resolve_weights(cfg.name, cfg.weights, cfg.weights_format, kind)
    try:
        WEIGHT_LOADERS.get(fmt)(tower, path)
    except WeightsError as e:
        raise WeightsError(f"{path}: {e}") from None
