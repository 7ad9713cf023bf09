"""One call per ``earshot index`` run: the checked request, then the engine that builds it.

:func:`run_index` opens the model and indexes with the local engine (decode workers + one
encoder, :func:`earshot.index.indexer.index_folder`) or on Ray
(:func:`earshot.index.engine_ray.index_folder_ray`); the command line only parses, shows
progress and prints the report.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from earshot.index.indexer import IndexConfig, IndexReport, IndexRequest, Progress, index_folder

if TYPE_CHECKING:
    from earshot.index.engine_ray import RayConfig


def run_index(request: IndexRequest, model: str | Path, cfg: IndexConfig = IndexConfig(), *,
              engine: str = "local", precision: str = "auto", ray: "RayConfig | None" = None,
              progress: Callable[[Progress], None] | None = None) -> tuple[IndexReport, Any]:
    """Index ``request.folder`` into ``request.out`` with ``model``: (the report, the encoder a
    local run opened, which a ``--watch`` goes on using; None for Ray, whose workers open their
    own; ``ray`` is its :class:`~earshot.index.engine_ray.RayConfig`, default settings when None).
    A Ctrl-C surfaces as KeyboardInterrupt after what was finished is in place."""
    if engine == "ray":
        from earshot.index.engine_ray import EncoderSpec, RayConfig, index_folder_ray

        spec = EncoderSpec(str(Path(model).expanduser()), precision)
        return index_folder_ray(request.folder, spec, request.out, cfg, ray or RayConfig(), progress), None
    from earshot.index.encoder import open_encoder

    encoder = open_encoder(model, precision)
    return index_folder(request.folder, encoder, request.out, cfg, progress), encoder
