"""PANNs encoders: official checkpoint layout, strict conversion, golden outputs.

The golden files under ``golden/`` hold the outputs of the *official* PANNs code
(qiuqiangkong/audioset_tagging_cnn, ``pytorch/models.py``, with torchlibrosa's front end) for the
weights :func:`official_checkpoint` generates and the input :func:`golden_input` makes. They were
written by a one-off parity script outside the repository; our models must reproduce them after
going through the converter, which is the whole path a real ``Cnn14_mAP=0.431.pth`` takes.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from earshot.audio.frontend import FrontendConfig, torchlibrosa_buffers
from earshot.errors import AudioError, ConfigError, WeightsError
from earshot.models.base import create_audio_encoder
from earshot.models.audio.panns import (
    PannsEncoder,
    convert_panns_state_dict,
    load_panns_checkpoint,
    load_panns_state_dict,
)

GOLDEN = Path(__file__).resolve().parent / "golden"
NAMES = ["cnn6", "cnn10", "cnn14", "resnet38", "wavegram_logmel_cnn14"]
DIMS = {"cnn6": 512, "cnn10": 512, "cnn14": 2048, "resnet38": 2048, "wavegram_logmel_cnn14": 2048}
FRONTEND_KEYS = set(torchlibrosa_buffers())


def build(name: str, **options) -> PannsEncoder:
    # SpecAugment is training-only; these tests run eval mode or check it separately.
    return create_audio_encoder(name, spec_augment=False, **options)


def official_checkpoint(model: PannsEncoder, seed: int) -> dict:
    """A checkpoint in the official file layout (``{"model": state_dict}`` with torchlibrosa's
    tensors) holding seeded random weights that exercise every layer.

    Default init would hide bugs (ResNet38's residual branches start as zero, BN is the identity),
    so every tensor is drawn: He-scaled conv/linear weights, BN scales near 1, small biases and
    running means, running variances in [0.5, 1.5], ResNet residual branches damped; bn0 gets
    log-mel-sized statistics so the trunk sees O(1) inputs. Keys are drawn in state-dict order
    from one generator, so the result depends only on the seed and the architecture.
    """
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    for key, ref in model.state_dict().items():
        shape = ref.shape
        if key.endswith("num_batches_tracked"):
            sd[key] = torch.tensor(1000)
        elif key == "bn0.running_mean":
            sd[key] = -40.0 + 10.0 * torch.randn(shape, generator=g)
        elif key == "bn0.running_var":
            sd[key] = 200.0 + 100.0 * torch.rand(shape, generator=g)
        elif key.endswith("running_var"):
            sd[key] = 0.5 + torch.rand(shape, generator=g)
        elif key.endswith("running_mean") or key.endswith("bias"):
            sd[key] = 0.1 * torch.randn(shape, generator=g)
        elif key.startswith("resnet.") and key.endswith("bn2.weight"):
            # Residual branches scaled down, or 16 stacked blocks grow the output 1000-fold.
            sd[key] = 0.3 + 0.03 * torch.randn(shape, generator=g)
        elif ref.dim() == 1:  # BN scale
            sd[key] = 1.0 + 0.1 * torch.randn(shape, generator=g)
        else:  # conv / linear weight, He-scaled so activations neither vanish nor explode
            fan_in = ref[0].numel()
            sd[key] = math.sqrt(2.0 / fan_in) * torch.randn(shape, generator=g)
    sd.update(torchlibrosa_buffers(model.frontend_cfg))
    return {"model": sd}


def golden_input(seconds: float = 1.0) -> torch.Tensor:
    """Seeded noise, batch 2, with different levels so the two rows differ in scale too."""
    g = torch.Generator().manual_seed(1234)
    wave = torch.randn(2, int(32000 * seconds), generator=g)
    return wave * torch.tensor([[0.1], [0.3]])


@functools.lru_cache(maxsize=None)
def loaded(name: str, embedding: str = "fc1") -> PannsEncoder:
    """The seed-0 official checkpoint, converted and strictly loaded; in eval mode, shared by
    tests (none of them changes it)."""
    model = build(name, embedding=embedding)
    sd = convert_panns_state_dict(official_checkpoint(model, seed=0), model.frontend_cfg)
    return load_panns_state_dict(model, sd).eval()


# The three ~75-80M-parameter models take seconds each on a shared CPU.
BIG = {"cnn14", "resnet38", "wavegram_logmel_cnn14"}
GOLDEN_CASES = [pytest.param(n, marks=pytest.mark.slow) if n in BIG else n for n in NAMES]


# --- golden outputs: the official implementation's numbers ----------------------------------


@pytest.mark.parametrize("name", GOLDEN_CASES)
def test_matches_official_implementation_outputs(name):
    golden = load_file(GOLDEN / f"panns_{name}.safetensors")
    model = loaded(name)
    with torch.no_grad():
        out = model.features(golden_input())
    emb = out["fc1"]
    assert emb.shape == (2, DIMS[name]) and torch.isfinite(emb).all()
    if "embedding" in golden:  # small models: the whole (2, 512) embedding
        torch.testing.assert_close(emb, golden["embedding"], rtol=1e-4, atol=1e-4)
    # Every model: a fixed 16-value slice of both rows, and the sum of each row.
    idx = golden["index"]
    torch.testing.assert_close(emb[:, idx], golden["embedding_slice"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(emb.sum(dim=1), golden["embedding_sum"], rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(
        out["clipwise_output"][:, :16], golden["clipwise_slice"], rtol=1e-4, atol=1e-5
    )
    # The golden rows are not degenerate (a dead network would match a dead reference).
    assert golden["embedding_slice"].abs().max() > 1e-2
    assert not torch.allclose(golden["embedding_slice"][0], golden["embedding_slice"][1])


def test_pooled_embedding_is_the_input_of_fc1():
    # fc1 embedding = relu(fc1(pooled)) in eval mode; checks the two options against each other.
    model = loaded("cnn6")
    pooled_model = loaded("cnn6", embedding="pooled")
    x = golden_input()
    with torch.no_grad():
        pooled = pooled_model(x)
        expected = torch.relu(model.fc1(pooled))
        torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)
    assert pooled_model.embed_dim == 512 and pooled.shape == (2, 512)
    assert not pooled_model.fc1.weight.requires_grad  # not on the "pooled" path
    assert pooled_model.blocks()[-1] is pooled_model.conv_block4


# --- converter ------------------------------------------------------------------------------


def test_converter_removes_checked_frontend_tensors_and_keeps_the_rest():
    model = build("cnn6")
    ckpt = official_checkpoint(model, seed=1)
    before = {k: v.clone() for k, v in ckpt["model"].items()}
    sd = convert_panns_state_dict(ckpt, model.frontend_cfg)
    assert set(sd) == set(model.state_dict())  # exactly our keys: nothing extra, nothing missing
    assert not FRONTEND_KEYS & set(sd)
    assert all(torch.equal(sd[k], before[k]) for k in sd)
    assert set(ckpt["model"]) == set(before)  # the input is left untouched
    # A bare state dict (no "model" wrapper) converts the same way.
    assert set(convert_panns_state_dict(ckpt["model"], model.frontend_cfg)) == set(sd)


def test_checkpoint_file_round_trip(tmp_path):
    model = build("cnn10")
    ckpt = official_checkpoint(model, seed=2)
    ckpt["iteration"] = 660000  # released files carry bookkeeping next to "model"
    path = tmp_path / "Cnn10_mAP=0.380.pth"
    torch.save(ckpt, path)
    fresh = load_panns_checkpoint("cnn10", path, spec_augment=False)
    assert not fresh.training
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, ckpt["model"][key]), key


def test_missing_key_fails_loudly(tmp_path):
    model = build("cnn6")
    ckpt = official_checkpoint(model, seed=3)
    del ckpt["model"]["conv_block3.bn1.running_var"]
    path = tmp_path / "broken.pth"
    torch.save(ckpt, path)
    expected = r"missing keys \['conv_block3\.bn1\.running_var'\]"
    with pytest.raises(WeightsError, match=expected) as e:
        load_panns_checkpoint(build("cnn6"), path)
    assert "broken.pth" in str(e.value)


def test_extra_key_fails_loudly():
    model = build("cnn6")
    ckpt = official_checkpoint(model, seed=3)
    ckpt["model"]["conv_block5.conv1.weight"] = torch.zeros(3)  # a Cnn10 checkpoint in a Cnn6, say
    sd = convert_panns_state_dict(ckpt, model.frontend_cfg)
    with pytest.raises(WeightsError, match=r"unexpected keys \['conv_block5\.conv1\.weight'\]"):
        load_panns_state_dict(model, sd)


def test_wrong_architecture_reports_shape_mismatches():
    # A Cnn10 checkpoint (3x3 double convs) into Cnn6 (single 5x5 convs).
    sd = convert_panns_state_dict(official_checkpoint(build("cnn10"), seed=4))
    with pytest.raises(WeightsError) as e:
        load_panns_state_dict(build("cnn6"), sd)
    msg = str(e.value)
    assert "unexpected keys" in msg and "conv_block1.conv2.weight" in msg
    assert "conv_block1.conv1.weight: checkpoint (64, 1, 3, 3) vs model (64, 1, 5, 5)" in msg


def test_wrong_melw_fails_naming_the_key():
    model = build("cnn6")
    ckpt = official_checkpoint(model, seed=5)
    ckpt["model"]["logmel_extractor.melW"] = ckpt["model"]["logmel_extractor.melW"] * 1.01
    with pytest.raises(WeightsError, match=r"'logmel_extractor\.melW' differs"):
        convert_panns_state_dict(ckpt, model.frontend_cfg)


def test_checkpoint_trained_with_other_mel_settings_is_refused():
    # Same shapes, different fmax: only the values tell them apart.
    model = build("cnn6")
    ckpt = official_checkpoint(model, seed=6)
    ckpt["model"].update(torchlibrosa_buffers(FrontendConfig(fmax=16000.0)))
    with pytest.raises(WeightsError, match="melW"):
        convert_panns_state_dict(ckpt, model.frontend_cfg)


def test_missing_or_misshapen_frontend_tensor_fails():
    model = build("cnn6")
    ckpt = official_checkpoint(model, seed=7)
    del ckpt["model"]["spectrogram_extractor.stft.conv_imag.weight"]
    with pytest.raises(WeightsError, match="conv_imag"):
        convert_panns_state_dict(ckpt)
    ckpt = official_checkpoint(model, seed=7)
    ckpt["model"]["spectrogram_extractor.stft.conv_real.weight"] = torch.zeros(257, 1, 512)
    with pytest.raises(WeightsError, match=r"conv_real.*shape \(257, 1, 512\)"):
        convert_panns_state_dict(ckpt)


def test_unreadable_or_absent_file_names_the_path(tmp_path):
    with pytest.raises(WeightsError, match="nope.pth"):
        load_panns_checkpoint("cnn6", tmp_path / "nope.pth", spec_augment=False)
    bad = tmp_path / "garbage.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="garbage.pth"):
        load_panns_checkpoint("cnn6", bad, spec_augment=False)


# --- behaviour ------------------------------------------------------------------------------


def test_eval_is_deterministic_and_batch_independent():
    model = loaded("cnn6")
    x = golden_input()
    with torch.no_grad():
        a, b = model(x), model(x)
        one = model(x[1:])
    assert torch.equal(a, b)
    torch.testing.assert_close(one[0], a[1], rtol=1e-5, atol=1e-5)


def test_training_mode_uses_dropout():
    torch.manual_seed(0)
    model = build("cnn6").train()
    x = golden_input()
    a, b = model(x), model(x)
    assert not torch.allclose(a, b)  # p=0.5 dropout on the embedding
    assert (a == 0).float().mean() > 0.3


def test_factory_options_and_errors():
    m = build("cnn6", frontend={"n_mels": 64, "fmax": 14000.0})
    assert m.frontend_settings()["fmax"] == 14000.0 and m.sample_rate == 32000
    with pytest.raises(ConfigError, match="embedding"):
        build("cnn6", embedding="logits")
    with pytest.raises(ConfigError, match="frontend"):
        build("cnn6", frontend={"n_mel": 64})
    with pytest.raises(ConfigError, match="n_mels"):
        build("wavegram_logmel_cnn14", frontend={"n_mels": 128})
    with pytest.raises(ConfigError, match="unknown option"):
        create_audio_encoder("cnn14", zero_init_residual=False)  # a ResNet38-only option


def test_short_or_misshapen_input_is_a_clear_error():
    model = build("cnn10").eval()
    with pytest.raises(AudioError, match="too short"):
        model(torch.zeros(1, model.min_samples() - 1))
    with pytest.raises(AudioError, match=r"expects \(B, T\)"):
        model(torch.zeros(32000))
    with torch.no_grad():
        assert model(torch.zeros(1, model.min_samples())).shape == (1, 512)


def test_unused_layers_are_frozen_and_blocks_are_ordered():
    model = build("cnn10")
    assert model.unused_modules() == [model.fc_audioset]
    assert not any(p.requires_grad for p in model.fc_audioset.parameters())
    blocks = model.blocks()
    convs = [getattr(model, f"conv_block{i}") for i in range(1, 5)]
    assert blocks == [model.bn0, *convs, model.fc1]


@pytest.mark.slow
def test_resnet38_blocks_and_residual_init():
    model = build("resnet38")
    blocks = model.blocks()
    assert blocks[0] is model.bn0 and blocks[-1] is model.fc1
    assert blocks[-2] is model.conv_block_after1 and blocks[2:6] == [
        model.resnet.layer1, model.resnet.layer2, model.resnet.layer3, model.resnet.layer4
    ]
    # 3 + 4 + 6 + 3 basic blocks, official init: each starts as the identity (bn2 scale 0).
    residual = [b for layer in blocks[2:6] for b in layer]
    assert len(residual) == 16 and all(torch.all(b.bn2.weight == 0) for b in residual)
    plain = build("resnet38", zero_init_residual=False)
    assert all(torch.all(b.bn2.weight == 1) for layer in plain.blocks()[2:6] for b in layer)


def test_spec_augment_masks_the_trunk_input_only_in_training():
    seen: list[torch.Tensor] = []
    x = golden_input()

    def zero_fraction(model: PannsEncoder) -> float:
        seen.clear()
        handle = model.conv_block1.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
        with torch.no_grad():
            model(x)
        handle.remove()
        return (seen[0] == 0).float().mean().item()

    model = create_audio_encoder("cnn6")  # spec_augment defaults to True
    model.spec_augmenter.reseed(0)
    assert zero_fraction(model.train()) > 0.02  # stripes of zeros over frames and mel bins
    assert zero_fraction(model.eval()) == 0.0
    assert zero_fraction(build("cnn6").train()) == 0.0  # spec_augment=False


@pytest.mark.slow
def test_wavegram_branches_are_cropped_when_they_disagree_by_a_frame():
    # 32320 samples: 102 log-mel frames -> 51 after conv_block1, but 32320 // 640 = 50 wavegram
    # frames. The official code raises on the concatenation; ours crops to 50.
    model = loaded("wavegram_logmel_cnn14")
    with torch.no_grad():
        out = model(golden_input(32320 / 32000))
    assert out.shape == (2, 2048) and torch.isfinite(out).all()


def test_too_few_mel_bands_is_a_config_error():
    with pytest.raises(ConfigError, match="n_mels=8"):
        build("cnn6", frontend={"n_mels": 8})  # four 2x2 poolings need 16


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy-pre-1.6"])
def test_released_layout_with_numpy_sampler_state_loads(tmp_path, zip_format):
    """PANNs' training script saves {'iteration', 'model', 'sampler'}; the sampler state holds
    numpy arrays and a RandomState tuple, which plain weights_only loading refuses. The authors
    saved with PyTorch < 1.6, whose non-zip format the globals scan cannot read."""
    import numpy as np

    from earshot.audio.frontend import torchlibrosa_buffers
    from earshot.models.base import create_audio_encoder
    from earshot.models.audio.panns import load_panns_checkpoint

    torch.manual_seed(0)
    src = create_audio_encoder("cnn6")
    sampler = {"indexes_per_class": [np.arange(5), np.arange(3)], "queue": [1, 2],
               "random_state": np.random.RandomState(0).get_state()}
    path = tmp_path / "Cnn6_mAP=0.343.pth"
    torch.save({"iteration": 10, "model": {**src.state_dict(), **torchlibrosa_buffers()},
                "sampler": sampler}, path, _use_new_zipfile_serialization=zip_format)
    model = load_panns_checkpoint("cnn6", path)
    for k, v in src.state_dict().items():
        assert torch.equal(model.state_dict()[k], v)


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy-pre-1.6"])
def test_a_checkpoint_needing_other_globals_is_refused(tmp_path, zip_format):
    import fractions

    from earshot.errors import WeightsError
    from earshot.models.audio.panns import load_panns_checkpoint

    path = tmp_path / "bad.pth"
    torch.save({"model": {}, "extra": fractions.Fraction(1, 3)}, path, _use_new_zipfile_serialization=zip_format)
    with pytest.raises(WeightsError, match="cannot read"):
        load_panns_checkpoint("cnn6", path)
