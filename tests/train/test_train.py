"""Training runs on generated audio: loss decreases, resume continues at the right step,
the averaged model is the element-wise mean of the kept checkpoints, stages chain."""

import csv
import math

import lightning as L
import pytest
import torch

from earshot.models import checkpoint
from earshot.train.averaging import average_state_dicts, model_state_from_lightning
from earshot.train.module import lr_factor
from earshot.train.run import load_config, train

from .conftest import small_config


def _epoch_losses(out_dir):
    with open(out_dir / "logs" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/loss_epoch")]
    return [float(r["train/loss_epoch"]) for r in rows]


@pytest.mark.slow
def test_end_to_end_training_loss_decreases_and_models_are_written(tone_corpus, tmp_path):
    # the audio tower trains on waveform crops; the frozen text tower's outputs come from the cache
    cfg = load_config(small_config(tone_corpus, tmp_path), ["epochs=4", "model.text.train=none"])
    assert cfg.text_cached and not cfg.audio_cached
    paths = train(cfg, progress=False)
    losses = _epoch_losses(tmp_path)
    assert len(losses) == 4 and losses[-1] < losses[0]
    model = checkpoint.load(paths["averaged"])
    assert model.embed_text(["a low tone"]).shape == (1, 16)


def test_cached_heads_training_and_top_k_average(tone_corpus, tmp_path):
    over = {"audio": {"name": "small_cnn", "options": {"channels": [8, 16], "sample_rate": 16000}, "train": "none"},
            "text": {"name": "bow", "options": {"dim": 32, "buckets": 1024}, "train": "none"}, "embed_dim": 16}
    cfg = load_config(small_config(tone_corpus, tmp_path, model=over, epochs=5, top_k=3), ["cache.audio_views=2"])
    assert cfg.audio_cached and cfg.text_cached
    paths = train(cfg, progress=False)
    losses = _epoch_losses(tmp_path)
    assert losses[-1] < losses[0]
    kept = sorted(p for p in (tmp_path / "checkpoints").glob("epoch*.ckpt"))
    assert len(kept) == 3
    stored = torch.load(kept[0], weights_only=True)["state_dict"]
    assert not any(k.startswith(("model.audio_encoder.", "model.text_encoder.")) for k in stored)
    expected = average_state_dicts([model_state_from_lightning(p) for p in kept])
    averaged = checkpoint.load(paths["averaged"]).state_dict()
    for k, v in expected.items():
        torch.testing.assert_close(averaged[k], v)
    # the heads moved, the frozen towers did not
    first = model_state_from_lightning(kept[0])
    assert not torch.equal(first["audio_head.proj.weight"], averaged["audio_head.proj.weight"]) or len(kept) == 1
    # towers ran once per view: a second run reads every output from the cache
    shards = list((tmp_path / "cache").rglob("shard-*.safetensors"))
    train(load_config(small_config(tone_corpus, tmp_path / "again", model=over, epochs=1,
                                   cache={"dir": str(tmp_path / "cache"), "audio_views": 2})), progress=False)
    assert sorted((tmp_path / "cache").rglob("shard-*.safetensors")) == sorted(shards)


def test_average_state_dicts_is_the_elementwise_mean():
    a = {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(3)}
    b = {"w": torch.tensor([3.0, 6.0]), "n": torch.tensor(5)}
    out = average_state_dicts([a, b])
    assert torch.equal(out["w"], torch.tensor([2.0, 4.0])) and out["n"].item() == 3
    with pytest.raises(ValueError):
        average_state_dicts([a, {"v": torch.zeros(2)}])


class _Kill(L.Callback):
    def __init__(self, at_step):
        self.at_step = at_step

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == self.at_step:
            raise KeyboardInterrupt  # Lightning stops gracefully, as on Ctrl-C


class _FirstStep(L.Callback):
    first = None

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if self.first is None:
            type(self).first = trainer.global_step


@pytest.mark.slow
def test_resume_continues_from_the_saved_step(tone_corpus, tmp_path):
    # 40 captions / batch 8 = 5 steps an epoch; last.ckpt every 3 steps; killed at step 7
    cfg = load_config(small_config(tone_corpus, tmp_path, epochs=3, save_every_n_steps=3))
    with pytest.raises((KeyboardInterrupt, SystemExit)):  # Lightning exits 1 after a Ctrl-C shutdown
        train(cfg, progress=False, callbacks=[_Kill(7)])
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert saved["global_step"] == 6
    train(cfg, resume=True, progress=False, callbacks=[_FirstStep()])
    assert _FirstStep.first == 6
    final = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert final["global_step"] == 15


def test_two_stages_chain_weights(tone_corpus, tmp_path):
    data = small_config(tone_corpus, tmp_path, epochs=1,
                        stages=[{"name": "pre", "optim": {"lr": 1e-3}}, {"name": "fine", "epochs": 1}])
    cfg = load_config(data)
    captured = []

    class _Start(L.Callback):
        def on_train_start(self, trainer, module):
            captured.append({k: v.clone() for k, v in module.model.state_dict().items()})

    train(cfg, progress=False, callbacks=[_Start()])
    pre = checkpoint.load(tmp_path / "pre" / "averaged").state_dict()
    assert len(captured) == 2
    fine_start = captured[1]
    for k in pre:
        torch.testing.assert_close(fine_start[k], pre[k])
    assert (tmp_path / "fine" / "averaged" / "model.safetensors").is_file()


def test_lr_factor_warmup_and_cosine():
    assert [lr_factor(s, 4, 100, False) for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert lr_factor(4, 4, 104, True) == pytest.approx(1.0)
    assert lr_factor(54, 4, 104, True) == pytest.approx(0.5)
    assert lr_factor(104, 4, 104, True, floor=0.1) == pytest.approx(0.1)
    assert lr_factor(29, 4, 104, True) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.25)))


