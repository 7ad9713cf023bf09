"""Nested transformers configs are strict: a misspelt key names its dotted path (issue 18, §3)."""

from __future__ import annotations

import pytest

from earshot.errors import ConfigError
from earshot.models.heads import HeadConfig, ProjectionHead
from earshot.models.hf_config import hf_config_fields, strict_hf_config


def test_known_keys_and_aliases_build_the_config():
    from transformers import GPT2Config

    cfg = strict_hf_config(GPT2Config, {"n_embd": 8, "n_layer": 1, "num_attention_heads": 2}, "x")
    assert (cfg.n_embd, cfg.n_layer, cfg.n_head) == (8, 1, 2)  # alias hidden_size -> n_embd too
    assert {"n_embd", "hidden_size", "vocab_size", "pad_token_id"} <= hf_config_fields(GPT2Config)


@pytest.mark.parametrize("name,options,path", [
    ("clap_roberta", {"config": {"hiden_size": 5}}, r"clap_roberta\.config\.hiden_size \(did you mean 'hidden_size'"),
    ("msclap_gpt2", {"config": {"n_embdd": 8}, "tokenizer": "gpt2_tokenizer"}, r"msclap_gpt2\.config\.n_embdd"),
    ("hf_transformer", {"config": {"model_type": "bert", "hiden_size": 5}, "tokenizer": "x"},
     r"hf_transformer\.config\.hiden_size"),
])
def test_a_misspelt_nested_key_is_a_config_error_naming_its_path(name, options, path):
    from earshot.models.base import create_text_encoder

    with pytest.raises(ConfigError, match=path):
        create_text_encoder(name, **options)


def test_a_misspelt_audio_config_key_is_refused():
    from earshot.models.base import create_audio_encoder

    with pytest.raises(ConfigError, match=r"clap_htsat\.config\.patch_sise"):
        create_audio_encoder("clap_htsat", config={"patch_sise": 4})


def test_unknown_model_type_names_the_field():
    from earshot.models.base import create_text_encoder

    with pytest.raises(ConfigError, match=r"hf_transformer\.config\.model_type: 'bertt'"):
        create_text_encoder("hf_transformer", config={"model_type": "bertt"}, tokenizer="x")


def test_heads_raise_config_errors():
    with pytest.raises(ConfigError, match="identity head.*12 != 8"):
        ProjectionHead(12, 8, HeadConfig(kind="identity"))
    with pytest.raises(ConfigError, match="head.kind"):
        ProjectionHead(8, 8, HeadConfig(kind="mpl"))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="head.dropout"):
        ProjectionHead(8, 8, HeadConfig(dropout=1.5))
    assert ProjectionHead(12, 8, HeadConfig(kind="mlp", hidden=4))  # a valid head still builds


def test_yaml_float_strings_and_bad_values():
    from transformers import ClapTextConfig

    assert strict_hf_config(ClapTextConfig, {"layer_norm_eps": "1e-5"}, "t").layer_norm_eps == 1e-5
    with pytest.raises(ConfigError, match=r"t\.layer_norm_eps: expected a number"):
        strict_hf_config(ClapTextConfig, {"layer_norm_eps": "small"}, "t")
    with pytest.raises(ConfigError, match=r"^t: "):
        strict_hf_config(ClapTextConfig, {"hidden_size": "wide"}, "t")
