"""Load published weights into a tower: what ``weights:`` means is decided by the one resolver
(:func:`earshot.loading.resolve.resolve_tower_weights`); the file is read and converted by its
format's converter, registered beside its architecture
(``earshot.models.converters.register_converter``), and loaded strictly.
"""

from __future__ import annotations

from torch import nn

from earshot.errors import WeightsError
from earshot.loading.resolve import downloaded_file  # noqa: F401  (the text towers' tokenizers)
from earshot.loading.resolve import resolve_tower_weights
from earshot.models.converters import get_converter


def load_tower_weights(tower: nn.Module, cfg) -> None:
    """Load ``cfg.weights`` (TowerConfig) into ``tower`` strictly, through its converter."""
    from earshot.models.base import AudioEncoder

    kind = "audio" if isinstance(tower, AudioEncoder) else "text"
    ref = resolve_tower_weights(cfg.weights, cfg.name, kind, cfg.weights_format)
    path = ref.locate()
    loader = get_converter(ref.fmt).tower
    try:
        loader(tower, path)
    except WeightsError as e:
        raise WeightsError(f"{path}: {e}") from None
