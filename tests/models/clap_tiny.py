"""Tiny LAION-CLAP pieces for tests: a RoBERTa-style byte-level BPE tokenizer trained on a few
captions, small HTSAT/RoBERTa configs, and a matching 16 kHz front end (2 s window)."""

from __future__ import annotations

from pathlib import Path

TINY_FRONTEND = {"sample_rate": 16000, "n_fft": 512, "hop_length": 160, "n_mels": 16,
                 "fmin": 50.0, "fmax": 8000.0, "max_length_s": 2.0}
CAPTIONS = ["a dog barks loudly", "rain falls on a tin roof", "birds sing in the morning",
            "a car passes by", "people talk in a busy room"]


def tiny_tokenizer(folder: Path):
    """Train and save a byte-level BPE tokenizer with RoBERTa's special tokens; returns it."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(CAPTIONS * 4, vocab_size=320, min_frequency=1,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.save_model(str(folder))
    tok = RobertaTokenizerFast(vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt"))
    tok.save_pretrained(str(folder))
    return tok


def audio_config(fusion: bool = False) -> dict:
    return {"spec_size": 64, "num_mel_bins": 16, "window_size": 4, "patch_embeds_hidden_size": 8,
            "depths": [2, 1], "num_attention_heads": [1, 2], "hidden_size": 16,
            "projection_dim": 8, "enable_fusion": fusion,
            "fusion_type": "aff_2d" if fusion else None}


def text_config(vocab_size: int) -> dict:
    return {"vocab_size": vocab_size, "hidden_size": 16, "num_hidden_layers": 1,
            "num_attention_heads": 2, "intermediate_size": 32, "max_position_embeddings": 80,
            "projection_dim": 8}


def frontend(fusion: bool = False) -> dict:
    return {**TINY_FRONTEND, "mel_scale": "htk" if fusion else "slaney", "fusion": fusion}


def gpt2_tokenizer(folder: Path):
    """Train and save a byte-level BPE tokenizer with GPT-2's end-of-text token; returns it."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2TokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(["this is the sound of rain", "a dog barks twice!"] * 4, vocab_size=300,
                            min_frequency=1, special_tokens=["<|endoftext|>"])
    bpe.save_model(str(folder))
    return GPT2TokenizerFast(vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt"))
