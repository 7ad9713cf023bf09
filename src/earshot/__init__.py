"""earshot: language-based audio retrieval.

The core library (``earshot.audio``, ``earshot.data``, ``earshot.models``, ``earshot.losses``,
``earshot.metrics``, ``earshot.index``) never imports the trainer (``earshot.train``) or the
application (``earshot.app``). Importing this package has no side effects.
"""

__version__ = "0.1.0"

from earshot.errors import AudioError, ConfigError, DataError, EarshotError, WeightsError

__all__ = ["__version__", "EarshotError", "AudioError", "DataError", "ConfigError", "WeightsError", "Index",
           "load_model"]


def __getattr__(name: str):
    # ``earshot.Index`` is imported on first use: it pulls in FAISS and SQLite, which a plain
    # ``import earshot`` must not pay for.
    if name == "Index":
        from earshot.index.search import Index

        return Index
    if name == "load_model":  # pulls in torch; a plain ``import earshot`` must not
        from earshot.loading.retriever import load_model

        return load_model
    raise AttributeError(f"module 'earshot' has no attribute {name!r}")
