"""ESResNeXt-fbsp: AudioCLIP's audio tower, rebuilt so the published weights load strictly.

AudioCLIP (Guzhov et al., 2022) encodes audio with ESResNeXt (Guzhov et al., 2021): a trainable
Fourier front end ("frequency B-spline", LinearFBSP) that turns windowed frames into a complex
spectrum, a log-power spectrogram folded into three frequency bands (used as the three "colour"
channels of an ImageNet ResNeXt-50 32x4d), five attention gates (``att1`` .. ``att5``) and a
linear head that lands in AudioCLIP's joint 1024-d space.

Everything that decides numbers follows ``AndreyGuzhov/AudioCLIP`` (``model/esresnet/{base,fbsp,
attention}.py``, ``model/audioclip.py``): module and parameter names (so a checkpoint loads with
``strict=True`` after :func:`convert_audioclip_audio_state_dict`), the framing and zero padding of
``utils/transforms.frame_signal``, the Blackman-Harris window, the 3-band split and the 1e-18 floor
before ``10 * log10``. torchvision is not used: the ResNeXt trunk is written here with torchvision's
module names (``conv1``, ``layer1.0.downsample.0``, ...), which the checkpoint keys follow.

Input range. AudioCLIP's training data loaders feed int16-range floats (``wav * 32768.0`` in
``utils/datasets/esc50.py``) and the network maps them back with ``scale(x, -32768, 32767, -1, 1)``.
earshot's audio encoders take float waveforms in [-1, 1], so :meth:`ESResNeXtFBSP.forward`
multiplies by ``input_gain`` (32768) first; the published weights then see what they were trained
on. (AudioCLIP's demo notebook skips that multiplication, which feeds the model a signal about
90 dB quieter than in training; we follow the training pipeline, not the demo.)
"""

from __future__ import annotations

import math
from pathlib import Path
import weakref
from dataclasses import dataclass
from typing import Any, Literal, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from earshot.config import from_dict, to_dict
from earshot.errors import ConfigError, WeightsError
from earshot.models.base import AudioEncoder, register_audio_encoder
from earshot.models.converters import read_state_dict, register_converter

__all__ = [
    "ESResNeXtFBSP",
    "ESResNeXtFBSPConfig",
    "LinearFBSP",
    "convert_audioclip_audio_state_dict",
    "esresnext_fbsp",
]


@dataclass(frozen=True)
class ESResNeXtFBSPConfig:
    """AudioCLIP's audio settings (``AudioCLIP.__init__`` defaults); one comment per field."""

    sample_rate: int = 44100  # Hz; AudioCLIP was trained on 44.1 kHz audio
    n_fft: int = 2048  # length each windowed frame is zero-padded to before the FBSP layer
    hop_length: int = 561  # samples between frames (~12.7 ms)
    win_length: int = 1654  # samples per frame (~37.5 ms)
    window: Literal["blackmanharris", "hann", "boxcar"] = "blackmanharris"  # periodic window
    normalized: bool = True  # FBSP kernels divided by sqrt(n_fft); also sets the TTF norm target
    onesided: bool = True  # n_fft // 2 + 1 output bins (else n_fft)
    spec_height: int = -1  # resize each band to this many bins (bilinear); -1 keeps it
    spec_width: int = -1  # resize to this many frames (bilinear); -1 keeps it
    apply_attention: bool = True  # the five attention gates att1..att5
    embed_dim: int = 1024  # output size of ``fc`` (AudioCLIP's joint embedding)
    input_gain: float = 32768.0  # [-1, 1] waveform * gain = the int16-range input AudioCLIP saw

    def __post_init__(self) -> None:
        def bad(field: str, why: str) -> ConfigError:
            return ConfigError(f"ESResNeXtFBSPConfig.{field}={getattr(self, field)!r}: {why}")

        for field in ("sample_rate", "n_fft", "hop_length", "win_length", "embed_dim"):
            if getattr(self, field) <= 0:
                raise bad(field, "must be positive")
        if self.win_length > self.n_fft:
            raise bad("win_length", f"must not exceed n_fft={self.n_fft}")
        for field in ("spec_height", "spec_width"):
            if getattr(self, field) == 0 or getattr(self, field) < -1:
                raise bad(field, "must be positive or -1 (keep the computed size)")
        if self.input_gain <= 0:
            raise bad("input_gain", "must be positive")

    @property
    def n_bins(self) -> int:
        """Number of FBSP output bins (``round(n_fft / 2) + 1`` one-sided, as in AudioCLIP)."""
        return int(round(self.n_fft / 2)) + 1 if self.onesided else self.n_fft


