"""Strict construction of transformers' config classes from a tower's ``options.config``.

transformers' ``PretrainedConfig(**kwargs)`` keeps any unknown keyword as an attribute, so a
misspelt ``hiden_size: 5`` builds a default-sized model without a word. Towers build their
transformers configs through :func:`strict_hf_config`, which accepts only the fields the class
declares (its ``__init__`` parameters, its serialised keys and its ``attribute_map`` aliases)
and raises ConfigError naming the dotted path of anything else.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from earshot.errors import ConfigError

# Read by PretrainedConfig itself (properties or legacy spellings) although not in to_dict().
_COMMON = frozenset({"num_labels", "torch_dtype", "name_or_path"})


@lru_cache(maxsize=None)
def hf_config_fields(config_cls: type) -> frozenset[str]:
    """Every key ``config_cls(**kwargs)`` understands: its own and its base classes' ``__init__``
    parameters, the keys its default instance serialises, and ``attribute_map`` aliases
    (``n_embd`` for GPT-2's ``hidden_size``)."""
    names: set[str] = set(_COMMON)
    for klass in config_cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is not None:
            names |= {p.name for p in inspect.signature(init).parameters.values()
                      if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.name != "self"}
    names |= set(config_cls().to_dict())
    names |= set(getattr(config_cls, "attribute_map", {}) or {})
    return frozenset(names)


def strict_hf_config(config_cls: type, data: Mapping[str, Any] | None, where: str) -> Any:
    """``config_cls(**data)`` after checking every key; ``where`` is the dotted path of ``data``
    in the user's config (``clap_roberta.config``), so the error reads
    ``clap_roberta.config.hiden_size: unknown key ...``."""
    data = dict(data or {})
    if not all(isinstance(k, str) for k in data):
        raise ConfigError(f"{where}: keys must be strings, got {sorted(map(repr, data))}")
    allowed = hf_config_fields(config_cls)
    unknown = sorted(set(data) - allowed)
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, sorted(allowed), n=1)
            hints.append(f"{where}.{key}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ConfigError(f"{'; '.join(hints)}: unknown key(s) for transformers' "
                          f"{config_cls.__name__}")
    defaults = config_cls().to_dict()
    for key, value in data.items():  # YAML 1.1 reads "1e-5" (no dot) as a string
        if isinstance(defaults.get(key), float) and isinstance(value, str):
            try:
                data[key] = float(value)
            except ValueError:
                raise ConfigError(f"{where}.{key}: expected a number, got {value!r}") from None
    try:
        return config_cls(**data)
    except Exception as e:  # transformers raises TypeError, ValueError or its own validation errors
        raise ConfigError(f"{where}: {type(e).__name__}: {e}") from None
