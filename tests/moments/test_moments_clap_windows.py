"""MS-CLAP 2023 1 s-window features equal lighthouse's ``CLAPAudio`` (issue 19 §2).

lighthouse feeds each whole 1 s window *unpadded* to msclap's HTSAT, whose front end stretches
the ~138-frame log-mel to its 1024 frames; earshot's MS-CLAP 2023 tower repeats a short clip to
7 s first (clip retrieval, as msclap's ``CLAPWrapper``). ``WindowConfig(pad="none")`` /
``FeatureSpec(pad="none")`` give lighthouse's treatment, ``resampler="sinc"`` its torchaudio
resampling of files not at 44.1 kHz. The golden (``golden/msclap_windows.json``,
4 windows x 64) was made outside the repo by lighthouse's own code on the same weights and signal;
how is in ``msclap_ref.py``.
"""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from msclap_ref import earshot_tower, signal

from earshot.errors import ConfigError, DataError
from earshot.moments.features import WindowConfig, window_features

DOC = json.loads((Path(__file__).parent / "golden" / "msclap_windows.json").read_text())
GOLDEN = np.asarray(DOC["features"], np.float32)
# Measured: max |earshot - lighthouse| = 2.4e-7 on values up to 2.2 (float32 rounding: torchlibrosa's
# conv STFT vs torch.stft, librosa's vs transformers' mel filters, then ~10 layers). 1e-5 leaves
# 40x that for other CPUs/BLAS; padding the windows to 7 s instead moves them by 4.5e-2.
TOL = 1e-5


class _Retriever:  # what window_features needs of a bi-encoder for output="tower"
    sample_rate = 44100

    def __init__(self, tower):
        self.audio_encoder = tower


@pytest.fixture(scope="module")
def retriever():
    return _Retriever(earshot_tower())


def test_unpadded_windows_equal_lighthouse_clapaudio(retriever):
    audio = signal()  # 4.5 s: lighthouse keeps 4 whole windows, drops the 0.5 s tail
    feats = window_features(retriever, audio, WindowConfig(window_s=1.0, hop_s=1.0, output="tower", pad="none"))
    assert feats.shape == GOLDEN.shape == (4, 64)
    np.testing.assert_allclose(feats, GOLDEN, atol=TOL, rtol=0)
    # the clip-retrieval default (repeat to 7 s) is not lighthouse's treatment
    padded = window_features(retriever, audio, WindowConfig(window_s=1.0, hop_s=1.0, output="tower"))
    assert np.abs(padded - GOLDEN).max() > 100 * TOL


def test_tower_padding_override_is_per_call(retriever):
    tower = retriever.audio_encoder
    x = torch.as_tensor(signal()[:44100])[None]  # the first window
    with torch.no_grad():
        none = tower(x, padding="none")
        default = tower(x)  # the front end's own padding ("repeat" to 7 s) is untouched
        configured = dataclasses.replace(tower.frontend_cfg, padding="none")
        tower.frontend_cfg, saved = configured, tower.frontend_cfg
        try:
            from_config = tower(x)
        finally:
            tower.frontend_cfg = saved
    np.testing.assert_allclose(none.numpy(), GOLDEN[:1], atol=TOL, rtol=0)
    torch.testing.assert_close(from_config, none, atol=1e-6, rtol=0)  # same computation
    assert (default - none).abs().max() > 100 * TOL
    with pytest.raises(ConfigError, match="padding"):
        tower(x, padding="zeros")
    with pytest.raises(DataError, match="longer than 512 samples"):
        tower(x[:, :300], padding="none")


def test_pad_none_needs_a_tower_with_a_padding_option():
    with pytest.raises(ConfigError, match="output='tower'"):
        WindowConfig(pad="none").check()

    class Plain(torch.nn.Module):
        def forward(self, x):
            return x[:, :4]

    with pytest.raises(ConfigError, match="no padding option"):
        window_features(_Retriever(Plain()), np.zeros(44100, np.float32),
                        WindowConfig(output="tower", pad="none"))


def test_48khz_file_resampled_as_lighthouse(retriever, tmp_path):
    """torchaudio's Resample inside CLAPAudio, streamed here (blocks of 1 s to exercise it)."""
    import soundfile as sf

    path = tmp_path / "sig48.wav"
    sf.write(str(path), signal(sample_rate=48000), 48000, subtype="FLOAT")
    want = np.asarray(DOC["features_48k"], np.float32)
    cfg = WindowConfig(output="tower", pad="none", resampler="sinc", block_s=1.0)
    # measured 3.6e-7 (the same float32 rounding as above; the resampled samples agree to 1e-6)
    np.testing.assert_allclose(window_features(retriever, path, cfg, cache=False), want, atol=TOL, rtol=0)
    soxr = window_features(retriever, path, dataclasses.replace(cfg, resampler="soxr"), cache=False)
    assert np.abs(soxr - want).max() > 100 * TOL  # measured 6.4e-3: another band-limiting filter


@pytest.mark.parametrize("block", [64, 7, 1])
def test_sinc_resampler_equals_torchaudio(block):
    """Kernel and output of torchaudio's Resample (golden ``sinc``), whatever the block size."""
    from earshot.audio.sinc import SincResampleStream, sinc_kernel

    gold = DOC["sinc"]
    kernel, width = sinc_kernel(3, 2)
    assert width == gold["width_3_2"] == 10  # ceil(6 * 3 / (2 * 0.99))
    # both float32 from the same float64 formula: equal to a float32 rounding step (<= 1 here)
    np.testing.assert_allclose(kernel.numpy(), np.asarray(gold["kernel_3_2"]), atol=1e-7, rtol=0)
    x = (torch.linspace(-0.5, 0.5, 64) + 0.3 * torch.sin(torch.arange(64) * 0.7)).numpy()
    for (o, n), key in (((3, 2), "out_3_2"), ((2, 3), "out_2_3")):
        stream = SincResampleStream(o, n)
        got = np.concatenate([stream.resample_chunk(x[i:i + block], last=i + block >= len(x))
                              for i in range(0, len(x), block)])
        assert len(got) == -(-n * len(x) // o)  # ceil(n * L / o) samples
        # float32 sums of ~20 products of values <= 1, grouped differently by the block size
        np.testing.assert_allclose(got, np.asarray(gold[key]), atol=1e-6, rtol=0)
