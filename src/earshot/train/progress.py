"""What a training run tells its user: one line per epoch, no third-party chatter, whole logs.

- :class:`EpochLines` prints ``epoch 3/10  loss 2.914  val mAP@10 0.412  4.1 s`` once per
  epoch: the right output when stdout is a file or a pipe (CI logs, ``| tee``), where a live
  progress bar would be written as hundreds of redrawn lines.
- :func:`quiet_third_party` hides, for the duration of a run only, messages that are expected
  and say nothing to an earshot user: Lightning's litlogger advertisement and hardware banner,
  "Found N module(s) in eval mode" (frozen towers are in eval mode on purpose), the LeafSpec
  deprecation raised inside Lightning. It changes logger levels and warning filters inside a
  ``with`` block and restores them afterwards: no global filters at import (STYLE.md 11).
  (transformers' "Loading weights" bars are switched off where towers are opened:
  ``earshot.models.text.towers.no_loading_bars``.)
- :class:`KeepingCSVLogger` keeps the rows of an earlier ``metrics.csv`` when a run resumes
  (Lightning's CSV logger deletes the file when its folder is not empty).
"""

from __future__ import annotations

import contextlib
import csv
import logging
import math
import sys
import time
import warnings
from typing import IO, Iterator

import lightning as L
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

from earshot.train.module import MONITOR

# Warnings raised inside Lightning that describe earshot's intended set-up, not a problem.
_EXPECTED_WARNINGS = (
    r"Found \d+ module\(s\) in eval mode",  # frozen towers stay in eval mode
    r".*LeafSpec.*is deprecated",  # Lightning's own use of a torch API
    r"The number of training batches .* is smaller than the logging interval",  # small corpora
    r"Experiment logs directory .* exists and is not empty",  # KeepingCSVLogger keeps the rows
    r"Checkpoint directory .* exists and is not empty",  # --resume, or --overwrite cleared it
)
# Loggers whose INFO lines are banners and tips (GPU available, litlogger, "fit stopped").
_CHATTY_LOGGERS = ("lightning.pytorch", "lightning.fabric", "lightning_utilities")


@contextlib.contextmanager
def quiet_third_party() -> Iterator[None]:
    """Silence expected third-party messages inside the block; usable as a decorator."""
    saved = {name: logging.getLogger(name).level for name in _CHATTY_LOGGERS}
    try:
        for name in _CHATTY_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
        with warnings.catch_warnings():
            for pattern in _EXPECTED_WARNINGS:
                warnings.filterwarnings("ignore", message=pattern)
            yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


class EpochLines(L.Callback):
    """One plain line per epoch: loss, validation mAP@10 and the epoch's wall time."""

    def __init__(self, stream: IO[str] | None = None, prefix: str = "", metric: str = MONITOR,
                 label: str = "val mAP@10"):
        self.stream = stream
        self.prefix = prefix
        self.metric, self.label = metric, label  # the logged validation figure, and its name on the line
        self._start = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning runs the epoch's validation before this hook, so its mAP@10 is here too.
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        print(self.format(trainer, time.perf_counter() - self._start), file=self.stream or sys.stdout,
              flush=True)

    def format(self, trainer: L.Trainer, seconds: float) -> str:
        """The line for the epoch that just ended."""
        m = trainer.callback_metrics
        loss = _number(m.get("train/loss_epoch"))
        val = _number(m.get(self.metric))
        parts = [f"{self.prefix}epoch {trainer.current_epoch + 1}/{trainer.max_epochs}",
                 f"loss {loss:.4f}" if loss is not None else "loss -",
                 f"{self.label} {val:.4f}" if val is not None else f"{self.label} -",
                 f"{seconds:.1f} s"]
        return "  ".join(parts)


def _number(value) -> float | None:
    if value is None:
        return None
    v = float(value)
    return None if math.isnan(v) else v


class _KeepingWriter(ExperimentWriter):
    """Lightning's CSV writer, except that an existing ``metrics.csv`` is continued, not deleted.

    With ``resume_step`` (the global step of the checkpoint a run resumes from), rows logged at
    that step or later are dropped first: the killed run logged them after its last checkpoint,
    and the resumed run logs those steps again (Lightning logs a resumed run from the
    checkpoint's step on)."""

    def __init__(self, log_dir: str, resume_step: int | None = None):
        self.resume_step = resume_step  # before the base __init__, which checks the folder
        super().__init__(log_dir=log_dir)

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                rows = list(csv.reader(f))
            header = rows[0] if rows else []
            if self.resume_step is not None and "step" in header:
                col = header.index("step")
                kept = [r for r in rows[1:] if not _at_or_after(r, col, self.resume_step)]
                if len(kept) < len(rows) - 1:
                    from earshot.utils import atomic_write

                    with atomic_write(self.metrics_file_path, "w") as f:
                        csv.writer(f, lineterminator="\n").writerows([header, *kept])
            # Known columns: new keys then rewrite the header, and old rows keep their values.
            self.metrics_keys = list(header)


def _at_or_after(row: list[str], col: int, step: int) -> bool:
    try:
        return int(float(row[col])) >= step
    except (IndexError, ValueError):
        return False  # a row without a step is kept


class KeepingCSVLogger(CSVLogger):
    """CSVLogger whose ``metrics.csv`` keeps the rows of earlier runs in the same folder
    (``--resume`` continues the table instead of starting it over)."""

    def __init__(self, *args, resume_step: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._resume_step = resume_step  # rows at this step or later are dropped (see _KeepingWriter)

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:  # type: ignore[override]
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _KeepingWriter(log_dir=self.log_dir, resume_step=self._resume_step)
        return self._experiment


def checkpoint_step(path) -> int | None:
    """The global step a Lightning checkpoint was saved at (None if unreadable)."""
    import torch

    try:
        return int(torch.load(str(path), map_location="cpu", weights_only=True)["global_step"])
    except Exception:  # noqa: BLE001 - a missing step only means no rows are dropped
        return None
