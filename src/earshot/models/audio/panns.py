"""PANNs audio encoders (Kong et al., 2020), reference-exact, with their checkpoint converter.

Five architectures of the official release (qiuqiangkong/audioset_tagging_cnn,
``pytorch/models.py``) are registered: ``cnn14``, ``cnn10``, ``cnn6``, ``resnet38`` and
``wavegram_logmel_cnn14``. Every module keeps the official attribute name (``bn0``,
``conv_block1``, ``resnet.layer2.0.downsample.1``, ``pre_block4``, ``fc1``, ``fc_audioset``, ...)
so the released checkpoints (``Cnn14_mAP=0.431.pth`` etc.) load with ``strict=True`` after
:func:`convert_panns_state_dict`.

The one structural difference: the official models carry torchlibrosa's STFT and mel matrices as
weights (``spectrogram_extractor.*``, ``logmel_extractor.melW``); ours compute the same features
with :class:`earshot.audio.frontend.LogMelFrontend`, which has no weights. The converter therefore
*checks* those tensors against the ones our front end implies (so a checkpoint trained with other
mel settings is refused) and only then drops them.

Embedding (``embedding=`` option of every factory):

* ``"fc1"`` (default): ``relu(fc1(pooled))``, which is exactly what PANNs return as
  ``output_dict["embedding"]`` and what the DCASE 2022 task 6b baseline and most follow-up work
  feed to their projection heads; it is also the layer the AudioSet tagging head reads, so it is the
  most "semantic" vector the network has.
* ``"pooled"``: the global-pooled trunk output (mean over mel bins, then max + mean over time), the
  input of ``fc1``. Useful when fine-tuning without the AudioSet-trained ``fc1``.

Both are 2048-d for Cnn14 / ResNet38 / Wavegram-Logmel-Cnn14 and 512-d for Cnn10 / Cnn6. Layers that
are not on the chosen embedding path (``fc_audioset`` always, ``fc1`` with ``"pooled"``) are kept so
checkpoints load strictly, but frozen (``requires_grad=False``): they never receive a gradient.

Dropout and SpecAugment follow the official forward pass in training mode (dropout 0.2 after
every block, 0.5 before and after ``fc1``; SpecAugment with PANNs' settings), and are identities
in eval mode, where outputs equal the official ``embedding`` to float32 rounding.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from earshot.audio.frontend import FrontendConfig, LogMelFrontend, torchlibrosa_buffers
from earshot.audio.specaugment import SpecAugment
from earshot.config import from_dict
from earshot.errors import AudioError, ConfigError, WeightsError
from earshot.models.base import AudioEncoder, create_audio_encoder, register_audio_encoder
from earshot.models.converters import read_file, register_converter

__all__ = [
    "Cnn6",
    "Cnn10",
    "Cnn14",
    "EMBEDDINGS",
    "PannsEncoder",
    "ResNet38",
    "WavegramLogmelCnn14",
    "FusedConvBlock",
    "convert_panns_state_dict",
    "fold_batchnorm",
    "fuse_for_inference",
    "load_panns_checkpoint",
    "load_panns_state_dict",
]

Embedding = Literal["fc1", "pooled"]
EMBEDDINGS: tuple[str, ...] = ("fc1", "pooled")

# Keys of torchlibrosa's fixed tensors inside an official PANNs state dict.
_FRONTEND_KEY_PREFIXES = ("spectrogram_extractor.", "logmel_extractor.")
# Largest |difference| tolerated between a checkpoint's front-end tensors and ours. Both are
# float32 roundings of the same float64 numbers, so a real match is ~1e-7; a different mel or
# FFT setting differs by 1e-2 or more.
FRONTEND_ATOL = 1e-5


# --- initialisation, as the official code does it ------------------------------------------


def _init_layer(layer: nn.Module) -> None:
    # PANNs use Xavier-uniform weights and zero biases everywhere (not PyTorch's Kaiming default).
    nn.init.xavier_uniform_(layer.weight)
    if getattr(layer, "bias", None) is not None:
        nn.init.zeros_(layer.bias)


def _init_bn(bn: nn.Module) -> None:
    nn.init.ones_(bn.weight)
    nn.init.zeros_(bn.bias)


def _pool2d(x: Tensor, pool: tuple[int, int]) -> Tensor:
    # avg_pool2d with kernel (1, 1) is the identity; skip it.
    return x if pool == (1, 1) else F.avg_pool2d(x, kernel_size=pool)


# --- building blocks (official names: conv1/bn1/conv2/bn2) -----------------------------------


class ConvBlock(nn.Module):
    """Two 3x3 conv + BN + ReLU, then average pooling (PANNs' ``ConvBlock``, pool type 'avg')."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        for m in (self.conv1, self.conv2):
            _init_layer(m)
        for m in (self.bn1, self.bn2):
            _init_bn(m)

    def forward(self, x: Tensor, pool: tuple[int, int] = (2, 2)) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))  # (B, C_out, F, M)
        x = F.relu(self.bn2(self.conv2(x)))  # (B, C_out, F, M)
        return _pool2d(x, pool)  # (B, C_out, F / p0, M / p1)


