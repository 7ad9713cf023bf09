"""ESResNeXt-fbsp (AudioCLIP's audio tower): converter, reference parity, front end, training.

The golden file ``golden/esresnext_golden.pt`` was produced by the official AudioCLIP code
(``model/esresnet/fbsp.py`` at AndreyGuzhov/AudioCLIP@45327aa, run outside the repo) on the
weights of :func:`official_layout_state_dict` and the input of :func:`golden_waveform`; the
official model was fed ``waveform * 32768`` (its int16-range convention), ours the [-1, 1] waveform.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch

from earshot.errors import ConfigError, WeightsError
from earshot.models.base import create_audio_encoder
from earshot.models.audio.esresnext import (
    ESResNeXtFBSP,
    ESResNeXtFBSPConfig,
    LinearFBSP,
    convert_audioclip_audio_state_dict,
    frame_signal,
    periodic_window,
)

GOLDEN = Path(__file__).parent / "golden" / "esresnext_golden.pt"


def official_layout_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """A full AudioCLIP-style state dict: seeded audio tower under ``audio.``, plus CLIP keys.

    Values are drawn key by key in sorted order from one seeded generator, so they do not depend
    on how the model is built; scales keep activations O(1) through 50 random layers.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in ESResNeXtFBSP().state_dict().items()}
    sd: dict[str, torch.Tensor] = {}
    for key in sorted(shapes):
        shape = shapes[key]
        if key == "window":
            t = periodic_window("blackmanharris", shape[0])
        elif key == "fbsp.m":
            t = torch.empty(shape).uniform_(0.2, 1.5, generator=g)
        elif key == "fbsp.fb":
            t = torch.empty(shape).uniform_(0.5, 3.0, generator=g)
        elif key == "fbsp.fc":
            t = torch.arange(shape[0], dtype=torch.float32) + torch.randn(shape, generator=g)
        elif key.endswith("num_batches_tracked"):
            t = torch.tensor(0)
        elif key.endswith("running_var"):
            t = torch.empty(shape).uniform_(0.5, 1.5, generator=g)
        elif key.endswith("running_mean") or key.endswith("bias"):
            t = 0.1 * torch.randn(shape, generator=g)
        elif len(shape) == 4:  # conv: He init on fan-out, as torchvision
            t = torch.randn(shape, generator=g) * math.sqrt(2.0 / (shape[0] * shape[2] * shape[3]))
        elif key == "fc.weight":
            t = torch.randn(shape, generator=g) / math.sqrt(shape[1])
        else:  # batch-norm scales
            t = torch.empty(shape).uniform_(0.5, 1.5, generator=g)
        sd["audio." + key] = t
    sd["audio.fbsp.bias"] = torch.empty(0)  # AudioCLIP's bias=False placeholder
    sd["visual.conv1.weight"] = torch.randn(32, 3, 3, 3, generator=g)
    sd["transformer.resblocks.0.attn.in_proj_weight"] = torch.randn(6, 2, generator=g)
    sd["token_embedding.weight"] = torch.randn(5, 2, generator=g)
    sd["logit_scale"] = torch.tensor(4.6052)
    sd["logit_scale_ai"] = torch.tensor(4.6052)
    sd["logit_scale_at"] = torch.tensor(4.6052)
    return sd


def golden_waveform() -> torch.Tensor:
    """(2, 44100): a 440 Hz tone with a little noise, and louder clipped noise; in [-1, 1]."""
    g = torch.Generator().manual_seed(1234)
    t = torch.arange(44100, dtype=torch.float32) / 44100
    tone = 0.5 * torch.sin(2 * math.pi * 440.0 * t) + 0.02 * torch.randn(44100, generator=g)
    noise = (0.3 * torch.randn(44100, generator=g)).clamp(-1.0, 1.0)
    return torch.stack([tone, noise])


@pytest.fixture(scope="module")
def official_sd() -> dict[str, torch.Tensor]:
    return official_layout_state_dict()


