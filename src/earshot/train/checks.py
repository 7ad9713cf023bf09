"""Checks a training run passes before it builds a model or reads a single clip.

Everything here is cheap (file existence, registry look-ups, function signatures, reading the
caption CSVs), so a misspelt loss, a missing table, absent weights or an occupied output folder
fail in about a second instead of after minutes of caching tower outputs.
"""

from __future__ import annotations

import inspect
import os
import shutil
from pathlib import Path
from typing import Any, Callable

from earshot.errors import ConfigError, DataError
from earshot.train.config import SplitConfig, TrainConfig

# What a folder holds once a run has started in it (a cache folder alone does not count).
RUN_MARKERS = ("checkpoints", "best", "averaged", "summary.json", "logs")


def check_config(cfg: TrainConfig) -> None:
    """Raise ConfigError/DataError/WeightsError for anything wrong that can be seen without
    building the model: registry names and options of the loss and both towers, weights that are
    not downloaded, caption tables and audio files that are not there, ``init_from``."""
    from earshot.losses import create_loss
    from earshot.models.base import AUDIO_ENCODERS, TEXT_ENCODERS, _import_builtin_encoders
    from earshot.loading.resolve import resolve_tower_weights

    create_loss(cfg.loss.name, **cfg.loss.options)  # unknown name or option: ConfigError
    _import_builtin_encoders()
    for kind, tower, registry in (("audio", cfg.model.audio, AUDIO_ENCODERS),
                                  ("text", cfg.model.text, TEXT_ENCODERS)):
        _check_options(f"{kind} encoder", tower.name, registry.get(tower.name), tower.options)
        if tower.weights is not None and cfg.init_from is None:
            ref = resolve_tower_weights(tower.weights, tower.name, kind, tower.weights_format)
            if ref.kind == "registry":
                ref.locate()  # a registry file must be downloaded before the run starts
    if cfg.init_from is not None:
        check_init_from(cfg.init_from)
    splits = [("data.train", cfg.data.train), ("data.val", cfg.data.val)]
    splits += [(f"data.extra_train[{i}]", s) for i, s in enumerate(cfg.data.extra_train)]
    if cfg.data.random_split is not None:
        splits += [(f"data.random_split.tables[{i}]", s) for i, s in enumerate(cfg.data.random_split.tables)]
    for name, split in splits:
        if split is not None:
            check_split(name, split, cfg.data.root)


def check_init_from(source: str) -> None:
    """``init_from`` names what training can start from: anything :func:`earshot.loading.resolve.resolve`
    recognises as one model (an earshot checkpoint folder, a Hugging Face CLAP folder or hub id, a
    registry name holding a whole retriever, downloaded and verified on first use, or a published
    file). An ensemble manifest is several models, not a start. Anything else is a ConfigError."""
    from earshot.errors import WeightsError
    from earshot.loading.resolve import resolve

    try:
        ref = resolve(source)
    except WeightsError as e:
        raise ConfigError(f"init_from: {e}") from None
    if ref.kind == "manifest":
        raise ConfigError(f"init_from: {source} is an ensemble manifest; training starts from one "
                          "model (a checkpoint, a CLAP folder or hub id, a registry name)")


def check_split(name: str, split: SplitConfig, root: str | Path) -> None:
    """The split's table exists and every audio file it names is there (all missing ones are
    listed at once)."""
    from earshot.data.readers import read_table

    table_path = Path(root).expanduser() / split.table
    if not table_path.is_file():
        raise DataError(f"{name}.table: {table_path}: no such file"
                        + (f" (data.root is {root})" if str(root) not in ("", ".") else ""))
    audio_dir = Path(root).expanduser() / split.audio_dir if split.audio_dir else table_path.parent
    if not audio_dir.is_dir():
        raise DataError(f"{name}.audio_dir: {audio_dir}: no such folder")
    from earshot.train.data import split_reader_options

    if split.exclude is not None and not (Path(root).expanduser() / split.exclude).is_file():
        raise DataError(f"{name}.exclude: {Path(root).expanduser() / split.exclude}: no such file")
    table = read_table(table_path, format=split.format, **split_reader_options(split))
    table.check_audio(audio_dir).raise_if_missing(str(table_path))


def launched_rank() -> bool:
    """True in a process that a distributed launcher started for a rank other than the first
    (Lightning's DDP launcher re-runs the command with LOCAL_RANK/NODE_RANK set): that process
    joins the run the first rank already checked and prepared, so it neither refuses the
    folder the first rank started writing nor clears it."""
    return any(int(os.environ.get(v, "0") or 0) != 0 for v in ("LOCAL_RANK", "NODE_RANK", "RANK"))


def check_out_dir(out: str | Path, resume: bool, overwrite: bool) -> None:
    """Refuse to train into a folder that holds a started or finished run unless the user said
    what to do with it: ``resume`` continues it, ``overwrite`` replaces it (see :func:`clear_run`)."""
    out = Path(out).expanduser()
    if launched_rank():
        return
    if out.exists() and not out.is_dir():
        raise ConfigError(f"out_dir: {out} is a file, not a folder")
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite contradict each other; give one")
    last = out / "checkpoints" / "last.ckpt"
    if resume and not last.is_file():
        raise ConfigError(f"--resume: no {last} to resume from")
    found = [m for m in RUN_MARKERS if (out / m).exists()]
    if found and not (resume or overwrite):
        state = "finished" if (out / "averaged").is_dir() else "started"
        raise ConfigError(f"{out} holds a {state} run ({', '.join(found)}); continue it with "
                          f"--resume, replace it with --overwrite, or choose another out_dir")


def clear_run(out: str | Path) -> None:
    """Delete what a run wrote in ``out`` (checkpoints, logs, models); caches stay."""
    out = Path(out).expanduser()
    if launched_rank():
        return
    for m in RUN_MARKERS:
        path = out / m
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _check_options(kind: str, name: str, factory: Callable[..., Any], options: dict[str, Any]) -> None:
    params = inspect.signature(factory).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    allowed = sorted(params)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(f"{kind} {name!r}: unknown option(s) {unknown}; allowed: {allowed}")
