"""Hugging Face hub ids (``laion/clap-htsat-unfused``) as local folders, through
``huggingface_hub``: the user's own hub cache (``HF_HOME`` / ``HF_HUB_CACHE``, read when called,
not at import) is used as it is, so a transformers user's downloads just work; a revision (branch,
tag or commit) pins what is opened; nothing touches the network when the snapshot is cached or
``HF_HUB_OFFLINE`` is set."""

from __future__ import annotations

import os
from pathlib import Path

from earshot.errors import WeightsError

# What opening a CLAP repository needs (no other framework's weights, no README images).
_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model"]
_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


def hub_cache() -> Path:
    """The hub cache folder huggingface_hub itself would use now (HF_HUB_CACHE, else
    HF_HOME/hub, else ~/.cache/huggingface/hub)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def hub_folder(repo_id: str, revision: str | None = None, progress: bool = True) -> Path:
    """The local snapshot folder of ``repo_id`` at ``revision`` (default "main"): from the cache
    when it holds the config and weights there, else downloaded (unless offline)."""
    from huggingface_hub import snapshot_download, try_to_load_from_cache

    cache = hub_cache()
    config = try_to_load_from_cache(repo_id, "config.json", cache_dir=str(cache), revision=revision)
    if isinstance(config, str):
        folder = Path(config).parent
        if any((folder / w).is_file() for w in _WEIGHTS):
            return folder
    where = f"{repo_id}" + (f"@{revision}" if revision else "")
    if _offline():
        raise WeightsError(f"{where!r}: no such model (not a local path or registry name, and not in the "
                           f"Hugging Face cache {cache} with its config and weights; HF_HUB_OFFLINE is set)")
    try:
        from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

        if not progress:
            disable_progress_bars()
        try:
            return Path(snapshot_download(repo_id, revision=revision, cache_dir=str(cache),
                                          allow_patterns=_PATTERNS))
        finally:
            if not progress:
                enable_progress_bars()
    except Exception as e:  # repository not found, no network, gated: one clear message
        raise WeightsError(f"{where!r}: no such model (not a local path or registry name, and the "
                           f"Hugging Face hub could not provide it: {type(e).__name__}: {e})") from None
