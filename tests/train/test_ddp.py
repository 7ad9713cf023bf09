"""DDP on CPU (gloo) equals one process: the same global batches, the same per-step loss, the
same validation metrics, and `earshot evaluate` of the final model agrees with them."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import earshot
from earshot.train import data as train_data
from earshot.train.run import load_config, train

from .conftest import small_config

# Heads-only training (both towers frozen and cached): small_cnn has BatchNorm, whose batch
# statistics would differ between two half batches and one whole batch, so a trained CNN could
# not be compared step for step. No dropout, no gradient clipping (clipping is per-parameter-set
# and the same in both, but leaving it out keeps the comparison about the gather alone).
_HEADS = {"audio": {"name": "small_cnn", "options": {"channels": [8, 16], "sample_rate": 16000}, "train": "none"},
          "text": {"name": "bow", "options": {"dim": 32, "buckets": 1024}, "train": "none"}, "embed_dim": 16}

# The one-process and two-process runs see bit-identical inputs and the same global batches; what
# differs is float32 rounding: DDP averages two half-batch gradient sums where one process sums once,
# and each rank projects its half of the batch. Those differences are ~1e-7 relative per step (float32
# epsilon 1.2e-7) and Adam carries them forward; 10 steps measured <= 2.4e-7 on losses ~2. 1e-5 is
# 40x that and far below a real difference (a rank's local batch of 4 instead of the global 8
# changes the InfoNCE loss by ~0.5).
TOL = 1e-5


def _step_losses(run: Path) -> list[float]:
    with open(run / "logs" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/loss_step")]
    return [float(r["train/loss_step"]) for r in sorted(rows, key=lambda r: int(r["step"]))]


def _val_rows(run: Path) -> list[dict[str, float]]:
    with open(run / "logs" / "metrics.csv") as f:
        return [{k: float(v) for k, v in r.items() if k.startswith("val/") and v}
                for r in csv.DictReader(f) if r.get("val/t2a/mAP@10")]


def _cli() -> list[str]:
    """The earshot command in this interpreter's environment (Lightning re-runs it per rank)."""
    script = Path(sys.executable).parent / "earshot"
    return [str(script)] if script.is_file() else [sys.executable, "-c", "from earshot.app.cli import main; main()"]


def _env(tmp_path: Path) -> dict[str, str]:
    src = str(Path(earshot.__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1", EARSHOT_CACHE=str(tmp_path / "earshot-cache"))
    for var in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "NODE_RANK"):
        env.pop(var, None)
    return env


@pytest.mark.slow
def test_two_process_ddp_equals_one_process_and_evaluate(tone_corpus, tmp_path):
    cfg = small_config(tone_corpus, tmp_path / "one", model=_HEADS, epochs=2, top_k=1,
                       log_every_n_steps=1, accelerator="cpu")
    cfg["optim"]["grad_clip"] = None
    cfg["cache"]["dir"] = str(tmp_path / "towers")
    one = load_config(cfg)
    train(one, progress=False)

    cfg["out_dir"] = str(tmp_path / "ddp")
    (tmp_path / "ddp.yaml").write_text(yaml.safe_dump(cfg))
    proc = subprocess.run(_cli() + ["train", str(tmp_path / "ddp.yaml"), "--set", "devices=2", "--no-progress"],
                          env=_env(tmp_path), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = tmp_path / "ddp"
    assert (ddp / "averaged" / "model.safetensors").is_file() and (ddp / "summary.json").is_file()
    assert proc.stdout.count("averaged:") == 1  # one rank reports

    # 40 captions / global batch 8 = 5 steps an epoch, 2 epochs; every step's loss agrees
    single, double = _step_losses(tmp_path / "one"), _step_losses(ddp)
    assert len(single) == len(double) == 10
    assert max(abs(a - b) for a, b in zip(single, double)) <= TOL
    val_one, val_ddp = _val_rows(tmp_path / "one"), _val_rows(ddp)
    assert len(val_ddp) == 2  # every epoch validated every clip under DDP
    for a, b in zip(val_one, val_ddp):
        assert a.keys() == b.keys() and all(abs(a[k] - b[k]) <= 1e-6 for k in a)

    # top_k=1: the averaged model is the best epoch's weights; evaluate reproduces its val metrics
    # (validation runs in fp32; evaluate's default is bf16 on CPUs with native bf16)
    best = max(val_ddp, key=lambda r: r["val/t2a/mAP@10"])
    ev = subprocess.run(_cli() + ["evaluate", str(ddp / "averaged"), "--data", str(tone_corpus["csv"]),
                                  "--audio-dir", str(tone_corpus["audio_dir"]), "--seconds", "1.5", "--json",
                                  "--precision", "fp32"],
                        env=_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert ev.returncode == 0, ev.stderr[-3000:]
    metrics = json.loads(ev.stdout)
    for key, value in best.items():
        assert metrics[key.removeprefix("val/")] == pytest.approx(value, abs=1e-6), key


@pytest.mark.parametrize("n,batch,world", [(40, 8, 2), (43, 8, 2), (7, 8, 2), (50, 12, 3)])
def test_rank_batches_concatenate_to_the_one_process_batches(monkeypatch, n, batch, world):
    drop_last = n > batch

    def batches(rank, w):
        monkeypatch.setattr(train_data, "_dist_rank_world", lambda: (rank, w))
        sampler = train_data.GlobalBatchSampler(n, batch, seed=3, drop_last=drop_last)
        sampler.set_epoch(1)
        return list(sampler), len(sampler)

    one, n_one = batches(0, 1)
    ranks = [batches(r, world) for r in range(world)]
    assert all(n_r == len(b) == len(ranks[0][0]) for b, n_r in ranks)  # same number of steps
    for step, whole in enumerate(one):
        joined = [i for b, _ in ranks for i in b[step]]
        assert joined == whole[:len(whole) - len(whole) % world]  # trimmed to equal shares
        assert len({len(b[step]) for b, _ in ranks}) == 1
    # another epoch, another order
    monkeypatch.setattr(train_data, "_dist_rank_world", lambda: (0, 1))
    s = train_data.GlobalBatchSampler(n, batch, seed=3, drop_last=drop_last)
    assert list(s) != one or n < 3


@pytest.mark.parametrize("n,world", [(10, 2), (9, 4), (2, 3), (0, 2)])
def test_rank_shards_cover_every_item_once_in_order(monkeypatch, n, world):
    shards = []
    for rank in range(world):
        monkeypatch.setattr(train_data, "_dist_rank_world", lambda rank=rank: (rank, world))
        shards.append(list(train_data.ShardSampler(n)))
    assert [i for s in shards for i in s] == list(range(n))
    per = -(-n // world)
    assert all(len(s) == per for s in shards if s and s[-1] < n - 1)  # full shards then the rest
