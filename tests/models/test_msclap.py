"""MS-CLAP 2022: a state dict in MS-CLAP's key names (CNN14 + BERT + two Projections, as
microsoft/CLAP's msclap/models/clap.py names them), generated for a tiny BERT and a small shared
space, converts, loads strictly, and embeds as MS-CLAP's forward pass computes it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from earshot.audio.frontend import torchlibrosa_buffers
from earshot.errors import WeightsError
from earshot.models.biencoder import create_model
from earshot.models.audio.msclap import MSCLAP_2022_FRONTEND, convert_msclap_state_dict

# The same weights reached by another route (a converter, a saved file, a tower's `weights:`):
# one machine gives the same bits, but a BLAS may block a product differently with buffer
# alignment, so outputs are compared to 1e-6 (fp32 rounding of these tiny towers' ~1e-7 x depth);
# a wrong, missing or transposed weight moves them by 1e-2 or more.
SAME_WEIGHTS = dict(atol=1e-6, rtol=0)

BERT = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
        "intermediate_size": 32, "max_position_embeddings": 128}
CFG = {"audio": {"name": "msclap_cnn14"}, "text": {"name": "msclap_bert", "options": {"config": BERT}},
       "embed_dim": 8, "audio_head": {"kind": "residual", "dropout": 0.5},
       "text_head": {"kind": "residual", "dropout": 0.5}}
TEXTS = ["this is the sound of rain", "a dog barks twice in a quiet street"]


def _msclap_state_dict() -> dict[str, torch.Tensor]:
    """Random weights in MS-CLAP's names, with the tensors its checkpoints carry."""
    torch.manual_seed(0)
    model = create_model(CFG)
    g = torch.Generator().manual_seed(2)
    out = {}
    for k, v in model.state_dict().items():
        v = v.clone()
        if k.endswith("running_mean"):
            v = torch.randn(v.shape, generator=g) * 0.1
        elif k.endswith("running_var"):
            v = torch.rand(v.shape, generator=g) + 0.5
        for ours, theirs in (("audio_encoder.", "audio_encoder.base."),
                             ("audio_head.proj.", "audio_encoder.projection."),
                             ("text_encoder.hf.", "caption_encoder.base."),
                             ("text_head.proj.", "caption_encoder.projection.")):
            if k.startswith(ours):
                out[theirs + k[len(ours):]] = v
                break
        else:
            assert k == "log_logit_scale"
            out["logit_scale"] = torch.tensor(3.0)
    out.update({"audio_encoder.base." + k: v for k, v in torchlibrosa_buffers(MSCLAP_2022_FRONTEND).items()})
    out["caption_encoder.base.embeddings.position_ids"] = torch.arange(128)[None]
    return out


def _projection(sd, prefix, x):
    # MS-CLAP's Projection.forward, written out: LayerNorm(e1 + W2 gelu(e1)), e1 = W1 x.
    e1 = x @ sd[prefix + "linear1.weight"].T
    e = e1 + F.gelu(e1) @ sd[prefix + "linear2.weight"].T
    return F.layer_norm(e, (e.shape[-1],), sd[prefix + "layer_norm.weight"], sd[prefix + "layer_norm.bias"])


