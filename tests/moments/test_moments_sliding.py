"""Window features (streamed = whole, cached), the sliding-window baseline, find_moments."""

import numpy as np
import pytest
import torch

from earshot.audio.io import load_audio, save_audio
from earshot.moments.features import WindowConfig, window_count, window_features
from earshot.moments.predict import find_moments
from earshot.moments.sliding import SlidingConfig, moments_from_curve, temporal_nms

SR = 8000


class ToneDetector(torch.nn.Module):
    """A fake retriever: audio -> (energy near 1 kHz, 0.05), text "tone" -> (1, 0). Cosine is
    ~1 on windows holding the tone and ~0 on silence."""

    sample_rate = SR
    embed_dim = 2

    def __init__(self):
        super().__init__()
        self.register_buffer("band", torch.tensor([900.0, 1100.0]))  # part of its fingerprint
        self.calls = 0

    def embed_audio(self, waves, batch_size=32):
        self.calls += 1
        w = torch.as_tensor(np.stack(waves))
        spec = torch.fft.rfft(w).abs()
        freqs = torch.fft.rfftfreq(w.shape[1], 1 / SR)
        band = spec[:, (freqs > 900) & (freqs < 1100)].pow(2).sum(1) / w.shape[1]
        return torch.stack([band, torch.full_like(band, 0.05)], 1)

    def embed_text(self, texts, batch_size=128):
        return torch.tensor([[1.0, 0.0] if "tone" in t else [0.0, 1.0] for t in texts])


def _recording(seconds=12.0, tone=(3.0, 6.0), sr=SR):
    t = np.arange(int(seconds * sr)) / sr
    wave = 0.01 * np.random.default_rng(0).standard_normal(len(t))
    on = (t >= tone[0]) & (t < tone[1])
    wave[on] += 0.5 * np.sin(2 * np.pi * 1000 * t[on])
    return wave.astype(np.float32)


def test_window_count_drops_the_tail_like_lighthouse():
    assert window_count(10_500, 1000, 1000) == 10  # 10.5 s at 1 s / 1 s: ten windows
    assert window_count(10_500, 2000, 1000) == 9
    assert window_count(500, 1000, 1000) == 1  # shorter than a window: one padded window


def test_streamed_blocks_equal_the_whole_file(tmp_path):
    model = ToneDetector()
    wave = _recording()
    save_audio(tmp_path / "r.wav", wave, SR, subtype="FLOAT")
    whole = window_features(model, wave, WindowConfig(window_s=1.0, hop_s=0.5))
    streamed = window_features(model, tmp_path / "r.wav",
                               WindowConfig(window_s=1.0, hop_s=0.5, block_s=0.7, batch_size=5),
                               cache=False)
    assert whole.shape == (23, 2)
    np.testing.assert_allclose(streamed, whole, rtol=1e-5, atol=1e-7)  # float32 FFT of equal input
    # a 16 kHz file is resampled as a stream; soxr's stream and one-shot outputs agree closely
    save_audio(tmp_path / "r16.wav", load_audio(tmp_path / "r.wav", 16000), 16000, subtype="FLOAT")
    s16 = window_features(model, tmp_path / "r16.wav", WindowConfig(block_s=0.9), cache=False)
    np.testing.assert_allclose(s16[:, 0], whole[::2, 0], rtol=0.02)


def test_features_are_cached(tmp_path):
    model = ToneDetector()
    save_audio(tmp_path / "r.wav", _recording(), SR)
    a = window_features(model, tmp_path / "r.wav")
    calls = model.calls
    b = window_features(model, tmp_path / "r.wav")
    assert model.calls == calls  # read back, not recomputed
    np.testing.assert_array_equal(a, b)
    # one file per recording; a damaged one is recomputed and replaced, never trusted
    from earshot.utils import cache_dir

    (entry,) = (cache_dir() / "moment_features").rglob("*.safetensors")
    entry.write_bytes(b"garbage")
    c = window_features(model, tmp_path / "r.wav")
    assert model.calls > calls
    np.testing.assert_array_equal(a, c)
    assert window_features(model, tmp_path / "r.wav") is not None and entry.stat().st_size > 7
    # weights changed in place (as an optimiser step does): another key, computed again
    calls = model.calls
    with torch.no_grad():
        model.band.add_(1.0)
    window_features(model, tmp_path / "r.wav")
    assert model.calls > calls and len(list((cache_dir() / "moment_features").rglob("*.safetensors"))) == 2


