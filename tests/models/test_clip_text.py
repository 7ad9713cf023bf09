"""CLIP tokenizer and text transformer: hand-checked ids, OpenAI key layout, converters, golden output.

The expected token ids below were produced by OpenAI's ``simple_tokenizer.py`` and checked
against this tokenizer on 109,226 strings (all cells of the Clotho/AudioCaps CSVs plus tricky
unicode/punctuation cases) with zero differences. The golden file holds the output of OpenAI's
own ``CLIP.encode_text`` for the weights made by :func:`official_layout_weights`.
"""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from earshot.errors import ConfigError, DataError, WeightsError
from earshot.models.text.clip_text import (
    CLIPTextConfig,
    CLIPTextTransformer,
    QuickGELU,
    clip_text_config_from_state_dict,
    convert_audioclip_text_state_dict,
    convert_openai_clip_text_state_dict,
    load_clip_text_state_dict,
    read_audioclip_checkpoint,
    read_openai_clip_checkpoint,
)
from earshot.models.text.clip_tokenizer import CLIPTokenizer, default_bpe_path

GOLDEN = Path(__file__).parent / "golden" / "clip_text_tiny.pt"
TINY = CLIPTextConfig(embed_dim=32, context_length=77, vocab_size=512, width=64, layers=2, heads=2)


@pytest.fixture(scope="module")
def tok() -> CLIPTokenizer:
    return CLIPTokenizer()


def official_layout_weights(cfg: CLIPTextConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """A full OpenAI-CLIP-style state dict (text keys, a stub image tower, logit_scale), fixed seed.

    Layer norms get weights near 1 and all biases are non-zero, so a wrong norm or bias
    placement changes the output.
    """
    g = torch.Generator().manual_seed(seed)
    W, E = cfg.width, cfg.embed_dim

    def rnd(*shape: int, std: float = 0.02, mean: float = 0.0) -> torch.Tensor:
        return mean + std * torch.randn(*shape, generator=g)

    sd = {
        "token_embedding.weight": rnd(cfg.vocab_size, W),
        "positional_embedding": rnd(cfg.context_length, W, std=0.01),
    }
    for i in range(cfg.layers):
        p = f"transformer.resblocks.{i}."
        sd.update({
            p + "attn.in_proj_weight": rnd(3 * W, W, std=W**-0.5),
            p + "attn.in_proj_bias": rnd(3 * W, std=0.1),
            p + "attn.out_proj.weight": rnd(W, W, std=W**-0.5),
            p + "attn.out_proj.bias": rnd(W, std=0.1),
            p + "ln_1.weight": rnd(W, std=0.1, mean=1.0),
            p + "ln_1.bias": rnd(W, std=0.1),
            p + "mlp.c_fc.weight": rnd(4 * W, W, std=(2 * W) ** -0.5),
            p + "mlp.c_fc.bias": rnd(4 * W, std=0.1),
            p + "mlp.c_proj.weight": rnd(W, 4 * W, std=(4 * W) ** -0.5),
            p + "mlp.c_proj.bias": rnd(W, std=0.1),
            p + "ln_2.weight": rnd(W, std=0.1, mean=1.0),
            p + "ln_2.bias": rnd(W, std=0.1),
        })
    sd.update({
        "ln_final.weight": rnd(W, std=0.1, mean=1.0),
        "ln_final.bias": rnd(W, std=0.1),
        "text_projection": rnd(W, E, std=W**-0.5),
        "visual.conv1.weight": rnd(8, 3, 4, 4),
        "visual.proj": rnd(8, E),
        "logit_scale": torch.tensor(math.log(1 / 0.07)),
    })
    return sd


def _tiny_model(seed: int = 0) -> CLIPTextTransformer:
    model = CLIPTextTransformer(TINY).eval()
    sd = convert_openai_clip_text_state_dict(official_layout_weights(TINY, seed))
    load_clip_text_state_dict(model, sd)
    return model


# ---- tokenizer ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, ids",
    [
        # 'a</w>' 'dog</w>' 'bar' 'ks</w>'
        ("a dog barks", [320, 1929, 1040, 662]),
        ("A Dog BARKS", [320, 1929, 1040, 662]),  # lower-cased first
        # hello , world ... it 's 3 . 1 4 !  (digits are split one by one)
        ("Hello, World... it's 3.14!", [3306, 267, 1002, 678, 585, 568, 274, 269, 272, 275, 256]),
        ("café naïve", [15304, 1097, 35689, 563]),  # UTF-8 bytes mapped to symbols
        # doubly escaped HTML and messy whitespace: '"' rain '"' on the roof
        ("&amp;quot;rain&amp;quot;  on\n the   roof", [257, 2443, 257, 525, 518, 6449]),
        ("emoji \U0001F436 dog", [16327, 10631, 1929]),
        ("don't stop", [847, 713, 1691]),
        (" leading space.wav", [3833, 2138, 269, 869, 341]),
    ],
)
def test_encode_matches_openai_ids(tok: CLIPTokenizer, text: str, ids: list[int]) -> None:
    assert tok.encode(text) == ids


