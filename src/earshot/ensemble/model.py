"""The ensemble as a retriever: members fused at score level behind one model's interface."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from earshot.data.records import CaptionTable
from earshot.ensemble.fingerprint import checkpoint_fingerprint
from earshot.ensemble.fusion import RRF_K, RULES, _normalised_weights, fuse
from earshot.errors import ConfigError, DataError


# -- the ensemble as a retriever ---------------------------------------------------------------


class Ensemble:
    """Several retrievers fused at score level, behaving as one retriever.

    ``members`` are models with ``sample_rate``, ``embed_dim``, ``embed_audio`` and ``embed_text``
    (earshot bi-encoders). ``names`` label them in tables (default ``member0``...).
    """

    def __init__(
        self,
        members: Sequence[Any],
        weights: Sequence[float] | None = None,
        rule: str = "zmean",
        rrf_k: float = RRF_K,
        sample_rate: int | None = None,
        names: Sequence[str] | None = None,
    ):
        if not members:
            raise ConfigError("an ensemble needs at least one member")
        if rule not in RULES:
            raise ConfigError(f"fusion rule must be one of {list(RULES)}, got {rule!r}")
        if not rrf_k > 0:
            raise ConfigError(f"rrf_k must be positive, got {rrf_k}")
        self.members = list(members)
        self.weights = _normalised_weights(weights, len(self.members))
        self.rule = rule
        self.rrf_k = float(rrf_k)
        rates = [int(m.sample_rate) for m in self.members]
        self.sample_rate = int(sample_rate) if sample_rate is not None else max(rates)
        if self.sample_rate <= 0:
            raise ConfigError(f"ensemble sample_rate must be positive, got {self.sample_rate}")
        self.names = list(names) if names is not None else [f"member{i}" for i in range(len(self.members))]
        if len(self.names) != len(self.members):
            raise ConfigError(f"{len(self.names)} names for {len(self.members)} ensemble members")
        self.dims = [int(m.embed_dim) for m in self.members]
        self._scale = [math.sqrt(w) for w in self.weights]
        # What each member is (earshot.loading.resolve.ModelRef), when opened from a manifest:
        # a checkpoint, a registry name, a hub id, a published file...
        self.member_refs: list[Any] | None = None

    def __repr__(self) -> str:
        parts = ", ".join(f"{n} x{w:.3g}" for n, w in zip(self.names, self.weights))
        return f"Ensemble({self.rule}, [{parts}], sample_rate={self.sample_rate})"

    @property
    def embed_dim(self) -> int:
        """Width of the concatenated embedding (the sum of the members')."""
        return sum(self.dims)

    def fingerprint(self) -> str:
        """SHA-256 identifying what this ensemble scores with: each member's content (a
        checkpoint's config and weights; for a registry name, hub id or published file, the
        identity of its weights), the weights, the rule and the input rate. An index stores it
        to refuse another model."""
        if self.member_refs is None:
            raise ConfigError("fingerprint needs an ensemble opened from a manifest (load_ensemble)")
        doc = {"members": [checkpoint_fingerprint(r.path) if r.kind == "checkpoint" else r.identity()
                           for r in self.member_refs],
               "weights": self.weights, "rule": self.rule, "rrf_k": self.rrf_k,
               "sample_rate": self.sample_rate}
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()

    def eval(self) -> "Ensemble":
        for m in self.members:
            if hasattr(m, "eval"):
                m.eval()
        return self

    # -- encoding: concatenations of sqrt(w)-scaled member embeddings -------------------------
    def _join(self, parts: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.cat([p.float() * s for p, s in zip(parts, self._scale)], dim=1)  # (B, sum D)

    def split(self, emb: torch.Tensor) -> list[torch.Tensor]:
        """Each member's own (unscaled) embedding from a concatenated ``(B, sum D)`` one."""
        if emb.ndim != 2 or emb.shape[1] != self.embed_dim:
            raise DataError(f"ensemble embeddings must be (B, {self.embed_dim}), got {tuple(emb.shape)}")
        return [p / s for p, s in zip(torch.split(emb, self.dims, dim=1), self._scale)]

    def embed_text(self, texts: Sequence[str], batch_size: int = 128) -> torch.Tensor:
        """Captions -> ``(Q, sum D)``: every member's text embedding, concatenated."""
        return self._join([m.embed_text(list(texts), batch_size=batch_size) for m in self.members])

    def embed_audio(
        self, waveforms: torch.Tensor | Sequence[np.ndarray], batch_size: int = 32
    ) -> torch.Tensor:
        """Waveforms at ``self.sample_rate`` -> ``(N, sum D)``; each member gets them resampled
        (soxr) to its own rate when that differs, then frames them with its own front end."""
        from earshot.audio.io import resample

        if isinstance(waveforms, torch.Tensor) and waveforms.dim() == 1:
            raise DataError("embed_audio takes a batch: a (B, T) tensor or a list of 1-D waveforms")
        waves = [w.detach().cpu().numpy() if isinstance(w, torch.Tensor) else np.asarray(w, np.float32)
                 for w in waveforms]
        parts = []
        for m in self.members:
            rate = int(m.sample_rate)
            own = waves if rate == self.sample_rate else [resample(w, self.sample_rate, rate) for w in waves]
            parts.append(m.embed_audio(own, batch_size=batch_size))
        return self._join(parts)

    def encode_clips(
        self,
        table: CaptionTable,
        audio_dir: str | Path | None = None,
        clip_seconds: float | None = None,
        batch_size: int = 16,
        num_workers: int = 0,
        progress: bool = True,
    ) -> torch.Tensor:
        """Every clip of ``table`` -> ``(N, sum D)``, each member decoding the files at its own
        sample rate (what :func:`earshot.evaluation.encode_clips` calls for an ensemble)."""
        from earshot.evaluation import encode_clips

        return self._join([
            encode_clips(m, table, audio_dir, clip_seconds, batch_size, num_workers, progress)
            for m in self.members
        ])

    # -- scoring ------------------------------------------------------------------------------
    def member_similarities(self, text: torch.Tensor, audio: torch.Tensor) -> list[torch.Tensor]:
        """Each member's ``(Q, N)`` dot-product scores from concatenated embeddings."""
        return [t @ a.T for t, a in zip(self.split(text.float()), self.split(audio.float()))]

    def similarity(self, text: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """The fused ``(Q, N)`` scores of concatenated text and audio embeddings.

        ``zmean`` and ``rrf`` are relative to the clips given: pass the whole corpus."""
        return self.fuse(self.member_similarities(text, audio))

    def fuse(self, sims: Sequence[torch.Tensor]) -> torch.Tensor:
        """Fuse member matrices with this ensemble's weights and rule."""
        return fuse(sims, self.weights, self.rule, self.rrf_k)
