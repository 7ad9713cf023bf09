"""Load published weights into a tower: find the file, read it, convert it, load it strictly.

One loader per source format (STYLE.md rule 6), registered beside its architecture
(``earshot.models.converters.register_converter``) under the converter name the weights registry
records for each tower (``earshot.weights.WeightsEntry.towers[i].converter``).
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from earshot.errors import ConfigError, WeightsError
from earshot.models.converters import get_converter, tower_formats


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
                              f"(one of {', '.join(tower_formats())})")
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
    loader = get_converter(fmt).tower
    if loader is None:
        raise ConfigError(f"{cfg.name}: weights_format {fmt!r} holds whole models, not one tower; "
                          f"pass the file as the model instead (one of {', '.join(tower_formats())})")
    try:
        loader(tower, path)
    except WeightsError as e:
        raise WeightsError(f"{path}: {e}") from None
