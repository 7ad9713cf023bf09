"""PaSST against outputs of the reference implementation, plus converter and segmenting checks.

``golden/passt_tiny.safetensors`` was produced outside the repository by ``hear21passt`` 0.0.26
(``PaSST`` with embed_dim 64, depth 2, 4 heads, 10 classes; ``AugmentMelSTFT`` with the DCASE 2025
baseline's settings), ``torchaudio`` 2.11.0's ``compliance.kaldi.get_mel_banks``, and the
baseline's ``CutInputIntoSegmentsWrapper`` (CPJKU dcase2025_task6_baseline c78422f) followed by
its duration rule, on the weights :func:`seeded_weights` makes and on the audio built below.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from earshot.errors import ConfigError, WeightsError
from earshot.models.base import create_audio_encoder
from earshot.models.audio.passt import (PasstConfig, PasstEncoder, convert_passt_state_dict, duration_segments,
                                  kaldi_mel_banks, load_passt_checkpoint, load_passt_state_dict)

GOLDEN = load_file(str(Path(__file__).parent / "golden" / "passt_tiny.safetensors"))
SAMPLES = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "audio_samples"
TINY = {"embed_dim": 64, "depth": 2, "num_heads": 4, "num_classes": 10}
ATOL = 1e-4  # the bound; measured differences are printed by -s


def seeded_weights(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every tensor from one generator in sorted key order: N(0, 0.05^2), +1 for LayerNorm scales
    (the same function made the reference's weights)."""
    g = torch.Generator().manual_seed(99)
    out = {}
    for k in sorted(state):
        v = 0.05 * torch.randn(state[k].shape, generator=g)
        if k.endswith("weight") and ("norm" in k or k == "head.0.weight"):
            v = v + 1.0
        out[k] = v
    return out


@pytest.fixture(scope="module")
def tiny() -> PasstEncoder:
    enc = create_audio_encoder("passt", config=TINY)
    load_passt_state_dict(enc, convert_passt_state_dict(seeded_weights(enc.state_dict())))
    return enc.eval()


def _gen() -> torch.Tensor:
    t = torch.arange(32000 * 10) / 32000
    gen = (0.3 * torch.sin(2 * torch.pi * 440 * t) * torch.exp(-((t % 1.0) * 3))
           + 0.05 * torch.randn(t.shape, generator=torch.Generator().manual_seed(5))).float()
    # sin/exp are vectorised differently per CPU (AVX2 vs AVX-512, Intel vs AMD: 3.7e-9 seen) and
    # only promise ~1 ulp; |gen| < 0.5, whose fp32 ulp is 6e-8, so 1e-6 allows ~16 ulps and still
    # catches any change of the signal's formula (which moves samples by 1e-2 or more).
    torch.testing.assert_close(gen[:64], GOLDEN["gen10_head"], atol=1e-6, rtol=0)
    return gen


