"""PaSST AudioSet checkpoints (kkoutini/PaSST GitHub releases)."""

from __future__ import annotations

from typing import Any

from earshot.weights.entry import (AudioPreprocessing, RetrieverSpec, Tower, WeightsEntry,
                                   register_weights)

# The file the DCASE 2025 Task 6 baseline starts from: `get_model_passt("passt_s_p16_s16_128_ap468",
# input_tdim=1000, fstride=16, tstride=16)` (CPJKU dcase2025_task6_baseline d25_t6/passt.py), whose
# URL is hear21passt 0.0.26's `default_cfgs["passt_s_p16_s16_128_ap468"]` (models/passt.py). GitHub
# release assets of this age carry no published digest and hear21passt downloads with
# check_hash=False, so none is recorded (a download needs --allow-unverified). Licence: the
# repositories' Apache-2.0; no separate licence is stated for the weights.
_PASST_SOURCE = ("PaSST (Koutini et al., Interspeech 2022), github.com/kkoutini/PaSST releases; "
                 "URL as in hear21passt 0.0.26 models/passt.py default_cfgs")
_PASST_LICENCE = "Apache-2.0 (kkoutini/PaSST and hear21passt); no separate weights licence stated"
# hear21passt's AugmentMelSTFT with the baseline's settings: pre-emphasis 0.97, Kaldi mel banks
# 0-15000 Hz, log(x + 1e-5), (x + 4.5) / 5.
PASST_AUDIO = AudioPreprocessing(sample_rate=32000, frontend="passt_kaldi_mel", n_fft=1024, win_length=800,
                                 hop_length=320, window="hann_symmetric", n_mels=128, fmin=0.0, fmax=15000.0)

register_weights(WeightsEntry(
    name="passt_s_p16_s16_128_ap468", file_name="passt-s-f128-p16-s16-ap.468.pt",
    urls=("https://github.com/kkoutini/PaSST/releases/download/v0.0.2-audioset/passt-s-f128-p16-s16-ap.468.pt",),
    checksum=None, size_bytes=None, towers=(Tower("audio", "passt", "passt", 768),),
    file_format="torch_pickle", source=_PASST_SOURCE, licence=_PASST_LICENCE, audio=PASST_AUDIO))

# The baseline's bi-encoder (d25_t6/retrieval_module.py): PaSST-S, RoBERTa from its published
# architecture (roberta-large, or roberta-base with --roberta_base), linear projections to 1024,
# normalised, temperature 0.05 fixed. Plain data, so the registry stays free of torch.
_ROBERTA_COMMON = {"model_type": "roberta", "vocab_size": 50265, "max_position_embeddings": 514,
                   "type_vocab_size": 1, "layer_norm_eps": 1e-5, "pad_token_id": 1, "bos_token_id": 0,
                   "eos_token_id": 2, "hidden_act": "gelu"}
ROBERTA = {
    "large": {**_ROBERTA_COMMON, "hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
              "intermediate_size": 4096},
    "base": {**_ROBERTA_COMMON, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
             "intermediate_size": 3072},
}


def baseline_model_config(roberta: dict[str, Any] | str = "large", tokenizer: str = "roberta-large",
                          passt: dict[str, Any] | None = None) -> dict[str, Any]:
    """The earshot ``BiEncoderConfig`` (as a dict) of the baseline's model: ``roberta`` is
    ``"large"``, ``"base"`` or an architecture dict (tests use a tiny one)."""
    arch = ROBERTA[roberta] if isinstance(roberta, str) else dict(roberta)
    return {
        "audio": {"name": "passt", "options": {"config": dict(passt or {})}},
        "text": {"name": "hf_transformer",
                 "options": {"config": arch, "tokenizer": tokenizer, "pooling": "cls", "max_length": 32,
                             "preprocess": "lower_strip_punct", "dropout": 0.2, "pooler": False}},
        "embed_dim": 1024, "audio_head": {"kind": "linear"}, "text_head": {"kind": "linear"},
        "normalize": True, "temperature": 0.05, "learn_temperature": False,
    }


# The DCASE 2025 Task 6 baseline's model trained on Clotho + AudioCaps + WavCaps (a Lightning
# checkpoint of PaSST-S + RoBERTa-large + projections). Its README links a cloud.cp.jku.at
# (Nextcloud) share; "/download" is Nextcloud's direct-download form of a single-file share (the
# form salsa's scripts/download_checkpoint.sh uses on the same server). A share link is not a
# versioned release, no file name or digest is published, and the file holds a whole bi-encoder,
# not one tower: `earshot evaluate dcase2025_baseline` opens it by name once it is in the cache
# (`earshot weights download dcase2025_baseline --allow-unverified`), and
# earshot.loading.dcase2025.import_dcase2025_baseline turns a copy into an earshot checkpoint.
register_weights(WeightsEntry(
    name="dcase2025_baseline", file_name="dcase2025_task6_baseline.ckpt",
    urls=("https://cloud.cp.jku.at/index.php/s/6ZTQ3mcwk9AAS4i/download",),
    checksum=None, size_bytes=None, towers=(), file_format="torch_pickle",
    source=("DCASE 2025 Task 6 baseline (CPJKU dcase2025_task6_baseline README, commit c78422f): "
            "model trained on Clotho, AudioCaps, WavCaps; file name ours (none published)"),
    licence="not stated for the checkpoint (repository has no licence file)", audio=PASST_AUDIO,
    # Opened by name: RoBERTa-large's byte-level BPE is roberta-base's vocabulary and merges, which
    # the LAION-CLAP tokenizer entry carries (RoBERTa's tokenizer.json, 50,265 ids).
    retriever=RetrieverSpec(config=baseline_model_config("large", tokenizer="laion_clap_tokenizer"),
                            companions=("laion_clap_tokenizer",), state_format="dcase2025_baseline")))
