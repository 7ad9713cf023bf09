"""Ensemble manifests: typed JSON/YAML files naming member checkpoints, weights and a rule."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from earshot.config import from_dict, load_yaml, to_dict
from earshot.ensemble.fusion import RRF_K, RULES, Rule
from earshot.ensemble.model import Ensemble
from earshot.errors import ConfigError
from earshot.utils import atomic_write

FORMAT = "earshot.ensemble/1"


# -- configuration ----------------------------------------------------------------------------


@dataclass(frozen=True)
class MemberConfig:
    path: str  # checkpoint directory, relative to the manifest's folder (or absolute)
    weight: float = 1.0  # relative weight in the fusion; weights are normalised to sum to 1

    def __post_init__(self) -> None:
        if not str(self.path):
            raise ConfigError("ensemble member: path must not be empty")
        if not (math.isfinite(self.weight) and self.weight > 0):
            raise ConfigError(f"ensemble member {self.path}: weight must be positive, got {self.weight}")


@dataclass(frozen=True)
class EnsembleConfig:
    members: tuple[MemberConfig, ...]  # the models, in order
    rule: Rule = "zmean"  # mean | zmean (per-query standardised mean) | rrf (reciprocal rank)
    rrf_k: float = RRF_K  # the constant of reciprocal-rank fusion
    sample_rate: int | None = None  # rate of waveforms given to embed_audio; None = highest member's
    validation: dict[str, Any] = field(default_factory=dict)  # where and how it scored when chosen
    format: str = FORMAT  # manifest format tag

    def __post_init__(self) -> None:
        if self.format != FORMAT:
            raise ConfigError(f"ensemble manifest: unknown format {self.format!r} (expected {FORMAT!r})")
        if not self.members:
            raise ConfigError("ensemble manifest: members must list at least one checkpoint")
        if not self.rrf_k > 0:
            raise ConfigError(f"ensemble manifest: rrf_k must be positive, got {self.rrf_k}")
        if self.sample_rate is not None and self.sample_rate <= 0:
            raise ConfigError(f"ensemble manifest: sample_rate must be positive, got {self.sample_rate}")


# -- manifests ---------------------------------------------------------------------------------


def read_manifest(path: str | Path) -> EnsembleConfig:
    """Parse and check a manifest (JSON, or YAML by suffix); member paths stay as written."""
    path = Path(path)
    data = load_yaml(path)  # YAML, or JSON by suffix
    try:
        return from_dict(EnsembleConfig, data, "ensemble")
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def member_paths(cfg: EnsembleConfig, manifest: str | Path) -> list[Path]:
    """The members' checkpoint directories, relative paths resolved against the manifest's folder."""
    base = Path(manifest).resolve().parent
    return [p if (p := Path(m.path)).is_absolute() else (base / p) for m in cfg.members]


def save_manifest(
    path: str | Path,
    members: Sequence[str | Path],
    weights: Sequence[float] | None = None,
    rule: str = "zmean",
    rrf_k: float = RRF_K,
    sample_rate: int | None = None,
    validation: dict[str, Any] | None = None,
) -> Path:
    """Write a manifest naming ``members`` (checkpoint directories) relative to its own folder,
    so a run directory can move as a whole. JSON, or YAML for a ``.yaml``/``.yml`` path."""
    path = Path(path)
    base = path.resolve().parent
    w = [1.0] * len(members) if weights is None else [float(x) for x in weights]
    rel = [os.path.relpath(Path(m).resolve(), base) for m in members]
    cfg = EnsembleConfig(
        members=tuple(MemberConfig(r, x) for r, x in zip(rel, w, strict=True)),
        rule=rule,  # type: ignore[arg-type]
        rrf_k=float(rrf_k),
        sample_rate=sample_rate,
        validation=dict(validation or {}),
    )
    if cfg.rule not in RULES:
        raise ConfigError(f"fusion rule must be one of {list(RULES)}, got {rule!r}")
    doc = to_dict(cfg)
    with atomic_write(path, "w") as f:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            yaml.safe_dump(doc, f, sort_keys=False)
        else:
            json.dump(doc, f, indent=2)
            f.write("\n")
    return path


def load_ensemble(path: str | Path, map_location: str | torch.device = "cpu") -> Ensemble:
    """Open a manifest: load every member checkpoint (strictly) and build the :class:`Ensemble`.

    A member may also be a Hugging Face CLAP folder or a pretrained model's registry name
    (``laion_clap_general``), opened by ``earshot.loading.retriever``."""
    from earshot.loading.retriever import is_pretrained_name, load_retriever

    path = Path(path)
    cfg = read_manifest(path)
    dirs = member_paths(cfg, path)
    models = []
    for d, m in zip(dirs, cfg.members):
        if not d.exists() and is_pretrained_name(m.path):
            models.append(load_retriever(m.path).to(map_location))
            continue
        if not d.is_dir():
            raise ConfigError(f"{path}: member {m.path!r} is not a checkpoint directory ({d})")
        models.append(load_retriever(d).to(map_location))  # a checkpoint or a CLAP folder
    ens = Ensemble(models, [m.weight for m in cfg.members], cfg.rule, cfg.rrf_k, cfg.sample_rate,
                   names=[m.path for m in cfg.members])
    ens.checkpoints = dirs
    return ens
