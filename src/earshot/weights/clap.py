"""LAION-CLAP: the original ``.pt`` checkpoints (huggingface.co/lukewys/laion_clap, the files
LAION-AI/CLAP's README links) and the transformers-layout repositories (huggingface.co/laion/*).

Digests are the Git LFS ``oid sha256`` the hub publishes for each file (by the LFS
specification, the SHA-256 of the file's content); each entry's ``checksum.source`` says on
which page it was read. Where no digest could be found, the entry has ``checksum=None`` and
says so; ``earshot weights download`` then refuses it unless ``--allow-unverified``.

Every entry is a whole retriever (``RetrieverSpec``): ``earshot.load_model(name)`` and every
command that takes a model accept the name. The architecture is written here (the hub's
``config.json`` values for each repository, LAION's ``HTSAT-tiny``/``HTSAT-base`` settings for
the ``.pt`` files), so only the weights and the tokenizer are downloaded.
"""

from __future__ import annotations

from dataclasses import replace

from typing import Any

from earshot.weights.entry import (AudioPreprocessing, Checksum, RetrieverSpec, TextPreprocessing,
                                   Tower, WeightsEntry, register_weights)

_HUB = "https://huggingface.co/"
_LICENCE_PT = "CC0-1.0 (huggingface.co/lukewys/laion_clap model card)"
_LICENCE_HF = "Apache-2.0 (huggingface.co/laion model cards)"
_SOURCE = "LAION-CLAP (Wu et al., ICASSP 2023), github.com/LAION-AI/CLAP; "
_NONE_FOUND = "none published/found"

# 48 kHz, 1024-point Hann STFT, hop 480, 64 mel bands 50-14000 Hz, 10 s window: LAION-AI/CLAP's
# training defaults and the hub's preprocessor_config.json (ClapFeatureExtractor).
CLAP_AUDIO = AudioPreprocessing(sample_rate=48000, frontend="clap_logmel", n_fft=1024,
                                win_length=1024, hop_length=480, window="hann", n_mels=64,
                                fmin=50.0, fmax=14000.0)
CLAP_TEXT = TextPreprocessing(tokenizer="roberta_bpe", context_length=77)
TOKENIZER = "laion_clap_tokenizer"
PROMPT = "This is a sound of {}."  # LAION-AI/CLAP's zero-shot ESC-50 template

# HTSAT sizes (LAION-AI/CLAP model_configs HTSAT-tiny.json / HTSAT-base.json; the hub's
# config.json of laion/clap-htsat-* and laion/larger_clap_*): everything else is transformers'
# ClapAudioConfig default.
_HTSAT_TINY: dict[str, Any] = {}
_HTSAT_BASE: dict[str, Any] = {"patch_embeds_hidden_size": 128, "depths": [2, 2, 12, 2],
                               "hidden_size": 1024}
_FUSION = {"enable_fusion": True, "fusion_type": "aff_2d"}


def _frontend(fusion: bool) -> dict[str, Any]:
    # Unfused: librosa slaney filters (torchlibrosa inside LAION's HTSAT); fused: torchaudio's
    # HTK filters of LAION's fusion pipeline (transformers' ClapFeatureExtractor does the same).
    return {"sample_rate": 48000, "n_fft": 1024, "hop_length": 480, "n_mels": 64, "fmin": 50.0,
            "fmax": 14000.0, "max_length_s": 10.0, "mel_scale": "htk" if fusion else "slaney",
            "padding": "repeatpad", "fusion": fusion}


# Reported by users (issue 18): this file's text tower returns nearly the same vector for every
# caption; earshot.health warns when it is opened, and `earshot weights list` says so.
MUSIC_CAVEAT = ("text tower reported degenerate: mean cosine 0.9993 between unrelated captions, "
                "so text queries rank almost arbitrarily")