@pytest.fixture(scope="module")
def model_shapes() -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in ESResNeXtFBSP().state_dict().items()}


# --- converter --------------------------------------------------------------------------------


def test_converter_keeps_exactly_the_audio_tower(official_sd, model_shapes):
    out = convert_audioclip_audio_state_dict(official_sd)
    assert set(out) == set(model_shapes)  # visual/text/logit keys and fbsp.bias are gone
    assert all(torch.equal(out[k], official_sd["audio." + k]) for k in out)
    with torch.device("meta"):
        model = ESResNeXtFBSP()
    model.load_state_dict(out, strict=True, assign=True)
    assert torch.equal(model.fbsp.m, official_sd["audio.fbsp.m"])


def test_converter_strips_dataparallel_prefix(official_sd):
    wrapped = {"module." + k: v for k, v in official_sd.items()}
    assert set(convert_audioclip_audio_state_dict(wrapped)) == set(
        convert_audioclip_audio_state_dict(official_sd)
    )


def test_converter_reports_missing_key(official_sd):
    sd = dict(official_sd)
    del sd["audio.layer3.4.bn2.running_var"]
    with pytest.raises(WeightsError, match=r"missing.*layer3\.4\.bn2\.running_var"):
        convert_audioclip_audio_state_dict(sd)


def test_converter_reports_unexpected_audio_key(official_sd):
    sd = dict(official_sd)
    sd["audio.att6.bn.weight"] = torch.ones(2048)
    with pytest.raises(WeightsError, match=r"unexpected.*att6\.bn\.weight"):
        convert_audioclip_audio_state_dict(sd)


def test_converter_reports_wrong_shape(official_sd):
    sd = dict(official_sd)
    sd["audio.fc.weight"] = torch.zeros(512, 2048)  # e.g. a CLIP ViT-B joint space
    expected = r"fc\.weight: checkpoint \(512, 2048\) vs model \(1024, 2048\)"
    with pytest.raises(WeightsError, match=expected):
        convert_audioclip_audio_state_dict(sd)


def test_converter_rejects_a_real_fbsp_bias_and_non_audioclip_files(official_sd):
    sd = dict(official_sd)
    sd["audio.fbsp.bias"] = torch.zeros(1025, 2)
    with pytest.raises(WeightsError, match="fbsp.bias"):
        convert_audioclip_audio_state_dict(sd)
    # ESRNXFBSP.pt-style (audio tower alone, no "audio." prefix) is not this format
    bare = {k[len("audio.") :]: v for k, v in official_sd.items() if k.startswith("audio.")}
    with pytest.raises(WeightsError, match="no 'audio.\\*' keys"):
        convert_audioclip_audio_state_dict(bare)


# --- parity with the official implementation --------------------------------------------------


def test_golden_output_matches_official_audioclip(official_sd):
    if not GOLDEN.exists():
        pytest.fail(f"golden file missing: {GOLDEN}")
    golden = torch.load(GOLDEN, weights_only=True)
    with torch.device("meta"):  # skip the random init: every tensor comes from the checkpoint
        model = create_audio_encoder("esresnext_fbsp")  # defaults = AudioCLIP's audio settings
    model.load_state_dict(convert_audioclip_audio_state_dict(official_sd), strict=True, assign=True)
    model.eval()
    wave = golden_waveform()
    with torch.no_grad():
        bands = model.log_power_bands(wave)
        emb = model(wave)
    assert bands.shape == (2, 3, 341, 77)  # 1 + ceil((44100 - 1654) / 561) = 77 frames
    # The fbsp DFT is a float32 matmul over 1654 samples: each bin carries ~sqrt(1654) x 6e-8 =
    # 2.4e-6 of the frame's peak amplitude in rounding, whose order differs between CPU kernels.
    # The quietest band here is ~62 dB (amplitude 8e-4) below its frame's peak: ~3e-3 relative,
    # 0.026 dB (measured 0.031 dB with ATEN_CPU_CAPABILITY=default, 1e-3 with AVX-512). 0.1 dB
    # allows that; a wrong window, scale or band layout moves bands by 1 dB or more.
    torch.testing.assert_close(bands[:, :, ::16, ::8], golden["bands_db"], atol=0.1, rtol=0)
    assert emb.shape == (2, 1024) and torch.isfinite(emb).all()
    assert golden["embedding"].abs().max() > 0.1  # the tolerance below is meaningful
    torch.testing.assert_close(emb, golden["embedding"], atol=1e-4, rtol=0)