def test_batched_gather_equals_item_by_item():
    from torch.utils.data import DataLoader

    from earshot.train.data import CaptionInputs, collate_inputs

    views, text = torch.randn(10, 3, 4), torch.randn(50, 5)
    ds = CaptionInputs([q // 5 for q in range(50)], audio_views=views, text=text, seed=1)
    ds.set_epoch(2)
    picks = [3, 17, 40, 41]
    gathered, one_by_one = collate_inputs(ds.__getitems__(picks)), collate_inputs([ds[q] for q in picks])
    for x, y in zip(gathered[:3], one_by_one[:3]):
        assert torch.equal(x, y)
    assert gathered[3] is None and one_by_one[3] is None  # cached outputs have no crop length
    audio, txt, clips, lengths = next(iter(DataLoader(ds, batch_size=8, collate_fn=collate_inputs)))
    assert audio.shape == (8, 4) and torch.equal(txt, text[:8]) and clips.tolist() == [0] * 5 + [1] * 3


def test_seeds_train_one_model_each_and_report_mean_and_std(tone_corpus, tmp_path):
    import json

    import numpy as np

    from earshot.train.run import train_seeds

    over = {"audio": {"name": "small_cnn", "options": {"channels": [8, 16], "sample_rate": 16000}, "train": "none"},
            "text": {"name": "bow", "options": {"dim": 32, "buckets": 1024}, "train": "none"}, "embed_dim": 16}
    cfg = load_config(small_config(tone_corpus, tmp_path, model=over, epochs=1, top_k=1))
    summary = train_seeds(cfg, [0, 1], progress=False)
    assert set(summary["seeds"]) == {"0", "1"}
    assert all((tmp_path / f"seed{s}" / "averaged" / "model.safetensors").is_file() for s in (0, 1))
    for key, mean in summary["mean"].items():
        values = np.array([summary["seeds"][s][key] for s in ("0", "1")])
        assert mean == pytest.approx(values.mean()) and summary["std"][key] == pytest.approx(values.std(ddof=1))
    assert json.loads((tmp_path / "seeds.json").read_text()) == summary
    # the heads start from other random weights, so the two models differ
    a, b = (checkpoint.load(tmp_path / f"seed{s}" / "averaged").state_dict() for s in (0, 1))
    assert not torch.equal(a["audio_head.proj.weight"], b["audio_head.proj.weight"])


def test_random_split_draws_disjoint_seeded_clips_from_the_union(tone_corpus, tmp_path):
    from earshot.errors import ConfigError, DataError
    from earshot.train.data import load_splits

    split = {"table": str(tone_corpus["csv"]), "audio_dir": str(tone_corpus["audio_dir"])}
    data = {"random_split": {"tables": [split], "train_clips": 5, "val_clips": 2, "seed": 4}}
    cfg = load_config(small_config(tone_corpus, tmp_path, data=data))
    train_t, _, val_t, _ = load_splits(cfg.data)
    ids = lambda t: [c.clip_id for c in t]  # noqa: E731
    assert len(train_t) == 5 and len(val_t) == 2 and not set(ids(train_t)) & set(ids(val_t))
    assert all(c.audio.is_absolute() and c.audio.is_file() for c in train_t)
    again, _, _, _ = load_splits(cfg.data)
    assert ids(again) == ids(train_t)  # the draw is seeded
    with pytest.raises(ConfigError, match="8"):
        load_splits(load_config(small_config(tone_corpus, tmp_path, data={
            "random_split": {"tables": [split], "train_clips": 7, "val_clips": 2}})).data)
    with pytest.raises(DataError, match="appears twice"):  # the same table twice: clip ids collide
        load_splits(load_config(small_config(tone_corpus, tmp_path, data={
            "random_split": {"tables": [split, split], "train_clips": 1, "val_clips": 1}})).data)


def test_two_processes_filling_one_tower_cache_compute_once(tone_corpus, tmp_path):
    # DDP ranks started together: the second waits for the first, then reads every output
    import threading
    import time

    from earshot.data.readers import read_table
    from earshot.models.biencoder import create_model
    from earshot.train.data import cached_text_outputs

    model = create_model({"audio": {"name": "small_cnn", "options": {"channels": [8], "sample_rate": 16000}},
                          "text": {"name": "bow", "options": {"dim": 8, "buckets": 64}, "train": "none"},
                          "embed_dim": 4})
    calls = []
    forward = model.text_encoder.forward

    def slow(texts):
        calls.append(len(texts))
        time.sleep(0.05)
        return forward(texts)

    model.text_encoder.forward = slow
    table = read_table(tone_corpus["csv"], format="clotho")
    out = [None, None]

    def run(i):
        out[i] = cached_text_outputs(model, table, tmp_path / "towers", progress=False)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(calls) == table.num_captions  # each caption computed once in all
    assert torch.equal(out[0], out[1])