class ConvBlock5x5(nn.Module):
    """One 5x5 conv + BN + ReLU, then average pooling (Cnn6's block)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 5, padding=2, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        _init_layer(self.conv1)
        _init_bn(self.bn1)

    def forward(self, x: Tensor, pool: tuple[int, int] = (2, 2)) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))  # (B, C_out, F, M)
        return _pool2d(x, pool)  # (B, C_out, F / 2, M / 2)


class ResnetBasicBlock(nn.Module):
    """PANNs' ``_ResnetBasicBlock``: pre-pooling (not strided conv) when ``stride == 2``.

    The second BN's scale starts at zero (official init), so a freshly built residual block is
    the identity.
    """

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int,
        downsample: nn.Module | None,
        zero_init_residual: bool = True,
    ) -> None:
        super().__init__()
        self.stride = stride
        self.conv1 = nn.Conv2d(inplanes, planes, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        _init_layer(self.conv1)
        _init_bn(self.bn1)
        _init_layer(self.conv2)
        _init_bn(self.bn2)
        if zero_init_residual:
            nn.init.zeros_(self.bn2.weight)

    def forward(self, x: Tensor) -> Tensor:
        out = F.avg_pool2d(x, kernel_size=2) if self.stride == 2 else x  # (B, C_in, F', M')
        out = F.relu(self.bn1(self.conv1(out)))  # (B, C, F', M')
        out = F.dropout(out, p=0.1, training=self.training)
        out = self.bn2(self.conv2(out))  # (B, C, F', M')
        identity = x if self.downsample is None else self.downsample(x)  # (B, C, F', M')
        return F.relu(out + identity)


def _resnet_layer(
    inplanes: int, planes: int, n_blocks: int, stride: int, zero_init_residual: bool
) -> nn.Sequential:
    """One ResNet stage; the shortcut of its first block pools then projects (official layout:
    ``downsample = Sequential(AvgPool2d(2), conv1x1, BN)`` for stride 2, ``Sequential(conv1x1, BN)``
    for a channel change at stride 1)."""
    downsample: nn.Sequential | None = None
    if stride == 2:
        downsample = nn.Sequential(
            nn.AvgPool2d(kernel_size=2),
            nn.Conv2d(inplanes, planes, 1, bias=False),
            nn.BatchNorm2d(planes),
        )
    elif inplanes != planes:
        downsample = nn.Sequential(
            nn.Conv2d(inplanes, planes, 1, bias=False), nn.BatchNorm2d(planes)
        )
    if downsample is not None:
        _init_layer(downsample[-2])
        _init_bn(downsample[-1])
    z = zero_init_residual
    blocks = [ResnetBasicBlock(inplanes, planes, stride, downsample, z)]
    blocks += [ResnetBasicBlock(planes, planes, 1, None, z) for _ in range(1, n_blocks)]
    return nn.Sequential(*blocks)


class ResNetTrunk(nn.Module):
    """PANNs' ``_ResNet``: four stages of basic blocks, 64-128-256-512 channels."""

    def __init__(self, layers: tuple[int, int, int, int], zero_init_residual: bool = True) -> None:
        super().__init__()
        z = zero_init_residual
        self.layer1 = _resnet_layer(64, 64, layers[0], stride=1, zero_init_residual=z)
        self.layer2 = _resnet_layer(64, 128, layers[1], stride=2, zero_init_residual=z)
        self.layer3 = _resnet_layer(128, 256, layers[2], stride=2, zero_init_residual=z)
        self.layer4 = _resnet_layer(256, 512, layers[3], stride=2, zero_init_residual=z)

    def forward(self, x: Tensor) -> Tensor:
        x = self.layer1(x)  # (B, 64, F, M)
        x = self.layer2(x)  # (B, 128, F/2, M/2)
        x = self.layer3(x)  # (B, 256, F/4, M/4)
        return self.layer4(x)  # (B, 512, F/8, M/8)