# --- front end --------------------------------------------------------------------------------


def test_blackmanharris_matches_scipy():
    signal = pytest.importorskip("scipy.signal")
    for name in ("blackmanharris", "hann", "boxcar"):
        ref = torch.from_numpy(signal.get_window(name, 1654, fftbins=True)).float()
        torch.testing.assert_close(periodic_window(name, 1654), ref, atol=1e-7, rtol=0)


def test_frame_signal_counts_and_pads_like_audioclip():
    x = torch.arange(1.0, 12.0).unsqueeze(0)  # 11 samples: 1..11
    frames = frame_signal(x, frame_length=4, hop_length=3)
    # 1 + ceil((11 - 4) / 3) = 4 frames need 3 * 3 + 4 = 13 samples: 1 zero left, 1 right
    expected = torch.tensor([[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9], [9, 10, 11, 0]]).float()
    assert torch.equal(frames[0], expected)
    short = frame_signal(torch.ones(1, 3), frame_length=8, hop_length=3)  # shorter than a frame
    assert torch.equal(short[0], torch.tensor([[0, 0, 1, 1, 1, 0, 0, 0]], dtype=torch.float32))


def test_fbsp_at_init_is_a_normalised_dft_of_an_impulse():
    n, n0 = 64, 10
    layer = LinearFBSP(out_features=n // 2 + 1, normalized=True)
    frame = torch.zeros(1, n)
    frame[0, n0] = 1.0
    out = layer(frame)[0]  # (33, 2)
    # m = 0 makes the window 1 and fb = 1 the scale 1, so bin k is exp(-i k t_n0) / sqrt(n)
    t0 = math.pi * (-1.0 + 2.0 * n0 / (n - 1)) + 1e-8
    k = torch.arange(n // 2 + 1, dtype=torch.float64)
    expected = torch.stack([torch.cos(k * t0), -torch.sin(k * t0)], dim=-1) / math.sqrt(n)
    # float32 phases k * t reach ~100 rad, rounded to ~100 x 6e-8 = 6e-6 rad, / sqrt(64) -> ~1e-6
    # per bin (1.08e-6 measured with ATEN_CPU_CAPABILITY=default); a wrong sign, bin or scale is
    # off by 1e-2 or more.
    torch.testing.assert_close(out.double(), expected, atol=5e-6, rtol=0)


def test_ttf_penalty_hand_values():
    model_cfg = ESResNeXtFBSPConfig(n_fft=256, win_length=200, hop_length=64, apply_attention=False)
    model = ESResNeXtFBSP(model_cfg)
    # at init every normalised kernel has norm 1 (|exp(-i k t)| = 1 over n samples, / sqrt(n))
    assert model.ttf_norm_penalty().item() == pytest.approx(0.0, abs=1e-8)
    with torch.no_grad():
        model.fbsp.fb.fill_(4.0)  # scale sqrt(4) = 2 doubles every norm: (2 - 1)^2 = 1
    assert model.ttf_norm_penalty().item() == pytest.approx(1.0, abs=1e-5)


def test_config_is_strict():
    with pytest.raises(ConfigError, match="n_ftt"):
        create_audio_encoder("esresnext_fbsp", n_ftt=1024)
    with pytest.raises(ConfigError, match="win_length"):
        ESResNeXtFBSPConfig(n_fft=1024, win_length=2048)


# --- training ---------------------------------------------------------------------------------


# A small front end (129 bins, 43 per band) keeps backward cheap; the trunk is the full one.
SMALL = dict(n_fft=256, win_length=200, hop_length=100)


@pytest.mark.slow  # a backward pass through the 32M-parameter trunk
def test_every_parameter_trains_and_fbsp_steps_are_normalised():
    torch.manual_seed(0)
    model = create_audio_encoder("esresnext_fbsp", **SMALL).train()
    wave = 0.3 * torch.randn(2, 1000)  # 1 + ceil(800 / 100) = 9 frames
    emb = model(wave)
    copy.deepcopy(model)  # weight averaging / EMA copy mid-step: no graph tensors on the module
    # the penalty reuses the forward pass's kernels, so the rescaling sees the total gradient
    loss = emb.square().mean() + model.ttf_norm_penalty()
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().max() > 0, name
    # AudioCLIP rescales the front-end gradients to unit infinity norm
    for p in (model.fbsp.m, model.fbsp.fb, model.fbsp.fc):
        assert p.grad.abs().max().item() == pytest.approx(1.0, abs=1e-6)


def test_blocks_partition_the_parameters_front_end_first():
    with torch.device("meta"):  # structure only: no memory, no compute
        for attention in (True, False):
            model = create_audio_encoder("esresnext_fbsp", apply_attention=attention)
            blocks = model.blocks()
            ids = [id(p) for b in blocks for p in b.parameters()]
            assert len(ids) == len(set(ids)) == len(list(model.parameters()))
            assert blocks[0] is model.fbsp and hasattr(model, "att1") == attention
            assert len(blocks) == 7


@pytest.mark.slow  # a full-size forward pass at random init
def test_default_random_model_starts_from_audioclips_init_and_runs():
    torch.manual_seed(0)
    model = create_audio_encoder("esresnext_fbsp").eval()
    assert (model.embed_dim, model.sample_rate) == (1024, 44100)
    # AudioCLIP's LinearFBSP init: m = 0, fb = 1, fc = k, i.e. a plain DFT front end
    assert torch.equal(model.fbsp.fc, torch.arange(1025.0)) and not model.fbsp.m.any()
    assert model.frontend_settings()["hop_length"] == 561
    with torch.no_grad():
        emb = model(0.1 * torch.randn(2, 44100))
    assert emb.shape == (2, 1024) and torch.isfinite(emb).all()
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        model(torch.zeros(44100))


def test_fbsp_window_phase_uses_the_input_dtype():
    # A negative sinc lobe raised to a non-integer power m has phase m*pi. Worked in float64 by
    # hand; a float32 pi (the Python-scalar torch.where) would be off by ~m * 8.7e-8.
    import math

    from earshot.models.audio.esresnext import LinearFBSP

    layer = LinearFBSP(3, normalized=False).double()
    with torch.no_grad():
        layer.m.copy_(torch.tensor([0.5, 1.5, 2.5], dtype=torch.float64))
        layer.fb.copy_(torch.tensor([3.0, 5.0, 7.0], dtype=torch.float64))
    n = 64
    k = layer.kernels(n, torch.float64)
    t = (math.pi * torch.linspace(-1.0, 1.0, n, dtype=torch.float64) + layer.eps)[None]
    m, fb, fc = layer.m[:, None].detach(), layer.fb[:, None].detach(), layer.fc[:, None].detach().double()
    x = fb * t / (m + layer.eps)
    sinc = torch.sin(x) / x
    window = sinc.abs() ** m * torch.exp(1j * m * math.pi * (sinc < 0))  # complex128
    kernel = fb.sqrt() * window * torch.exp(-1j * fc * t)
    assert (sinc < 0).any()
    torch.testing.assert_close(k[..., 0], kernel.real, rtol=0, atol=1e-13)
    torch.testing.assert_close(k[..., 1], kernel.imag, rtol=0, atol=1e-13)