# Text LayerNorm eps, decided per source. LAION's trainer builds its text branch from
# roberta-base, whose LayerNorms use 1e-5, so its .pt files get 1e-5 (ClapTextConfig's default,
# 1e-12, moved a tiny tower's text embedding by 4.6e-5 in the measurement). The hub's
# transformers files come with a config.json that says 1e-12 (what transformers' converter
# writes and what transformers users get), so those entries keep it, as do HF folders, which
# carry their own config.
TEXT_LAYER_NORM_EPS = {"laion_clap": 1e-5, "clap_hf": 1e-12}


def clap_retriever(audio: dict[str, Any], fusion: bool, fmt: str) -> RetrieverSpec:
    """The bi-encoder a LAION-CLAP file holds: both towers end in CLAP's projections (512-d)."""
    audio_config = {**audio, **(_FUSION if fusion else {}), "projection_dim": 512}
    text_config = {"projection_dim": 512, "layer_norm_eps": TEXT_LAYER_NORM_EPS[fmt]}
    return RetrieverSpec(
        config={"audio": {"name": "clap_htsat", "weights_format": fmt,
                          "options": {"config": audio_config, "frontend": _frontend(fusion)}},
                "text": {"name": "clap_roberta", "weights_format": fmt,
                         "options": {"config": text_config, "tokenizer": TOKENIZER}},
                "embed_dim": 512, "audio_head": {"kind": "identity"},
                "text_head": {"kind": "identity"}},
        prompt=PROMPT, companions=(TOKENIZER,))


def _entry(name: str, file_name: str, url: str, sha256: str | None, digest_source: str,
           size: int | None, audio: dict[str, Any], fusion: bool, fmt: str, source: str,
           licence: str) -> WeightsEntry:
    return WeightsEntry(
        name=name, file_name=file_name, urls=(url,),
        checksum=Checksum("sha256", sha256, digest_source) if sha256 else None,
        size_bytes=size,
        towers=(Tower("audio", "clap_htsat", fmt, 512), Tower("text", "clap_roberta", fmt, 512)),
        file_format="torch_pickle", source=source + ("" if sha256 else f"; digest: {_NONE_FOUND}"),
        licence=licence, audio=CLAP_AUDIO, text=CLAP_TEXT,
        retriever=clap_retriever(audio, fusion, fmt))


# --- LAION's original checkpoints (LAION-AI/CLAP README "Pretrained Models") -------------------
_PT = _HUB + "lukewys/laion_clap/resolve/main/"
_PT_SOURCE = _SOURCE + "checkpoint huggingface.co/lukewys/laion_clap"
_PT_MUSIC_COMMIT = ("Git LFS pointer in huggingface.co/lukewys/laion_clap commit "
                    "4226474e38defca6fc9272a7848bb7b0355ccd7a ('Upload 3 files')")


def _pt(name: str, file_name: str, sha256: str | None, digest_source: str, size: int | None,
        audio: dict[str, Any], fusion: bool) -> WeightsEntry:
    return _entry(name, file_name, _PT + file_name, sha256, digest_source, size, audio, fusion,
                  "laion_clap", f"{_PT_SOURCE}/{file_name}", _LICENCE_PT)


register_weights(_pt("laion_clap_pt_630k", "630k-best.pt", None, "", None, _HTSAT_TINY, False))
register_weights(_pt("laion_clap_pt_630k_audioset", "630k-audioset-best.pt",
                     "8053c9775516af2f4902e1e8281e356cc1bf7a85e8b761908170767b77c3f037",
                     "Git LFS details on huggingface.co/lukewys/laion_clap/blob/main/"
                     "630k-audioset-best.pt", None, _HTSAT_TINY, False))
register_weights(_pt("laion_clap_pt_630k_fusion", "630k-fusion-best.pt", None, "", None,
                     _HTSAT_TINY, True))
register_weights(_pt("laion_clap_pt_630k_audioset_fusion", "630k-audioset-fusion-best.pt", None,
                     "", None, _HTSAT_TINY, True))
