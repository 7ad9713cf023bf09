"""Ensemble manifests: typed JSON/YAML files naming member checkpoints, weights and a rule."""

from __future__ import annotations

import hashlib
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
from earshot.errors import ConfigError, WeightsError
from earshot.loading.resolve import register_opener
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


def make_manifest(models: Sequence[str | Path], out: str | Path, weights: Sequence[float] | None = None,
                  rule: str = "zmean", rrf_k: float = RRF_K) -> tuple[Ensemble, Path]:
    """``earshot ensemble make`` as one call: check one weight per model and that every member
    is a checkpoint directory, write the manifest at ``out`` and open it (so a manifest that
    would not open is never left unreported). Returns (the ensemble, the manifest's path)."""
    if weights and len(weights) != len(models):
        raise ConfigError(f"{len(weights)} --weight values for {len(models)} models")
    members = [Path(m).expanduser() for m in models]
    for m in members:
        if not m.is_dir():
            raise ConfigError(f"{m}: not a checkpoint directory")
    path = save_manifest(out, members, weights or None, rule, rrf_k)
    return load_ensemble(path), path


def load_ensemble(path: str | Path, map_location: str | torch.device = "cpu",
                  text_only: bool = False) -> Ensemble:
    """Open a manifest: open every member through the one resolver (a checkpoint, a Hugging Face
    CLAP folder or hub id, a registry name such as ``laion_clap_general``, a published file) and
    build the :class:`Ensemble`. ``text_only``: each member as text queries need it."""
    from earshot.loading.resolve import OpenOptions, member_ref, open_ref

    path = Path(path)
    cfg = read_manifest(path)
    dirs = member_paths(cfg, path)
    models, refs = [], []
    for d, m in zip(dirs, cfg.members):
        try:
            ref = member_ref(d, m.path)
        except WeightsError as e:
            raise ConfigError(f"{path}: member {m.path!r}: {e}") from None
        model = open_ref(ref, OpenOptions(text_only=text_only))
        models.append(model if text_only else model.to(map_location))
        refs.append(ref)
    ens = Ensemble(models, [m.weight for m in cfg.members], cfg.rule, cfg.rrf_k, cfg.sample_rate,
                   names=[m.path for m in cfg.members])
    ens.member_refs = refs
    return ens


def manifest_identity(ref: Any) -> str:
    """What a manifest scores with: its rule and weights and each member's identity (so
    retraining a member in place changes it, which the manifest's bytes alone would not)."""
    from earshot.loading.resolve import member_ref

    cfg = read_manifest(ref.path)
    members = [member_ref(d, m.path).identity() for d, m in zip(member_paths(cfg, ref.path), cfg.members)]
    doc = {"members": members, "weights": [m.weight for m in cfg.members], "rule": cfg.rule,
           "rrf_k": cfg.rrf_k, "sample_rate": cfg.sample_rate}
    return "sha256:" + hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def _open_manifest(ref: Any, options: Any) -> Ensemble:
    return load_ensemble(ref.path, text_only=options.text_only)


register_opener("manifest", identity=manifest_identity)(_open_manifest)