@pytest.mark.slow
def test_msclap_state_dict_converts_loads_strictly_and_embeds_like_msclap(tmp_path):
    from transformers import AutoConfig, AutoModel

    from earshot.models.audio.panns import Cnn14, convert_panns_state_dict

    sd = _msclap_state_dict()
    model = create_model(CFG, load_weights=False).eval()
    model.load_state_dict(convert_msclap_state_dict(sd), strict=True)
    assert model.logit_scale().item() == pytest.approx(np.exp(3.0))

    # Text: BERT's CLS token (MS-CLAP pads to text_len=100; padding is masked) -> Projection.
    bert = AutoModel.from_config(AutoConfig.for_model("bert", **BERT)).eval()
    bert.load_state_dict({k[len("caption_encoder.base."):]: v for k, v in sd.items()
                          if k.startswith("caption_encoder.base.") and not k.endswith("position_ids")})
    tok = model.text_encoder.tokenizer
    batch = tok(TEXTS, padding="max_length", max_length=100, truncation=True, return_tensors="pt")
    with torch.no_grad():
        cls = bert(**batch).last_hidden_state[:, 0]
        want = F.normalize(_projection(sd, "caption_encoder.projection.", cls), dim=-1)
    torch.testing.assert_close(model.embed_text(TEXTS), want, atol=1e-5, rtol=0)

    # Audio: a 2 s clip repeated (ceil) and cut to 5 s at 44.1 kHz -> CNN14 fc1 -> Projection.
    cnn = Cnn14(frontend=MSCLAP_2022_FRONTEND, spec_augment=False).eval()
    cnn.load_state_dict(convert_panns_state_dict(
        {k[len("audio_encoder.base."):]: v for k, v in sd.items() if k.startswith("audio_encoder.base.")},
        MSCLAP_2022_FRONTEND))
    clip = (0.1 * torch.randn(2 * 44100, generator=torch.Generator().manual_seed(5)))
    five = clip.repeat(3)[: 5 * 44100][None]
    with torch.no_grad():
        want = F.normalize(_projection(sd, "audio_encoder.projection.", cnn(five)), dim=-1)
    torch.testing.assert_close(model.embed_audio([clip.numpy()]), want, atol=1e-5, rtol=0)

    with pytest.raises(WeightsError, match="unexpected key"):
        convert_msclap_state_dict({**sd, "caption_encoder.other.weight": torch.zeros(1)})
    bad = dict(sd)
    bad["audio_encoder.base.logmel_extractor.melW"] = bad["audio_encoder.base.logmel_extractor.melW"] * 2
    with pytest.raises(WeightsError, match="front-end tensor"):
        convert_msclap_state_dict(bad)

    # The registry path: a file laid out as CLAP_weights_2022.pth ({"model": ...}) opens by entry.
    from earshot.loading.openers import retriever_from_entry
    from earshot.weights import get_weights
    from earshot.weights.entry import RetrieverSpec

    torch.save({"model": sd}, tmp_path / "CLAP_weights_2022.pth")
    real = get_weights("msclap_2022")
    entry = type(real)(**{**real.__dict__, "retriever": RetrieverSpec(config=CFG, prompt=real.retriever.prompt)})
    again = retriever_from_entry(entry, tmp_path / "CLAP_weights_2022.pth")
    torch.testing.assert_close(again.embed_text(TEXTS), model.embed_text(TEXTS), **SAME_WEIGHTS)
    # ... and as each tower's `weights:` in a training config.
    towers = {**CFG, "audio": {**CFG["audio"], "weights": str(tmp_path / "CLAP_weights_2022.pth"),
                               "weights_format": "msclap"},
              "text": {**CFG["text"], "weights": str(tmp_path / "CLAP_weights_2022.pth"),
                       "weights_format": "msclap"}}
    by_tower = create_model(towers).eval()
    torch.testing.assert_close(by_tower.text_encoder(TEXTS), model.text_encoder(TEXTS), **SAME_WEIGHTS)
    wave = torch.from_numpy(clip.numpy())[None]
    with torch.no_grad():
        torch.testing.assert_close(by_tower.audio_encoder(wave), model.audio_encoder(wave), **SAME_WEIGHTS)


