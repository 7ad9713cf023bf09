"""AudioCLIP checkpoints and CLIP's BPE vocabulary (AudioCLIP release v0.1)."""

from __future__ import annotations

from earshot.weights.clip import CLIP_TEXT
from earshot.weights.entry import (AudioPreprocessing, Checksum, Tower, WeightsEntry,
                                   register_weights)

# AudioCLIP (Guzhov et al., 2021). URLs: the v0.1 release named in AndreyGuzhov/AudioCLIP's
# README. The release is attached to tag v0.1 = commit 611d974 ("create repo"), whose
# assets/*.pt and assets/*.gz are Git LFS pointers; a pointer's "oid sha256:..." is by the LFS
# specification the SHA-256 of the file's content, and "size" its byte count. Those are the
# values below. (Cross-check: the bpe vocabulary pointer's oid equals the SHA-256 of the same
# vocabulary shipped in the clip-anytorch package; tests/test_weights.py checks it.)
_AUDIOCLIP_RELEASE = "https://github.com/AndreyGuzhov/AudioCLIP/releases/download/v0.1/"
_AUDIOCLIP_SHA_SOURCE = "Git LFS pointer oid in AndreyGuzhov/AudioCLIP@611d974 (tag v0.1), assets/"
_AUDIOCLIP_SOURCE = ("AudioCLIP (Guzhov et al., 2021), github.com/AndreyGuzhov/AudioCLIP, "
                     "release v0.1")
_AUDIOCLIP_LICENCE = "MIT (AndreyGuzhov/AudioCLIP LICENSE.md)"
# model/audioclip.py defaults (n_fft 2048, hop 561, win 1654, blackmanharris) and the 44.1 kHz
# sample rate of protocols/audioclip-esc50.json.
_AUDIOCLIP_AUDIO = AudioPreprocessing(sample_rate=44100, frontend="fbsp", n_fft=2048,
                                      win_length=1654, hop_length=561, window="blackmanharris")


def _audioclip(name: str, file_name: str, sha256: str, size: int) -> WeightsEntry:
    return WeightsEntry(
        name=name, file_name=file_name, urls=(f"{_AUDIOCLIP_RELEASE}{file_name}",),
        checksum=Checksum("sha256", sha256, _AUDIOCLIP_SHA_SOURCE + file_name), size_bytes=size,
        towers=(Tower("audio", "esresnext_fbsp", "audioclip_audio", 1024),
                Tower("text", "clip_text", "audioclip_text", 1024)),
        file_format="torch_pickle", source=_AUDIOCLIP_SOURCE, licence=_AUDIOCLIP_LICENCE,
        audio=_AUDIOCLIP_AUDIO, text=CLIP_TEXT)


register_weights(_audioclip("audioclip_full", "AudioCLIP-Full-Training.pt",
                            "2441d35b353352c8b1bbfb8f7c687f46314c3d2909e940eaf763b8c17f632c44",
                            537302068))
register_weights(_audioclip("audioclip_partial", "AudioCLIP-Partial-Training.pt",
                            "1921885b6c3b5de0619f2ef4a9700ecbade758a398b34eb064230c30baef0c75",
                            537302068))
register_weights(WeightsEntry(
    name="clip_bpe_vocab", file_name="bpe_simple_vocab_16e6.txt.gz",
    urls=(f"{_AUDIOCLIP_RELEASE}bpe_simple_vocab_16e6.txt.gz",),
    checksum=Checksum("sha256", "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a",
                      _AUDIOCLIP_SHA_SOURCE + "bpe_simple_vocab_16e6.txt.gz"),
    size_bytes=1356917, towers=(), file_format="gzip_text",
    source="CLIP's BPE vocabulary (OpenAI), as redistributed in " + _AUDIOCLIP_SOURCE,
    licence="MIT (openai/CLIP LICENSE)", text=CLIP_TEXT))
