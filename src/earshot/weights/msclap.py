"""MS-CLAP (microsoft/CLAP; weights on huggingface.co/microsoft/msclap, also Zenodo 8378278)."""

from __future__ import annotations

from earshot.weights.entry import (AudioPreprocessing, Checksum, RetrieverSpec, TextPreprocessing,
                                   Tower, WeightsEntry, register_weights)

_HUB = "https://huggingface.co/microsoft/msclap/resolve/main/"
_SOURCE = "MS-CLAP (Elizalde et al., ICASSP 2023), github.com/microsoft/CLAP, huggingface.co/microsoft/msclap"
_LICENCE = "MS-PL (huggingface.co/microsoft/msclap model card)"
# msclap/configs/config_2022.yml + models/audio.py (Cnn14 reads window_size for its STFT).
MSCLAP_2022_AUDIO = AudioPreprocessing(sample_rate=44100, frontend="logmel", n_fft=1024,
                                       win_length=1024, hop_length=320, window="hann", n_mels=64,
                                       fmin=50.0, fmax=14000.0)
MSCLAP_2022_TEXT = TextPreprocessing(tokenizer="bert_base_uncased_wordpiece", context_length=100)
PROMPT = "this is the sound of {}"  # microsoft/CLAP examples/zero_shot_classification.py

register_weights(WeightsEntry(
    name="msclap_2022", file_name="CLAP_weights_2022.pth", urls=(_HUB + "CLAP_weights_2022.pth",),
    checksum=Checksum("sha256", "5b917c47fec10547b65cf1d9096e194896fa1c2d6180536c8524289721a4c5b8",
                      "Git LFS pointer in huggingface.co/microsoft/msclap commit "
                      "23e65db4d2fe75695f0580d027f5c2b103756dc6 ('Upload CLAP_weights_2022.pth')"),
    size_bytes=2333972488,
    towers=(Tower("audio", "msclap_cnn14", "msclap", 2048), Tower("text", "msclap_bert", "msclap", 768)),
    file_format="torch_pickle", source=_SOURCE, licence=_LICENCE, audio=MSCLAP_2022_AUDIO,
    text=MSCLAP_2022_TEXT,
    retriever=RetrieverSpec(
        config={"audio": {"name": "msclap_cnn14"}, "text": {"name": "msclap_bert"},
                "embed_dim": 1024, "audio_head": {"kind": "residual", "dropout": 0.5},
                "text_head": {"kind": "residual", "dropout": 0.5}},
        prompt=PROMPT)))

# MS-CLAP 2023: HTSAT + GPT-2. The audio front end is the one msclap/models/config.py gives
# HTSATWrapper (filters for 32 kHz, 50-14000 Hz) applied to 44.1 kHz audio in 7 s clips.
_GPT2_TOKENIZER = "gpt2_tokenizer"
register_weights(WeightsEntry(
    name="msclap_2023", file_name="CLAP_weights_2023.pth", urls=(_HUB + "CLAP_weights_2023.pth",),
    checksum=None, size_bytes=None,
    towers=(Tower("audio", "clap_htsat", "msclap", 768), Tower("text", "msclap_gpt2", "msclap", 768)),
    file_format="torch_pickle", source=_SOURCE + "; digest: none published/found",
    licence=_LICENCE,
    audio=AudioPreprocessing(sample_rate=44100, frontend="clap_logmel", n_fft=1024, win_length=1024,
                             hop_length=320, window="hann", n_mels=64, fmin=50.0, fmax=14000.0),
    text=TextPreprocessing(tokenizer="gpt2_bpe", context_length=77),
    retriever=RetrieverSpec(
        config={"audio": {"name": "clap_htsat", "options": {
                    "projection": False, "config": {},  # HTSAT-tiny: ClapAudioConfig defaults
                    "frontend": {"sample_rate": 44100, "n_fft": 1024, "hop_length": 320,
                                 "n_mels": 64, "fmin": 50.0, "fmax": 14000.0,
                                 "mel_sample_rate": 32000, "max_length_s": 7.0,
                                 "mel_scale": "slaney", "padding": "repeat", "fusion": False,
                                 "window_hop_s": 3.5}}},
                "text": {"name": "msclap_gpt2", "options": {"tokenizer": _GPT2_TOKENIZER}},
                "embed_dim": 1024, "audio_head": {"kind": "residual", "dropout": 0.5},
                "text_head": {"kind": "residual", "dropout": 0.5}},
        prompt=PROMPT, companions=(_GPT2_TOKENIZER,))))

# GPT-2's byte-level BPE (openai-community/gpt2). tokenizer.json is a plain git file, not LFS:
# the hub gives only a git blob id, no SHA-256.
register_weights(WeightsEntry(
    name=_GPT2_TOKENIZER, file_name="openai-community--gpt2--tokenizer.json",
    urls=("https://huggingface.co/openai-community/gpt2/resolve/main/tokenizer.json",),
    checksum=None, size_bytes=None, towers=(), file_format="json",
    source="GPT-2 tokenizer, huggingface.co/openai-community/gpt2; digest: none published/found "
           "(not an LFS file)", licence="MIT (openai-community/gpt2 model card)",
    text=TextPreprocessing(tokenizer="gpt2_bpe", context_length=77)))
