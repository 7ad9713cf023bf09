"""The one thing an index needs from a model: embed windows of audio and texts into one space.

The index never touches a model directly; it goes through :class:`Encoder`, so a single
checkpoint, an averaged checkpoint or an ensemble can all be indexed and searched. An ensemble
whose similarity is a weighted sum of per-member cosines plugs in by returning the members'
normalised embeddings concatenated with sqrt(weight) scaling: the inner product of two such
vectors is exactly the ensemble similarity, so the FAISS inner-product search stays correct.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np



class Encoder(Protocol):
    """What indexing and searching need from a model."""

    model_id: str  # identity of the weights: an index refuses any other model
    sample_rate: int  # Hz the audio must be decoded at
    dim: int  # embedding dimension
    normalize: bool  # embeddings are unit length, so inner product = cosine

    def embed_audio(self, waves: Sequence[np.ndarray], *, batch_size: int) -> np.ndarray:
        """1-D waveforms (any lengths) at ``sample_rate`` -> (N, dim) float32.

        ``batch_size`` is passed by keyword: the retriever adapter's second positional
        parameter is a sample rate, so a wrapper passing it positionally would resample."""
        ...

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        """Queries -> (N, dim) float32."""
        ...


def model_identity(path: str | Path) -> str:
    """:meth:`earshot.loading.resolve.ModelRef.identity` of the model at ``path`` (kept under the
    index's name): copies of a model share it; retraining changes it, so an index built with
    yesterday's model cannot be silently queried with today's."""
    from earshot.loading.resolve import resolve

    return resolve(path).identity()


def RetrieverEncoder(retriever: Any, model_id: str, model_path: str = "") -> Any:
    """The one numpy adapter (:class:`earshot.loading.retriever.Model`) as the index uses it:
    embeddings passed through as the model gives them (its ``normalize`` is stored)."""
    from earshot.loading.retriever import Model

    return Model(retriever, model_path, identity=model_id, unit=False)


def open_encoder(path: str | Path, precision: str = "auto", device: str = "cpu") -> Any:
    """Load the model at ``path`` (anything :func:`~earshot.loading.resolve.resolve` knows) for
    indexing/search, on ``device`` ("cpu", "cuda"), prepared for inference at ``precision``
    (see :mod:`earshot.models.inference`)."""
    from earshot.loading.resolve import OpenOptions, open_ref, resolve
    from earshot.models.inference import prepare_for_inference

    ref = resolve(path)
    retriever = open_ref(ref, OpenOptions())
    if device != "cpu":
        if not hasattr(retriever, "to"):
            raise WeightsError(f"{path}: this model cannot be moved to {device}")
        retriever = retriever.to(device)
    retriever = prepare_for_inference(retriever, precision)
    if hasattr(retriever, "eval"):  # searches share it across threads: never toggle its mode mid-query
        retriever.eval()
    return RetrieverEncoder(retriever, ref.identity(), _where(path, ref))


def open_text_encoder(path: str | Path) -> Any:
    """The model at ``path`` opened for text queries only (its audio side is never built)."""
    from earshot.loading.resolve import OpenOptions, open_ref, resolve

    ref = resolve(path)
    retriever = open_ref(ref, OpenOptions(text_only=True))
    if hasattr(retriever, "eval"):
        retriever.eval()
    return RetrieverEncoder(retriever, ref.identity(), _where(path, ref))


def _where(path: str | Path, ref: Any) -> str:
    """What the index remembers as the model's location: a registry name or hub id as given,
    else the resolved path."""
    if ref.kind in ("registry", "hf_hub"):
        return str(path)
    return str(Path(ref.location).expanduser().resolve())
