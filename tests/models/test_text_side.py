"""Text queries open only a model's text side; Sentence-BERT then runs as plain PyTorch BERT.

Parity: the plain BERT pipeline equals the ``sbert`` tower (sentence-transformers) on the same
weights, and a checkpoint's text side embeds exactly like the full checkpoint, alone and in an
ensemble manifest. The audio tower is never built.
"""

import pytest
import torch

from earshot.errors import WeightsError
from earshot.models import checkpoint
from earshot.models.biencoder import create_model
from earshot.loading.retriever import load_text_retriever
from earshot.loading.text_side import load_text_side

TEXTS = ["a dog barks in the distance", "Rain on a tin roof, then THUNDER!", "x", "word " * 300,
         "naïve café [bark] — 42"]


@pytest.fixture(scope="module")
def sbert_model(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model({"audio": {"name": "small_cnn", "options": {"channels": [8, 16], "sample_rate": 16000}},
                          "text": {"name": "sbert", "train": "none"}, "embed_dim": 24,
                          "text_head": {"kind": "mlp", "hidden": 32}})
    # Move MiniLM's weights off the published ones, so the test compares loaded weights.
    with torch.no_grad():
        for p in model.text_encoder.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return model, checkpoint.save(model, tmp_path_factory.mktemp("sbert") / "m")


def test_plain_bert_equals_the_sbert_tower(sbert_model):
    from earshot.models.text.bert import PlainSentenceBERT, plain_sbert_supported
    from earshot.models.text.towers import default_sbert_path

    model, _ = sbert_model
    assert plain_sbert_supported(default_sbert_path())
    plain = PlainSentenceBERT(default_sbert_path())
    plain.load_state_dict(model.text_encoder.state_dict(), strict=True)
    with torch.inference_mode():
        ref = model.text_encoder.eval()(TEXTS)
        got = plain.eval()(TEXTS)
    assert got.shape == ref.shape == (len(TEXTS), 384)
    assert (got - ref).abs().max() < 1e-5


def test_text_side_of_checkpoint_and_ensemble_match_the_full_model(sbert_model, tmp_path):
    from earshot.ensemble import load_ensemble, save_manifest
    from earshot.models.text.bert import PlainSentenceBERT

    model, path = sbert_model
    side = load_text_side(path)
    assert isinstance(side.text_encoder, PlainSentenceBERT)
    full = checkpoint.load(path)
    assert (side.embed_text(TEXTS) - full.embed_text(TEXTS)).abs().max() < 1e-5
    with pytest.raises(WeightsError, match="text queries only"):
        side.embed_audio([torch.zeros(16000).numpy()])

    torch.manual_seed(1)
    other = create_model({"audio": {"name": "small_cnn", "options": {"channels": [8], "sample_rate": 16000}},
                          "text": {"name": "bow", "options": {"dim": 16}}, "embed_dim": 8})
    other_path = checkpoint.save(other, tmp_path / "bow")
    manifest = save_manifest(tmp_path / "ens.json", [path, other_path], [2.0, 1.0], "mean")
    a = load_ensemble(manifest).embed_text(TEXTS)
    b = load_text_retriever(manifest).embed_text(TEXTS)
    assert a.shape == b.shape and (a - b).abs().max() < 1e-5


def test_text_side_refuses_mismatched_text_weights(sbert_model, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    _, path = sbert_model
    bad = tmp_path / "bad"
    shutil.copytree(path, bad)
    state = load_file(str(bad / "model.safetensors"))
    state.pop("text_head.proj.0.weight")
    save_file(state, str(bad / "model.safetensors"))
    with pytest.raises(WeightsError, match="text_head.proj.0.weight"):
        load_text_side(bad)
