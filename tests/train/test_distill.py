"""The distillation stage: teacher embeddings computed once and cached, the stage trains."""

import csv

import pytest
import torch

from earshot.ensemble import SimilarityCache, load_ensemble, save_manifest
from earshot.errors import ConfigError
from earshot.train import distill as distill_mod
from earshot.train.data import load_split, resolve_split
from earshot.train.run import load_config, train

from .conftest import small_config


def _logged(out_dir, key):
    with open(out_dir / "logs" / "metrics.csv") as f:
        return [float(r[key]) for r in csv.DictReader(f) if r.get(key)]


@pytest.mark.slow
def test_distillation_stage_from_an_ensemble_teacher(tone_corpus, tmp_path, monkeypatch):
    # stage 1: two small models; the teacher is their equal-weight ensemble
    members = []
    for seed in (1, 2):
        cfg = load_config(small_config(tone_corpus, tmp_path / f"m{seed}"), ["epochs=1", f"seed={seed}"])
        members.append(train(cfg, progress=False)["averaged"])
    manifest = save_manifest(tmp_path / "teacher.yaml", members, None, "zmean", 60.0)
    cache_dir = tmp_path / "teacher-cache"

    def stage2(out):
        over = small_config(tone_corpus, out, loss={"name": "distill", "options": {"contrastive_weight": 0.5}},
                            distill={"teacher": str(manifest), "cache_dir": str(cache_dir)},
                            init_from=str(members[0]))
        return load_config(over, ["epochs=1"])

    paths = train(stage2(tmp_path / "s2"), progress=False)
    assert paths["averaged"].is_dir()
    assert _logged(tmp_path / "s2", "train/distill") and _logged(tmp_path / "s2", "train/contrastive")
    stored = sorted(cache_dir.glob("*.npy"))
    assert len(stored) == 2  # clip and caption embeddings of the teacher

    # the cached matrices give the ensemble's mean-rule similarity
    cfg = stage2(tmp_path / "check")
    split = resolve_split(cfg.data.train, cfg.data.root)
    table = load_split(split)
    teacher = load_ensemble(manifest)
    identity = distill_mod.teacher_identity(teacher, manifest)  # what the stage keyed the cache by
    audio, text = distill_mod.teacher_embeddings(teacher, identity, table, split.audio_dir, None,
                                                 SimilarityCache(cache_dir))
    expected = sum(w * (t @ a.T) for w, t, a in zip(teacher.weights, teacher.split(text), teacher.split(audio)))
    torch.testing.assert_close(text @ audio.T, expected, atol=1e-5, rtol=0)

    # a second student encodes nothing: every teacher embedding comes from the cache
    def no_encoding(*args, **kwargs):
        raise AssertionError("teacher re-encoded the training set")

    monkeypatch.setattr("earshot.evaluation.encode_clips", no_encoding)
    train(stage2(tmp_path / "s2b"), progress=False)
    assert sorted(cache_dir.glob("*.npy")) == stored


def test_distill_loss_and_teacher_go_together(tone_corpus, tmp_path):
    with pytest.raises(ConfigError, match="distill"):
        load_config(small_config(tone_corpus, tmp_path, loss={"name": "distill"}))
    with pytest.raises(ConfigError, match="distill"):
        load_config(small_config(tone_corpus, tmp_path, distill={"teacher": "x.yaml"}))
    with pytest.raises(ConfigError, match="teachr"):
        load_config(small_config(tone_corpus, tmp_path, loss={"name": "distill"}, distill={"teachr": "x"}))


def test_epoch_warmup_and_early_cosine_end_as_the_2025_baseline(tone_corpus, tmp_path):
    # 20 epochs of 10 steps: 1 warm-up epoch, cosine over 15 epochs to min_lr, then constant
    from types import SimpleNamespace

    from earshot.models.biencoder import create_model
    from earshot.train.module import RetrievalModule

    cfg = load_config(small_config(tone_corpus, tmp_path), [
        "optim.scheduler=cosine", "optim.lr=2e-5", "optim.min_lr=1e-7", "optim.warmup_epochs=1",
        "optim.decay_epochs=15", "epochs=20"])
    module = RetrievalModule(create_model(cfg.model), cfg, None)
    module._trainer = SimpleNamespace(estimated_stepping_batches=200, max_epochs=20)
    [opt], [sched] = module.configure_optimizers()
    lrs = []
    for _ in range(200):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched["scheduler"].step()
    assert lrs[0] == pytest.approx(2e-5 / 10) and lrs[9] == pytest.approx(2e-5)  # linear warm-up
    assert lrs[10] == pytest.approx(2e-5)  # cosine starts at the peak
    assert lrs[85] == pytest.approx(1e-7 + (2e-5 - 1e-7) * 0.5)  # half-way through 150 decay steps
    assert all(lr == pytest.approx(1e-7) for lr in lrs[160:])  # constant after epoch 16
