"""LogMelFrontend against torchlibrosa (PANNs' own feature code) and librosa's filterbank."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import torch

import earshot.audio.frontend as frontend_module
from earshot.audio.frontend import (
    FrontendConfig,
    LogMelFrontend,
    hz_to_mel,
    mel_filterbank,
    mel_to_hz,
    num_frames,
    torchlibrosa_buffers,
)
from earshot.config import from_dict
from earshot.errors import ConfigError, EarshotError

librosa = pytest.importorskip("librosa")
tl_stft = pytest.importorskip("torchlibrosa.stft")

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared"
SAMPLES = SHARED / "data" / "audio_samples"
SR = 32000
PANNS = FrontendConfig()


@functools.lru_cache(maxsize=4)  # building torchlibrosa's dense DFT takes ~1 s
def torchlibrosa_reference(cfg: FrontendConfig = PANNS) -> torch.nn.Module:
    """Spectrogram + LogmelFilterBank exactly as PANNs' Cnn14 builds them."""
    spec = tl_stft.Spectrogram(
        n_fft=cfg.n_fft,
        hop_length=cfg.hop_length,
        win_length=cfg.win_length,
        window="hann",
        center=cfg.center,
        pad_mode=cfg.pad_mode,
        freeze_parameters=True,
    )
    logmel = tl_stft.LogmelFilterBank(
        sr=cfg.sample_rate,
        n_fft=cfg.n_fft,
        n_mels=cfg.n_mels,
        fmin=cfg.fmin,
        fmax=cfg.fmax,
        ref=cfg.ref,
        amin=cfg.amin,
        top_db=cfg.top_db,
        freeze_parameters=True,
    )

    class Ref(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.spectrogram_extractor = spec
            self.logmel_extractor = logmel

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.logmel_extractor(self.spectrogram_extractor(x))[:, 0]  # (B, frames, mels)

    return Ref().eval()


def generated_signals() -> dict[str, np.ndarray]:
    # Mixtures of pure tones carry a noise floor 30 dB down, as recordings do: with none (or a
    # far lower one), bands 60-110 dB below the peak are off by 1e-3..1e-1 dB in torchlibrosa
    # itself, from its float32 rounding (see test_closer_to_float64_truth_than_a_float32_fft).
    rng = np.random.default_rng(1234)
    t = np.arange(SR) / SR
    floor = 1e-2 * rng.standard_normal(t.size)
    return {
        "noise": 0.3 * rng.standard_normal(t.size),
        "tone_1k": 0.8 * np.sin(2 * np.pi * 1000.0 * t),
        "tone_low_and_high": 0.4 * np.sin(2 * np.pi * 80.0 * t)
        + 0.2 * np.sin(2 * np.pi * 9000.0 * t)
        + floor,
        "chirp": 0.5 * np.sin(2 * np.pi * (100.0 + 3000.0 * t) * t) + floor,
        "near_silence": 1e-5 * rng.standard_normal(t.size),
        # bands straddle the amin clamp (power 1e-10, -100 dB): both sides must clamp alike
        "near_silence_at_the_floor": 3e-6 * rng.standard_normal(t.size),
        "digital_silence": np.zeros(t.size),
    }


@pytest.mark.parametrize("name", list(generated_signals()))
def test_matches_torchlibrosa_on_generated_audio(name: str) -> None:
    wave = torch.tensor(generated_signals()[name], dtype=torch.float32)[None]  # (1, T)
    with torch.no_grad():
        want = torchlibrosa_reference()(wave)
        got = LogMelFrontend()(wave)
    assert got.shape == want.shape == (1, num_frames(wave.shape[-1]), 64)
    assert got.dtype == torch.float32
    assert (got - want).abs().max().item() < 1e-3


@pytest.mark.shared
def test_matches_torchlibrosa_on_real_samples() -> None:
    if not SAMPLES.is_dir():
        pytest.skip("shared audio samples not available")
    from earshot.audio.io import load_audio

    files = sorted(p for p in SAMPLES.iterdir() if p.suffix.lower() in (".wav", ".flac", ".ogg"))
    assert files
    ref, ours = torchlibrosa_reference(), LogMelFrontend()
    for path in files:
        wave = torch.from_numpy(load_audio(path, SR))[None]
        with torch.no_grad():
            diff = (ours(wave) - ref(wave)).abs().max().item()
        assert diff < 1e-3, f"{path.name}: max |dB diff| {diff}"


def test_closer_to_float64_truth_than_a_float32_fft() -> None:
    # 110 dB between loud and quiet bands: a float32 FFT's rounding is visible in the quiet ones.
    t = np.arange(SR) / SR
    wave = 0.3 * np.sin(2 * np.pi * 60.0 * t) + 0.3 * np.sin(2 * np.pi * 7000.5 * t)
    x = wave.astype(np.float32)
    power = np.abs(librosa.stft(x.astype(np.float64), n_fft=1024, hop_length=320,
                                window="hann", center=True, pad_mode="reflect",
                                dtype=np.complex128)) ** 2
    mel = librosa.filters.mel(sr=SR, n_fft=1024, n_mels=64, fmin=50, fmax=14000,
                              dtype=np.float64) @ power
    truth = 10 * np.log10(np.maximum(mel, 1e-10)).T  # (frames, mels)
    with torch.no_grad():
        precise = LogMelFrontend()(torch.from_numpy(x)).numpy()
        fast = LogMelFrontend(fft_double=False)(torch.from_numpy(x)).numpy()
    assert np.abs(precise - truth).max() < 1e-3
    assert np.abs(fast - truth).max() > np.abs(precise - truth).max()


def test_ten_seconds_gives_1001_frames_of_64_mels(monkeypatch: pytest.MonkeyPatch) -> None:
    fe = LogMelFrontend()
    x = torch.randn(2, 10 * SR) * 0.1
    with torch.no_grad():
        out = fe(x)  # on CPU: one clip and 256 frames per FFT block
        monkeypatch.setattr(frontend_module, "_CPU_BLOCK_FRAMES", 7)  # blocks that do not divide
        small = fe(x)
        monkeypatch.setattr(frontend_module, "_CPU_BLOCK_FRAMES", 1 << 20)
        whole = fe(x)  # one FFT block per clip
    assert out.shape == (2, 1001, 64)
    assert num_frames(10 * SR) == 1001
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, whole, rtol=0, atol=1e-4)
    torch.testing.assert_close(out, small, rtol=0, atol=1e-4)


