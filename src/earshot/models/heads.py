"""Projection heads from a tower's output into the shared embedding space."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from earshot.errors import ConfigError


@dataclass(frozen=True)
class HeadConfig:
    kind: Literal["linear", "mlp", "identity", "residual"] = "linear"  # identity: tower is already in the joint space; residual: MS-CLAP's
    hidden: int = 1024  # width of the mlp's hidden layer
    dropout: float = 0.0  # dropout on the head's input (AudioCLIP seed: 0.2); residual: on its second branch (MS-CLAP: 0.5)


class ResidualProjection(nn.Module):
    """MS-CLAP's ``Projection``: ``LayerNorm(e + Dropout(W2 GELU(e)))`` with ``e = W1 x``, both
    linear maps without bias (microsoft/CLAP ``msclap/models/clap.py``; same parameter names)."""

    def __init__(self, in_dim: int, out_dim: int, dropout: float):
        super().__init__()
        self.linear1 = nn.Linear(in_dim, out_dim, bias=False)
        self.linear2 = nn.Linear(out_dim, out_dim, bias=False)
        self.layer_norm = nn.LayerNorm(out_dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = self.linear1(x)  # (B, out_dim)
        return self.layer_norm(e + self.drop(self.linear2(F.gelu(e))))  # (B, out_dim)


class ProjectionHead(nn.Module):
    """Dropout -> linear, or dropout -> linear -> GELU -> linear; identity passes through;
    residual is MS-CLAP's projection."""

    def __init__(self, in_dim: int, out_dim: int, cfg: HeadConfig = HeadConfig()):
        super().__init__()
        self.cfg = cfg
        if cfg.kind not in ("linear", "mlp", "identity", "residual"):
            raise ConfigError(f"head.kind: {cfg.kind!r} is not one of linear, mlp, identity, residual")
        if not 0.0 <= cfg.dropout < 1.0:
            raise ConfigError(f"head.dropout: must be in [0, 1), got {cfg.dropout}")
        self.dropout = nn.Dropout(0.0 if cfg.kind == "residual" else cfg.dropout)
        if cfg.kind == "residual":
            self.proj: nn.Module = ResidualProjection(in_dim, out_dim, cfg.dropout)
        elif cfg.kind == "identity":
            if in_dim != out_dim:
                raise ConfigError(f"identity head needs the tower's output size to equal embed_dim, "
                                  f"got {in_dim} != {out_dim} (use kind: linear to project)")
            self.proj = nn.Identity()
        elif cfg.kind == "linear":
            self.proj = nn.Linear(in_dim, out_dim)
        else:
            self.proj = nn.Sequential(
                nn.Linear(in_dim, cfg.hidden), nn.GELU(), nn.Linear(cfg.hidden, out_dim)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.dropout(x))  # (B, in_dim) -> (B, out_dim)
