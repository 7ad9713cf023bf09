"""Weight converters, registered beside their architecture, and the one state-dict reader.

Each family's file registers how a published file of its format becomes earshot weights::

    @register_converter("panns", detect=looks_like_panns)
    def load_panns_weights(tower, path): ...          # one tower from the file, strictly

    register_converter("laion_clap", model=read_laion_model, detect=...)  # a whole bi-encoder

* ``tower(tower, path)`` loads the file into one tower strictly (a ``weights:`` on a tower);
* ``model(path, biencoder)`` returns the complete bi-encoder state dict (a file that holds a whole
  retriever: LAION-CLAP, MS-CLAP, a Hugging Face CLAP folder, the DCASE 2025 baseline);
* ``detect(obj)`` says from a file's *content* (the object :func:`read_state_dict` returns) that
  the file is in this format, so a renamed published file is still recognised.

The tables that used to be written out by hand (``weights.CONVERTERS``, the tower loaders, the
whole-model readers) are views of this registry. Every file is read by :func:`read_state_dict`
(``weights_only=True``; numpy's scalar, array and dtype globals allowed, nothing else).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from earshot.errors import WeightsError
from earshot.registry import Registry


@dataclass(frozen=True)
class Converter:
    """How one published format becomes earshot weights."""

    name: str  # the weights format ("panns", "laion_clap", ...), as registry entries name it
    tower: Callable[[Any, Path], None] | None = None  # load the file into one tower, strictly
    model: Callable[[Path, Any], dict] | None = None  # file -> whole BiEncoder state dict
    detect: Callable[[Any], bool] | None = None  # True when a read file is in this format
    # A registry entry's model config -> the config the file at ``path`` holds (sizes read from
    # the file, e.g. the DCASE 2025 baseline's RoBERTa-base or -large); None: the entry's as is.
    adapt: Callable[[dict, Path], dict] | None = None
    # What a file of this format is built as, read from its keys and tensor shapes (e.g. LAION:
    # fused or not, HTSAT widths and depths, text tower sizes), and the same values for a
    # registry entry's model config: a file no published digest names opens as the entry of
    # its own architecture (a user's fine-tuned file). None: the format has one architecture.
    architecture: Callable[[Any], dict] | None = None  # read file -> architecture values
    config_architecture: Callable[[Mapping], dict] | None = None  # entry config -> the same


CONVERTERS: Registry[Converter] = Registry("weights format")


def register_converter(name: str, *, model: Callable[[Path, Any], dict] | None = None,
                       detect: Callable[[Any], bool] | None = None,
                       adapt: Callable[[dict, Path], dict] | None = None,
                       architecture: Callable[[Any], dict] | None = None,
                       config_architecture: Callable[[Mapping], dict] | None = None):
    """Decorator for a family's tower loader ``fn(tower, path)`` (or ``None`` via
    :func:`add_converter` when the format only holds whole models)."""
    if (architecture is None) != (config_architecture is None):
        raise ValueError(f"{name}: architecture and config_architecture come together")

    def deco(fn: Callable[[Any, Path], None] | None):
        add_converter(Converter(name, fn, model, detect, adapt, architecture, config_architecture))
        return fn

    return deco


def add_converter(conv: Converter) -> Converter:
    """Register ``conv`` (a name registered twice is a ConfigError)."""
    return CONVERTERS.register(conv.name)(conv)


def _families() -> None:
    # The families register on import; importing them here keeps the views complete.
    from earshot.models.base import _import_builtin_encoders

    _import_builtin_encoders()


def get_converter(name: str) -> Converter:
    """The converter of weights format ``name`` (ConfigError listing the known ones)."""
    _families()
    return CONVERTERS.get(name)


def tower_formats() -> tuple[str, ...]:
    """Formats a tower's ``weights:`` can be loaded from (what ``weights_format`` accepts)."""
    _families()
    return tuple(n for n in CONVERTERS.names() if CONVERTERS.get(n).tower is not None)


def model_formats() -> tuple[str, ...]:
    """Formats of files that hold a whole bi-encoder."""
    _families()
    return tuple(n for n in CONVERTERS.names() if CONVERTERS.get(n).model is not None)


def detect_format(obj: Any) -> list[str]:
    """The whole-model formats whose ``detect`` accepts ``obj`` (a read file's content)."""
    _families()
    return [n for n in CONVERTERS.names()
            if (c := CONVERTERS.get(n)).detect is not None and c.model is not None and c.detect(obj)]


def detect_tower_format(obj: Any) -> list[str]:
    """The formats a tower can load whose ``detect`` accepts ``obj`` (a read file's content)."""
    _families()
    return [n for n in CONVERTERS.names()
            if (c := CONVERTERS.get(n)).detect is not None and c.tower is not None and c.detect(obj)]


# --- the one reader ---------------------------------------------------------------------------

_NUMPY_GLOBALS = (
    "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct",
    "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar",
    "numpy.ndarray", "numpy.dtype",
)


def _numpy_allow_list() -> list[Any]:
    """numpy's array, scalar and dtype reconstructors (those this numpy has) and its dtype
    classes: what LAION's optimizer state (an ``lr`` that is a ``numpy.float64``) and PANNs'
    numpy-era files pickle. Nothing that runs code is allowed."""
    import importlib

    import numpy as np

    allowed: list[Any] = [getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith("DType")]
    for name in _NUMPY_GLOBALS:
        module, _, attr = name.rpartition(".")
        try:
            allowed.append(getattr(importlib.import_module(module), attr))
        except (ImportError, AttributeError):
            continue  # the other numpy major version's module path
    return allowed


def _is_safetensors(path: Path) -> bool:
    # By content: an 8-byte little-endian header length, then the JSON header's "{".
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < (1 << 31)


def read_file(path: str | Path, what: str = "weights") -> Any:
    """The object stored in a safetensors or ``torch.save`` file, read safely
    (``weights_only=True``); errors name the file and ``what``."""
    import torch

    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(f"{path}: {what} not found")
    try:
        if _is_safetensors(path):
            from safetensors.torch import load_file

            return dict(load_file(str(path), device="cpu"))
        import zipfile

        # A zip checkpoint is memory-mapped: reading a 2 GB file's keys costs no 2 GB copy.
        with torch.serialization.safe_globals(_numpy_allow_list()):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as e:  # header, pickle, zip and weights_only refusals all mean "unusable"
        raise WeightsError(f"{path}: cannot read the {what} with weights_only=True ({e}); if it "
                           f"pickles more than tensors and numpy values, re-save its state dict") from None


def read_state_dict(path: str | Path, key: str | None = None, what: str = "weights") -> dict[str, Any]:
    """The state dict in ``path``: the dict under ``key`` when the file holds one there (a
    trainer's ``{"state_dict": ..., "optimizer": ...}``, MS-CLAP's ``{"model": ...}``), else the
    file's dict itself. Used by every family."""
    obj = read_file(path, what)
    if key is not None and isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
        obj = obj[key]
    if not isinstance(obj, Mapping):
        where = f" (under {key!r})" if key else ""
        raise WeightsError(f"{path}: expected a state dict{where} in the {what}, found {type(obj).__name__}")
    return dict(obj)
