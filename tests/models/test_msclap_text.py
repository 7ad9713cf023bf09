"""MS-CLAP's text towers read long captions as the original does (issue 18, §4).

microsoft/CLAP's ``CLAPWrapper.preprocess_text`` calls ``encode_plus(..., max_length=text_len,
padding="max_length")`` without ``truncation``: captions are padded to 100 (BERT) / 77 (GPT-2)
tokens but never cut, so a longer one is read whole. earshot cut them at 100 / 77, which for
GPT-2 also dropped the ``<|endoftext|>`` that is pooled. The references below are that code path,
transcribed, on the same random weights.
"""

from __future__ import annotations

import pytest
import torch

from earshot.errors import ConfigError
from earshot.models.base import create_text_encoder

# Same weights, same tokens; the only difference allowed is the padding width of the batch
# (masked for BERT, after the pooled position for causal GPT-2): fp32 rounding, ~1e-7 per layer.
ATOL = 1e-5


def test_bert_reads_a_caption_longer_than_text_len_whole():
    bert = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
            "intermediate_size": 32, "max_position_embeddings": 160}
    torch.manual_seed(0)
    tower = create_text_encoder("msclap_bert", config=bert).eval()
    tok = tower.tokenizer
    long = " ".join(f"then sound {i} comes {7 * i} times louder" for i in range(18))  # > 100 wordpieces
    short = "this is the sound of rain"
    assert len(tok(long)["input_ids"]) > 100
    with torch.no_grad():
        ours = tower([long, short])
        for i, text in enumerate((long, short)):
            batch = tok(text, add_special_tokens=True, max_length=100, padding="max_length",
                        return_tensors="pt")  # MS-CLAP: pads to 100, never truncates
            want = tower.hf(**batch).last_hidden_state[0, 0]
            torch.testing.assert_close(ours[i], want, atol=ATOL, rtol=0)
        cut = tok(long, max_length=100, truncation=True, return_tensors="pt")  # the old behaviour
        # a one-layer tower's CLS moves little with 20 more tokens (3e-4), still 30 x ATOL
        assert (tower.hf(**cut).last_hidden_state[0, 0] - ours[0]).abs().max() > 10 * ATOL
    with pytest.raises(ConfigError, match="position limit"):
        create_text_encoder("msclap_bert", config=bert, max_length=161)


def test_gpt2_keeps_the_pooled_end_token(tmp_path):
    import clap_tiny

    tok = clap_tiny.gpt2_tokenizer(tmp_path / "gpt2")
    gpt2 = {"n_embd": 16, "n_layer": 1, "n_head": 2, "vocab_size": len(tok), "n_positions": 200,
            "bos_token_id": 0, "eos_token_id": 0}
    torch.manual_seed(1)
    tower = create_text_encoder("msclap_gpt2", config=gpt2, tokenizer=str(tmp_path / "gpt2")).eval()
    tok.add_special_tokens({"pad_token": "!"})
    eot = tok.convert_tokens_to_ids("<|endoftext|>")

    def original(text: str, cut: int | None = None) -> torch.Tensor:
        # CLAPWrapper.preprocess_text + TextEncoder.forward (gpt branch), one caption
        batch = tok(text + " <|endoftext|>", add_special_tokens=True, max_length=77,  # encode_plus
                    padding="max_length", return_tensors="pt")  # (gone from transformers 5)
        ids, mask = batch["input_ids"], batch["attention_mask"]
        if cut is not None:  # what a model with n_positions = cut can read: the end token kept
            ids = torch.cat([ids[:, : cut - 1], ids[:, -1:]], dim=1)
            mask = mask[:, :cut]
        hidden = tower.hf(input_ids=ids, attention_mask=mask).last_hidden_state
        last = (ids != tok.pad_token_id).sum(-1) - 1
        return hidden[0, last[0]]

    long = " ".join(["this is the sound of rain", "a dog barks twice!"] * 6)  # > 77 tokens, < 200
    longer = " ".join(["this is the sound of rain", "a dog barks twice!"] * 20)  # > 200: cut there
    n = len(tok(long + " <|endoftext|>")["input_ids"])
    assert 77 < n < 200 and len(tok(longer)["input_ids"]) > 200
    with torch.no_grad():
        ours = tower([long, "a dog barks twice", longer])
        torch.testing.assert_close(ours[0], original(long), atol=ATOL, rtol=0)
        torch.testing.assert_close(ours[1], original("a dog barks twice"), atol=ATOL, rtol=0)
        torch.testing.assert_close(ours[2], original(longer, cut=200), atol=ATOL, rtol=0)
        # the old cut at 77 pooled a caption token instead of <|endoftext|>
        ids = tok(long + " <|endoftext|>", truncation=True, max_length=77, return_tensors="pt")["input_ids"]
        assert ids[0, -1].item() != eot
        old = tower.hf(input_ids=ids).last_hidden_state[0, -1]
        assert (old - ours[0]).abs().max() > 100 * ATOL
    with pytest.raises(ConfigError, match="n_positions"):
        create_text_encoder("msclap_gpt2", config=gpt2, tokenizer=str(tmp_path / "gpt2"), max_length=201)