class ConvPreWavBlock(nn.Module):
    """1-D conv block of the Wavegram branch: 3-tap conv, dilated 3-tap conv, max pooling."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(in_channels, out_channels, 3, padding=1, bias=False)
        self.conv2 = nn.Conv1d(out_channels, out_channels, 3, dilation=2, padding=2, bias=False)
        self.bn1 = nn.BatchNorm1d(out_channels)
        self.bn2 = nn.BatchNorm1d(out_channels)
        for m in (self.conv1, self.conv2):
            _init_layer(m)
        for m in (self.bn1, self.bn2):
            _init_bn(m)

    def forward(self, x: Tensor, pool: int) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))  # (B, C_out, L)
        x = F.relu(self.bn2(self.conv2(x)))  # (B, C_out, L)
        return F.max_pool1d(x, kernel_size=pool)  # (B, C_out, L / pool)


# --- the encoders ----------------------------------------------------------------------------


class PannsEncoder(AudioEncoder):
    """Shared PANNs pipeline: log-mel -> bn0 over mel bins -> SpecAugment (training) -> trunk ->
    mean over mel, max + mean over time -> (fc1 + ReLU).

    Subclasses build their trunk in ``__init__`` and implement ``_trunk``. ``forward(waveform)``
    returns the chosen embedding ``(B, embed_dim)``; :meth:`features` returns both embeddings and
    the AudioSet tag probabilities, which is what the official ``forward`` returns.
    """

    width: int  # channels of the last trunk block, = embed_dim
    _halvings: int  # how often the trunk halves both axes (sets the shortest input)

    def __init__(
        self,
        embedding: Embedding = "fc1",
        frontend: FrontendConfig | Mapping[str, Any] | None = None,
        spec_augment: bool = True,
        classes_num: int = 527,
    ) -> None:
        super().__init__()
        if embedding not in EMBEDDINGS:
            raise ConfigError(
                f"{type(self).__name__}: embedding={embedding!r}; expected one of {EMBEDDINGS}"
            )
        if frontend is None:
            frontend = FrontendConfig()
        elif not isinstance(frontend, FrontendConfig):
            frontend = from_dict(FrontendConfig, dict(frontend), "frontend")
        if frontend.n_mels < 2**self._halvings:
            raise ConfigError(
                f"{type(self).__name__}: frontend.n_mels={frontend.n_mels} is too few; the "
                f"trunk halves the mel axis {self._halvings} times, so it needs at least "
                f"{2**self._halvings}"
            )
        self.embedding = embedding
        self.classes_num = classes_num
        self.frontend_cfg = frontend
        self.sample_rate = frontend.sample_rate
        self.embed_dim = self.width
        self.frontend = LogMelFrontend(frontend)
        self.spec_augmenter = _make_spec_augment() if spec_augment else None
        self.bn0 = nn.BatchNorm2d(frontend.n_mels)
        _init_bn(self.bn0)

    def _build_head(self) -> None:
        # Called by subclasses after their trunk so parameters register in the official order.
        self.fc1 = nn.Linear(self.width, self.width)
        self.fc_audioset = nn.Linear(self.width, self.classes_num)
        _init_layer(self.fc1)
        _init_layer(self.fc_audioset)
        # Not on the embedding path: loaded for strictness, never trained.
        self.fc_audioset.requires_grad_(False)
        if self.embedding == "pooled":
            self.fc1.requires_grad_(False)

    # subclasses -------------------------------------------------------------------------------

    def _trunk(self, x: Tensor, waveform: Tensor) -> Tensor:
        """``(B, 1, frames, n_mels)`` log-mel (and the raw waveform) -> ``(B, width, F', M')``."""
        raise NotImplementedError

    def _conv_blocks(self) -> list[nn.Module]:
        raise NotImplementedError

    def min_samples(self) -> int:
        """Shortest waveform the trunk accepts: every pooling step needs at least one frame."""
        need = 2**self._halvings
        cfg = self.frontend_cfg
        samples = cfg.hop_length * (need - 1) + (0 if cfg.center else cfg.n_fft)
        # Reflect padding also needs more than n_fft // 2 samples.
        return max(samples, cfg.n_fft // 2 + 1)

    # AudioEncoder -----------------------------------------------------------------------------

    def blocks(self) -> list[nn.Module]:
        """bn0, the trunk blocks in order, then fc1 when it produces the embedding."""
        head = [self.fc1] if self.embedding == "fc1" else []
        return [self.bn0, *self._conv_blocks(), *head]

    def frontend_settings(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self.frontend_cfg), "embedding": self.embedding}

    def unused_modules(self) -> list[nn.Module]:
        """The AudioSet head, and fc1 under ``embedding="pooled"``: loaded, never trained."""
        return [self.fc_audioset] if self.embedding == "fc1" else [self.fc1, self.fc_audioset]

    def _pooled(self, waveform: Tensor) -> Tensor:
        """``(B, T)`` -> ``(B, width)``: everything up to the input of fc1, dropout included."""
        self._check_waveform(waveform)
        x = self.frontend(waveform)[:, None]  # (B, 1, frames, n_mels)
        x = self.bn0(x.transpose(1, 3)).transpose(1, 3)  # BN over mel bins; (B, 1, frames, n_mels)
        if self.training and self.spec_augmenter is not None:
            x = self.spec_augmenter(x[:, 0])[:, None]  # stripes zeroed; (B, 1, frames, n_mels)
        x = self._trunk(x, waveform)  # (B, width, F', M')
        x = x.mean(dim=3)  # (B, width, F')
        x = x.max(dim=2).values + x.mean(dim=2)  # (B, width)
        return F.dropout(x, p=0.5, training=self.training)  # (B, width)

    def forward(self, waveform: Tensor) -> Tensor:
        """``(B, T)`` waveform at ``sample_rate`` -> ``(B, embed_dim)`` (see the module doc)."""
        x = self._pooled(waveform)  # (B, width)
        if self.embedding == "pooled":
            return x
        x = F.relu(self.fc1(x))  # (B, width)
        return F.dropout(x, p=0.5, training=self.training)  # (B, width)

    def features(self, waveform: Tensor) -> dict[str, Tensor]:
        """``{"pooled", "fc1", "clipwise_output"}`` for a ``(B, T)`` waveform.

        ``fc1`` is PANNs' ``embedding`` output and ``clipwise_output`` their sigmoid AudioSet tag
        probabilities ``(B, classes_num)``: the official ``forward`` outputs, kept for checking a
        converted checkpoint (it should tag a dog bark as a dog) and for parity tests.
        """
        pooled = self._pooled(waveform)  # (B, width)
        hidden = F.relu(self.fc1(pooled))  # (B, width)
        return {
            "pooled": pooled,
            "fc1": F.dropout(hidden, p=0.5, training=self.training),  # (B, width)
            # As in PANNs, the tagger reads fc1 before its dropout.
            "clipwise_output": torch.sigmoid(self.fc_audioset(hidden)),  # (B, classes_num)
        }

    def _check_waveform(self, waveform: Tensor) -> None:
        if waveform.dim() != 2:
            raise AudioError(
                "<waveform>",
                f"{type(self).__name__} expects (B, T), got shape {tuple(waveform.shape)}",
            )
        if waveform.shape[1] < self.min_samples():
            raise AudioError(
                "<waveform>",
                f"{waveform.shape[1]} samples is too short for {type(self).__name__}: it needs at "
                f"least {self.min_samples()} ({self.min_samples() / self.sample_rate:.3f} s at "
                f"{self.sample_rate} Hz); pad short clips",
            )


class _CnnStack(PannsEncoder):
    """Cnn6/10/14: a plain stack of conv blocks, 2x2 average pooling after all but Cnn14's last."""

    _channels: tuple[int, ...]
    _block: type[nn.Module]

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        chans = (1, *self._channels)
        for i in range(len(self._channels)):
            setattr(self, f"conv_block{i + 1}", self._block(chans[i], chans[i + 1]))
        self._build_head()

    def _pools(self) -> list[tuple[int, int]]:
        return [(2, 2)] * len(self._channels)

    def _conv_blocks(self) -> list[nn.Module]:
        return [getattr(self, f"conv_block{i + 1}") for i in range(len(self._channels))]

    def _trunk(self, x: Tensor, waveform: Tensor) -> Tensor:
        for block, pool in zip(self._conv_blocks(), self._pools()):
            x = block(x, pool)  # (B, C_i, F / 2^i, M / 2^i)
            x = F.dropout(x, p=0.2, training=self.training)
        return x


