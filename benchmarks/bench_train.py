"""Head training on cached tower outputs: 20 epochs over 19,195 caption pairs (Clotho
development size: 3,839 clips x 5 captions) against a limit of 2 minutes.

This runs earshot's real training entry point, ``earshot.train.run.train``, on the
``cnn14_sbert_ntxent`` preset's model (frozen cnn14 + Sentence-BERT towers, MLP heads; weights
random, as nothing is downloaded here), with the Lightning trainer, checkpointing, top-k averaging
and loggers it always uses. Only the data step is replaced: instead of decoding Clotho and running
the towers (``cached_tower_outputs``), the loader serves random tower outputs of the real sizes
(audio 2048, text 384) through the real ``CaptionInputs`` dataset, exactly as a warm cache would.

The run stops at a wall-time budget and extrapolates (per-epoch time x 20 + fixed costs) when it
would not finish in it; the figure then says so.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any
from unittest import mock

import lightning as L
import torch
from torch.utils.data import DataLoader

from common import RSSSampler, figure, summarize

import earshot.train.run as train_run
from earshot.config import load_yaml
from earshot.train.data import CaptionInputs, collate_inputs

PRESET = Path(__file__).resolve().parents[1] / "configs" / "cnn14_sbert_ntxent.yaml"
CLIPS, CAPTIONS_PER_CLIP = 3839, 5  # 19,195 caption pairs
EPOCHS = 20
LIMIT_S = 120.0


class StepClock(L.Callback):
    """Wall time of each training step and epoch; stops the fit once ``budget_s`` is spent
    (checked after every step, so a slow machine cannot overrun the section's budget)."""

    def __init__(self, budget_s: float):
        self.budget_s = budget_s
        self.step_s: list[float] = []
        self.epoch_s: list[float] = []
        self.fit_start = self.fit_end = 0.0
        self._t0 = self._epoch_t0 = 0.0
        self.stopped_early = False

    def on_fit_start(self, trainer, pl_module) -> None:
        self.fit_start = time.perf_counter()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._epoch_t0 = time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        self.step_s.append(now - self._t0)
        if now - self.fit_start > self.budget_s and not trainer.should_stop:
            trainer.should_stop = True
            self.stopped_early = True

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        # runs before ModelCheckpoint's epoch-end save, so checkpoint writes fall outside
        # epoch time and inside fit time
        self.epoch_s.append(time.perf_counter() - self._epoch_t0)

    def on_fit_end(self, trainer, pl_module) -> None:
        self.fit_end = time.perf_counter()


def preset_config(out_dir: Path, epochs: int, model_override: dict[str, Any] | None = None):
    """The preset's model, loss, optimiser and batch size; weights off (nothing downloaded);
    data pointing nowhere (the loaders are supplied by the benchmark)."""
    data = load_yaml(PRESET)
    model = copy.deepcopy(data["model"])
    for tower in ("audio", "text"):
        model[tower]["weights"] = None
    model.update(model_override or {})
    cfg = {
        "model": model,
        "data": {"train": {"table": "unused.csv"}},
        "loss": data.get("loss", {}),
        "optim": data.get("optim", {}),
        "cache": {"enabled": True},
        "epochs": epochs,
        "batch_size": data.get("batch_size", 32),
        "top_k": data.get("top_k", 5),
        "out_dir": str(out_dir),
    }
    return train_run.load_config(cfg)


def random_inputs(clips: int, per_clip: int, audio_dim: int = 2048, text_dim: int = 384,
                  seed: int = 0) -> CaptionInputs:
    """The training dataset a warm cache gives: tower outputs of the real sizes, post-ReLU-like
    audio (one view per clip) and unit-norm text (MiniLM's), ``per_clip`` captions per clip."""
    g = torch.Generator().manual_seed(seed)
    audio = torch.randn(clips, 1, audio_dim, generator=g).relu()
    text = torch.nn.functional.normalize(torch.randn(clips * per_clip, text_dim, generator=g), dim=-1)
    caption_clip = [c for c in range(clips) for _ in range(per_clip)]
    return CaptionInputs(caption_clip, audio_views=audio, text=text, seed=seed)


VARIANTS = {
    "preset heads": None,  # the preset's linear heads
    "mlp heads": {"audio_head": {"kind": "mlp", "hidden": 2048}, "text_head": {"kind": "mlp", "hidden": 2048}},
}


def run(quick: bool = False, budget_s: float | None = None, clips: int = CLIPS,
        epochs: int = EPOCHS) -> dict[str, Any]:
    """Train the preset and a linear-head variant through ``earshot.train.run.train``, each
    within ``budget_s`` (default 60 s, quick 15 s); figures: time for 20 epochs against the
    2-minute limit (extrapolated past the budget), step time, fixed costs, checkpoint size."""
    budget = budget_s if budget_s is not None else (15.0 if quick else 60.0)
    figures: list[dict[str, Any]] = []
    notes: list[str] = []
    raw: dict[str, Any] = {}
    for label, override in VARIANTS.items():
        r = train_once(label, override, budget, clips, epochs)
        figures += r.pop("figures")
        notes.append(r.pop("note"))
        raw[label] = r
    return {"figures": figures, "notes": notes, "raw": raw}


def train_once(label: str, model_override: dict[str, Any] | None, budget: float, clips: int,
               epochs: int) -> dict[str, Any]:
    """One training run of the preset (with ``model_override``); stops at ``budget`` seconds."""
    import tempfile

    inputs = random_inputs(clips, CAPTIONS_PER_CLIP)
    pairs = len(inputs)

    with tempfile.TemporaryDirectory(prefix="earshot-bench-train-") as tmp:
        cfg = preset_config(Path(tmp) / "run", epochs, model_override)
        gen = torch.Generator().manual_seed(cfg.seed)

        def loaders(cfg_, model, progress):  # what run._loaders returns for a warm cache, no val
            loader = DataLoader(inputs, batch_size=cfg_.batch_size, shuffle=True, generator=gen,
                                collate_fn=collate_inputs, drop_last=pairs > cfg_.batch_size)
            return loader, None, None, None

        clock = StepClock(budget)
        start = time.perf_counter()
        # the data is injected above, so the pre-run checks of tables and audio have nothing to see
        with mock.patch.object(train_run, "_loaders", loaders), \
                mock.patch.object(train_run, "check_config", lambda cfg: None), RSSSampler() as rss:
            train_run.train(cfg, progress=False, callbacks=[clock])
        total = time.perf_counter() - start
        ckpt_mib = sum(p.stat().st_size for p in (Path(tmp) / "run" / "checkpoints").glob("*.ckpt")) / 2**20
        n_ckpt = len(list((Path(tmp) / "run" / "checkpoints").glob("*.ckpt")))

    steps_per_epoch = pairs // cfg.batch_size  # drop_last
    total_steps = steps_per_epoch * epochs
    steps = len(clock.step_s)
    fit = clock.fit_end - clock.fit_start
    fixed = total - fit  # model build, trainer setup, top-k averaging and final saves
    finished = not clock.stopped_early and steps == total_steps
    # every cost inside fit (steps, data loading, logging, checkpoints) scales with steps
    projected = total if finished else fixed + fit / steps * total_steps
    how = (f"all {epochs} epochs run" if finished else
           f"stopped at the {budget:.0f} s budget after {steps} of {total_steps} steps; extrapolated")
    st = summarize(clock.step_s)
    figures = [
        figure(f"{label}: {epochs} epochs x {pairs} pairs / {LIMIT_S:.0f} s limit", projected / LIMIT_S, goal="<= 1",
               n=1, context=f"{projected:.0f} s ({how})"),
        figure(f"{label}: training step (forward, backward, optimiser)", 1000 * st.median, unit="ms", spread=1000 * st.iqr,
               n=st.n, context=f"batch {cfg.batch_size}, {steps_per_epoch} steps per epoch"),
        figure(f"{label}: fit time per step incl. data, logging, checkpoints", 1000 * fit / steps, unit="ms", n=steps),
        figure(f"{label}: fixed costs (build model, trainer, top-k average, save)", fixed, unit="s", n=1),
        figure(f"{label}: checkpoint files on disk at the end", ckpt_mib, unit="MiB", n=n_ckpt,
               context=f"{n_ckpt} .ckpt files"),
        figure(f"{label}: peak RSS growth during training", rss.growth_mib, unit="MiB", n=1),
    ]
    note = (f"{label}: preset {PRESET.name}, heads {cfg.model.audio_head.kind}/{cfg.model.text_head.kind}, "
            f"loss {cfg.loss.name}, batch {cfg.batch_size}, top_k {cfg.top_k}; towers frozen, random "
            f"cached outputs (audio 2048, text 384); {how}")
    return {"figures": figures, "note": note, "epoch_s": clock.epoch_s, "step_s_median": st.median,
            "steps": steps, "total_s": total, "fit_s": fit, "fixed_s": fixed, "projected_s": projected,
            "finished": finished, "pairs": pairs}


if __name__ == "__main__":
    import sys

    r = run(quick="--quick" in sys.argv)
    print("\n".join(r["notes"]))
    for f in r["figures"]:
        print(f"{f['name']:<70} {f['value']:>10.4g} {f['unit']:<4} goal {f['goal'] or '-':<5} met {f['met']} {f['context']}")