def test_msclap_2023_layout_converts_and_embeds_like_msclap(tmp_path):
    """HTSAT in LAION's names under audio_encoder.base.htsat, GPT-2 under caption_encoder.base,
    mel filters built for a lower rate than the audio's (MS-CLAP 2023 builds them for 32 kHz)."""
    import math

    import clap_tiny
    from test_clap import _to_laion
    from transformers import ClapAudioConfig, ClapAudioModel, GPT2Config, GPT2Model

    from earshot.audio.frontend import FrontendConfig
    from earshot.models.audio.clap import ClapFrontendConfig

    SR = clap_tiny.TINY_FRONTEND["sample_rate"]
    tok = clap_tiny.gpt2_tokenizer(tmp_path / "gpt2")
    fe = {**clap_tiny.TINY_FRONTEND, "fmax": 5000.0, "mel_sample_rate": 12000, "padding": "repeat",
          "mel_scale": "slaney", "fusion": False}
    gpt2 = {"n_embd": 16, "n_layer": 1, "n_head": 2, "vocab_size": len(tok), "n_positions": 80,
            "bos_token_id": 0, "eos_token_id": 0}
    cfg = {"audio": {"name": "clap_htsat", "options": {"projection": False, "config": clap_tiny.audio_config(),
                                                       "frontend": fe}},
           "text": {"name": "msclap_gpt2", "options": {"config": gpt2, "tokenizer": str(tmp_path / "gpt2")}},
           "embed_dim": 8, "audio_head": {"kind": "residual", "dropout": 0.5},
           "text_head": {"kind": "residual", "dropout": 0.5}}
    torch.manual_seed(0)
    src = create_model(cfg).eval()
    own = src.state_dict()
    hf_audio = {"audio_model." + k[len("audio_encoder.model."):]: v for k, v in own.items()
                if k.startswith("audio_encoder.model.")}
    laion = _to_laion(hf_audio, ClapFrontendConfig(**fe))
    sd = {"audio_encoder.base.htsat." + k[len("module.audio_branch."):]: v for k, v in laion.items()
          if k.startswith("module.audio_branch.")}
    sd.update({"caption_encoder.base." + k[len("text_encoder.hf."):]: v for k, v in own.items()
               if k.startswith("text_encoder.hf.")})
    sd["caption_encoder.base.h.0.attn.bias"] = torch.ones(1, 1, 80, 80, dtype=torch.bool).tril()
    sd["caption_encoder.base.h.0.attn.masked_bias"] = torch.tensor(-1e4)
    for side, theirs in (("audio", "audio_encoder"), ("text", "caption_encoder")):
        sd.update({f"{theirs}.projection.{k[len(side + '_head.proj.'):]}": v for k, v in own.items()
                   if k.startswith(side + "_head.proj.")})
    sd["logit_scale"] = torch.tensor(2.0)

    model = create_model(cfg, load_weights=False).eval()
    model.load_state_dict(convert_msclap_state_dict(sd, ClapFrontendConfig(**fe)), strict=True)

    # Audio reference: repeat to 2 s, torchlibrosa-style log-mel with filters for 12 kHz,
    # transformers' ClapAudioModel latent output, MS-CLAP's Projection.
    htsat = ClapAudioModel(ClapAudioConfig(**clap_tiny.audio_config())).eval()
    htsat.load_state_dict({k[len("audio_model."):]: v for k, v in hf_audio.items()})
    clip = 0.1 * torch.randn(int(0.7 * SR), generator=torch.Generator().manual_seed(4))
    wave = clip.repeat(3)[: 2 * SR][None]
    melw = torchlibrosa_buffers(FrontendConfig(sample_rate=12000, n_fft=512, win_length=512, hop_length=160,
                                               n_mels=16, fmin=50.0, fmax=5000.0))["logmel_extractor.melW"]
    spec = torch.stft(wave, 512, 160, window=torch.hann_window(512), center=True, pad_mode="reflect",
                      return_complex=True).abs() ** 2  # (1, F, frames)
    mel = 10 * torch.log10((spec.transpose(1, 2) @ melw).clamp(min=1e-10))  # (1, frames, M)
    with torch.no_grad():
        latent = htsat(input_features=mel[:, None]).pooler_output
        want = F.normalize(_projection(sd, "audio_encoder.projection.", latent), dim=-1)
    torch.testing.assert_close(model.embed_audio([clip.numpy()]), want, atol=1e-5, rtol=0)

    # Text reference: MS-CLAP pads to 77 with "!" and reads position count(ids != pad) - 1.
    ref = GPT2Model(GPT2Config(**gpt2)).eval()
    buffers = ("caption_encoder.base.h.0.attn.bias", "caption_encoder.base.h.0.attn.masked_bias")
    ref.load_state_dict({k[len("caption_encoder.base."):]: v for k, v in sd.items()
                         if k.startswith("caption_encoder.base.") and k not in buffers})
    tok.add_special_tokens({"pad_token": "!"})
    batch = tok([t + " <|endoftext|>" for t in TEXTS], padding="max_length", max_length=77,
                return_tensors="pt")
    with torch.no_grad():
        hidden = ref(**batch).last_hidden_state
        last = (batch["input_ids"] != tok.pad_token_id).sum(-1) - 1
        want = F.normalize(_projection(sd, "caption_encoder.projection.", hidden[torch.arange(2), last]), dim=-1)
    torch.testing.assert_close(model.embed_text(TEXTS), want, atol=1e-5, rtol=0)
    assert model.logit_scale().item() == pytest.approx(math.exp(2.0))

    bad = dict(sd)
    bad["caption_encoder.base.h.0.attn.bias"] = torch.ones(1, 1, 80, 80, dtype=torch.bool)
    with pytest.raises(WeightsError, match="causal mask"):
        convert_msclap_state_dict(bad, ClapFrontendConfig(**fe))
    wrong = ClapFrontendConfig(**{**fe, "mel_sample_rate": None, "fmax": 5000.0})
    with pytest.raises(WeightsError, match="does not match the front end"):
        convert_msclap_state_dict(sd, wrong)  # filters for 16 kHz: not what the checkpoint has