def test_batch_layout_start_end_and_zero_padding(tok: CLIPTokenizer) -> None:
    out = tok(["a dog barks", "!!!"])
    assert out.shape == (2, 77) and out.dtype == torch.long
    assert out[0, :6].tolist() == [49406, 320, 1929, 1040, 662, 49407]
    assert out[1, :3].tolist() == [49406, 995, 49407]  # '!!!</w>' is one symbol
    assert not out[0, 6:].any() and not out[1, 3:].any()
    assert tok.vocab_size == 49408 and tok.sot_token_id == 49406 and tok.eot_token_id == 49407


def test_truncation_keeps_end_token_last(tok: CLIPTokenizer) -> None:
    out = tok(["dog " * 200])
    assert out[0, 0] == 49406 and out[0, 76] == 49407
    assert (out[0, 1:76] == 1929).all()  # 75 'dog</w>' tokens survive
    with pytest.raises(DataError, match="context length"):
        tok(["dog " * 200], truncate=False)
    exact = tok(["dog " * 75])  # 75 + 2 = 77 fits without truncation
    assert exact[0, 76] == 49407 and (exact[0, 1:76] == 1929).all()


def test_decode_round_trip(tok: CLIPTokenizer) -> None:
    ids = tok(["Rain falls on a tin roof."])[0, :9].tolist()
    assert tok.decode(ids) == "rain falls on a tin roof ."


def test_vocab_file_errors(tmp_path: Path) -> None:
    assert default_bpe_path().name == "bpe_simple_vocab_16e6.txt.gz"
    with pytest.raises(WeightsError, match="missing.gz"):
        CLIPTokenizer(tmp_path / "missing.gz")
    short = tmp_path / "short.txt.gz"
    with gzip.open(short, "wt") as f:
        f.write("#version\na b\n")
    with pytest.raises(WeightsError, match="merge lines"):
        CLIPTokenizer(short)


# ---- model -------------------------------------------------------------------------------------


def test_quick_gelu_values() -> None:
    x = torch.tensor([0.0, 1.0, -2.0])
    # 1 * sigmoid(1.702) = 1 / (1 + 0.182311) = 0.845796; -2 * sigmoid(-3.404) = -2 / (1 + 30.0843)
    # = -0.064341. (Exact GELU would give 0.841345 and -0.045500.)
    expected = torch.tensor([0.0, 0.8457958, -0.0643414])
    torch.testing.assert_close(QuickGELU()(x), expected, atol=1e-6, rtol=0)


def test_parameter_names_are_openai_layout() -> None:
    names = set(CLIPTextTransformer(TINY).state_dict())
    official = official_layout_weights(TINY)
    expected = {k for k in official if not k.startswith("visual.")} - {"logit_scale"}
    assert names == expected
    assert "attn_mask" not in names  # the causal mask is not a weight


def test_golden_output_matches_openai_encode_text() -> None:
    golden = torch.load(GOLDEN, weights_only=True)
    sd = official_layout_weights(TINY, seed=int(golden["seed"]))
    # If torch's generator ever changed, say so instead of reporting a model bug.
    fingerprint = torch.stack([v.double().sum() for v in sd.values()]).sum()
    # randn's Box-Muller runs log/sin/cos through each CPU's vector kernels, so every value may
    # move by an ulp: the sum moved by 1.9e-4 (6e-7 relative) with ATEN_CPU_CAPABILITY=default.
    # Another generator or draw order moves it by O(1).
    assert float(fingerprint) == pytest.approx(float(golden["fingerprint"]), rel=1e-5)
    model = _tiny_model(int(golden["seed"]))
    with torch.no_grad():
        out = model(golden["tokens"])
    assert out.shape == golden["output"].shape == (4, 32)
    torch.testing.assert_close(out, golden["output"], atol=1e-5, rtol=0)


def test_causal_mask_and_end_token_readout() -> None:
    model = _tiny_model()
    base = torch.zeros(1, 77, dtype=torch.long)
    base[0, :5] = torch.tensor([510, 10, 20, 30, 511])
    after = base.clone()
    after[0, 6] = 40  # after the end token: invisible under the causal mask
    before = base.clone()
    before[0, 2] = 21  # before it: must change the feature
    with torch.no_grad():
        y, y_after, y_before = model(base), model(after), model(before)
        y_trim = model(base[:, :5])  # dropping trailing padding columns changes nothing
    torch.testing.assert_close(y_after, y, atol=1e-6, rtol=0)
    torch.testing.assert_close(y_trim, y, atol=1e-5, rtol=0)
    assert (y_before - y).abs().max() > 1e-3


