"""The one thing an index needs from a model: embed windows of audio and texts into one space.

The index never touches a model directly; it goes through :class:`Encoder`, so a single
checkpoint, an averaged checkpoint or an ensemble can all be indexed and searched. An ensemble
whose similarity is a weighted sum of per-member cosines plugs in by returning the members'
normalised embeddings concatenated with sqrt(weight) scaling: the inner product of two such
vectors is exactly the ensemble similarity, so the FAISS inner-product search stays correct.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np

from earshot.errors import WeightsError
from earshot.utils import sha256_file


class Encoder(Protocol):
    """What indexing and searching need from a model."""

    model_id: str  # identity of the weights: an index refuses any other model
    sample_rate: int  # Hz the audio must be decoded at
    dim: int  # embedding dimension
    normalize: bool  # embeddings are unit length, so inner product = cosine

    def embed_audio(self, waves: Sequence[np.ndarray], batch_size: int) -> np.ndarray:
        """1-D waveforms (any lengths) -> (N, dim) float32."""
        ...

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        """Queries -> (N, dim) float32."""
        ...


def model_identity(path: str | Path) -> str:
    """A short stable id of a model on disk: SHA-256 of its weights file, or of the manifest.

    Two copies of the same checkpoint get the same id; retraining changes it, so an index built
    with yesterday's model cannot be silently queried with today's.
    """
    from earshot.models.loading import retriever_identity

    pretrained = retriever_identity(path)  # a registry name, CLAP folder or published file
    if pretrained is not None:
        return pretrained
    p = Path(path).expanduser()
    if p.is_dir():
        weights = p / "model.safetensors"
        if not weights.is_file():
            raise WeightsError(f"{p}: not an earshot checkpoint (no model.safetensors)")
        return "sha256:" + sha256_file(weights)[:16]
    if p.is_file():
        # A manifest names its members; hash its bytes plus each member's weights it points at
        # would be stricter, but the manifest format belongs to the ensemble module.
        return "sha256:" + hashlib.sha256(p.read_bytes()).hexdigest()[:16]
    raise WeightsError(f"{p}: no such model (expected a checkpoint directory or a manifest)")


@dataclass
class RetrieverEncoder:
    """Adapts a retriever (``embed_audio``/``embed_text`` returning tensors) to :class:`Encoder`."""

    retriever: Any  # BiEncoder, averaged checkpoint or ensemble from load_retriever
    model_id: str  # from model_identity(path)
    model_path: str = ""  # where it was loaded from (remembered by the index; may move)

    @property
    def sample_rate(self) -> int:
        return int(self.retriever.sample_rate)

    @property
    def dim(self) -> int:
        return int(self.retriever.embed_dim)

    @property
    def normalize(self) -> bool:
        cfg = getattr(self.retriever, "cfg", None)
        return bool(getattr(cfg, "normalize", True))

    def embed_audio(self, waves: Sequence[np.ndarray], batch_size: int = 16) -> np.ndarray:
        out = self.retriever.embed_audio(list(waves), batch_size=batch_size)
        return np.ascontiguousarray(out.detach().cpu().numpy(), dtype=np.float32)

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        out = self.retriever.embed_text(list(texts))
        return np.ascontiguousarray(out.detach().cpu().numpy(), dtype=np.float32)


def open_encoder(path: str | Path, precision: str = "auto", device: str = "cpu") -> RetrieverEncoder:
    """Load the model at ``path`` (checkpoint dir or ensemble manifest) for indexing/search,
    on ``device`` ("cpu", "cuda"), prepared for inference at ``precision`` (see
    :mod:`earshot.models.inference`)."""
    from earshot.models.inference import prepare_for_inference
    from earshot.models.loading import load_retriever

    retriever = load_retriever(path)
    if device != "cpu":
        if not hasattr(retriever, "to"):
            raise WeightsError(f"{path}: this model cannot be moved to {device}")
        retriever = retriever.to(device)
    retriever = prepare_for_inference(retriever, precision)
    if hasattr(retriever, "eval"):  # searches share it across threads: never toggle its mode mid-query
        retriever.eval()
    return RetrieverEncoder(retriever, model_identity(path), _where(path))


def open_text_encoder(path: str | Path) -> RetrieverEncoder:
    """The model at ``path`` opened for text queries only (its audio side is never built)."""
    from earshot.models.text_side import load_text_retriever

    retriever = load_text_retriever(path)
    if hasattr(retriever, "eval"):
        retriever.eval()
    return RetrieverEncoder(retriever, model_identity(path), _where(path))


def _where(path: str | Path) -> str:
    """What the index remembers as the model's location: a registry name as given, else the
    resolved path."""
    from earshot.models.loading import is_pretrained_name

    if is_pretrained_name(path):
        return str(path)
    return str(Path(path).expanduser().resolve())