# ------------------------------------------------------------------------------------------
# Front end
# ------------------------------------------------------------------------------------------


def periodic_window(name: str, length: int) -> Tensor:
    """``scipy.signal.get_window(name, length, fftbins=True)`` for the windows AudioCLIP can use.

    Written out (float64, then float32 as AudioCLIP stores it) so that ``src/`` needs no scipy.
    Blackman-Harris is the 4-term cosine window with scipy's coefficients; "periodic" means the
    cosines have period ``length`` rather than ``length - 1``.
    """
    n = torch.arange(length, dtype=torch.float64)
    phase = 2.0 * math.pi * n / length
    if name == "blackmanharris":
        a = (0.35875, 0.48829, 0.14128, 0.01168)
        w = (
            a[0]
            - a[1] * torch.cos(phase)
            + a[2] * torch.cos(2 * phase)
            - a[3] * torch.cos(3 * phase)
        )
    elif name == "hann":
        w = 0.5 - 0.5 * torch.cos(phase)
    elif name == "boxcar":
        w = torch.ones(length, dtype=torch.float64)
    else:
        raise ConfigError(f"window {name!r}: expected 'blackmanharris', 'hann' or 'boxcar'")
    return w.to(torch.float32)


class _NormalizeGrad(torch.autograd.Function):
    """Identity forward; backward divides the gradient by its infinity norm (plus eps).

    AudioCLIP registers this rescaling as tensor hooks on ``m``, ``fb`` and ``fc`` so the three
    front-end parameters take steps of a fixed size whatever the scale of the loss. A hook on a
    Parameter is lost by ``copy.deepcopy`` (weight averaging, EMA), an autograd function in the
    forward pass is not; since each parameter is used once per forward the result is the same.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, eps: float) -> Tensor:  # type: ignore[override]
        ctx.eps = eps
        return x.clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return grad / (torch.linalg.vector_norm(grad, ord=float("inf")) + ctx.eps), None


class LinearFBSP(nn.Module):
    """AudioCLIP's trainable Fourier layer: frames ``(..., n_in)`` -> complex ``(..., n_out, 2)``.

    Output bin k correlates the frame with ``sqrt(fb_k) * win_k(t) * exp(-i * fc_k * t)`` on
    ``t = pi * linspace(-1, 1, n_in) + eps``, where ``win_k = sinc(fb_k * t / m_k) ** m_k``. At
    AudioCLIP's initialisation (``m = 0``, ``fb = 1``, ``fc = k``) this is a plain DFT up to a
    linear phase; training moves centre frequencies, bandwidths and window shapes.
    """

    eps = 1e-8

    def __init__(self, out_features: int, normalized: bool) -> None:
        super().__init__()
        self.out_features = out_features
        self.normalized = normalized
        # Same initial values as AudioCLIP; no ``bias``: AudioCLIP builds this layer with
        # bias=False (its empty placeholder key is dropped by the converter).
        self.m = nn.Parameter(torch.zeros(out_features))
        self.fb = nn.Parameter(torch.ones(out_features))
        self.fc = nn.Parameter(torch.arange(out_features, dtype=torch.get_default_dtype()))

    def kernels(self, in_features: int, dtype: torch.dtype | None = None) -> Tensor:
        """The materialised complex kernels, ``(out_features, in_features, 2)`` (real, imag)."""
        dtype = dtype or self.m.dtype
        eps = self.eps
        t = math.pi * torch.linspace(-1.0, 1.0, in_features, dtype=dtype, device=self.m.device)
        t = t.reshape(1, -1) + eps  # (1, N); +eps as AudioCLIP, so t is never exactly 0
        m = _NormalizeGrad.apply(self.m, eps).reshape(-1, 1)  # (K, 1)
        fb = _NormalizeGrad.apply(self.fb, eps).reshape(-1, 1)
        fc = _NormalizeGrad.apply(self.fc, eps).reshape(-1, 1)

        arg = fc * t  # (K, N)
        kernel_re, kernel_im = torch.cos(arg), -torch.sin(arg)
        x = fb * t / (m + eps)
        sinc = torch.where(x == 0, torch.ones_like(x), torch.sin(x) / x)  # real, (K, N)
        # AudioCLIP raises the real window to the real power m through a general complex power:
        # |w|^m * exp(i * m * arg(w)), with arg(w) = atan2(0, w) = pi for w < 0 and 0 otherwise.
        # The imaginary exponent is 0, so this shorter form is the same value and gradient
        # (atan2(0, w) has zero derivative) and avoids the 0 * log(0) = NaN of the general form.
        magnitude = sinc.abs() ** m
        # pi in the input's dtype: a Python scalar here would make a float32 pi and cost ~3e-10 in fp64
        pi = torch.tensor(math.pi, dtype=sinc.dtype, device=sinc.device)
        phase = torch.where(sinc < 0, pi, torch.zeros_like(pi)) * m
        win_re, win_im = magnitude * torch.cos(phase), magnitude * torch.sin(phase)

        scale = fb.sqrt()
        real = win_re * kernel_re - win_im * kernel_im  # (K, N)
        imag = win_re * kernel_im + win_im * kernel_re  # (K, N)
        weights = scale.unsqueeze(-1) * torch.stack((real, imag), dim=-1)  # (K, N, 2)
        if self.normalized:
            weights = weights / (in_features**0.5)
        return weights

    def forward(self, frames: Tensor) -> Tensor:
        weights = self.kernels(frames.shape[-1], frames.dtype)  # (K, N, 2)
        if weights.requires_grad:
            _LAST_KERNELS[self] = weights
        real = F.linear(frames, weights[..., 0])  # (..., K)
        imag = F.linear(frames, weights[..., 1])  # (..., K)
        return torch.stack((real, imag), dim=-1)  # (..., K, 2)

    def extra_repr(self) -> str:
        return f"out_features={self.out_features}, normalized={self.normalized}"


# Kernels of each layer's latest differentiable forward pass, for the TTF penalty of the same step
# (AudioCLIP keeps them in a module-level dict too). Kept outside the module so that deepcopy and
# pickling never meet a non-leaf tensor; entries vanish with their layer.
_LAST_KERNELS: "weakref.WeakKeyDictionary[LinearFBSP, Tensor]" = weakref.WeakKeyDictionary()


def frame_signal(signal: Tensor, frame_length: int, hop_length: int) -> Tensor:
    """Cut ``(B, T)`` into ``(B, frames, frame_length)`` exactly as AudioCLIP's ``frame_signal``.

    The number of frames is ``1 + ceil((T - frame_length) / hop)`` (1 for a short signal); the
    zeros needed to complete the last frame are split between both ends, the smaller half first.
    """
    length = signal.shape[-1]
    if length <= frame_length:
        n_frames = 1
    else:
        n_frames = 1 + math.ceil((length - frame_length) / hop_length)
    pad = (n_frames - 1) * hop_length + frame_length - length
    if pad > 0:
        signal = F.pad(signal, (pad // 2, pad - pad // 2))
    return signal.unfold(-1, frame_length, hop_length)  # (B, frames, frame_length)


# ------------------------------------------------------------------------------------------
# ResNeXt trunk (torchvision's layout and names) and attention gates
# ------------------------------------------------------------------------------------------


class Bottleneck(nn.Module):
    """torchvision's ResNet/ResNeXt bottleneck (stride on the 3x3 conv, "ResNet v1.5")."""

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
    ) -> None:
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU()
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class Attention2d(nn.Module):
    """ESResNet's gate: max-pool the stage input to the stage output's size, then a depthwise
    conv, a pointwise conv, batch norm and a sigmoid give a multiplicative mask."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: tuple[int, int],
        padding: tuple[int, int],
    ) -> None:
        super().__init__()
        self.conv_depth = nn.Conv2d(
            in_channels, in_channels, kernel_size, padding=padding, groups=in_channels
        )
        self.conv_point = nn.Conv2d(in_channels, out_channels, (1, 1))
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        x = F.adaptive_max_pool2d(x, size)  # (B, C_in, H, W)
        x = self.bn(self.conv_point(self.conv_depth(x)))  # (B, C_out, H, W)
        return torch.sigmoid(x)


# (planes, blocks, stride) of ResNeXt-50's four stages, and each stage's attention gate
# (kernel, padding), in AudioCLIP's order; att5 gates the pooled features.
_STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))
_ATTENTION = (
    ((3, 1), (1, 0)),
    ((1, 5), (0, 2)),
    ((3, 1), (1, 0)),
    ((1, 5), (0, 2)),
    ((3, 5), (1, 2)),
)
_GROUPS, _WIDTH_PER_GROUP, _IN_BANDS = 32, 4, 3


class ESResNeXtFBSP(AudioEncoder):
    """AudioCLIP's audio encoder: ``(B, T)`` waveform in [-1, 1] at 44.1 kHz -> ``(B, 1024)``.

    The embedding is not L2-normalised (AudioCLIP normalises in its joint model). Parameter and
    buffer names match the ``audio.`` part of AudioCLIP's checkpoints, minus that prefix.
    """

    def __init__(self, cfg: ESResNeXtFBSPConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or ESResNeXtFBSPConfig()
        self.cfg = cfg
        self.embed_dim = cfg.embed_dim
        self.sample_rate = cfg.sample_rate

        self.fbsp = LinearFBSP(cfg.n_bins, normalized=cfg.normalized)
        # Persistent, as in AudioCLIP: the checkpoints carry it under ``audio.window``.
        self.register_buffer("window", periodic_window(cfg.window, cfg.win_length))

        self.conv1 = nn.Conv2d(_IN_BANDS, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inplanes = 64
        for i, (planes, n_blocks, stride) in enumerate(_STAGES, start=1):
            self.add_module(f"layer{i}", self._make_stage(inplanes, planes, n_blocks, stride))
            if cfg.apply_attention:
                kernel, padding = _ATTENTION[i - 1]
                self.add_module(f"att{i}", Attention2d(inplanes, planes * 4, kernel, padding))
            inplanes = planes * Bottleneck.expansion
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        if cfg.apply_attention:
            kernel, padding = _ATTENTION[4]
            self.att5 = Attention2d(inplanes, inplanes, kernel, padding)
        self.fc = nn.Linear(inplanes, cfg.embed_dim)
        self._init_weights()

    @staticmethod
    def _make_stage(inplanes: int, planes: int, n_blocks: int, stride: int) -> nn.Sequential:
        out = planes * Bottleneck.expansion
        downsample = None
        if stride != 1 or inplanes != out:
            downsample = nn.Sequential(
                nn.Conv2d(inplanes, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out)
            )
        blocks = [Bottleneck(inplanes, planes, stride, downsample, _GROUPS, _WIDTH_PER_GROUP)]
        blocks += [
            Bottleneck(out, planes, 1, None, _GROUPS, _WIDTH_PER_GROUP) for _ in range(1, n_blocks)
        ]
        return nn.Sequential(*blocks)

    def _init_weights(self) -> None:
        # torchvision's ResNet initialisation, which AudioCLIP inherits.
        for mod in self.modules():
            if isinstance(mod, nn.Conv2d):
                nn.init.kaiming_normal_(mod.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(mod, nn.BatchNorm2d):
                nn.init.ones_(mod.weight)
                nn.init.zeros_(mod.bias)

    # --- front end ---------------------------------------------------------------------------

    def log_power_bands(self, waveform: Tensor) -> Tensor:
        """The trunk's input: ``(B, T)`` in [-1, 1] -> ``(B, 3, bins // 3, frames)`` in dB.

        Exposed so the learned time-frequency representation can be inspected or plotted.
        """
        cfg = self.cfg
        x = waveform.to(self.window.dtype) * cfg.input_gain  # int16 range, as in training
        x = (x + 32768.0) * 2.0 / 65535.0 - 1.0  # AudioCLIP's scale(x, -32768, 32767, -1, 1)
        frames = frame_signal(x, cfg.win_length, cfg.hop_length) * self.window  # (B, F, win)
        if cfg.n_fft > cfg.win_length:
            extra = cfg.n_fft - cfg.win_length
            frames = F.pad(frames, (extra // 2, extra - extra // 2))  # (B, F, n_fft)
        spec = self.fbsp(frames)  # (B, F, K, 2)
        power = (spec[..., 0] ** 2 + spec[..., 1] ** 2).transpose(1, 2)  # (B, K, F)
        per_band = power.shape[1] // _IN_BANDS
        power = power[:, : per_band * _IN_BANDS].reshape(power.shape[0], _IN_BANDS, per_band, -1)
        height = per_band if cfg.spec_height < 1 else cfg.spec_height
        width = power.shape[-1] if cfg.spec_width < 1 else cfg.spec_width
        if (height, width) != tuple(power.shape[-2:]):
            power = F.interpolate(power, size=(height, width), mode="bilinear", align_corners=True)
        power = torch.where(power > 0.0, power, torch.full_like(power, 1e-18))
        return 10.0 * torch.log10(power)  # (B, 3, H, W)

    # --- trunk -------------------------------------------------------------------------------

    def _stage(self, i: int, x: Tensor) -> Tensor:
        out = getattr(self, f"layer{i}")(x)
        if self.cfg.apply_attention:
            out = out * getattr(self, f"att{i}")(x, out.shape[-2:])
        return out

    def forward(self, waveform: Tensor) -> Tensor:
        if waveform.dim() != 2:
            raise ValueError(
                f"ESResNeXtFBSP expects a (B, T) waveform, got shape {tuple(waveform.shape)}"
            )
        x = self.log_power_bands(waveform)  # (B, 3, 341, F)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B, 64, H/4, F/4)
        for i in range(1, 5):
            x = self._stage(i, x)  # (B, 256 .. 2048, H/4 .. H/32, F/4 .. F/32)
        pooled = self.avgpool(x)  # (B, 2048, 1, 1)
        if self.cfg.apply_attention:
            pooled = pooled * self.att5(x, pooled.shape[-2:])
        return self.fc(torch.flatten(pooled, 1))  # (B, embed_dim)

    # --- AudioEncoder interface ----------------------------------------------------------------

    def blocks(self) -> list[nn.Module]:
        """Front end, stem, the four gated stages, then the pooled gate with the head."""

        def group(*names: str) -> nn.ModuleList:
            return nn.ModuleList([getattr(self, n) for n in names if hasattr(self, n)])

        return [
            self.fbsp,
            group("conv1", "bn1"),
            *(group(f"layer{i}", f"att{i}") for i in range(1, 5)),
            group("att5", "fc"),
        ]

    def frontend_settings(self) -> dict[str, Any]:
        settings = to_dict(self.cfg)
        settings["input_range"] = "[-1, 1] float; scaled by input_gain to AudioCLIP's int16 range"
        return settings

    def ttf_norm_penalty(self) -> Tensor:
        """AudioCLIP's ``loss_ttf``: mean squared deviation of each FBSP kernel's L2 norm from 1
        (``sqrt(n_fft)`` when not normalised).

        AudioCLIP adds it to the contrastive loss whenever the front end is trained, to keep the
        learned filters from drifting in gain; it depends on the weights only, not the batch.
        Called after a differentiable forward pass, it reuses that pass's kernels (and graph), so
        the front end's gradient rescaling sees the total gradient, exactly as in AudioCLIP;
        otherwise the kernels are materialised afresh.
        """
        kernels = _LAST_KERNELS.pop(self.fbsp, None)
        if kernels is None:
            kernels = self.fbsp.kernels(self.cfg.n_fft)
        norms = torch.linalg.vector_norm(kernels, ord=2, dim=(-1, -2))
        target = 1.0 if self.cfg.normalized else self.cfg.n_fft**0.5
        return F.mse_loss(norms, torch.full_like(norms, target))


@register_audio_encoder("esresnext_fbsp")
def esresnext_fbsp(**options: Any) -> ESResNeXtFBSP:
    """A randomly initialised ESResNeXt-fbsp (AudioCLIP's init); ``options``: config fields."""
    return ESResNeXtFBSP(from_dict(ESResNeXtFBSPConfig, options, "esresnext_fbsp"))


# ------------------------------------------------------------------------------------------
# Checkpoint conversion
# ------------------------------------------------------------------------------------------

_AUDIO_PREFIX = "audio."


def convert_audioclip_audio_state_dict(
    sd: Mapping[str, Tensor], cfg: ESResNeXtFBSPConfig | None = None
) -> dict[str, Tensor]:
    """The audio tower of an AudioCLIP checkpoint (``AudioCLIP-{Full,Partial}-Training.pt``).

    Those files are a plain ``AudioCLIP.state_dict()``: CLIP's ``visual.*``/text keys, the two
    ``logit_scale_a*`` scalars and the audio tower under ``audio.``. A state dict saved by
    AudioCLIP's own trainer wraps the model in ``DataParallel``; a ``module.`` prefix on every key
    is therefore removed first. The ``audio.`` keys are kept with the prefix stripped, and
    ``fbsp.bias`` is dropped: AudioCLIP builds the layer with ``bias=False``, which stores an empty
    placeholder tensor (a non-empty one means a different model and is an error).

    The result is checked against the keys and shapes of ``ESResNeXtFBSP(cfg)``; anything missing,
    unexpected or mis-shaped raises WeightsError listing it, so ``load_state_dict(strict=True)``
    cannot fail afterwards.
    """
    if not isinstance(sd, Mapping):
        raise WeightsError(f"AudioCLIP checkpoint: expected a state dict, got {type(sd).__name__}")
    keys = list(sd)
    if keys and all(k.startswith("module.") for k in keys):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    out = {k[len(_AUDIO_PREFIX) :]: v for k, v in sd.items() if k.startswith(_AUDIO_PREFIX)}
    if not out:
        sample = ", ".join(sorted(sd)[:5]) or "no keys"
        raise WeightsError(f"AudioCLIP checkpoint: no 'audio.*' keys (found {sample}, ...)")
    bias = out.pop("fbsp.bias", None)
    if bias is not None and bias.numel() != 0:
        raise WeightsError(
            f"AudioCLIP checkpoint: audio.fbsp.bias has shape {tuple(bias.shape)}; AudioCLIP's "
            "front end has no bias (an empty placeholder), so this is not an AudioCLIP audio tower"
        )

    reference = _reference_shapes(cfg or ESResNeXtFBSPConfig())
    expected = {k: tuple(v.shape) for k, v in reference.items()}
    missing = sorted(set(expected) - set(out))
    unexpected = sorted(set(out) - set(expected))
    mismatched = [
        f"{k}: checkpoint {tuple(out[k].shape)} vs model {expected[k]}"
        for k in sorted(set(expected) & set(out))
        if tuple(out[k].shape) != expected[k]
    ]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing audio.{missing}")
        if unexpected:
            parts.append(f"unexpected audio.{unexpected}")
        if mismatched:
            parts.append(f"wrong shape {mismatched}")
        raise WeightsError("AudioCLIP checkpoint does not fit ESResNeXtFBSP: " + "; ".join(parts))
    return out


def _reference_shapes(cfg: ESResNeXtFBSPConfig) -> dict[str, Tensor]:
    # Build on the meta device: the keys and shapes without allocating 25M parameters.
    with torch.device("meta"):
        return ESResNeXtFBSP(cfg).state_dict()


@register_converter("audioclip_audio")
def load_audioclip_audio_weights(tower: nn.Module, path: Path) -> None:
    """``weights:`` on an ``esresnext_fbsp`` tower: the audio half of an AudioCLIP file, strictly."""
    if not isinstance(tower, ESResNeXtFBSP):
        raise ConfigError(f"AudioCLIP audio weights need the esresnext_fbsp encoder, got {type(tower).__name__}")
    sd = convert_audioclip_audio_state_dict(read_state_dict(path, what="AudioCLIP checkpoint"), tower.cfg)
    tower.load_state_dict(sd, strict=True)
