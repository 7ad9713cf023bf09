"""Fusion rules: pure functions of the members' ``(Q, N)`` similarity matrices (see the
package docstring for ``mean``, ``zmean`` and ``rrf``)."""

from __future__ import annotations

import math
from typing import Literal, Sequence

import torch

from earshot.errors import ConfigError, DataError

RRF_K = 60.0  # Cormack et al. 2009
Rule = Literal["mean", "zmean", "rrf"]
RULES: tuple[str, ...] = ("mean", "zmean", "rrf")


# -- fusion (pure functions of similarity matrices) --------------------------------------------


def standardize_rows(sim: torch.Tensor) -> torch.Tensor:
    """Each row (query) to zero mean and unit population standard deviation; flat rows -> 0.

    Makes a model's scores comparable with another's whatever its loss's score scale:
    ``a * S + b`` (``a > 0``) standardises to the same matrix as ``S``.
    """
    sim = _float(sim)
    centred = sim - sim.mean(dim=1, keepdim=True)  # (Q, N)
    std = centred.pow(2).mean(dim=1, keepdim=True).sqrt()  # (Q, 1)
    # rows whose spread is only rounding noise of their mean are treated as flat
    flat = std <= 1e-12 * sim.abs().amax(dim=1, keepdim=True).clamp(min=1.0)
    return torch.where(flat, torch.zeros_like(centred), centred / torch.where(flat, torch.ones_like(std), std))


def rank_rows(sim: torch.Tensor) -> torch.Tensor:
    """1-based rank of each item within its row, highest score first, ties to the lower index.

    The same tie rule as :func:`earshot.metrics.relevant_ranks`, so fused ranks and metrics agree.
    """
    sim = _float(sim)
    order = torch.sort(-sim, dim=1, stable=True).indices  # (Q, N) ascending -score, stable on ties
    ranks = torch.empty_like(order)
    positions = torch.arange(1, sim.shape[1] + 1, device=sim.device).expand_as(order)
    ranks.scatter_(1, order, positions)
    return ranks


def fuse(
    sims: Sequence[torch.Tensor],
    weights: Sequence[float] | None = None,
    rule: str = "zmean",
    rrf_k: float = RRF_K,
) -> torch.Tensor:
    """The fused ``(Q, N)`` score matrix of member matrices ``sims`` (module docstring: rules).

    Weights default to equal and are normalised to sum to 1, so a weighted *mean* is returned
    and scores of ensembles of different sizes stay on one scale.
    """
    if rule not in RULES:
        raise ConfigError(f"fusion rule must be one of {list(RULES)}, got {rule!r}")
    if not sims:
        raise ConfigError("fuse: no similarity matrices given")
    w = _normalised_weights(weights, len(sims))
    shape = tuple(sims[0].shape)
    for i, s in enumerate(sims):
        if s.ndim != 2 or tuple(s.shape) != shape:
            raise DataError(f"fuse: member {i} similarity has shape {tuple(s.shape)}, expected {shape}")
    if rule == "rrf" and not rrf_k > 0:
        raise ConfigError(f"rrf_k must be positive, got {rrf_k}")
    out = torch.zeros(shape, dtype=torch.float64, device=sims[0].device)
    for wm, s in zip(w, sims):
        if rule == "mean":
            part = s.to(torch.float64)
        elif rule == "zmean":
            part = standardize_rows(s.to(torch.float64))
        else:
            part = 1.0 / (rrf_k + rank_rows(s).to(torch.float64))
        out += wm * part
    return out if sims[0].dtype == torch.float64 else out.float()  # float64 sums, caller's precision


def _float(sim: torch.Tensor) -> torch.Tensor:
    sim = torch.as_tensor(sim)
    if sim.ndim != 2:
        raise DataError(f"similarity must be a (queries, items) matrix, got shape {tuple(sim.shape)}")
    return sim if sim.is_floating_point() else sim.to(torch.float64)


def _normalised_weights(weights: Sequence[float] | None, n: int) -> list[float]:
    if weights is None:
        return [1.0 / n] * n
    w = [float(x) for x in weights]
    if len(w) != n:
        raise ConfigError(f"{len(w)} weights for {n} ensemble members")
    bad = [x for x in w if not (math.isfinite(x) and x > 0)]
    if bad:
        raise ConfigError(f"ensemble weights must be positive and finite, got {w}")
    total = sum(w)
    return [x / total for x in w]