class Cnn14(_CnnStack):
    """Cnn14: six double-3x3 conv blocks (64..2048 channels), the last without pooling. 2048-d."""

    _channels = (64, 128, 256, 512, 1024, 2048)
    width = 2048
    _block = ConvBlock
    _halvings = 5

    def _pools(self) -> list[tuple[int, int]]:
        return [(2, 2)] * 5 + [(1, 1)]


class Cnn10(_CnnStack):
    """Cnn10: four double-3x3 conv blocks (64..512 channels). 512-d."""

    _channels = (64, 128, 256, 512)
    width = 512
    _block = ConvBlock
    _halvings = 4


class Cnn6(_CnnStack):
    """Cnn6: four single-5x5 conv blocks (64..512 channels). 512-d."""

    _channels = (64, 128, 256, 512)
    width = 512
    _block = ConvBlock5x5
    _halvings = 4


class ResNet38(PannsEncoder):
    """ResNet38: conv_block1, a [3, 4, 6, 3] basic-block ResNet, 2x2 pooling, conv_block_after1.

    2048-d.

    ``zero_init_residual`` (official: True) starts every residual block as the identity; with it,
    a fresh model's residual convolutions get no gradient until their BN scale moves, which is
    expected but trips "every parameter gets a gradient" checks on random models.
    """

    width = 2048
    _halvings = 5

    def __init__(self, zero_init_residual: bool = True, **options: Any) -> None:
        super().__init__(**options)
        self.conv_block1 = ConvBlock(1, 64)
        self.resnet = ResNetTrunk((3, 4, 6, 3), zero_init_residual)
        self.conv_block_after1 = ConvBlock(512, 2048)
        self._build_head()

    def _conv_blocks(self) -> list[nn.Module]:
        r = self.resnet
        return [self.conv_block1, r.layer1, r.layer2, r.layer3, r.layer4, self.conv_block_after1]

    def _trunk(self, x: Tensor, waveform: Tensor) -> Tensor:
        x = self.conv_block1(x, (2, 2))  # (B, 64, F/2, M/2)
        x = F.dropout(x, p=0.2, training=self.training)
        x = self.resnet(x)  # (B, 512, F/16, M/16)
        x = F.avg_pool2d(x, kernel_size=2)  # (B, 512, F/32, M/32)
        x = F.dropout(x, p=0.2, training=self.training)
        x = self.conv_block_after1(x, (1, 1))  # (B, 2048, F/32, M/32)
        return F.dropout(x, p=0.2, training=self.training)


