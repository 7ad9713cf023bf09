"""The registered text towers: parity with sentence-transformers, pooling by hand, gradients, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from earshot.errors import ConfigError, DataError, WeightsError
from earshot.models.base import create_text_encoder, list_text_encoders
from earshot.models.text.towers import default_sbert_path

# The same weights reached by another route (a converter, a saved file, a tower's `weights:`):
# one machine gives the same bits, but a BLAS may block a product differently with buffer
# alignment, so outputs are compared to 1e-6 (fp32 rounding of these tiny towers' ~1e-7 x depth);
# a wrong, missing or transposed weight moves them by 1e-2 or more.
SAME_WEIGHTS = dict(atol=1e-6, rtol=0)

TEXTS = [
    "A dog barks twice in the distance.",
    "rain",
    "Footsteps on gravel, then a car door slams and an engine starts up loudly.",
]


@pytest.fixture(scope="module")
def sbert():
    return create_text_encoder("sbert")


@pytest.fixture(scope="module")
def minilm_tokenizer() -> str:
    return str(default_sbert_path())


def _tiny_hf_config(model_type: str) -> dict:
    # Vocabulary of the MiniLM (BERT uncased) tokenizer; pad id 0 for both model types.
    return {"model_type": model_type, "vocab_size": 30522, "hidden_size": 32, "num_hidden_layers": 2,
            "num_attention_heads": 2, "intermediate_size": 64, "pad_token_id": 0}


def test_registered_names() -> None:
    assert {"sbert", "clip_text", "hf_transformer"} <= set(list_text_encoders())


# ---- sbert -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_sbert_matches_sentence_transformers_encode(sbert) -> None:
    # The reference is the library's own inference path (``encode``: no_grad, its own batching
    # and device handling) on the same loaded pipeline.
    expected = sbert.st.encode(TEXTS, convert_to_tensor=True)
    sbert.eval()
    with torch.no_grad():
        batched = sbert(TEXTS)
        single = torch.cat([sbert([t]) for t in TEXTS])
    assert batched.shape == (3, 384) and batched.dtype == torch.float32
    torch.testing.assert_close(batched, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(single, expected, atol=1e-5, rtol=0)
    # MiniLM's pipeline ends with Normalize: unit vectors, and the encoder says so.
    assert sbert.output_normalized
    torch.testing.assert_close(batched.norm(dim=1), torch.ones(3), atol=1e-5, rtol=0)


@pytest.mark.slow
def test_sbert_is_differentiable_and_has_six_blocks(sbert) -> None:
    blocks = sbert.blocks()
    assert len(blocks) == 6 and sbert.embed_dim == 384
    assert all(p.requires_grad for p in sbert.parameters())  # freezing is the bi-encoder's call
    sbert.zero_grad()
    sbert.train()
    sbert(TEXTS[:2]).sum().backward()
    sbert.eval()
    first_layer = next(blocks[0].parameters())
    last_layer = next(blocks[-1].parameters())
    assert first_layer.grad is not None and first_layer.grad.abs().sum() > 0
    assert last_layer.grad is not None and last_layer.grad.abs().sum() > 0
    sbert.zero_grad()


def test_sbert_missing_model_is_a_weights_error(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="not available locally"):
        create_text_encoder("sbert", model=str(tmp_path / "no-such-model"))


@pytest.mark.slow
def test_bad_text_input(sbert) -> None:
    with pytest.raises(DataError):
        sbert("a single string is not a list")
    with pytest.raises(DataError):
        sbert([])


# ---- clip_text ---------------------------------------------------------------------------------

_TINY_CLIP = {"embed_dim": 16, "width": 32, "layers": 2, "heads": 2}


def test_clip_text_shapes_gradients_and_padding_invariance() -> None:
    torch.manual_seed(0)
    enc = create_text_encoder("clip_text", preset="vit_b32", config=_TINY_CLIP).eval()
    assert enc.embed_dim == 16 and len(enc.blocks()) == 2
    out = enc(TEXTS)
    assert out.shape == (3, 16) and out.dtype == torch.float32 and torch.isfinite(out).all()
    # Batching with longer texts (more columns) must not change a short text's feature.
    with torch.no_grad():
        alone = enc(["rain"])
        full = enc.model(enc.tokenizer(["rain"]))  # all 77 columns, no trimming
    torch.testing.assert_close(alone, out[1:2].detach(), atol=1e-5, rtol=0)
    torch.testing.assert_close(full, alone, atol=1e-5, rtol=0)
    out.sum().backward()
    for name, p in enc.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_clip_text_native_weights_round_trip(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    torch.manual_seed(1)
    a = create_text_encoder("clip_text", config=_TINY_CLIP).eval()
    path = tmp_path / "clip_text.safetensors"
    save_file({k: v.contiguous() for k, v in a.model.state_dict().items()}, str(path))
    b = create_text_encoder("clip_text", config=_TINY_CLIP, weights=str(path), weights_format="native")
    with torch.no_grad():
        torch.testing.assert_close(b.eval()(TEXTS), a(TEXTS), **SAME_WEIGHTS)
    with pytest.raises(WeightsError, match="clip_text.safetensors"):
        create_text_encoder("clip_text", config={**_TINY_CLIP, "layers": 3},
                            weights=str(path), weights_format="native")


def test_clip_text_audioclip_weights_file(tmp_path: Path) -> None:
    torch.manual_seed(2)
    a = create_text_encoder("clip_text", config=_TINY_CLIP).eval()
    full = {**a.model.state_dict(), "audio.fc.weight": torch.randn(2, 2), "visual.proj": torch.randn(2),
            "logit_scale": torch.tensor(1.0), "logit_scale_ai": torch.tensor(1.0),
            "logit_scale_at": torch.tensor(1.0)}
    torch.save(full, tmp_path / "AudioCLIP-Full-Training.pt")
    path = tmp_path / "AudioCLIP-Full-Training.pt"
    b = create_text_encoder("clip_text", config=_TINY_CLIP, weights=str(path), weights_format="audioclip")
    with torch.no_grad():
        torch.testing.assert_close(b.eval()(TEXTS), a(TEXTS), **SAME_WEIGHTS)


def test_clip_text_option_errors() -> None:
    with pytest.raises(ConfigError, match="widht"):
        create_text_encoder("clip_text", config={"widht": 32})
    with pytest.raises(ConfigError, match="preset"):
        create_text_encoder("clip_text", preset="vit_z99")
    with pytest.raises(ConfigError, match="weights_format"):
        create_text_encoder("clip_text", config=_TINY_CLIP, weights="x.pt")
    with pytest.raises(ConfigError, match="vocab_size"):
        create_text_encoder("clip_text", config={**_TINY_CLIP, "vocab_size": 1000})
    with pytest.raises(ConfigError, match="unknown option"):
        create_text_encoder("clip_text", pretrained=True)


# ---- hf_transformer ----------------------------------------------------------------------------


@pytest.mark.parametrize("model_type", ["bert", "roberta"])
def test_hf_cls_pooling_is_first_hidden_state(model_type: str, minilm_tokenizer: str) -> None:
    torch.manual_seed(0)
    enc = create_text_encoder("hf_transformer", config=_tiny_hf_config(model_type),
                              tokenizer=minilm_tokenizer, pooling="cls").eval()
    assert enc.embed_dim == 32 and len(enc.blocks()) == 2
    batch = enc.tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = enc.hf(**batch).last_hidden_state
        out = enc(TEXTS)
    torch.testing.assert_close(out, hidden[:, 0], atol=1e-6, rtol=0)


def test_hf_mean_pooling_respects_the_mask(minilm_tokenizer: str) -> None:
    torch.manual_seed(0)
    enc = create_text_encoder("hf_transformer", config=_tiny_hf_config("bert"),
                              tokenizer=minilm_tokenizer, pooling="mean").eval()
    with torch.no_grad():
        batched = enc(TEXTS)
        # By hand: run "rain" alone (no padding: [CLS] rain [SEP]) and average its 3 rows.
        ids = enc.tokenizer(["rain"], return_tensors="pt")
        assert ids["input_ids"].shape == (1, 3)
        hidden = enc.hf(**ids).last_hidden_state[0]  # (3, H)
        by_hand = (hidden[0] + hidden[1] + hidden[2]) / 3
        alone = enc(["rain"])
        # A wrong (unmasked) mean over the padded batch would differ from the per-text mean.
        padded = enc.tokenizer(TEXTS, padding=True, return_tensors="pt")
        unmasked = enc.hf(**padded).last_hidden_state[1].mean(dim=0)
    torch.testing.assert_close(alone[0], by_hand, atol=1e-6, rtol=0)
    torch.testing.assert_close(batched[1], by_hand, atol=1e-5, rtol=0)  # padding changes nothing
    assert (unmasked - by_hand).abs().max() > 1e-3


def test_hf_gradients_flow(minilm_tokenizer: str) -> None:
    torch.manual_seed(0)
    enc = create_text_encoder("hf_transformer", config=_tiny_hf_config("roberta"),
                              tokenizer=minilm_tokenizer, pooling="mean")
    enc(TEXTS).pow(2).sum().backward()
    for block in enc.blocks():
        for name, p in block.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_hf_option_errors(minilm_tokenizer: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="exactly one"):
        create_text_encoder("hf_transformer")
    with pytest.raises(ConfigError, match="tokenizer"):
        create_text_encoder("hf_transformer", config=_tiny_hf_config("bert"))
    with pytest.raises(ConfigError, match="pooling"):
        create_text_encoder("hf_transformer", config=_tiny_hf_config("bert"),
                            tokenizer=minilm_tokenizer, pooling="max")
    with pytest.raises(ConfigError, match="model_type"):
        create_text_encoder("hf_transformer", config={"hidden_size": 32}, tokenizer=minilm_tokenizer)
    with pytest.raises(ConfigError, match="vocab_size"):
        create_text_encoder("hf_transformer", config={**_tiny_hf_config("bert"), "vocab_size": 100},
                            tokenizer=minilm_tokenizer)
    with pytest.raises(WeightsError, match="no-such-model"):
        create_text_encoder("hf_transformer", model=str(tmp_path / "no-such-model"))


def test_hf_dcase2025_baseline_text_options(minilm_tokenizer: str) -> None:
    # The 2025 baseline: lower-case + punctuation removed, first token, 32 tokens, dropout 0.2,
    # no pooler layer.
    torch.manual_seed(0)
    enc = create_text_encoder("hf_transformer", config=_tiny_hf_config("roberta"), tokenizer=minilm_tokenizer,
                              pooling="cls", max_length=32, preprocess="lower_strip_punct", dropout=0.2,
                              pooler=False).eval()
    assert enc.hf.config.hidden_dropout_prob == 0.2 and enc.hf.config.attention_probs_dropout_prob == 0.2
    assert enc.hf.pooler is None and not any("pooler" in k for k in enc.hf.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(enc(["A Dog, barks!", "Rain; (heavy)."]), enc(["a dog barks", "rain heavy"]))
        long = " ".join(["word"] * 100)
        batch = enc.tokenizer([long], truncation=True, max_length=enc.max_length, return_tensors="pt")
        assert batch["input_ids"].shape[1] == 32
        hidden = enc.hf(**batch).last_hidden_state
        torch.testing.assert_close(enc([long]), hidden[:, 0])  # first token of the 32 kept
    plain = create_text_encoder("hf_transformer", config=_tiny_hf_config("roberta"), tokenizer=minilm_tokenizer)
    assert plain.hf.pooler is not None and plain.preprocess == "none"
    with pytest.raises(ConfigError, match="preprocess"):
        create_text_encoder("hf_transformer", config=_tiny_hf_config("roberta"), tokenizer=minilm_tokenizer,
                            preprocess="lower")
