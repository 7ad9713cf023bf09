"""Known pretrained files, and verified, resumable downloads into the user cache.

``entry.py`` defines what an entry is (file, URLs, the digest its publisher states, towers,
preprocessing); one module per family registers its entries (``panns.py``, ``audioclip.py``,
``clip.py``, ``clap.py``, ``msclap.py``); ``cache.py`` locates, verifies and downloads. Importing this package registers
every family; nothing touches the network at import time.
"""

from earshot.weights import audioclip, clap, clip, lighthouse, msclap, panns, passt  # noqa: F401  (registers)
from earshot.weights.cache import (DownloadReport, WeightsStatus, add_weights, download, fetch_weights,
                                   file_digests, locate, status, verify, weights_dir)
from earshot.weights.entry import (HEX_LENGTH, WEIGHTS, AudioPreprocessing,
                                   Checksum, HashAlgorithm, RetrieverSpec, TextPreprocessing, Tower,
                                   WeightsEntry, get_weights, list_weights, register_weights)

__all__ = [
    "CONVERTERS", "HEX_LENGTH", "WEIGHTS", "AudioPreprocessing", "Checksum", "DownloadReport", "add_weights",
    "HashAlgorithm", "RetrieverSpec", "TextPreprocessing", "Tower", "WeightsEntry", "WeightsStatus", "download",
    "fetch_weights", "file_digests", "get_weights", "list_weights", "locate",
    "register_weights", "status", "verify", "weights_dir",
]


def __getattr__(name: str):
    if name == "CONVERTERS":  # a view of the registered converters (see entry.py)
        from earshot.weights import entry

        return entry.CONVERTERS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