def test_rejects_overlong_tokens() -> None:
    with pytest.raises(ValueError, match="L<=77"):
        CLIPTextTransformer(TINY)(torch.zeros(1, 78, dtype=torch.long))


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match="divisible"):
        CLIPTextConfig(width=64, heads=3)
    with pytest.raises(ConfigError, match="layers"):
        CLIPTextConfig(layers=0)


# ---- converters and loading --------------------------------------------------------------------


def test_openai_converter_drops_exactly_the_other_towers() -> None:
    sd = official_layout_weights(TINY)
    sd["input_resolution"] = torch.tensor(224)  # TorchScript archives carry these as tensors
    sd = {k: v.half() if v.is_floating_point() else v for k, v in sd.items()}  # OpenAI ships fp16
    out = convert_openai_clip_text_state_dict(sd)
    dropped = {"visual.conv1.weight", "visual.proj", "logit_scale", "input_resolution"}
    assert set(sd) - set(out) == dropped
    assert all(v.dtype == torch.float32 for v in out.values())
    assert clip_text_config_from_state_dict(out) == CLIPTextConfig(
        embed_dim=32, context_length=77, vocab_size=512, width=64, layers=2, heads=1
    )


def test_audioclip_converter() -> None:
    sd = official_layout_weights(TINY)
    sd.update({"audio.fbsp.window": torch.randn(5), "audio.fc.weight": torch.randn(3, 2),
               "logit_scale_ai": torch.tensor(4.6), "logit_scale_at": torch.tensor(4.6)})
    out = convert_audioclip_text_state_dict(sd)
    assert set(out) == set(CLIPTextTransformer(TINY).state_dict())
    assert torch.equal(out["text_projection"], sd["text_projection"])
    # An AudioCLIP file is not an OpenAI one: the audio tower is unexpected there.
    with pytest.raises(WeightsError, match="audio.fbsp.window"):
        convert_openai_clip_text_state_dict(sd)


def test_converters_fail_loudly() -> None:
    sd = official_layout_weights(TINY)
    with pytest.raises(WeightsError, match="module.visual"):
        convert_openai_clip_text_state_dict({**sd, "module.visual.x": torch.zeros(1)})
    del sd["ln_final.bias"]
    with pytest.raises(WeightsError, match="ln_final.bias"):
        convert_openai_clip_text_state_dict(sd)
    with pytest.raises(WeightsError, match="resblocks"):
        convert_audioclip_text_state_dict(
            {k: v for k, v in official_layout_weights(TINY).items() if "resblocks" not in k}
        )


def test_strict_load_reports_mismatch() -> None:
    sd = convert_openai_clip_text_state_dict(official_layout_weights(TINY))
    wider = CLIPTextTransformer(CLIPTextConfig(embed_dim=32, vocab_size=512, width=128, layers=2))
    with pytest.raises(WeightsError, match="shape mismatches=.*token_embedding.weight.*looks like"):
        load_clip_text_state_dict(wider, sd)
    deeper = CLIPTextTransformer(CLIPTextConfig(embed_dim=32, vocab_size=512, width=64, layers=3))
    with pytest.raises(WeightsError, match=r"missing=\['transformer.resblocks.2"):
        load_clip_text_state_dict(deeper, sd)


class _ScriptedCLIPStub(nn.Module):
    """Holds official-layout tensors so torch.jit can write an archive like OpenAI's files."""

    def __init__(self, sd: dict[str, torch.Tensor]):
        super().__init__()
        for key, value in sd.items():
            module: nn.Module = self
            *path, leaf = key.split(".")
            for part in path:
                if not hasattr(module, part):
                    module.add_module(part, nn.Module())
                module = getattr(module, part)
            module.register_parameter(leaf, nn.Parameter(value, requires_grad=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_read_checkpoints_from_files(tmp_path: Path) -> None:
    sd = official_layout_weights(TINY)
    jit_path = tmp_path / "RN50.pt"
    torch.jit.script(_ScriptedCLIPStub(sd)).save(str(jit_path))
    read = read_openai_clip_checkpoint(jit_path)
    assert set(read) == set(sd)
    key = "transformer.resblocks.1.mlp.c_fc.bias"
    assert torch.equal(read[key], sd[key])
    plain = tmp_path / "AudioCLIP-Full-Training.pt"
    torch.save(sd, plain)
    assert torch.equal(read_audioclip_checkpoint(plain)["text_projection"], sd["text_projection"])
    assert set(read_openai_clip_checkpoint(plain)) == set(sd)  # plain state dict fallback
    with pytest.raises(WeightsError, match="no such"):
        read_audioclip_checkpoint(tmp_path / "absent.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="junk.pt"):
        read_openai_clip_checkpoint(junk)