def _close(ours: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    diff = (ours - ref).abs().max().item()
    print(f"passt parity {what}: max abs diff {diff:.2e}")
    assert diff <= ATOL, (what, diff)


# A filter weight is (mel(f) - left) / (center - left) with mel ~ 1127 ln(1 + f/700) up to ~2900:
# one fp32 ulp of the log's result there (2.4e-4) over a band width of ~22 mel moves a weight by
# ~1e-5, and log is ~1 ulp apart between CPUs' math kernels. 3e-5 allows ~3 ulps; a wrong mel
# formula, edge or bin spacing moves weights by 1e-2 or more.
MEL_ATOL = 3e-5


def test_kaldi_mel_banks_match_torchaudio_to_fp32_rounding():
    flat = kaldi_mel_banks(128, 1024, 32000, 0.0, 15000.0).flatten()
    idx = GOLDEN["melbank_eval_nz_idx"]
    want = torch.zeros_like(flat)
    want[idx] = GOLDEN["melbank_eval_nz_val"]
    torch.testing.assert_close(flat, want, atol=MEL_ATOL, rtol=0)  # zeros included
    assert (flat > 0).sum().item() == pytest.approx(len(idx), abs=2)  # same support, bar ties at 0
    for lo, hi in ((3, 14321), (9, 15999)):  # training-jitter edges
        bank = kaldi_mel_banks(128, 1024, 32000, lo, hi)
        # a row sums at most 25 non-zero weights: 25 x MEL_ATOL
        torch.testing.assert_close(bank.sum(dim=1), GOLDEN[f"melbank_{lo}_{hi}_rowsum"],
                                   atol=25 * MEL_ATOL, rtol=0)
        torch.testing.assert_close(bank.max(dim=1).values, GOLDEN[f"melbank_{lo}_{hi}_rowmax"],
                                   atol=MEL_ATOL, rtol=0)
    with pytest.raises(ConfigError, match="fmin"):
        kaldi_mel_banks(128, 1024, 32000, 0.0, 17000.0)


def test_mel_front_end_matches_reference(tiny):
    gen = _gen()
    with torch.no_grad():
        mel = tiny.mel(gen[None, :32000])[0]
    assert mel.shape == GOLDEN["mel_gen1"].shape == (128, 100)  # 1 + (32000 - 1) // 320 frames
    _close(mel, GOLDEN["mel_gen1"], "log-mel, generated 1 s")


def test_embedding_matches_reference_on_generated_audio(tiny):
    gen = _gen()
    with torch.no_grad():
        _close(tiny(gen[None])[0], GOLDEN["emb_gen10"], "embedding, generated 10 s")
        long25 = torch.cat([gen, 0.5 * gen.flip(0), gen[: 5 * 32000]])
        long14 = torch.cat([gen.flip(0), gen[: 4 * 32000]])
        batch = torch.zeros(3, 25 * 32000)  # zero-padded as a batch is
        for i, w in enumerate((long25, long14, gen[: 3 * 32000])):
            batch[i, : len(w)] = w
        lengths = torch.tensor([len(long25), len(long14), 3 * 32000])  # the baseline's durations
        _close(tiny(batch, lengths), GOLDEN["emb_segments_gen"], "3/2/1 segments, generated, one padded batch")


def test_training_mode_matches_reference_with_the_same_rng(tiny):
    # mel edge jitter and structured patch-out draw from torch's global RNG in the reference's order
    gen = _gen()
    tiny.train()
    try:
        torch.manual_seed(777)
        with torch.no_grad():
            out = tiny(torch.stack([gen, 0.5 * gen.flip(0)]))
    finally:
        tiny.eval()
    _close(out, GOLDEN["emb_train_gen"], "training mode (jitter + patch-out)")
    with torch.no_grad():
        assert (tiny(gen[None])[0] - out[0]).abs().max() > 1e-3  # training mode really differs


@pytest.mark.skipif(not SAMPLES.is_dir(), reason="../shared/data/audio_samples not available")
def test_embedding_matches_reference_on_real_audio(tiny):
    from earshot.audio.io import load_audio

    files = sorted(SAMPLES.glob("*.wav"))
    assert [f.name for f in files] == load_file_metadata_names()
    waves = [torch.as_tensor(load_audio(f, 32000)) for f in files]
    with torch.no_grad():
        ours = torch.cat([tiny(w[None]) for w in waves])  # one at a time, unpadded, as evaluation does
        _close(ours, GOLDEN["emb_real"], "embedding, real clips 1-10 s")
        _close(tiny(torch.cat(waves)[None]), GOLDEN["emb_real_joined"], "embedding, 28 s of real audio")


def load_file_metadata_names() -> list[str]:
    from safetensors import safe_open

    with safe_open(str(Path(__file__).parent / "golden" / "passt_tiny.safetensors"), "pt") as f:
        return f.metadata()["real_files"].split("|")


def test_trailing_zeros_never_shorten_a_clip(tiny):
    # A 15 s clip whose last 5 s are digital silence: the baseline takes the file's duration
    # (15 s -> segments 1-2); counting only up to the trailing zeros gave one segment (max abs
    # diff 2.1 on this tiny model, 1.47 on the full-size one of the issue; now 0).
    gen = _gen()
    clip = torch.cat([gen, torch.zeros(5 * 32000)])
    with torch.no_grad():
        segments = torch.stack([gen, F.pad(torch.zeros(5 * 32000), (0, 5 * 32000))])
        want = tiny.embed_segments(segments).mean(dim=0)  # the reference: mean of its 2 segments
        got = tiny(clip[None])[0]
        by_length = tiny(F.pad(clip, (0, 7 * 32000))[None], torch.tensor([len(clip)]))[0]  # padded, duration given
        one = tiny.embed_segments(gen[None])[0]  # what the trailing-zero rule computed
    _close(got, want, "15 s clip ending in 5 s of zeros")
    _close(by_length, want, "the same clip zero-padded, its duration given")
    assert (one - want).abs().max() > 10 * ATOL  # the old rule is detectably different
    # In training mode too (the loader passes true lengths; without them, the full width).
    tiny.train()
    try:
        torch.manual_seed(7)  # the same mel jitter and patch-out draws for both
        got_train = tiny(clip[None])[0]
        torch.manual_seed(7)
        want_train = tiny.embed_segments(segments).mean(dim=0)
    finally:
        tiny.eval()
    _close(got_train, want_train, "training mode, 15 s clip ending in 5 s of zeros")
    assert duration_segments(torch.tensor([15 * 32000, 10 * 32000, 0, 31 * 32000]), 32000 * 10, 3).tolist() == [2, 1, 1, 3]


def test_converter_is_pure_and_handles_release_layouts(tmp_path):
    enc = create_audio_encoder("passt", config=TINY)
    sd = seeded_weights(enc.state_dict())
    before = {k: v.clone() for k, v in sd.items()}
    old = dict(sd)
    old["patch_embed.proj.weight"] = sd["patch_embed.proj.weight"].reshape(64, 256)  # pre-conv checkpoints
    compiled = {k.replace("blocks.", "blocks._orig_mod.", 1) if k.startswith("blocks.") else k: v
                for k, v in sd.items()}
    for variant in ({"model": old}, compiled):
        out = convert_passt_state_dict(variant)
        assert set(out) == set(sd) and all(torch.equal(out[k], sd[k]) for k in sd)
    assert all(torch.equal(before[k], sd[k]) for k in sd)  # inputs untouched
    torch.save(sd, tmp_path / "passt.pt")
    loaded = load_passt_checkpoint(create_audio_encoder("passt", config=TINY), tmp_path / "passt.pt")
    assert torch.equal(loaded.state_dict()["norm.weight"], sd["norm.weight"])
    bad = dict(sd)
    bad.pop("head_dist.bias")
    bad["extra.weight"] = torch.zeros(1)
    with pytest.raises(WeightsError, match="head_dist.bias.*extra.weight"):
        load_passt_state_dict(enc, bad)
    with pytest.raises(WeightsError, match="not found"):
        load_passt_checkpoint(enc, tmp_path / "missing.pt")


def test_full_size_layout_matches_the_release():
    # key names and shapes of passt-s-f128-p16-s16-ap.468.pt as the reference builds the model
    # (distilled PaSST-S, 8 x 62 patch grid, 527 classes); no weights are downloaded
    with torch.device("meta"):
        enc = PasstEncoder(PasstConfig())
    sd = enc.state_dict()
    assert len([k for k in sd if k.startswith("blocks.")]) == 12 * 12
    assert sd["time_new_pos_embed"].shape == (1, 768, 1, 62)
    assert sd["freq_new_pos_embed"].shape == (1, 768, 8, 1)
    assert sd["new_pos_embed"].shape == (1, 2, 768)
    assert sd["patch_embed.proj.weight"].shape == (768, 1, 16, 16)
    assert sd["head.1.weight"].shape == (527, 768) and sd["head_dist.weight"].shape == (527, 768)
    assert enc.embed_dim == 768 and enc.sample_rate == 32000 and len(enc.blocks()) == 12
    assert {id(m) for m in enc.unused_modules()} == {id(enc.head), id(enc.head_dist)}


def test_registry_loader_reads_a_release_file(tmp_path):
    from earshot.models.biencoder import TowerConfig
    from earshot.loading.pretrained import load_tower_weights
    from earshot.weights import get_weights

    entry = get_weights("passt_s_p16_s16_128_ap468")
    assert entry.checksum is None  # GitHub release asset: no digest published
    assert entry.towers[0].architecture == "passt" and entry.towers[0].converter == "passt"
    enc = create_audio_encoder("passt", config=TINY)
    sd = seeded_weights(enc.state_dict())
    torch.save({"model": sd}, tmp_path / "release.pt")
    load_tower_weights(enc, TowerConfig(name="passt", options={"config": TINY},
                                        weights=str(tmp_path / "release.pt"), weights_format="passt"))
    assert torch.equal(enc.state_dict()["blocks.1.mlp.fc2.weight"], sd["blocks.1.mlp.fc2.weight"])


def test_front_end_stays_float32_under_bf16_autocast(tiny):
    gen = _gen()[None, :32000]
    with torch.no_grad():
        plain = tiny.mel(gen)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            auto = tiny.mel(gen)
    # the same kernels run twice in one process; bf16 would move log-mels by ~1e-2
    assert auto.dtype == torch.float32
    torch.testing.assert_close(auto, plain, atol=1e-6, rtol=0)
