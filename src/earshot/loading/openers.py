"""The openers of each kind :func:`~earshot.loading.resolve.resolve` decides: ``kind -> open(ref,
options)``. A registered whole-model file is read through its format's registered converter
(:mod:`earshot.models.converters`), built from its registry entry and loaded strictly, once.
Manifests are opened by :mod:`earshot.ensemble.manifest`, which registers that kind itself.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from earshot.errors import ConfigError, WeightsError
from earshot.loading.resolve import ModelRef, OpenOptions, register_opener


def _strict_load(model, sd: dict, where: Path) -> None:
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise WeightsError(f"{where}: does not fit the model: {e}") from None


def retriever_from_entry(entry, path: Path):
    """Build the bi-encoder a registered file holds and load ``path`` into it strictly, once
    (through the registered converter of the entry's format)."""
    from earshot.loading import dcase2025  # noqa: F401  (registers the baseline's format)
    from earshot.models.biencoder import create_model
    from earshot.models.converters import get_converter

    spec = entry.retriever
    cfg = json.loads(json.dumps(dict(spec.config)))  # deep copy, plain types
    fmt = spec.state_format or entry.towers[0].converter
    conv = get_converter(fmt)
    if conv.model is None:
        raise ConfigError(f"{entry.name}: weights format {fmt!r} has no whole-model reader")
    if conv.adapt is not None:
        cfg = conv.adapt(cfg, path)
    for side in ("audio", "text"):
        cfg[side]["weights"] = entry.name
        cfg[side]["weights_format"] = fmt
    model = create_model(cfg, load_weights=False)
    _strict_load(model, conv.model(path, model), path)
    return model.eval()


def import_dcase2025_baseline(ckpt: str | Path, out_dir: str | Path, tokenizer: str = "roberta-large",
                              roberta: dict[str, Any] | str | None = None,
                              passt: dict[str, Any] | None = None) -> Path:
    """Read the baseline's ``.ckpt`` (``weights_only=True``), load it strictly into the earshot
    model and save that as a checkpoint directory; returns ``out_dir``. The RoBERTa size is read
    from the checkpoint's text projection unless ``roberta`` is given."""
    from earshot.loading.dcase2025 import baseline_model_config, read_dcase2025_baseline, roberta_from_state_dict
    from earshot.models import checkpoint
    from earshot.models.biencoder import create_model

    ckpt = Path(ckpt)
    sd = read_dcase2025_baseline(ckpt)
    if roberta is None:
        roberta = roberta_from_state_dict(sd, ckpt)
    model = create_model(baseline_model_config(roberta, tokenizer, passt), load_weights=False)
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(sd)), sorted(set(sd) - set(own))
    if missing or unexpected:
        raise WeightsError(f"{ckpt}: does not match the baseline model: missing {missing[:8]}, "
                           f"unexpected {unexpected[:8]}")
    model.load_state_dict(sd, strict=True)
    tau = 1.0 / math.exp(float(sd["log_logit_scale"]))
    return checkpoint.save(model.eval(), out_dir, {"source": f"dcase2025_task6_baseline {ckpt.name}", "tau": tau})


def load_registered(name: str, progress: bool = True, cache_dir: str | Path | None = None):
    """Download (once, verified) a registered retriever and its companion files, then open it.

    Companion files whose source publishes no digest (tokenizer JSON, which the hub keeps out of
    LFS) are fetched unverified and their SHA-256 is logged, as the entry states.
    """
    from earshot import weights as registry
    from earshot.weights.cache import locate_checked

    entry = registry.get_weights(name)
    if entry.retriever is None:
        from earshot.loading.resolve import not_a_model

        raise not_a_model(entry)
    # A copy already in the cache is checked (size, digest once) and used; a file whose source
    # publishes no digest is downloaded only by `earshot weights download NAME --allow-unverified`.
    path = locate_checked(entry, cache_dir) or registry.download(entry, cache_dir, progress=progress)
    _companions(entry, progress, cache_dir)
    return retriever_from_entry(entry, path)


def _companions(entry, progress: bool, cache_dir: str | Path | None) -> None:
    from earshot import weights as registry

    for companion in entry.retriever.companions:
        c = registry.get_weights(companion)
        registry.download(c, cache_dir, progress=progress, allow_unverified=c.checksum is None)


def clap_from_hf_folder(folder: str | Path):
    """A bi-encoder from a Hugging Face CLAP folder (config.json, weights, tokenizer)."""
    from earshot.config import to_dict
    from earshot.loading.hf_clap import read_hf_clap_folder
    from earshot.models.audio import clap
    from earshot.models.biencoder import create_model

    info = read_hf_clap_folder(folder)
    if info.weights is None:
        raise WeightsError(f"{info.path}: no model.safetensors or pytorch_model.bin")
    cfg = {
        "audio": {"name": "clap_htsat", "weights": str(info.path), "weights_format": "clap_hf",
                  "options": {"config": info.audio_config, "frontend": to_dict(info.frontend)}},
        "text": {"name": "clap_roberta", "weights": str(info.path), "weights_format": "clap_hf",
                 "options": {"config": info.text_config, "tokenizer": str(info.path)}},
        "embed_dim": int(info.audio_config["projection_dim"]),
        "audio_head": {"kind": "identity"}, "text_head": {"kind": "identity"},
    }
    model = create_model(cfg, load_weights=False)
    _strict_load(model, clap.biencoder_state_dict(clap.convert_clap_hf_state_dict(
        clap.read_hf_clap_weights(info.weights))), info.weights)
    return model.eval()


@register_opener("checkpoint")
def _open_checkpoint(ref: ModelRef, options: OpenOptions) -> Any:
    if options.text_only:
        from earshot.loading.text_side import load_text_side

        return load_text_side(ref.path)
    from earshot.models import checkpoint

    return checkpoint.load(ref.path)


@register_opener("hf_clap_folder")
def _open_hf_folder(ref: ModelRef, options: OpenOptions) -> Any:
    return clap_from_hf_folder(ref.path)


@register_opener("hf_hub")
def _open_hub(ref: ModelRef, options: OpenOptions) -> Any:
    from earshot.loading.hub import hub_folder
    from earshot.loading.resolve import is_hf_clap_folder

    folder = hub_folder(ref.location, ref.revision, progress=options.progress)
    if not is_hf_clap_folder(folder):
        raise WeightsError(f"{ref}: the hub repository ({folder}) is not a CLAP model "
                           f"(config.json without model_type \"clap\")")
    return clap_from_hf_folder(folder)


@register_opener("registry")
def _open_registry(ref: ModelRef, options: OpenOptions) -> Any:
    return load_registered(ref.location, progress=options.progress, cache_dir=options.cache_dir)


@register_opener("published_file")
def _open_published(ref: ModelRef, options: OpenOptions) -> Any:
    if ref.entry is None:
        raise WeightsError(f"{ref.location}: a published file without a registry entry")
    # The file is the user's; its companions (a tokenizer) must be in the cache, as the tower
    # that needs one says (`earshot weights download NAME`).
    return retriever_from_entry(ref.entry, ref.path)
