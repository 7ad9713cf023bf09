"""Inference-only speed paths (issue 15): BatchNorm folded into PANNs convolutions with fused
ReLU and pre-packed weights, bf16 autocast by default on CPUs with native bf16, and their
guarantees: same embeddings as the unfused model, training and checkpoints untouched."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from earshot.errors import ConfigError
from earshot.models import inference
from earshot.models.base import create_audio_encoder
from earshot.models.biencoder import create_model
from earshot.models.audio.panns import ConvBlock, FusedConvBlock, fold_batchnorm, fuse_for_inference

SR = 32000


def _with_trained_bn(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-trivial BN statistics and affines, so folding them is really exercised."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            n = m.num_features
            m.running_mean.copy_(0.2 * torch.randn(n, generator=g))
            m.running_var.copy_(0.5 + torch.rand(n, generator=g))
            m.weight.data.copy_(0.5 + torch.rand(n, generator=g))
            m.bias.data.copy_(0.1 * torch.randn(n, generator=g))
    return model.eval()


def test_fold_batchnorm_equals_conv_then_bn():
    conv = torch.nn.Conv2d(3, 5, 3, padding=1, bias=False)
    bn = _with_trained_bn(torch.nn.BatchNorm2d(5))
    x = torch.randn(2, 3, 7, 6)
    with torch.no_grad():
        torch.testing.assert_close(fold_batchnorm(conv, bn)(x), bn(conv(x)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["cnn14", "cnn6"])
def test_fused_encoder_matches_unfused_and_leaves_the_original_alone(name):
    torch.manual_seed(0)
    model = _with_trained_bn(create_audio_encoder(name))
    before = copy.deepcopy(model.state_dict())
    fused = fuse_for_inference(model)
    assert any(isinstance(m, FusedConvBlock) for m in fused.modules())
    assert not any(isinstance(m, FusedConvBlock) for m in model.modules())  # a copy by default
    x = 0.1 * torch.randn(2, SR)  # 1 s clips
    with torch.inference_mode():
        want, got = model(x), fused(x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5 * want.abs().max().item())
    # the original still trains and its checkpoint keys are untouched
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    model.train()
    model(x).sum().backward()
    assert model.conv_block1.bn1.weight.grad is not None


def test_fused_block_refuses_training_mode():
    block = FusedConvBlock(_with_trained_bn(ConvBlock(1, 4)))
    block.train()
    with pytest.raises(RuntimeError, match="inference"):
        block(torch.randn(1, 1, 8, 8))


def test_fused_bf16_autocast_is_close_to_fp32():
    torch.manual_seed(0)
    model = _with_trained_bn(create_audio_encoder("cnn14"))
    fused = fuse_for_inference(model)
    x = 0.1 * torch.randn(2, SR)
    with torch.inference_mode():
        ref = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = fused(x)
    cos = torch.nn.functional.cosine_similarity(ref, low.float(), dim=-1)
    assert cos.min().item() >= 0.999


def test_resolve_precision(monkeypatch):
    monkeypatch.setattr(inference, "native_bf16_cpu", lambda: True)
    assert inference.resolve_precision("auto") == "bf16"
    monkeypatch.setattr(inference, "native_bf16_cpu", lambda: False)
    assert inference.resolve_precision("auto") == "fp32"
    assert inference.resolve_precision("bf16") == "bf16" and inference.resolve_precision("fp32") == "fp32"
    assert inference.resolve_precision("auto", "mps") == "fp32"
    with pytest.raises(ConfigError, match="precision 'fp16'"):
        inference.resolve_precision("fp16")


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_prepare_for_inference_keeps_the_embeddings(precision):
    cfg = {"audio": {"name": "cnn6"}, "text": {"name": "bow", "options": {"dim": 32}}, "embed_dim": 16}
    torch.manual_seed(0)
    model = create_model(cfg)
    _with_trained_bn(model.audio_encoder)
    waves = [0.1 * np.random.default_rng(i).standard_normal(SR).astype(np.float32) for i in range(3)]
    want = model.embed_audio(waves, batch_size=2)
    fast = inference.prepare_for_inference(copy.deepcopy(model), precision)
    assert fast.audio_encoder.inference_precision == precision
    got = fast.embed_audio(waves, batch_size=2)
    assert got.dtype == torch.float32
    if precision == "fp32":
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    else:
        assert torch.nn.functional.cosine_similarity(got, want, dim=-1).min().item() >= 0.999
    assert inference.prepare_for_inference(fast, "fp32") is fast  # a second call changes nothing
    assert fast.audio_encoder.inference_precision == precision


def test_index_precision_option_reaches_the_encoder(tmp_path, monkeypatch):
    """``earshot index --precision fp32`` indexes with an fp32 tower; an unknown precision is a
    clear error before any work."""
    import soundfile as sf
    from typer.testing import CliRunner

    from earshot.app import cli
    from earshot.index import encoder as index_encoder
    from earshot.models import checkpoint

    torch.manual_seed(0)
    model = create_model({"audio": {"name": "small_cnn", "options": {"channels": [8, 16], "sample_rate": 16000}},
                          "text": {"name": "bow", "options": {"dim": 32}}, "embed_dim": 16})
    checkpoint.save(model, tmp_path / "model")
    (tmp_path / "s").mkdir()
    sf.write(tmp_path / "s" / "a.wav", (0.1 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32), 16000)
    seen = []
    real = index_encoder.open_encoder

    def spy(path, precision="auto"):
        enc = real(path, precision)
        seen.append(enc.retriever.audio_encoder.inference_precision)
        return enc

    monkeypatch.setattr(index_encoder, "open_encoder", spy)
    monkeypatch.setattr("earshot.index.open_encoder", spy)
    cli._register()
    runner = CliRunner()
    res = runner.invoke(cli.app, ["index", str(tmp_path / "s"), "--model", str(tmp_path / "model"),
                                  "--out", str(tmp_path / "ix"), "--workers", "0", "--precision", "fp32"])
    assert res.exit_code == 0, res.output
    assert seen == ["fp32"]
    res = runner.invoke(cli.app, ["index", str(tmp_path / "s"), "--model", str(tmp_path / "model"),
                                  "--out", str(tmp_path / "ix2"), "--precision", "fp16"])
    assert res.exit_code != 0 and "fp16" in str(res.exception or res.output)


def _tiny_clap():
    """(a bi-encoder with a tiny HTSAT tower, seeded; three 2 s noise clips at its rate)."""
    import sys
    from pathlib import Path as P

    sys.path.insert(0, str(P(__file__).parent))
    import clap_tiny

    cfg = {"audio": {"name": "clap_htsat", "options": {"config": clap_tiny.audio_config(),
                                                             "frontend": clap_tiny.frontend()}},
           "text": {"name": "bow", "options": {"dim": 32}}, "embed_dim": 8}
    torch.manual_seed(0)
    model = create_model(cfg).eval()
    sr = clap_tiny.TINY_FRONTEND["sample_rate"]
    return model, [0.1 * np.random.default_rng(i).standard_normal(2 * sr).astype(np.float32) for i in range(3)]


def test_int8_dynamic_quantisation_of_a_clap_tower_keeps_cosine_099(tmp_path):
    """``--precision int8``: the linears of a tiny HTSAT tower become dynamic int8; the embeddings
    stay within cosine 0.99 of fp32 (the documented bound; int8 rounding of weights and
    activations through a few layers; measured > 0.9999 here), and a second call changes nothing."""
    model, waves = _tiny_clap()
    want = model.embed_audio(waves, batch_size=3)
    fast = inference.prepare_for_inference(copy.deepcopy(model), "int8")
    assert fast.audio_encoder.inference_precision == "int8"
    quantized = [m for m in fast.audio_encoder.modules() if type(m).__name__ == "Linear" and "quantized" in type(m).__module__]
    assert quantized and not any(type(m) is torch.nn.Linear for m in fast.audio_encoder.modules())
    got = fast.embed_audio(waves, batch_size=3)
    assert got.dtype == torch.float32
    assert not torch.allclose(got, want, atol=1e-6)  # really quantised
    assert torch.nn.functional.cosine_similarity(got, want, dim=-1).min().item() >= 0.99
    with pytest.raises(ConfigError, match="CPU only"):
        inference.resolve_precision("int8", "cuda")


def test_bf16_weights_keep_the_front_end_fp32_and_cosine_0999_on_a_tiny_clap():
    """``--precision bf16-weights``: the HTSAT tower's weights are bf16 (not autocast), its log-mel
    front end stays float32, outputs are float32 within cosine 0.999 of fp32 (the issue's bound:
    bf16 keeps 8 significant bits, ~0.4 % per rounding, and the errors of a few layers mostly
    average out; measured 0.99998 on the full laion_clap_general tower); a tower without a
    separable front end is refused."""
    model, waves = _tiny_clap()
    want = model.embed_audio(waves, batch_size=3)
    fast = inference.prepare_for_inference(copy.deepcopy(model), "bf16-weights")
    tower = fast.audio_encoder
    assert tower.inference_precision == "bf16-weights"
    assert {p.dtype for p in tower.model.parameters()} == {torch.bfloat16}
    assert {b.dtype for b in tower.logmel.buffers() if b.is_floating_point()} <= {torch.float32}
    got = fast.embed_audio(waves, batch_size=3)
    assert got.dtype == torch.float32
    assert not torch.allclose(got, want, atol=1e-6)  # really computed in bf16
    assert torch.nn.functional.cosine_similarity(got, want, dim=-1).min().item() >= 0.999
    small = create_model({"audio": {"name": "small_cnn", "options": {"channels": [4, 8], "sample_rate": 16000}},
                          "text": {"name": "bow", "options": {"dim": 16}}, "embed_dim": 8})
    with pytest.raises(ConfigError, match="no separable front end"):
        inference.prepare_for_inference(small, "bf16-weights")