class WavegramLogmelCnn14(PannsEncoder):
    """Wavegram-Logmel-Cnn14: a learnt 1-D "wavegram" branch on the raw waveform, concatenated
    with the log-mel branch after conv_block1, then Cnn14's blocks 2-6. 2048-d.

    The wavegram branch downsamples time by a fixed 640 and folds 128 channels into a
    (4 channels x 32 bins) image, so it needs 64 mel bands and a 320-sample hop. The official code
    crashes when the two branches differ by a frame (lengths that are not a multiple of 640
    samples, give or take); here both are cropped to the shorter one, which changes nothing
    whenever the official code runs.
    """

    width = 2048
    _halvings = 5

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        cfg = self.frontend_cfg
        if cfg.n_mels != 64 or cfg.hop_length != 320:
            raise ConfigError(
                "wavegram_logmel_cnn14: the wavegram branch is built for frontend.n_mels=64 and "
                f"frontend.hop_length=320, got n_mels={cfg.n_mels}, hop_length={cfg.hop_length}"
            )
        self.pre_conv0 = nn.Conv1d(1, 64, kernel_size=11, stride=5, padding=5, bias=False)
        self.pre_bn0 = nn.BatchNorm1d(64)
        self.pre_block1 = ConvPreWavBlock(64, 64)
        self.pre_block2 = ConvPreWavBlock(64, 128)
        self.pre_block3 = ConvPreWavBlock(128, 128)
        self.pre_block4 = ConvBlock(4, 64)
        _init_layer(self.pre_conv0)
        _init_bn(self.pre_bn0)
        self.conv_block1 = ConvBlock(1, 64)
        self.conv_block2 = ConvBlock(128, 128)
        self.conv_block3 = ConvBlock(128, 256)
        self.conv_block4 = ConvBlock(256, 512)
        self.conv_block5 = ConvBlock(512, 1024)
        self.conv_block6 = ConvBlock(1024, 2048)
        self._build_head()

    def _conv_blocks(self) -> list[nn.Module]:
        wave = [self.pre_conv0, self.pre_bn0, self.pre_block1, self.pre_block2, self.pre_block3]
        return [*wave, self.pre_block4, *(getattr(self, f"conv_block{i}") for i in range(1, 7))]

    def min_samples(self) -> int:
        # The wavegram branch: conv stride 5, three max-pools of 4 and one of 2 leave
        # ceil(T / 5) // 128 frames, and conv_block2..5 need 16 of them.
        return max(super().min_samples(), 5 * (16 * 128 - 1) + 1)

    def _trunk(self, x: Tensor, waveform: Tensor) -> Tensor:
        a = F.relu(self.pre_bn0(self.pre_conv0(waveform[:, None, :])))  # (B, 64, T/5)
        a = self.pre_block1(a, 4)  # (B, 64, T/20)
        a = self.pre_block2(a, 4)  # (B, 128, T/80)
        a = self.pre_block3(a, 4)  # (B, 128, T/320)
        a = a.reshape(a.shape[0], -1, 32, a.shape[-1]).transpose(2, 3)  # (B, 4, T/320, 32)
        a = self.pre_block4(a, (2, 1))  # (B, 64, T/640, 32)
        x = self.conv_block1(x, (2, 2))  # (B, 64, frames/2, 32)
        n = min(x.shape[2], a.shape[2])
        x = torch.cat((x[:, :, :n], a[:, :, :n]), dim=1)  # (B, 128, n, 32)
        x = F.dropout(x, p=0.2, training=self.training)
        for i, pool in zip(range(2, 7), [(2, 2)] * 4 + [(1, 1)]):
            x = getattr(self, f"conv_block{i}")(x, pool)  # (B, C_i, n / 2^(i-1), 32 / 2^(i-1))
            x = F.dropout(x, p=0.2, training=self.training)
        return x  # (B, 2048, n/16, 2)


