"""The two encoder interfaces every tower implements, and their registries.

An audio encoder maps a batch of mono waveforms at its own ``sample_rate`` to ``(B, embed_dim)``;
a text encoder maps a list of strings to ``(B, embed_dim)``. Factories are registered by name
(``@register_audio_encoder("cnn14")``) and built with ``create_audio_encoder(name, **options)``;
an unknown option is a ConfigError, never silently ignored.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import torch
from torch import nn

from earshot.errors import ConfigError
from earshot.registry import Registry


class AudioEncoder(nn.Module):
    """Base class of audio towers.

    Subclasses set ``embed_dim`` and ``sample_rate`` and implement ``forward(waveform)`` with
    ``waveform`` of shape ``(B, T)`` (float32, mono, at ``sample_rate``) returning ``(B, embed_dim)``.
    """

    embed_dim: int
    sample_rate: int
    # True: ``forward(waveform, lengths)`` also takes each row's true length in samples
    # ``(B,)`` (before a crop's zero padding), as PaSST's segment rule needs; the batch
    # carries it from the loader (``CaptionBatch.lengths``), so trailing zeros never shorten a clip.
    takes_lengths: bool = False

    def blocks(self) -> list[nn.Module]:
        """The encoder's trunk as an ordered list of blocks (input side first).

        Used by the "train the last N blocks" freezing policy.
        """
        raise NotImplementedError

    def frontend_settings(self) -> dict[str, Any]:
        """JSON-ready description of the preprocessing this encoder expects (rates, mel settings)."""
        return {"sample_rate": self.sample_rate}

    def unused_modules(self) -> list[nn.Module]:
        """Submodules kept for strict loading of published weights but outside the embedding
        path (PANNs' AudioSet classifier, say). They never train: an unused trainable parameter
        would get no gradient and trips DDP."""
        return []


class TextEncoder(nn.Module):
    """Base class of text towers: ``forward(list[str]) -> (B, embed_dim)``.

    Tokenisation happens inside, on the device of the encoder's parameters.
    """

    embed_dim: int

    def blocks(self) -> list[nn.Module]:
        """Ordered trunk blocks (embedding side first), for partial freezing."""
        raise NotImplementedError

    def unused_modules(self) -> list[nn.Module]:
        """Submodules outside the embedding path (a BERT pooler under mean pooling); never trained."""
        return []


AUDIO_ENCODERS: Registry[Callable[..., AudioEncoder]] = Registry("audio encoder")
TEXT_ENCODERS: Registry[Callable[..., TextEncoder]] = Registry("text encoder")


def register_audio_encoder(name: str):
    """Decorator: register an audio-encoder factory under ``name``."""
    return AUDIO_ENCODERS.register(name)


def register_text_encoder(name: str):
    """Decorator: register a text-encoder factory under ``name``."""
    return TEXT_ENCODERS.register(name)


def _call_checked(kind: str, name: str, factory: Callable[..., Any], options: dict[str, Any]):
    params = inspect.signature(factory).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(options) - set(params))
        if unknown:
            raise ConfigError(
                f"{kind} {name!r}: unknown option(s) {unknown}; allowed: {sorted(params)}"
            )
    return factory(**options)


def create_audio_encoder(name: str, **options: Any) -> AudioEncoder:
    """Build a registered audio encoder by name."""
    _import_builtin_encoders()
    return _call_checked("audio encoder", name, AUDIO_ENCODERS.get(name), options)


def create_text_encoder(name: str, **options: Any) -> TextEncoder:
    """Build a registered text encoder by name."""
    _import_builtin_encoders()
    return _call_checked("text encoder", name, TEXT_ENCODERS.get(name), options)


def list_audio_encoders() -> list[str]:
    _import_builtin_encoders()
    return AUDIO_ENCODERS.names()


def list_text_encoders() -> list[str]:
    _import_builtin_encoders()
    return TEXT_ENCODERS.names()


def _import_builtin_encoders() -> None:
    # Importing the modules runs their @register decorators; done lazily so that importing
    # earshot.models.base stays cheap.
    import importlib

    for mod in _BUILTIN_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:  # a module not written yet must not hide the others
            if e.name != mod:
                raise


_BUILTIN_MODULES = (
    "earshot.models.audio.panns",
    "earshot.models.audio.esresnext",
    "earshot.models.text.towers",
    "earshot.models.audio.small",
    "earshot.models.audio.clap",
    "earshot.models.text.clap",
    "earshot.models.audio.msclap",
    "earshot.models.text.msclap",
    "earshot.models.audio.passt",
)


def trainable_parameters(module: nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in module.parameters() if p.requires_grad]
