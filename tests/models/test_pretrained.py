"""Towers named with registry weights load them through their source's converter, strictly.

The files are generated in the official layouts (PANNs: {"model": state with torchlibrosa
buffers}; AudioCLIP: one state dict with audio.*, visual.* and CLIP text keys) and placed in a
temporary EARSHOT_CACHE, as `earshot weights download` would.
"""

import pytest
import torch

from earshot.audio.frontend import torchlibrosa_buffers
from earshot.errors import WeightsError
from earshot.models.base import create_audio_encoder, create_text_encoder
from earshot.models.biencoder import create_model


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EARSHOT_CACHE", str(tmp_path))
    (tmp_path / "weights").mkdir()
    return tmp_path / "weights"


def test_panns_weights_by_registry_name(cache, pin_weights):
    torch.manual_seed(3)
    source = create_audio_encoder("cnn6")
    torch.save({"model": {**source.state_dict(), **torchlibrosa_buffers()}}, cache / "Cnn6_mAP=0.343.pth")
    pin_weights("panns_cnn6", cache / "Cnn6_mAP=0.343.pth")
    model = create_model({"audio": {"name": "cnn6", "weights": "panns_cnn6", "train": "none"},
                          "text": {"name": "bow"}, "embed_dim": 8})
    for k, v in source.state_dict().items():
        assert torch.equal(model.audio_encoder.state_dict()[k], v), k
    wave = 0.1 * torch.randn(1, 32000)
    torch.testing.assert_close(model.audio_encoder.eval()(wave), source.eval()(wave))


def test_missing_download_and_wrong_tower_are_clear(cache):
    with pytest.raises(WeightsError, match="earshot weights download panns_cnn14"):
        create_model({"audio": {"name": "cnn14", "weights": "panns_cnn14"}, "text": {"name": "bow"}})
    from earshot.errors import ConfigError

    with pytest.raises(ConfigError, match="no audio tower for 'cnn6'"):
        create_model({"audio": {"name": "cnn6", "weights": "panns_cnn14"}, "text": {"name": "bow"}})
    with pytest.raises(WeightsError, match=r"^'no_such_weights': no such model or weights file for the "
                                           r"audio tower 'cnn6'"):
        create_model({"audio": {"name": "cnn6", "weights": "no_such_weights"}, "text": {"name": "bow"}})


def test_tower_weights_go_through_the_one_resolver(cache, tmp_path, monkeypatch):
    """A tower's `weights:` is decided by resolve's rules: the prefixes, a near-miss name with a
    did-you-mean among the files holding that tower, a file's format read from its content."""
    from earshot.errors import ConfigError
    from earshot.loading.resolve import resolve_tower_weights

    with pytest.raises(WeightsError, match="no such model .*audio tower 'cnn6'.*did you mean 'panns_cnn6'"):
        resolve_tower_weights("panns_cnn7", "cnn6", "audio")
    assert resolve_tower_weights("registry:panns_cnn6", "cnn6", "audio").kind == "registry"
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(3)
    source = create_audio_encoder("cnn6")
    (tmp_path / "panns_cnn6").write_bytes(b"")  # a file named like the registry entry: a path wins
    assert resolve_tower_weights("panns_cnn6", "cnn6", "audio", "panns").kind == "file"
    assert resolve_tower_weights("registry:panns_cnn6", "cnn6", "audio").kind == "registry"
    with pytest.raises(WeightsError, match="no such file or folder"):
        resolve_tower_weights("path:panns_cnn7", "cnn6", "audio")
    # A PANNs release file given by path without weights_format: recognised by its content.
    torch.save({"model": {**source.state_dict(), **torchlibrosa_buffers()}}, tmp_path / "mine.pth")
    ref = resolve_tower_weights(tmp_path / "mine.pth", "cnn6", "audio")
    assert (ref.kind, ref.fmt) == ("file", "panns")
    model = create_model({"audio": {"name": "cnn6", "weights": str(tmp_path / "mine.pth"), "train": "none"},
                          "text": {"name": "bow"}, "embed_dim": 8})
    for k, v in source.state_dict().items():
        assert torch.equal(model.audio_encoder.state_dict()[k], v), k  # the same tensors, copied
    torch.save({"weight": torch.zeros(2)}, tmp_path / "junk.pt")
    with pytest.raises(ConfigError, match="needs weights_format .*keys match no known layout"):
        resolve_tower_weights(tmp_path / "junk.pt", "cnn6", "audio")
    hub = resolve_tower_weights("hf-hub:laion/clap-htsat-unfused@abc", "clap_htsat", "audio")
    assert (hub.kind, hub.location, hub.revision, hub.fmt) == ("hf_hub", "laion/clap-htsat-unfused", "abc",
                                                               "clap_hf")


@pytest.mark.slow
def test_audioclip_file_feeds_both_towers(cache, pin_weights):
    torch.manual_seed(4)
    audio = create_audio_encoder("esresnext_fbsp")
    text = create_text_encoder("clip_text")
    sd = {f"audio.{k}": v for k, v in audio.state_dict().items()}
    sd["audio.fbsp.bias"] = torch.empty(0)  # AudioCLIP stores an empty placeholder
    sd.update(text.model.state_dict())
    sd.update({"visual.conv1.weight": torch.zeros(2, 3, 3, 3), "logit_scale": torch.tensor(4.6),
               "logit_scale_ai": torch.tensor(4.6), "logit_scale_at": torch.tensor(4.6)})
    torch.save(sd, cache / "AudioCLIP-Full-Training.pt")
    pin_weights("audioclip_full", cache / "AudioCLIP-Full-Training.pt")
    model = create_model({"audio": {"name": "esresnext_fbsp", "weights": "audioclip_full"},
                          "text": {"name": "clip_text", "weights": "audioclip_full"},
                          "embed_dim": 1024, "audio_head": {"kind": "identity"},
                          "text_head": {"kind": "identity"}})
    for k, v in audio.state_dict().items():
        assert torch.equal(model.audio_encoder.state_dict()[k], v), k
    texts = ["a cat meows"]
    torch.testing.assert_close(model.text_encoder.eval()(texts), text.eval()(texts))


def test_cached_weights_are_verified_before_loading(cache, pin_weights, monkeypatch):
    from earshot.weights import cache as wcache

    path = cache / "Cnn6_mAP=0.343.pth"
    torch.save({"model": {**create_audio_encoder("cnn6").state_dict(), **torchlibrosa_buffers()}}, path)
    pin_weights("panns_cnn6", path)
    config = {"audio": {"name": "cnn6", "weights": "panns_cnn6", "train": "none"}, "text": {"name": "bow"},
              "embed_dim": 8}
    hashed = []
    real = wcache.file_digests
    monkeypatch.setattr(wcache, "file_digests", lambda *a, **k: hashed.append(a[0]) or real(*a, **k))
    create_model(config)
    create_model(config)
    assert len(hashed) == 1  # the digest is computed once, then remembered by size + mtime
    # same size, other bytes (a corrupt download): hashed again and refused
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="digest is not the published one"):
        create_model(config)
    # a truncated file fails on size without hashing
    path.write_bytes(bytes(data[:1000]))
    n = len(hashed)
    with pytest.raises(WeightsError, match="truncated or another file"):
        create_model(config)
    assert len(hashed) == n