def _make_spec_augment() -> SpecAugment:
    """SpecAugment with PANNs' settings: two time stripes narrower than 64 frames and two
    frequency stripes narrower than 8 mel bins per example."""
    return SpecAugment(time_stripes=2, time_width=64, freq_stripes=2, freq_width=8)


# --- registry --------------------------------------------------------------------------------


def _channels_last(model: PannsEncoder) -> PannsEncoder:
    """Conv weights in channels-last layout: oneDNN's convolutions run about 20% faster on CPU
    (CNN14, batch 8: 1.84 -> 2.19 clips/s here) for the same values (max diff ~2e-8)."""
    return model.to(memory_format=torch.channels_last)


def _factory(cls: type[PannsEncoder]):
    def build(
        embedding: Embedding = "fc1",
        frontend: FrontendConfig | Mapping[str, Any] | None = None,
        spec_augment: bool = True,
        classes_num: int = 527,
    ) -> PannsEncoder:
        return _channels_last(cls(
            embedding=embedding,
            frontend=frontend,
            spec_augment=spec_augment,
            classes_num=classes_num,
        ))

    build.__doc__ = (
        f"A randomly initialised {cls.__name__} (load weights with load_panns_checkpoint). "
        "Options: embedding 'fc1' (default) or 'pooled'; frontend: FrontendConfig or dict; "
        "spec_augment: SpecAugment in training; classes_num: size of the AudioSet head."
    )
    return build


cnn14 = register_audio_encoder("cnn14")(_factory(Cnn14))
cnn10 = register_audio_encoder("cnn10")(_factory(Cnn10))
cnn6 = register_audio_encoder("cnn6")(_factory(Cnn6))
wavegram_logmel_cnn14 = register_audio_encoder("wavegram_logmel_cnn14")(
    _factory(WavegramLogmelCnn14)
)


@register_audio_encoder("resnet38")
def resnet38(
    embedding: Embedding = "fc1",
    frontend: FrontendConfig | Mapping[str, Any] | None = None,
    spec_augment: bool = True,
    classes_num: int = 527,
    zero_init_residual: bool = True,
) -> PannsEncoder:
    """A randomly initialised ResNet38; options as for cnn14, plus ``zero_init_residual``
    (official init: each residual block starts as the identity)."""
    return _channels_last(ResNet38(
        embedding=embedding,
        frontend=frontend,
        spec_augment=spec_augment,
        classes_num=classes_num,
        zero_init_residual=zero_init_residual,
    ))


# --- inference: BatchNorm folded into the convolutions, channels-last, in-place ReLU ------------


def fold_batchnorm(conv: nn.Conv1d | nn.Conv2d, bn: nn.BatchNorm1d | nn.BatchNorm2d) -> nn.Module:
    """A convolution with ``bn`` (in eval mode: running statistics) folded into its weight and
    bias: ``bn(conv(x)) == folded(x)`` up to float rounding. Computed in float64, stored in the
    conv's dtype."""
    scale = bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)  # (C_out,)
    bias = bn.bias.detach().double() - bn.running_mean.double() * scale
    if conv.bias is not None:
        bias = bias + conv.bias.detach().double() * scale
    folded = type(conv)(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                        padding=conv.padding, dilation=conv.dilation, groups=conv.groups, bias=True)
    shape = (-1,) + (1,) * (conv.weight.dim() - 1)
    dtype, device = conv.weight.dtype, conv.weight.device
    folded.weight = nn.Parameter((conv.weight.detach().double() * scale.reshape(shape)).to(device, dtype),
                                 requires_grad=False)
    folded.bias = nn.Parameter(bias.to(device, dtype), requires_grad=False)
    return folded


