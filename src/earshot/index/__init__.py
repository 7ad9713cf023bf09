"""Search your own sounds: index a folder with a trained model, then query it by text or example.

``index_folder(root, encoder, out)`` builds or updates an index directory (SQLite metadata +
FAISS vectors); ``Index.open(out).search("a dog barks", k=10)`` queries it. Names are exported
lazily so that decoding workers importing ``earshot.index.decode`` never load torch or FAISS.
"""

from __future__ import annotations

from earshot.utils import lazy_exports

_EXPORTS = {
    "Encoder": "encoder",
    "RetrieverEncoder": "encoder",
    "model_identity": "encoder",
    "open_encoder": "encoder",
    "IndexConfig": "indexer",
    "IndexReport": "indexer",
    "Progress": "indexer",
    "index_folder": "indexer",
    "Hit": "search",
    "Index": "search",
    "VectorConfig": "vectors",
    "Filter": "filters",
    "Moment": "moments",
    "SearchOptions": "ranking",
    "find_duplicates": "duplicates",
    "watch_folder": "watch",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
