"""A loaded retriever made fast for embedding only (indexing, evaluation, submission).

Two steps, both confined to inference so training and checkpoints never see them:

* PANNs audio towers get :func:`earshot.models.audio.panns.fuse_for_inference` in place (BatchNorm
  folded into the convolutions, ReLU fused as a oneDNN post-op, pre-packed channels-last
  weights). Embeddings equal the unfused model's to float32 rounding.
* ``precision``: ``"fp32"``, ``"bf16"`` (the audio tower under bfloat16 autocast; the log-mel
  front end stays float32 inside, outputs are float32) or ``"auto"`` (the default): bf16 where
  the hardware computes it natively (CPUs with AVX512-BF16 or AMX-BF16, CUDA devices that
  support it), fp32 elsewhere, where emulated bf16 is slower than fp32. The default is bf16 only
  because the benchmark (``benchmarks/bench_encoders.py``) measures a cosine >= 0.999 between
  bf16 and fp32 embeddings of every registered encoder on its clips; ``--precision fp32`` gives
  the exact numbers back. Text towers stay fp32: queries are short and few.
* ``"bf16-weights"`` (an option, never chosen by ``auto``): the audio tower's weights stored in
  bf16 (no per-op casts: autocast re-casts every linear's weight on every call), the front end
  kept in float32 and its output cast once; for the CLAP/MS-CLAP HTSAT and PaSST towers. On
  laion_clap_general's HTSAT it ran 1.33x faster than autocast at the same cosine to fp32
  (0.99998; ``benchmarks/speed_clap.py``, benchmarks/RESULTS.md); tested >= 0.999 on a tiny CLAP.
* ``"int8"`` (CPU only, an option, never chosen by ``auto``): every ``nn.Linear`` of the audio
  towers replaced by PyTorch's dynamic int8 quantisation (weights int8 per tensor, activations
  quantised per batch on the fly; convolutions, norms and the front end stay float32). Meant for
  transformer towers (HTSAT, PaSST), whose time is mostly linear layers; the test bound is a
  cosine >= 0.99 to fp32 on a tiny CLAP tower (``tests/models/test_inference.py``). Its speed on
  the real CLAP tower was not measured in issue 22 (see docs/SCALE.md).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn

from earshot.errors import ConfigError
from earshot.models.base import AudioEncoder
from earshot.threads import use_threads

__all__ = ["PRECISIONS", "bf16_weights", "native_bf16_cpu", "prepare_for_inference", "resolve_precision"]

PRECISIONS = ("auto", "fp32", "bf16", "bf16-weights", "int8")
_NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.cache
def native_bf16_cpu() -> bool:
    """True when this CPU computes bf16 dot products natively (Linux ``/proc/cpuinfo`` flags
    AVX512-BF16 or AMX-BF16); False when it cannot tell."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return any(f in flags for f in _NATIVE_BF16_FLAGS)


def resolve_precision(precision: str, device_type: str = "cpu") -> str:
    """``"auto"`` -> ``"bf16"`` or ``"fp32"`` for ``device_type`` (see the module doc); an
    explicit choice is returned as is; anything else is a ConfigError."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if precision == "int8" and device_type != "cpu":
        raise ConfigError(f"precision 'int8' (dynamic quantisation) runs on the CPU only, not on {device_type}")
    if precision != "auto":
        return precision
    if device_type == "cpu":
        return "bf16" if native_bf16_cpu() else "fp32"
    if device_type == "cuda":
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
    return "fp32"


def _modules(retriever: Any) -> Iterator[nn.Module]:
    """The torch modules of a retriever: itself, or an ensemble's members (recursively)."""
    if isinstance(retriever, nn.Module):
        yield retriever
    for member in getattr(retriever, "members", None) or ():
        yield from _modules(member)


def _inference_forward(forward: Callable[..., torch.Tensor], bf16: bool,
                       bf16_out: bool = False) -> Callable[..., torch.Tensor]:
    """``forward`` on the thread policy's ``encode`` count, under bf16 autocast when asked
    (output back in float32; also for a tower whose weights are bf16, ``bf16_out``)."""

    @functools.wraps(forward)
    def run(waveform: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        with use_threads("encode"), torch.autocast(waveform.device.type, dtype=torch.bfloat16, enabled=bf16):
            out = forward(waveform, *args, **kwargs)
        return out.float() if bf16 or bf16_out else out

    return run


def _frontend_of(tower: nn.Module) -> nn.Module | None:
    """The float32 front end (log-mel) of a tower whose weights can all be bf16 but it."""
    from earshot.models.audio.clap import ClapAudioTower
    from earshot.models.audio.passt import PasstEncoder

    for cls, attr in ((ClapAudioTower, "logmel"), (PasstEncoder, "mel")):
        if isinstance(tower, cls):
            return getattr(tower, attr)
    return None


def bf16_weights(tower: nn.Module) -> nn.Module:
    """Every weight and buffer of ``tower`` in bf16 except its front end, whose float32 output
    is cast to bf16 once (in place); returns ``tower``. A ConfigError for a tower without a
    known front end (its convolutions would see bf16 audio)."""
    frontend = _frontend_of(tower)
    if frontend is None:
        raise ConfigError(f"precision 'bf16-weights': {type(tower).__name__} has no separable front end "
                          "(supported: the CLAP/MS-CLAP HTSAT and PaSST towers); use --precision bf16")
    tower.to(torch.bfloat16)
    frontend.float()
    frontend.register_forward_hook(lambda module, inputs, out: out.to(torch.bfloat16))
    return tower


def quantize_linears(module: nn.Module) -> nn.Module:
    """Every ``nn.Linear`` inside ``module`` -> dynamic int8 (in place); returns ``module``.

    ``torch.ao.quantization.quantize_dynamic`` warns that it is deprecated in favour of torchao;
    those warnings are silenced here only, as this is the call that raises them.
    """
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=FutureWarning)
        torch.ao.quantization.quantize_dynamic(module, {nn.Linear}, dtype=torch.qint8, inplace=True)
    return module


def prepare_for_inference(retriever: Any, precision: str = "auto") -> Any:
    """Fuse the retriever's PANNs towers and apply ``precision`` to its audio towers, whose
    forward then runs on the thread policy's ``encode`` count (:mod:`earshot.threads`), in place
    (load a separate copy to train). Returns ``retriever``; each audio tower records the
    precision it runs at as ``inference_precision``."""
    from earshot.models.audio.panns import PannsEncoder, fuse_for_inference

    for module in _modules(retriever):
        for tower in [m for m in module.modules() if isinstance(m, AudioEncoder)]:
            device = next((p.device.type for p in tower.parameters()), "cpu")
            chosen = resolve_precision(precision, device)
            if getattr(tower, "inference_precision", None) is not None:
                continue  # prepared already
            if isinstance(tower, PannsEncoder):
                fuse_for_inference(tower, inplace=True)
            if chosen == "int8":
                quantize_linears(tower)
            if chosen == "bf16-weights":
                bf16_weights(tower)
            tower.forward = _inference_forward(tower.forward, chosen == "bf16", chosen == "bf16-weights")
            tower.inference_precision = chosen
    return retriever
