"""One epoch of each pretrained-CLAP fine-tuning preset, started by name from a file written in its
publisher's layout (tiny shapes, synthetic corpus): `init_from: laion_clap_pt_630k_audioset`
opens LAION's .pt as LAION's trainer saves it (issue 18, §3), `init_from: msclap_2022` MS-CLAP's
{"model": ...} file. The registry entries' architectures are swapped for tiny ones and their
digests pinned to the generated files (``pin_weights``); nothing is downloaded."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import clap_tiny
from earshot.config import load_yaml
from earshot.data.synth import generate_corpus

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("clap_presets")
    generate_corpus(root / "clotho", clips=10, seed=5, sample_rate=16000, min_duration=1.0, max_duration=2.5)
    return root


def _install(name: str, path: Path, pin_weights, monkeypatch, config: dict | None = None) -> None:
    from earshot.weights import WEIGHTS, get_weights, weights_dir

    target = weights_dir() / get_weights(name).file_name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, target)
    pin_weights(name, target)
    if config is not None:  # the same entry, tiny shapes
        entry = get_weights(name)
        monkeypatch.setitem(WEIGHTS._items, name, replace(entry, retriever=replace(entry.retriever, config=config)))


def _common(corpus: Path, out: Path) -> list[str]:
    return [f"data.root={corpus}", "epochs=1", "batch_size=8", "data.num_workers=0", "precision=32-true",
            "optim.warmup_steps=1", f"out_dir={out}", f"cache.dir={out / 'cache'}"]


@pytest.mark.slow
def test_laion_clap_preset_starts_from_laions_pt_file(corpus, tmp_path, pin_weights, monkeypatch):
    from test_clap import _hf_folder, _to_laion

    from earshot.models import checkpoint
    from earshot.models.audio.clap import ClapFrontendConfig
    from earshot.train.checks import check_config
    from earshot.train.run import load_config, train
    from earshot.weights.clap import TOKENIZER

    folder, ref, _, tok = _hf_folder(tmp_path / "hf", fusion=False)
    fe = clap_tiny.frontend(False)
    laion = _to_laion({k: v.clone() for k, v in ref.state_dict().items()}, ClapFrontendConfig(**fe))
    # as LAION's trainer saves it: epoch, name, state_dict, optimizer state
    torch.save({"epoch": 45, "name": "630k-audioset", "state_dict": laion,
                "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4}]}}, tmp_path / "laion.pt")
    text = {**clap_tiny.text_config(len(tok)), "layer_norm_eps": 1e-5}
    audio = {"config": clap_tiny.audio_config(False), "frontend": fe}
    tiny = {"audio": {"name": "clap_htsat", "options": audio},
            "text": {"name": "clap_roberta", "options": {"config": text, "tokenizer": TOKENIZER}},
            "embed_dim": 8, "audio_head": {"kind": "identity"}, "text_head": {"kind": "identity"}}
    _install("laion_clap_pt_630k_audioset", tmp_path / "laion.pt", pin_weights, monkeypatch, tiny)
    _install(TOKENIZER, folder / "tokenizer.json", pin_weights, monkeypatch)

    import json

    over = _common(corpus, tmp_path / "run") + [
        f"model.audio.options={json.dumps(audio)}", f"model.text.options={json.dumps(tiny['text']['options'])}",
        "model.embed_dim=8", "data.clip_seconds=2.0"]
    cfg = load_config(load_yaml(CONFIGS / "laion_clap_finetune_clotho.yaml"), over)
    assert cfg.init_from == "laion_clap_pt_630k_audioset"
    check_config(cfg)  # refused before: "is not a checkpoint directory"
    paths = train(cfg, progress=False)
    model = checkpoint.load(paths["averaged"])
    # started from LAION's learnt scale (exp 2.5), one epoch at lr 1e-5 barely moves it
    assert model.logit_scale().item() == pytest.approx(float(torch.tensor(2.5).exp()), rel=1e-2)
    start = ref.state_dict()["text_model.encoder.layer.0.attention.self.query.weight"]
    got = model.state_dict()["text_encoder.model.text_model.encoder.layer.0.attention.self.query.weight"]
    assert (got - start).abs().max() < 1e-2  # fine-tuned from the file's weights, not a fresh init


@pytest.mark.slow
def test_msclap2022_preset_starts_from_msclaps_file(corpus, tmp_path, pin_weights, monkeypatch):
    import json

    from earshot.audio.frontend import FrontendConfig, torchlibrosa_buffers
    from earshot.config import to_dict
    from earshot.models import checkpoint
    from earshot.models.biencoder import create_model
    from earshot.train.checks import check_config
    from earshot.train.run import load_config, train

    fe = FrontendConfig(sample_rate=16000, n_fft=512, win_length=512, hop_length=160, n_mels=64,
                        fmin=50.0, fmax=8000.0)
    audio = {"frontend": to_dict(fe), "clip_s": 1.0, "window_hop_s": 0.5}
    text = {"config": {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "intermediate_size": 32, "max_position_embeddings": 128}}
    tiny = {"audio": {"name": "msclap_cnn14", "options": audio}, "text": {"name": "msclap_bert", "options": text},
            "embed_dim": 8, "audio_head": {"kind": "residual", "dropout": 0.5},
            "text_head": {"kind": "residual", "dropout": 0.5}}
    torch.manual_seed(0)
    src = create_model(tiny)
    sd = {}  # earshot keys -> MS-CLAP's (microsoft/CLAP msclap/models/clap.py names)
    for k, v in src.state_dict().items():
        for ours, theirs in (("audio_encoder.", "audio_encoder.base."), ("audio_head.proj.", "audio_encoder.projection."),
                             ("text_encoder.hf.", "caption_encoder.base."), ("text_head.proj.", "caption_encoder.projection.")):
            if k.startswith(ours):
                sd[theirs + k[len(ours):]] = v
                break
    sd.update({"audio_encoder.base." + k: v for k, v in torchlibrosa_buffers(fe).items()})
    sd["caption_encoder.base.embeddings.position_ids"] = torch.arange(128)[None]
    sd["logit_scale"] = torch.tensor(3.0)
    torch.save({"model": sd, "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4}]}, "epoch": 40},
               tmp_path / "msclap.pth")
    _install("msclap_2022", tmp_path / "msclap.pth", pin_weights, monkeypatch, tiny)

    over = _common(corpus, tmp_path / "run") + [  # CNN14 keeps its 80M parameters: few steps, one kept
        f"model.audio.options={json.dumps(audio)}", f"model.text.options={json.dumps(text)}",
        "model.embed_dim=8", "data.clip_seconds=1.0", "batch_size=16", "top_k=1"]
    cfg = load_config(load_yaml(CONFIGS / "msclap2022_finetune_clotho.yaml"), over)
    assert cfg.init_from == "msclap_2022"
    check_config(cfg)
    model = checkpoint.load(train(cfg, progress=False)["averaged"])
    assert model.logit_scale().item() == pytest.approx(float(torch.tensor(3.0).exp()), rel=1e-2)
    key = "text_encoder.hf.encoder.layer.0.attention.self.query.weight"
    assert (model.state_dict()[key] - src.state_dict()[key]).abs().max() < 1e-2
