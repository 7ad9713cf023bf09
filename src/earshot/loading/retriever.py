"""One entry point that opens whatever a user names as "the model".

What the name means is decided by :func:`earshot.loading.resolve.resolve` alone (checkpoint,
Hugging Face CLAP folder or hub id, ensemble manifest, registry name, published file recognised
by its content); each kind is opened by its registered opener (:mod:`earshot.loading.openers`).

Callers (evaluate, submit, index, serve, classify) use this and never need to know which they
got: all present ``sample_rate``, ``embed_audio`` and ``embed_text`` (STYLE.md convention 2).
:func:`load_model` wraps the result for Python users: numpy in, L2-normalised numpy out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np

from earshot import health
from earshot.loading.resolve import OpenOptions, open_ref, resolve


@health.checked  # warns once when the text tower cannot tell captions apart (earshot/health.py)
def load_retriever(path: str | Path, progress: bool = True):
    """Open whatever :func:`~earshot.loading.resolve.resolve` says ``path`` is (a checkpoint,
    CLAP folder or hub id, manifest, registry name, published file) with its kind's opener."""
    return open_ref(resolve(path), OpenOptions(progress=progress))


def load_text_retriever(path: str | Path, progress: bool = True) -> Any:
    """A model opened for text queries only: an earshot checkpoint's text side alone, an
    ensemble manifest's members likewise. Kinds whose towers are one file (a CLAP folder, a
    registry name, a published file) are opened whole."""
    return open_ref(resolve(path), OpenOptions(progress=progress, text_only=True))


# --- the Python API --------------------------------------------------------------------------


@runtime_checkable
class Retriever(Protocol):
    """What every caller (Python users, the index, evaluation) needs from a model: numpy in,
    float32 ``(N, dim)`` numpy out, and the identity of the weights that produced it."""

    sample_rate: int  # Hz the waveforms are embedded at
    dim: int  # embedding width
    identity: str  # ModelRef.identity(): which weights these embeddings come from

    def embed_audio(self, waveforms: Sequence[np.ndarray], sample_rate: int | None = None,
                    batch_size: int = 16) -> np.ndarray:
        ...

    def embed_text(self, texts: Sequence[str], batch_size: int = 128) -> np.ndarray:
        ...


class Model:
    """The one numpy adapter (:class:`Retriever`) over a torch retriever (bi-encoder, averaged
    checkpoint or ensemble): what :func:`earshot.load_model` returns and what the index embeds
    with (``earshot.index.open_encoder``).

    With ``unit`` (the default, :func:`load_model`) every method returns float32 ``(N, D)``
    arrays with unit-length rows, so ``a @ t.T`` is the cosine similarity (for an ensemble: its
    ``mean`` fusion); without it rows are passed through as the model gives them (the index,
    which stores ``normalize`` and searches by inner product).
    """

    def __init__(self, retriever, source: str, identity: str | None = None, unit: bool = True):
        self.retriever = retriever
        self.source = source  # what it was opened from (a registry name as given, else a path)
        self._identity = identity
        self.unit = unit

    @property
    def identity(self) -> str:
        """:meth:`ModelRef.identity` of the source (computed on first use)."""
        if self._identity is None:
            self._identity = resolve(self.source).identity()
        return self._identity

    # The index's names for the same facts (earshot.index.encoder.Encoder).
    @property
    def model_id(self) -> str:
        return self.identity

    @property
    def model_path(self) -> str:
        return self.source

    @property
    def normalize(self) -> bool:
        """Rows are unit length (always with ``unit``; else as the model's config says)."""
        cfg = getattr(self.retriever, "cfg", None)
        return self.unit or bool(getattr(cfg, "normalize", True))

    def __repr__(self) -> str:
        return f"earshot.Model({self.source!r}, sample_rate={self.sample_rate}, dim={self.dim})"

    @property
    def sample_rate(self) -> int:
        return int(self.retriever.sample_rate)

    @property
    def dim(self) -> int:
        return int(self.retriever.embed_dim)

    def _unit(self, x) -> np.ndarray:
        a = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x, dtype=np.float32)
        if not self.unit:
            return np.ascontiguousarray(a)
        norms = np.linalg.norm(a, axis=1, keepdims=True)
        return np.ascontiguousarray(a / np.maximum(norms, 1e-12))

    def embed_text(self, texts: Sequence[str], batch_size: int = 128) -> np.ndarray:
        """Captions or queries -> ``(N, D)``."""
        if isinstance(texts, str):
            raise TypeError("embed_text takes a list of strings")
        return self._unit(self.retriever.embed_text(list(texts), batch_size=batch_size))

    def embed_audio(self, waveforms: Sequence[np.ndarray] | np.ndarray, sample_rate: int | None = None,
                    batch_size: int = 16) -> np.ndarray:
        """Mono waveforms (a list of 1-D arrays, or a ``(N, T)`` array) at ``sample_rate`` (None:
        already at the model's rate) -> ``(N, D)``; resampled (soxr) to the model's rate when
        they differ."""
        from earshot.audio.io import resample

        if isinstance(waveforms, np.ndarray) and waveforms.ndim == 1:
            raise TypeError("embed_audio takes a batch: a list of 1-D waveforms or an (N, T) array")
        waves = [np.asarray(w, dtype=np.float32) for w in waveforms]
        if sample_rate is not None and int(sample_rate) != self.sample_rate:
            waves = [resample(w, int(sample_rate), self.sample_rate) for w in waves]
        return self._unit(self.retriever.embed_audio(waves, batch_size=batch_size))

    def embed_audio_files(self, paths: Sequence[str | Path], batch_size: int = 16,
                          progress: bool = False) -> np.ndarray:
        """Audio files -> ``(N, D)``, in order; each file is decoded to mono at the model's rate.
        A file that cannot be decoded raises AudioError naming it."""
        from tqdm.auto import tqdm

        from earshot.audio.io import load_audio

        paths = [Path(p).expanduser() for p in paths]
        out = np.empty((len(paths), self.dim), dtype=np.float32)
        bar = tqdm(total=len(paths), unit="file", disable=not progress)
        for start in range(0, len(paths), batch_size):
            chunk = paths[start : start + batch_size]
            waves = [load_audio(p, self.sample_rate) for p in chunk]
            out[start : start + len(chunk)] = self.embed_audio(waves, self.sample_rate, batch_size)
            bar.update(len(chunk))
        bar.close()
        return out


    def find_moments(self, audio: str | Path | np.ndarray, text: str, top: int = 5,
                     sample_rate: int | None = None) -> list[tuple[float, float, float]]:
        """Where ``text`` happens in a long recording (a file, or a mono waveform at
        ``sample_rate``, default the model's): up to ``top`` ``(start_s, end_s, score)``, best
        first, by the zero-shot sliding-window baseline (:mod:`earshot.moments.sliding`)."""
        from earshot.moments.find import find_moments

        if isinstance(audio, np.ndarray) and sample_rate is not None and int(sample_rate) != self.sample_rate:
            from earshot.audio.io import resample

            audio = resample(audio, int(sample_rate), self.sample_rate)
        return find_moments(self.retriever, audio, text, top=top)


def load_model(name_or_path: str | Path, progress: bool = True) -> Model:
    """Open any model earshot knows (checkpoint, ensemble manifest, registry name, Hugging Face
    CLAP folder or hub id, published file; ``~`` expanded; ``path:``/``registry:``/``hf-hub:``
    to break ties) behind :class:`Model`'s numpy API."""
    return Model(load_retriever(name_or_path, progress=progress), str(name_or_path))
