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
    # the gathered batch goes through torch's current collective (Lightning's sync_grads gather
    # warned "all_gather is deprecated" on every 2-process run)
    assert "is deprecated" not in proc.stdout + proc.stderr, proc.stderr[-3000:]

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


# Two gloo ranks, each with half of a batch of 8, through a projection, gather_rows and the
# InfoNCE loss, parameter gradients averaged over ranks as DDP does, against one process with the whole batch. The rows are the same numbers in
# both; what differs is float32 summation order (each rank's 4-row sum of parameter-gradient
# terms, then DDP's mean of two sums, vs one 8-row sum), ~1e-7 relative (float32 epsilon) on
# gradients of order 0.1-1. 1e-5 absolute is ~100x that; a gather without gradients (the rows
# of the other rank treated as constants) is off by 1.09 here (measured), a missing sum over
# ranks by a factor of 2.
_GATHER_SCRIPT = r'''
import json, os, sys
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from earshot.losses import create_loss
from earshot.train.collectives import gather_rows


def data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(8, 6, generator=g), torch.randn(8, 5, generator=g), torch.tensor([0, 1, 2, 2, 3, 4, 5, 6])


def model():
    torch.manual_seed(1)
    return torch.nn.Linear(6, 4), torch.nn.Linear(5, 4), torch.nn.Parameter(torch.tensor(2.5))


def grads(pa, pt, scale):
    return [p.grad.tolist() for p in (*pa.parameters(), *pt.parameters(), scale)]


def loss_of(a, t, ids, scale):
    return create_loss("infonce")(a, t, ids, temperature=1.0 / scale).total


def rank(r, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[2])
    dist.init_process_group("gloo", rank=r, world_size=2)
    x, y, ids = data()
    pa, pt, scale = model()
    mine = slice(4 * r, 4 * r + 4)
    loss = loss_of(gather_rows(pa(x[mine])), gather_rows(pt(y[mine])), ids, scale)
    loss.backward()
    for p in (*pa.parameters(), *pt.parameters(), scale):  # what DDP's reducer does: sum / world
        dist.all_reduce(p.grad)
        p.grad /= 2
    if r == 0:
        with open(out, "w") as f:
            json.dump({"loss": loss.item(), "grads": grads(pa, pt, scale)}, f)
    # both ranks done with every collective before either tears gloo down: without it, on a
    # loaded machine a rank could exit while the other's functional-collective work was still
    # being released, and the C++ runtime aborted ("terminate called without an active exception")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    x, y, ids = data()
    pa, pt, scale = model()
    loss = loss_of(pa(x), pt(y), ids, scale)
    loss.backward()
    mp.spawn(rank, args=(sys.argv[1],), nprocs=2)
    with open(sys.argv[1]) as f:
        two = json.load(f)
    print(json.dumps({"one": {"loss": loss.item(), "grads": grads(pa, pt, scale)}, "two": two}))
'''


def test_gathered_rows_give_the_one_process_gradients_without_deprecated_collectives(tmp_path):
    import socket

    import numpy as np

    script = tmp_path / "gather.py"
    script.write_text(_GATHER_SCRIPT)
    with socket.socket() as s:  # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**_env(tmp_path), "PYTHONWARNINGS": "always"}  # every warning printed, none deduplicated
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "rank0.json"), str(port)],
                          env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "is deprecated" not in proc.stderr, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    one, two = got["one"], got["two"]
    assert two["loss"] == pytest.approx(one["loss"], abs=1e-6)
    for g1, g2 in zip(one["grads"], two["grads"]):
        g1, g2 = np.asarray(g1), np.asarray(g2)
        assert np.abs(g1).max() > 1e-3  # a real gradient, not zeros on both sides
        assert np.abs(g1 - g2).max() <= 1e-5