class FusedConvBlock(nn.Module):
    """Inference-only :class:`ConvBlock` / :class:`ConvBlock5x5`: each conv has its BN folded in
    and its ReLU fused as a oneDNN post-op, with the weights reordered once into oneDNN's blocked
    layout (on CPU; plain ``conv2d`` + in-place ReLU elsewhere). Unfused, every call re-reads
    each weight to reorder it (151 MB for Cnn14's last convolution, as long as the convolution
    itself at batch 1) and makes two more passes over every activation (BN, ReLU).

    The packed weights are a cache keyed by dtype (float32, or bfloat16 under CPU autocast),
    built on first use and not part of the state dict. Raises in training mode, where BN
    statistics must update and the unfused block has to be used."""

    def __init__(self, block: ConvBlock | ConvBlock5x5) -> None:
        super().__init__()
        pairs = [(block.conv1, block.bn1)] + ([(block.conv2, block.bn2)] if hasattr(block, "conv2") else [])
        self.convs = nn.ModuleList(fold_batchnorm(conv, bn) for conv, bn in pairs)
        self._packed: dict[torch.dtype, list[tuple[Tensor, Tensor]]] = {}

    def _onednn(self, x: Tensor) -> bool:
        return (x.device.type == "cpu" and torch.backends.mkldnn.is_available()
                and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
                and all(c.weight.device.type == "cpu" for c in self.convs))

    def _packed_weights(self, dtype: torch.dtype) -> list[tuple[Tensor, Tensor]]:
        if dtype not in self._packed:
            packs = []
            for c in self.convs:
                w = c.weight.detach().to(dtype).contiguous(memory_format=torch.channels_last)
                w = torch._C._nn.mkldnn_reorder_conv2d_weight(
                    w.to_mkldnn(), list(c.padding), list(c.stride), list(c.dilation), c.groups)
                packs.append((w, c.bias.detach().to(dtype)))
            self._packed[dtype] = packs
        return self._packed[dtype]

    def forward(self, x: Tensor, pool: tuple[int, int] = (2, 2)) -> Tensor:
        if self.training:
            raise RuntimeError("FusedConvBlock is for inference; train the unfused model")
        if not self._onednn(x):
            for conv in self.convs:
                x = F.relu_(conv(x))  # (B, C_out, F, M)
            return _pool2d(x, pool)
        dtype = torch.float32
        if torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16:
            dtype = torch.bfloat16  # autocast does not see the oneDNN op: cast as it would
        x = x.to(dtype).contiguous(memory_format=torch.channels_last)
        for conv, (w, b) in zip(self.convs, self._packed_weights(dtype)):
            x = torch.ops.mkldnn._convolution_pointwise(
                x, w, b, list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups,
                "relu", [], "")  # (B, C_out, F, M), conv + folded BN + ReLU in one kernel
        return _pool2d(x, pool)  # (B, C_out, F / p0, M / p1)


def fuse_for_inference(model: PannsEncoder, inplace: bool = False) -> PannsEncoder:
    """The encoder for inference: every :class:`ConvBlock` / :class:`ConvBlock5x5` replaced by a
    :class:`FusedConvBlock` (BatchNorm folded into the convolution, in-place ReLU), weights in
    channels-last layout (oneDNN's native one: no layout reorder around every convolution), eval
    mode, no gradients. Outputs equal the unfused model's in eval mode to float rounding.

    A copy by default, so training and checkpoints keep the unfused model; ``inplace=True`` for
    a model loaded only to embed (indexing, evaluation). The fused model's state dict has no BN
    keys: save the original, never this one."""
    import copy

    fused = model if inplace else copy.deepcopy(model)
    for parent in list(fused.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, (ConvBlock, ConvBlock5x5)):
                setattr(parent, name, FusedConvBlock(child))
    fused.eval().requires_grad_(False)
    return fused.to(memory_format=torch.channels_last)


# --- checkpoints -----------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _torchlibrosa_buffers(cfg: FrontendConfig) -> dict[str, Tensor]:
    # Building the DFT kernels takes ~0.1 s; converters only read them, so cache per config.
    return torchlibrosa_buffers(cfg)