register_weights(_pt("laion_clap_pt_music_audioset", "music_audioset_epoch_15_esc_90.14.pt",
                     "fae3e9c087f2909c28a09dc31c8dfcdacbc42ba44c70e972b58c1bd1caf6dedd",
                     _PT_MUSIC_COMMIT, 2352471003, _HTSAT_BASE, False))
register_weights(_pt("laion_clap_pt_music_speech_audioset",
                     "music_speech_audioset_epoch_15_esc_89.98.pt",
                     "51c68f12f9d7ea25fdaaccf741ec7f81e93ee594455410f3bca4f47f88d8e006",
                     _PT_MUSIC_COMMIT, 2352471003, _HTSAT_BASE, False))


# --- transformers layout (huggingface.co/laion/*; weights file pytorch_model.bin) ---------------


def _hf(name: str, repo: str, revision: str, sha256: str | None, digest_source: str,
        size: int | None, audio: dict[str, Any], fusion: bool) -> WeightsEntry:
    # Stored under the repository's name: every repository calls its file pytorch_model.bin.
    return _entry(name, f"{repo.replace('/', '--')}--pytorch_model.bin",
                  f"{_HUB}{repo}/resolve/{revision}/pytorch_model.bin", sha256, digest_source,
                  size, audio, fusion, "clap_hf", f"{_SOURCE}transformers layout, {_HUB}{repo}",
                  _LICENCE_HF)


register_weights(_hf("laion_clap_htsat_unfused", "laion/clap-htsat-unfused",
                     "8fa0f1c6d0433df6e97c127f64b2a1d6c0dcda8a", None, "", None, _HTSAT_TINY,
                     False))
register_weights(_hf("laion_clap_htsat_fused", "laion/clap-htsat-fused", "main",
                     "1ed5d0215d887551ddd0a49ce7311b21429ebdf1e6a129d4e68f743357225253",
                     "Git LFS details on huggingface.co/laion/clap-htsat-fused/blob/refs%2Fpr%2F2/"
                     "pytorch_model.bin (file of commit 8744556 'Upload model', unchanged on main)",
                     None, _HTSAT_TINY, True))
register_weights(_hf("laion_clap_general", "laion/larger_clap_general",
                     "ada0c23a36c4e8582805bb38fec3905903f18b41",
                     "314eb00cce6ad68d25237b8446b659ccdb136ed4672c1bca470f142f72455026",
                     "Git LFS pointer of commit bd550275c14488b441e1079c506899b60c854672 "
                     "('Upload model', listed as bd55027 in laion/larger_clap_general's history)",
                     776444665, _HTSAT_BASE, False))
register_weights(replace(_hf("laion_clap_music", "laion/larger_clap_music", "main",
                     "5c289311f4a030d768af7ffbfdecd01b008aa64824211899a4e59f4f9d154fd1",
                     "Git LFS details on huggingface.co/laion/larger_clap_music/blob/refs%2Fpr%2F1/"
                     "pytorch_model.bin (commit 2a3e0ed 'Upload model')", None, _HTSAT_BASE,
                     False), caveat=MUSIC_CAVEAT))
register_weights(_hf("laion_clap_music_speech", "laion/larger_clap_music_and_speech", "main", None,
                     "", None, _HTSAT_BASE, False))

# RoBERTa's byte-level BPE as the laion/* repositories ship it (roberta-base's vocabulary).
# tokenizer.json is a plain git file, not LFS: the hub publishes only a git blob id, no SHA-256.
register_weights(WeightsEntry(
    name=TOKENIZER, file_name="laion--clap-htsat-unfused--tokenizer.json",
    urls=(f"{_HUB}laion/clap-htsat-unfused/resolve/8fa0f1c6d0433df6e97c127f64b2a1d6c0dcda8a/"
          "tokenizer.json",),
    checksum=None, size_bytes=None, towers=(), file_format="json",
    source=f"{_SOURCE}tokenizer of {_HUB}laion/clap-htsat-unfused; digest: {_NONE_FOUND} "
           f"(not an LFS file)", licence=_LICENCE_HF, text=CLAP_TEXT))