def test_unbatched_input_and_batch_consistency() -> None:
    fe = LogMelFrontend()
    x = torch.randn(3, 8000) * 0.1
    with torch.no_grad():
        batched = fe(x)
        single = fe(x[1])
    assert single.shape == (num_frames(8000), 64)
    torch.testing.assert_close(single, batched[1], atol=1e-4, rtol=0)


def test_digital_silence_is_the_amin_floor() -> None:
    with torch.no_grad():
        out = LogMelFrontend()(torch.zeros(1, 4000))
    # 10·log10(1e-10) - 10·log10(max(1e-10, 1.0)) = -100 dB exactly
    assert torch.all(out == -100.0)


def test_ref_and_top_db() -> None:
    x = torch.randn(1, 16000) * 0.1
    with torch.no_grad():
        base = LogMelFrontend()(x)
        shifted = LogMelFrontend(FrontendConfig(ref=10.0))(x)
        clipped = LogMelFrontend(FrontendConfig(top_db=20.0))(x)
    # ref=10 subtracts 10·log10(10) = 10 dB everywhere
    torch.testing.assert_close(shifted, base - 10.0, atol=1e-4, rtol=0)
    assert clipped.min().item() == pytest.approx(base.max().item() - 20.0, abs=1e-4)
    assert base.min().item() < base.max().item() - 20.0  # so the clip did something


