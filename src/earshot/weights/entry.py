"""What a registry entry is: a published file, its digest, its towers and its preprocessing.

The entries themselves live in one module per family (``panns.py``, ``audioclip.py``,
``clip.py``, ...), each registering into :data:`WEIGHTS`; downloading and verifying are in
``cache.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Mapping

from earshot.errors import WeightsError
from earshot.registry import Registry

if TYPE_CHECKING:
    from earshot.audio.frontend import FrontendConfig

HashAlgorithm = Literal["sha256", "md5"]
HEX_LENGTH: dict[str, int] = {"sha256": 64, "md5": 32}


def __getattr__(name: str) -> Any:
    # CONVERTERS (the weights formats a tower accepts) is a view of the converters each
    # architecture registers beside itself (earshot.models.converters), computed on first use
    # so that `earshot weights list` never imports torch.
    if name == "CONVERTERS":
        from earshot.models.converters import tower_formats

        return tower_formats()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

# --------------------------------------------------------------------------------------------
# What a registry entry is made of
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Checksum:
    """A digest as the file's publisher gives it."""

    algorithm: HashAlgorithm  # which hash the publisher gives ("sha256" or "md5")
    digest: str  # lower-case hex digest of the whole file
    source: str  # where this value was published (so a reader can check it)


@dataclass(frozen=True)
class AudioPreprocessing:
    """The audio front end the weights were trained with."""

    sample_rate: int  # Hz the waveform must arrive at
    # PANNs' torchlibrosa log-mel, ESResNeXt's Fourier basis, PaSST's pre-emphasised Kaldi-style
    # log-mel, or CLAP's mel
    frontend: Literal["logmel", "fbsp", "passt_kaldi_mel", "clap_logmel"]
    n_fft: int  # FFT size
    win_length: int  # analysis window length (samples)
    hop_length: int  # hop between frames (samples)
    window: str  # window function
    n_mels: int | None = None  # mel bands (log-mel front ends only)
    fmin: float | None = None  # lowest mel edge, Hz (log-mel only)
    fmax: float | None = None  # highest mel edge, Hz (log-mel only)

    def frontend_config(self) -> "FrontendConfig":
        """The :class:`FrontendConfig` that reproduces these log-mel settings.

        Lets a PANNs encoder be built from the entry rather than from constants repeated
        in a second place.
        """
        if self.frontend != "logmel":
            raise WeightsError(f"{self.frontend!r} front end has no log-mel FrontendConfig")
        from earshot.audio.frontend import FrontendConfig  # lazy: keeps `weights list` light

        return FrontendConfig(sample_rate=self.sample_rate, n_fft=self.n_fft,
                              win_length=self.win_length, hop_length=self.hop_length,
                              n_mels=self.n_mels, fmin=self.fmin, fmax=self.fmax)


@dataclass(frozen=True)
class TextPreprocessing:
    """The tokenisation the text weights expect."""

    tokenizer: str  # tokenizer name ("clip_bpe_16e6": CLIP's lower-cased byte-level BPE)
    context_length: int  # tokens per caption, start/end tokens included


@dataclass(frozen=True)
class Tower:
    """One encoder a file provides weights for (AudioCLIP's file provides two)."""

    kind: Literal["audio", "text"]  # which encoder registry ``architecture`` lives in
    architecture: str  # registered encoder name (e.g. "cnn14", "clip_text")
    converter: str  # which convert_<source>_state_dict turns the file into our layout
    embed_dim: int  # output width of the tower with these weights


@dataclass(frozen=True)
class RetrieverSpec:
    """How a file that holds a whole language-audio model becomes an earshot bi-encoder, so
    ``earshot.load_model(name)`` (and every command taking a model) can open it by name."""

    config: Mapping[str, Any]  # BiEncoderConfig fields; the towers' weights are this entry
    prompt: str = "This is a sound of {}."  # zero-shot classification template ({} = label)
    companions: tuple[str, ...] = ()  # other registry files it needs (e.g. its tokenizer)
    state_format: str | None = None  # reader of the whole file when it feeds no single tower
    # (e.g. "dcase2025_baseline"); None: the first tower's converter


@dataclass(frozen=True)
class WeightsEntry:
    """A known pretrained file: where it lives, how to verify it, what it is for."""

    name: str  # registry name, e.g. "panns_cnn14"
    file_name: str  # name on disk, as the publisher names it
    urls: tuple[str, ...]  # official URL first, then mirrors; tried in order
    checksum: Checksum | None  # published digest; None: download needs allow_unverified
    size_bytes: int | None  # size if a source states it (informative only, never a check)
    towers: tuple[Tower, ...]  # encoders this file feeds; empty for e.g. a tokenizer vocabulary
    file_format: str  # "torch_pickle", "torchscript" or "gzip_text": how loaders open it
    source: str  # who published it, and where
    licence: str  # licence as the source states it
    audio: AudioPreprocessing | None = None  # for files with an audio tower
    text: TextPreprocessing | None = None  # for files with a text tower
    retriever: RetrieverSpec | None = None  # set when the file is a whole retriever (CLAP)
    moment_head: bool = False  # a moment-retrieval head (lighthouse's QD-DETR): `earshot moments` opens it
    caveat: str | None = None  # a known problem users must see (`earshot weights list` shows it)

    @property
    def architectures(self) -> tuple[str, ...]:
        """Architecture names of the towers, in order."""
        return tuple(t.architecture for t in self.towers)


WEIGHTS: Registry[WeightsEntry] = Registry("pretrained weights")


def register_weights(entry: WeightsEntry) -> WeightsEntry:
    """Add ``entry`` to the registry (a name registered twice is a ConfigError)."""
    return WEIGHTS.register(entry.name)(entry)


def get_weights(name: str) -> WeightsEntry:
    """The registered entry called ``name`` (ConfigError listing the known names otherwise)."""
    return WEIGHTS.get(name)


def list_weights() -> list[str]:
    """Names of all registered pretrained files, sorted."""
    return WEIGHTS.names()
