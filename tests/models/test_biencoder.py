"""Bi-encoder wiring, freezing policies, batching, checkpoints and the frozen-tower cache.

Uses the small registered encoders (small_cnn, bow), so it runs in seconds.
"""

import json

import numpy as np
import pytest
import torch

from earshot.config import from_dict
from earshot.errors import ConfigError, WeightsError
from earshot.models import checkpoint
from earshot.models.biencoder import BiEncoderConfig, create_model
from earshot.data.tower_cache import TowerCache, tower_fingerprint

# The same weights reached by another route (a converter, a saved file, a tower's `weights:`):
# one machine gives the same bits, but a BLAS may block a product differently with buffer
# alignment, so outputs are compared to 1e-6 (fp32 rounding of these tiny towers' ~1e-7 x depth);
# a wrong, missing or transposed weight moves them by 1e-2 or more.
SAME_WEIGHTS = dict(atol=1e-6, rtol=0)

SR = 16000


def _cfg(**over):
    data = {
        "audio": {"name": "small_cnn", "options": {"channels": [8, 16], "sample_rate": SR}},
        "text": {"name": "bow", "options": {"dim": 32, "buckets": 512}},
        "embed_dim": 24,
    }
    for k, v in over.items():
        data[k] = v
    return from_dict(BiEncoderConfig, data)