@pytest.mark.parametrize(
    "sr,n_fft,n_mels,fmin,fmax",
    [(32000, 1024, 64, 50.0, 14000.0), (16000, 512, 40, 20.0, 8000.0),
     (22050, 2048, 128, 0.0, None), (44100, 2048, 96, 30.0, 16000.0)],
)
def test_mel_filterbank_matches_librosa(sr, n_fft, n_mels, fmin, fmax) -> None:
    ours = mel_filterbank(sr, n_fft, n_mels, fmin, fmax)
    want = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    assert ours.shape == want.shape == (n_mels, n_fft // 2 + 1)
    assert np.abs(ours - want).max() <= 1e-6


def test_mel_scale_hand_worked_points_and_htk_option() -> None:
    # slaney: linear 200/3 Hz per mel below 1 kHz -> 1000 Hz is mel 15, 200 Hz is mel 3
    assert hz_to_mel(1000.0) == pytest.approx(15.0)
    assert hz_to_mel(200.0) == pytest.approx(3.0)
    # above 1 kHz, 6.4x frequency is 27 mels more
    assert hz_to_mel(6400.0) == pytest.approx(42.0)
    f = np.array([0.0, 440.0, 1000.0, 5000.0, 14000.0])
    np.testing.assert_allclose(mel_to_hz(hz_to_mel(f)), f, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(
        mel_to_hz(hz_to_mel(f, htk=True), htk=True), f, rtol=1e-12, atol=1e-9
    )
    htk = mel_filterbank(SR, 1024, 64, 50.0, 14000.0, htk=True)
    np.testing.assert_allclose(
        htk, librosa.filters.mel(sr=SR, n_fft=1024, n_mels=64, fmin=50, fmax=14000, htk=True),
        atol=1e-6,
    )
    # the wrong (HTK) scale is detectably different from PANNs' slaney filterbank
    assert np.abs(htk - mel_filterbank(SR, 1024, 64, 50.0, 14000.0)).max() > 1e-3


def test_wrong_settings_are_detectably_different() -> None:
    x = torch.tensor(generated_signals()["chirp"], dtype=torch.float32)[None]
    with torch.no_grad():
        want = torchlibrosa_reference()(x)
        for cfg in (FrontendConfig(fmax=16000.0), FrontendConfig(pad_mode="constant"),
                    FrontendConfig(win_length=800)):
            got = LogMelFrontend(cfg)(x)
            assert (got - want).abs().max().item() > 0.1, cfg


def test_torchlibrosa_buffers_equal_torchlibrosa_exactly() -> None:
    ref = torchlibrosa_reference()
    theirs = {k: v for k, v in ref.state_dict().items()}
    ours = torchlibrosa_buffers(PANNS)
    assert set(ours) == set(theirs)
    for key, value in ours.items():
        assert value.shape == theirs[key].shape, key
        assert value.dtype == torch.float32
        # Same float64 numpy arithmetic on both sides, rounded once to fp32: one ulp (<= 6e-8 for
        # these values in [-1, 1]) where a CPU's libm lands on the other side of a rounding edge.
        torch.testing.assert_close(value, theirs[key], rtol=0, atol=1e-7, msg=key)
    assert ours["spectrogram_extractor.stft.conv_real.weight"].shape == (513, 1, 1024)
    assert ours["logmel_extractor.melW"].shape == (513, 64)
    torch.testing.assert_close(LogMelFrontend().melW, ours["logmel_extractor.melW"], rtol=0, atol=1e-7)


def test_torchlibrosa_buffers_for_a_shorter_window() -> None:
    cfg = FrontendConfig(sample_rate=16000, n_fft=512, win_length=400, hop_length=160, n_mels=40,
                         fmin=0.0, fmax=8000.0)
    ref = torchlibrosa_reference(cfg)
    ours = torchlibrosa_buffers(cfg)
    for key, value in ref.state_dict().items():
        torch.testing.assert_close(ours[key], value, rtol=0, atol=1e-7, msg=key)  # one fp32 ulp


def test_no_persistent_state_and_moves_with_the_module() -> None:
    fe = LogMelFrontend()
    assert fe.state_dict() == {}
    assert list(fe.parameters()) == []
    x = torch.randn(1, 4000) * 0.1
    with torch.no_grad():
        want = fe(x)
        got = fe.to(torch.float16)(x)  # casts the buffers; the features must not change
    assert got.dtype == torch.float32
    assert (got - want).abs().max().item() < 0.05  # melW rounded to float16 (~1e-3 relative)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        auto = LogMelFrontend()(x)
    assert auto.dtype == torch.float32
    # autocast must leave the float32 path alone: same kernels, so equal up to reassociation
    # (1e-5 dB); a bf16 FFT or matmul would move bands by 0.05 dB or more.
    torch.testing.assert_close(auto, want, rtol=0, atol=1e-5)


def test_bad_config_and_input_raise_earshot_errors() -> None:
    with pytest.raises(ConfigError, match="fmax"):
        FrontendConfig(fmax=20000.0)  # above 16 kHz Nyquist
    with pytest.raises(ConfigError, match="win_length"):
        FrontendConfig(win_length=2048)
    with pytest.raises(ConfigError, match="unknown key"):
        from_dict(FrontendConfig, {"n_mel": 64})
    fe = LogMelFrontend()
    with pytest.raises(EarshotError, match="too short"):
        fe(torch.zeros(1, 100))
    with pytest.raises(EarshotError, match="shape"):
        fe(torch.zeros(1, 1, 4000))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu() -> None:
    x = torch.randn(2, 3 * SR) * 0.2
    with torch.no_grad():
        cpu = LogMelFrontend()(x)
        gpu = LogMelFrontend().cuda()(x.cuda()).cpu()
    assert (cpu - gpu).abs().max().item() < 1e-3


def test_floor_case_really_reaches_the_clamp() -> None:
    wave = torch.tensor(generated_signals()["near_silence_at_the_floor"], dtype=torch.float32)[None]
    with torch.no_grad():
        out = LogMelFrontend()(wave)
    assert (out == -100.0).any() and (out > -100.0).any()


def test_runs_on_the_front_end_thread_count_and_restores_it(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []
    real = torch.fft.rfft

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.fft, "rfft", spy)
    before = torch.get_num_threads()
    monkeypatch.setenv("EARSHOT_THREADS", "3")
    with torch.no_grad():
        LogMelFrontend()(torch.randn(1, 4000))
    assert seen and set(seen) == {3} and torch.get_num_threads() == before
    monkeypatch.delenv("EARSHOT_THREADS")
    seen.clear()
    with torch.no_grad():
        LogMelFrontend()(torch.randn(1, 4000))
    assert set(seen) == {1} and torch.get_num_threads() == before