def convert_panns_state_dict(
    sd: Mapping[str, Any], frontend_cfg: FrontendConfig = FrontendConfig()
) -> dict[str, Tensor]:
    """Official PANNs checkpoint content -> a state dict for our encoders (pure; input untouched).

    Accepts the file content (a dict with key ``"model"``, as released) or the bare state dict.
    torchlibrosa's STFT kernels and mel matrix are compared with the ones ``frontend_cfg`` implies
    (max |diff| <= ``FRONTEND_ATOL``): a mismatch means the network was trained on other features,
    which would silently degrade every embedding, so it raises WeightsError naming the key. Once
    checked they are removed (our front end computes them). Every other key is passed through
    unchanged; :func:`load_panns_state_dict` then loads strictly.
    """
    if "model" in sd and isinstance(sd["model"], Mapping):
        sd = sd["model"]
    expected = _torchlibrosa_buffers(frontend_cfg)
    for key, want in expected.items():
        if key not in sd:
            raise WeightsError(
                f"PANNs checkpoint lacks front-end tensor {key!r}; cannot verify that it was "
                "trained on our log-mel features"
            )
        got = sd[key]
        if not isinstance(got, Tensor) or tuple(got.shape) != tuple(want.shape):
            shape = tuple(got.shape) if isinstance(got, Tensor) else type(got).__name__
            raise WeightsError(
                f"PANNs checkpoint front-end tensor {key!r} has shape {shape}, expected "
                f"{tuple(want.shape)} for {frontend_cfg}"
            )
        diff = (got.detach().to(torch.float64).cpu() - want.to(torch.float64)).abs().max().item()
        if not diff <= FRONTEND_ATOL:  # also catches NaN
            raise WeightsError(
                f"PANNs checkpoint front-end tensor {key!r} differs from ours by {diff:.3g} "
                f"(tolerance {FRONTEND_ATOL}): it was trained with other front-end settings than "
                f"{frontend_cfg}"
            )
    out: dict[str, Tensor] = {}
    for key, value in sd.items():
        if key in expected:
            continue
        if key.startswith(_FRONTEND_KEY_PREFIXES):
            raise WeightsError(f"PANNs checkpoint has an unknown front-end tensor {key!r}")
        if not isinstance(value, Tensor):
            kind = type(value).__name__
            raise WeightsError(f"PANNs checkpoint entry {key!r} is a {kind}, not a tensor")
        out[key] = value
    return out


def load_panns_state_dict(model: PannsEncoder, sd: Mapping[str, Tensor]) -> PannsEncoder:
    """Load a converted state dict with ``strict=True``, turning mismatches into a WeightsError
    that lists every missing and unexpected key and every shape mismatch."""
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    shapes = sorted(
        f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(sd)
        if tuple(sd[k].shape) != tuple(own[k].shape)
    )
    if missing or unexpected or shapes:
        parts = [f"missing keys {missing}"] if missing else []
        parts += [f"unexpected keys {unexpected}"] if unexpected else []
        parts += [f"shape mismatches {shapes}"] if shapes else []
        name = type(model).__name__
        raise WeightsError(f"{name}: state dict does not match: " + "; ".join(parts))
    model.load_state_dict(sd, strict=True)
    return model


# The released files hold the training sampler's state beside ``model`` (numpy arrays and a
# RandomState tuple). Reading them needs numpy's array-reconstruction globals, which rebuild
# arrays from bytes and run no code; nothing else is allowed.
def load_panns_checkpoint(
    name_or_model: str | PannsEncoder, path: str | Path, **options: Any
) -> PannsEncoder:
    """Build (by registry name, with ``options``) or take a PANNs encoder and load an official
    checkpoint file into it: ``torch.load(weights_only=True)`` -> :func:`convert_panns_state_dict`
    -> strict load. Returns the model in eval mode."""
    if isinstance(name_or_model, str):
        model = create_audio_encoder(name_or_model, **options)
        if not isinstance(model, PannsEncoder):
            raise ConfigError(f"{name_or_model!r} is not a PANNs encoder")
    else:
        if options:
            raise ConfigError(f"options {sorted(options)} are only used when building by name")
        model = name_or_model
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{str(path)!r}: PANNs checkpoint not found")
    try:
        raw = read_file(path, "PANNs checkpoint")
    except WeightsError as e:
        raise WeightsError(f"{str(path)!r}: {e}") from None
    if not isinstance(raw, Mapping):
        raise WeightsError(f"{str(path)!r}: expected a dict, got {type(raw).__name__}")
    try:
        sd = convert_panns_state_dict(raw, model.frontend_cfg)
        load_panns_state_dict(model, sd)
    except WeightsError as e:
        raise WeightsError(f"{str(path)!r}: {e}") from None
    return model.eval()


def _looks_like_panns(obj: Any) -> bool:
    # The release's {"model": state_dict, ...}: the log-mel buffers and CNN14's first block.
    sd = obj.get("model", obj) if isinstance(obj, Mapping) else {}
    return isinstance(sd, Mapping) and "logmel_extractor.melW" in sd and "bn0.weight" in sd


@register_converter("panns", detect=_looks_like_panns)
def load_panns_weights(tower: PannsEncoder, path: Path) -> None:
    """``weights:`` on a PANNs tower: the official file, converted and loaded strictly."""
    if not isinstance(tower, PannsEncoder):
        raise ConfigError(f"PANNs weights need a PANNs encoder, got {type(tower).__name__}")
    load_panns_checkpoint(tower, path)
