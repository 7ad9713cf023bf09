"""LAION-CLAP options that match the original code where earshot's default differs (issue 18, §4)."""

from __future__ import annotations

import numpy as np
import torch

import clap_tiny
from earshot.models.base import create_audio_encoder
from earshot.models.audio.clap import int16_roundtrip


def _laion_numpy(x: np.ndarray) -> np.ndarray:
    # laion_clap/training/data.py, transcribed: int16_to_float32(float32_to_int16(x))
    q = (np.clip(x, a_min=-1.0, a_max=1.0) * 32767.0).astype("int16")
    return (q / 32767.0).astype("float32")


def test_int16_roundtrip_is_laions_quantisation():
    # by hand: 0.5 * 32767 = 16383.5 -> 16383 (astype truncates toward zero) -> 0.4999847
    x = torch.tensor([0.5, -0.5, 1.5, -2.0, 1e-5, 0.25])
    assert (int16_roundtrip(x) * 32767).round().long().tolist() == [16383, -16383, 32767, -32767, 0, 8191]
    wave = (0.3 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32)
    ours = int16_roundtrip(torch.from_numpy(wave)).numpy()
    theirs = _laion_numpy(wave)
    # IEEE multiply/divide are correctly rounded everywhere; one fp32 ulp (6e-8 below 1) is
    # left for a platform whose float64 -> float32 cast rounds differently
    np.testing.assert_array_equal(np.round(ours * 32767).astype(np.int64), np.round(theirs * 32767).astype(np.int64))
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=6e-8)
    assert np.abs(ours - wave).max() > 1e-5  # it does change the audio (up to 1/32767)


def test_laion_int16_roundtrip_option_quantises_before_the_model():
    torch.manual_seed(0)
    fe = {**clap_tiny.frontend(False)}
    plain = create_audio_encoder("clap_htsat", config=clap_tiny.audio_config(), frontend=fe).eval()
    rounded = create_audio_encoder("clap_htsat", config=clap_tiny.audio_config(),
                                   frontend={**fe, "laion_int16_roundtrip": True}).eval()
    rounded.load_state_dict(plain.state_dict())
    assert rounded.frontend_settings()["laion_int16_roundtrip"] is True
    wave = 0.1 * torch.randn(2, 3 * 16000, generator=torch.Generator().manual_seed(1))  # 2 windows
    with torch.no_grad():
        # the same weights on the same (pre-quantised) input: fp32 rounding only
        torch.testing.assert_close(rounded(wave), plain(int16_roundtrip(wave)), atol=1e-6, rtol=0)
        assert (rounded(wave) - plain(wave)).abs().max() > 1e-7  # the option does something


def test_text_layer_norm_eps_is_decided_per_source(tmp_path):
    from earshot.models.base import create_text_encoder
    from earshot.weights import get_weights

    def eps(name):
        return get_weights(name).retriever.config["text"]["options"]["config"]["layer_norm_eps"]

    # LAION's trainer: roberta-base (1e-5); the hub's transformers files: their config.json (1e-12)
    assert eps("laion_clap_pt_630k_audioset") == eps("laion_clap_pt_music_audioset") == 1e-5
    assert eps("laion_clap_htsat_fused") == eps("laion_clap_general") == 1e-12
    tok = clap_tiny.tiny_tokenizer(tmp_path / "tok")
    torch.manual_seed(0)
    towers = {e: create_text_encoder("clap_roberta", config={**clap_tiny.text_config(len(tok)), "layer_norm_eps": e},
                                     tokenizer=str(tmp_path / "tok")).eval() for e in (1e-5, 1e-12)}
    towers[1e-12].load_state_dict(towers[1e-5].state_dict())
    norms = [m.eps for m in towers[1e-5].modules() if isinstance(m, torch.nn.LayerNorm)]
    assert norms and set(norms) == {1e-5}  # every text LayerNorm reads the config
    with torch.no_grad():
        a, b = towers[1e-5](clap_tiny.CAPTIONS), towers[1e-12](clap_tiny.CAPTIONS)
    assert (a - b).abs().max() > 1e-7  # the choice is visible in the embeddings