def test_moments_from_a_hand_made_curve():
    #           0    1    2    3    4    5    6    7
    curve = [0.0, 0.0, 1.0, 0.9, 0.0, 0.8, 0.0, 0.0]
    # threshold 0.5 (r=0.5): windows 2, 3, 5 -> merge_gap 1 joins them: [2, 5], mean of
    # curve[2:6] = 2.7 / 4 = 0.675; r=0.85: windows 2, 3 -> [2, 3], mean 0.95.
    got = moments_from_curve(curve, window_s=1.0, hop_s=1.0, top=5,
                             config=SlidingConfig(relative_thresholds=(0.5, 0.85), nms_iou=0.9))
    assert got == [(2.0, 4.0, pytest.approx(0.95)), (2.0, 6.0, pytest.approx(0.675))]
    # without merging, window 5 alone is a moment; NMS at 0.4 drops [2, 6] (IoU 0.5 with [2, 4])
    got = moments_from_curve(curve, 1.0, 1.0, top=5,
                             config=SlidingConfig(relative_thresholds=(0.5,), merge_gap=0))
    assert got == [(2.0, 4.0, pytest.approx(0.95)), (5.0, 6.0, pytest.approx(0.8))]
    assert temporal_nms([(0, 4, 1.0), (0, 5, 0.5), (4, 6, 0.2)], 0.4) == [(0, 4, 1.0), (4, 6, 0.2)]


def test_expected_iou_ranking_of_a_hand_made_curve():
    # windows 3 and 5 at 1.0, window 4 at 0.5: thresholds 0.4 and 0.9 without merging give
    # A = [3, 4] (1.0), B = [5, 6] (1.0), C = [3, 6] (mean 5/6). Weights exp((s - 1) / T), T = 1:
    # 1, 1, w = exp(-1/6) = 0.846482; IoU(A, C) = IoU(B, C) = 1/3, IoU(A, B) = 0. Expected IoU:
    # C (1/3 + 1/3 + w) / (2 + w) = 0.531585, A and B (1 + w / 3) / (2 + w) = 0.450437: the span
    # both peaks agree on comes first
    import dataclasses

    from earshot.errors import ConfigError

    curve = [0.0, 0.0, 0.0, 1.0, 0.5, 1.0]
    cfg = SlidingConfig(relative_thresholds=(0.4, 0.9), merge_gap=0, nms_iou=0.9)
    assert [m[:2] for m in moments_from_curve(curve, 1.0, 1.0, config=cfg)] == [(3.0, 4.0), (5.0, 6.0), (3.0, 6.0)]
    got = moments_from_curve(curve, 1.0, 1.0, config=dataclasses.replace(cfg, ranking="expected_iou", temperature=1.0))
    assert got == [(3.0, 6.0, pytest.approx(0.531585, abs=1e-6)), (3.0, 4.0, pytest.approx(0.450437, abs=1e-6)),
                   (5.0, 6.0, pytest.approx(0.450437, abs=1e-6))]
    with pytest.raises(ConfigError, match="ranking"):
        moments_from_curve(curve, 1.0, 1.0, config=SlidingConfig(ranking="expected_iou", temperature=0.0))


def test_find_moments_finds_the_tone(tmp_path):
    model = ToneDetector()
    save_audio(tmp_path / "r.wav", _recording(20.0, (7.0, 11.0)), SR)
    top = find_moments(model, tmp_path / "r.wav", "a tone", top=3,
                       window=WindowConfig(window_s=1.0, hop_s=1.0))
    assert top[0][:2] == (7.0, 11.0) and top[0][2] > 0.9
    assert len(top) <= 3 and all(a[2] >= b[2] for a, b in zip(top, top[1:]))
    with pytest.raises(TypeError):
        find_moments(model, tmp_path / "r.wav", ["a", "b"])


def test_model_find_moments_resamples_a_waveform():
    from earshot.loading.retriever import Model

    model = Model(ToneDetector(), "tone detector")
    from earshot.audio.io import resample

    wave = resample(_recording(16.0, (4.0, 9.0)), SR, 16000)
    top = model.find_moments(wave, "a tone", top=2, sample_rate=16000)
    assert top[0][0] == pytest.approx(4.0, abs=1.0) and top[0][1] == pytest.approx(9.0, abs=1.0)
