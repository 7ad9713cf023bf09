"""Issue 21 §5: `metrics.csv` after a mid-epoch kill and `--resume` repeated the step rows the
killed run logged after its last checkpoint. Lightning logs a resumed run from the
checkpoint's global step on, so rows at that step or later are dropped before appending.

Reproduced with Lightning itself on a two-weight model: a run killed at step 13 with its last
checkpoint at step 12, then resumed, through the same logger `earshot train` uses.
"""

from __future__ import annotations

import csv

import pytest

L = pytest.importorskip("lightning")


class Killed(Exception):
    """Stands for kill -9 mid-epoch (Lightning turns KeyboardInterrupt into a graceful stop)."""


def _fit(tmp_path, kill_at: int | None, resume: bool):
    import torch
    from lightning.pytorch.callbacks import ModelCheckpoint
    from torch.utils.data import DataLoader, TensorDataset

    from earshot.train.progress import KeepingCSVLogger, checkpoint_step

    class Tiny(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(2, 1)

        def training_step(self, batch, i):
            loss = self.lin(batch[0]).pow(2).mean()
            self.log("train/loss", loss)
            if kill_at is not None and self.global_step == kill_at:
                raise Killed(f"step {self.global_step}")
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), 0.1)

    torch.manual_seed(0)
    data = DataLoader(TensorDataset(torch.randn(40, 2)), batch_size=4)
    last = tmp_path / "ck" / "last.ckpt"
    logger = KeepingCSVLogger(tmp_path, name="logs", version="",
                              resume_step=checkpoint_step(last) if resume else None)
    trainer = L.Trainer(max_epochs=2, logger=logger, log_every_n_steps=1, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=True,
                        callbacks=[ModelCheckpoint(dirpath=tmp_path / "ck", save_last=True, every_n_train_steps=4)])
    try:
        trainer.fit(Tiny(), data, ckpt_path=str(last) if resume else None)
    except Killed:
        pass
    return last


def _steps(tmp_path) -> list[int]:
    with open(tmp_path / "logs" / "metrics.csv", newline="") as f:
        return [int(r["step"]) for r in csv.DictReader(f) if r.get("train/loss")]


def test_rows_past_the_resumed_checkpoint_are_not_repeated(tmp_path):
    from earshot.train.progress import checkpoint_step

    last = _fit(tmp_path, kill_at=13, resume=False)
    assert checkpoint_step(last) == 12 and _steps(tmp_path)[-1] == 12  # step 12 logged after the checkpoint
    _fit(tmp_path, kill_at=None, resume=True)
    steps = _steps(tmp_path)
    assert steps == list(range(20)), steps  # before: 12 appeared twice
