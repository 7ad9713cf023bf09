"""One resolver decides what a model argument means (earshot.loading.resolve): each input kind
in its own layout, the prefixes that break ties, a near-miss registry name, identities."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from earshot.errors import ConfigError, WeightsError
from earshot.loading.resolve import ModelRef, resolve

MODEL = {"audio": {"name": "small_cnn", "options": {"channels": [4, 8], "sample_rate": 16000}},
         "text": {"name": "bow", "options": {"dim": 16}}, "embed_dim": 8}


def _checkpoint(path, seed=0):
    from earshot.models import checkpoint
    from earshot.models.biencoder import create_model

    torch.manual_seed(seed)
    return checkpoint.save(create_model(MODEL), path)


def _hf_folder(path):
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model_type": "clap"}))
    (path / "model.safetensors").write_bytes(b"not read by resolve")
    return path


def test_every_path_kind(tmp_path):
    ck = _checkpoint(tmp_path / "ck")
    assert resolve(ck) == ModelRef("checkpoint", str(ck))
    folder = _hf_folder(tmp_path / "clap")
    assert resolve(str(folder)).kind == "hf_clap_folder"
    manifest = tmp_path / "ens.yaml"
    manifest.write_text(f"members:\n  - path: {ck}\nrule: mean\n")
    assert resolve(manifest).kind == "manifest"
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsError, match="neither an earshot checkpoint"):
        resolve(tmp_path / "empty")
    junk = tmp_path / "junk.pt"
    torch.save({"weight": torch.zeros(2)}, junk)
    with pytest.raises(WeightsError, match="keys match no known layout"):
        resolve(junk)


def test_names_hub_ids_and_did_you_mean():
    ref = resolve("laion_clap_general")
    assert (ref.kind, ref.location, ref.entry.name) == ("registry", "laion_clap_general", "laion_clap_general")
    assert resolve("laion/clap-htsat-unfused") == ModelRef("hf_hub", "laion/clap-htsat-unfused")
    assert resolve("hf-hub:laion/clap-htsat-unfused@abc123") == ModelRef("hf_hub", "laion/clap-htsat-unfused",
                                                                        revision="abc123")
    with pytest.raises(WeightsError, match="no such model .*did you mean 'laion_clap_general'"):
        resolve("laion_clap_generl")
    with pytest.raises(WeightsError, match=r"^'nothing_like_it': no such model \(expected"):
        resolve("nothing_like_it")  # the same wording, no suggestion when nothing is close
    with pytest.raises(WeightsError, match=r"not a whole model \(it holds the weights of the audio "
                                           r"tower 'cnn14'\); name it as a tower's `weights:`"):
        resolve("panns_cnn14")  # a tower's file
    # A tokenizer feeds no tower: it is named for what it is and who needs it, never
    # "the no tower(s)".
    with pytest.raises(WeightsError) as tok:
        resolve("laion_clap_tokenizer")
    assert "no tower" not in str(tok.value) and "weights:" not in str(tok.value)
    assert "not a whole model but a json file that models need" in str(tok.value)
    assert "laion_clap_general" in str(tok.value)  # one of the models downloaded with it
    with pytest.raises(WeightsError, match="no such model in `earshot weights list`"):
        resolve("registry:laion_clap_generl")


def test_prefixes_break_ties(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _checkpoint(tmp_path / "laion_clap_general")  # a folder named like a registry entry
    assert resolve("laion_clap_general").kind == "checkpoint"  # an existing path wins
    assert resolve("registry:laion_clap_general").kind == "registry"
    _hf_folder(tmp_path / "laion" / "clap-htsat-unfused")  # a folder named like a hub id
    assert resolve("laion/clap-htsat-unfused").kind == "hf_clap_folder"
    assert resolve("hf-hub:laion/clap-htsat-unfused").kind == "hf_hub"
    assert resolve("path:laion_clap_general").kind == "checkpoint"
    with pytest.raises(WeightsError, match="no such file or folder"):
        resolve("path:laion_clap_generl")


def test_identity_stable_across_copies_and_distinct_per_model(tmp_path):
    a = _checkpoint(tmp_path / "a", seed=0)
    copy = shutil.copytree(a, tmp_path / "copy")
    b = _checkpoint(tmp_path / "b", seed=1)
    ida, idb = resolve(a).identity(), resolve(b).identity()
    assert ida == resolve(copy).identity() and ida.startswith("sha256:") and len(ida) == 7 + 16
    assert ida != idb
    manifest = tmp_path / "ens.json"
    manifest.write_text(json.dumps({"members": [{"path": "a"}, {"path": "b"}], "rule": "mean"}))
    m1 = resolve(manifest).identity()
    assert m1 not in (ida, idb)
    _checkpoint(tmp_path / "b", seed=2)  # a member retrained in place: the manifest's bytes are
    assert resolve(manifest).identity() != m1  # unchanged, its identity is not
    # A registry name with a published digest is identified by it (no download needed).
    entry = resolve("laion_clap_general").entry
    assert resolve("laion_clap_general").identity() == "sha256:" + entry.checksum.digest[:16]


def test_members_and_text_route_go_through_the_resolver(tmp_path):
    from earshot.loading.retriever import load_retriever, load_text_retriever

    ck = _checkpoint(tmp_path / "ck")
    manifest = tmp_path / "ens.json"
    manifest.write_text(json.dumps({"members": [{"path": "ck"}, {"path": "laion_clap_generl"}]}))
    with pytest.raises(ConfigError, match="member 'laion_clap_generl'.*did you mean 'laion_clap_general'"):
        load_retriever(manifest)
    manifest.write_text(json.dumps({"members": [{"path": "ck"}], "rule": "mean"}))
    texts = ["a dog barks", "rain"]
    full = load_retriever(ck).embed_text(texts)
    text_only = load_text_retriever(manifest)
    np.testing.assert_allclose(text_only.embed_text(texts).numpy(), full.numpy(), atol=1e-6)  # fp32 reorderings
    with pytest.raises(WeightsError, match="text queries only"):
        text_only.members[0].embed_audio([np.zeros(16000, np.float32)])


def test_one_numpy_adapter_for_users_and_the_index(tmp_path):
    from earshot.index.encoder import open_encoder
    from earshot.loading.retriever import Model, Retriever, load_model

    ck = _checkpoint(tmp_path / "ck")
    user, index = load_model(ck), open_encoder(ck, precision="fp32")
    assert type(user) is type(index) is Model and isinstance(user, Retriever)
    assert user.identity == index.model_id == resolve(ck).identity()
    wave = [np.sin(np.linspace(0, 200, 16000)).astype(np.float32)]
    a = user.embed_audio(wave, 16000)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-6)
    # The index's adapter passes rows through; this model normalises, so they agree.
    np.testing.assert_allclose(index.embed_audio(wave, batch_size=1), a, atol=1e-5)