def _waves(n=3, seconds=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(n, int(SR * seconds), generator=g)


def test_shapes_normalisation_and_logit_scale():
    torch.manual_seed(0)
    model = create_model(_cfg(temperature=0.05))
    a, t, scale = model(_waves(), ["a dog barks", "rain", "a high beep repeats"])
    assert a.shape == t.shape == (3, 24)
    torch.testing.assert_close(a.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(t.norm(dim=-1), torch.ones(3))
    assert scale.item() == pytest.approx(20.0, rel=1e-5)
    raw = model.encode_text(["rain"], normalize=False)
    assert raw.norm().item() != pytest.approx(1.0, abs=1e-3)


def test_logit_scale_is_clamped():
    model = create_model(_cfg(temperature=0.001, max_logit_scale=50.0))
    assert model.logit_scale().item() == pytest.approx(50.0)


def _grads(model):
    a, t, scale = model(_waves(2), ["one", "two"])
    (a @ t.T * scale).sum().backward()
    return {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


def test_heads_only_policy_trains_exactly_the_heads():
    model = create_model(_cfg(audio={"name": "small_cnn", "options": {"channels": [8, 16], "sample_rate": SR}, "train": "none"},
                              text={"name": "bow", "options": {"dim": 32, "buckets": 512}, "train": "none"}))
    model.train()
    got = _grads(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n in dict(model.named_parameters()) if n.startswith(("audio_head", "text_head", "log_logit"))}
    assert got == trainable
    # the frozen towers stay in eval mode while the model trains
    assert model.training and not model.audio_encoder.training and not model.text_encoder.training


def test_last_n_blocks_policy():
    cfg = _cfg(audio={"name": "small_cnn", "options": {"channels": [8, 16], "sample_rate": SR}, "train": "last_n", "train_last_n": 1})
    model = create_model(cfg)
    got = _grads(model)
    audio_trained = {n for n in got if n.startswith("audio_encoder.")}
    assert audio_trained and all(n.startswith("audio_encoder.blocks_.1.") for n in audio_trained)
    with pytest.raises(ConfigError, match="train_last_n"):
        create_model(_cfg(audio={"name": "small_cnn", "options": {"channels": [8, 16], "sample_rate": SR}, "train": "last_n", "train_last_n": 9}))


def test_unknown_encoder_and_option_are_errors():
    with pytest.raises(ConfigError, match="unknown audio encoder 'cnn99'"):
        create_model(_cfg(audio={"name": "cnn99"}))
    with pytest.raises(ConfigError, match="unknown option"):
        create_model(_cfg(text={"name": "bow", "options": {"dims": 3}}))


def test_embed_audio_batched_equals_one_by_one_and_handles_lengths():
    torch.manual_seed(1)
    model = create_model(_cfg())
    waves = [w.numpy() for w in _waves(3)] + [np.asarray(_waves(1, seconds=0.5, seed=3)[0])]
    batched = model.embed_audio(waves, batch_size=2)
    single = torch.cat([model.embed_audio([w]) for w in waves])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-5)
    assert not torch.is_inference(model.encode_audio(_waves(1)))  # encode keeps autograd
    assert model.embed_text(["x", "y", "z"], batch_size=2).shape == (3, 24)


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(2)
    model = create_model(_cfg(audio_head={"kind": "mlp", "hidden": 12, "dropout": 0.2})).eval()
    with torch.no_grad():
        model.audio_head.proj[0].weight.mul_(3.0)  # weights that differ from a fresh init
    checkpoint.save(model, tmp_path / "ckpt")
    doc = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert doc["frontend"]["sample_rate"] == SR and doc["earshot_version"]
    restored = checkpoint.load(tmp_path / "ckpt")
    w, texts = _waves(2), ["a dog", "a cat"]
    torch.testing.assert_close(restored.embed_audio(w), model.embed_audio(w), **SAME_WEIGHTS)
    torch.testing.assert_close(restored.embed_text(texts), model.embed_text(texts), **SAME_WEIGHTS)


def test_checkpoint_that_does_not_match_its_config_fails(tmp_path):
    model = create_model(_cfg())
    checkpoint.save(model, tmp_path / "c")
    doc = json.loads((tmp_path / "c" / "config.json").read_text())
    doc["config"]["embed_dim"] = 16
    (tmp_path / "c" / "config.json").write_text(json.dumps(doc))
    with pytest.raises(WeightsError, match="does not match its config"):
        checkpoint.load(tmp_path / "c")
    with pytest.raises(WeightsError, match="not an earshot checkpoint"):
        checkpoint.load(tmp_path)


def test_tower_cache_computes_once_and_resumes(tmp_path):
    calls = []

    def compute(keys):
        calls.append(list(keys))
        if len(calls) == 2 and keys[0] == "k2":
            raise KeyboardInterrupt  # killed during the second batch
        return torch.tensor([[float(k[1:]), 1.0] for k in keys])

    cache = TowerCache(tmp_path, "f" * 64)
    keys = [f"k{i}" for i in range(5)]
    with pytest.raises(KeyboardInterrupt):
        cache.get_or_compute(keys, compute, batch_size=2, progress=False)
    calls.clear()
    out = cache.get_or_compute(keys, compute, batch_size=2, progress=False)
    assert calls == [["k2", "k3"], ["k4"]]  # k0, k1 came from disk
    torch.testing.assert_close(out[:, 0], torch.arange(5.0))
    calls.clear()
    again = TowerCache(tmp_path, "f" * 64).get_or_compute(keys[::-1], compute, progress=False)
    assert calls == [] and torch.equal(again, out.flip(0))


def test_fingerprint_changes_with_weights_and_description():
    model = create_model(_cfg())
    fp = tower_fingerprint(model.text_encoder, {"name": "bow"})
    assert fp == tower_fingerprint(model.text_encoder, {"name": "bow"})
    assert fp != tower_fingerprint(model.text_encoder, {"name": "bow", "x": 1})
    with torch.no_grad():
        model.text_encoder.embedding.weight[0, 0] += 1e-3
    assert fp != tower_fingerprint(model.text_encoder, {"name": "bow"})


def test_embed_text_batches_by_length_and_keeps_the_callers_order():
    torch.manual_seed(5)
    model = create_model(_cfg())
    texts = ["a much longer caption with many words in it", "rain", "a dog barks", "x y"]
    together = model.embed_text(texts, batch_size=2)
    alone = torch.cat([model.embed_text([t]) for t in texts])
    torch.testing.assert_close(together, alone, atol=1e-6, rtol=1e-6)
