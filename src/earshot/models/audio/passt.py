"""PaSST, the Patchout faSt Spectrogram Transformer (Koutini et al., Interspeech 2022), reference-exact.

The architecture and parameter names are those of ``kkoutini/PaSST`` as packaged in
``hear21passt`` 0.0.26 (``hear21passt/models/passt.py``, class ``PaSST``), so the released
AudioSet checkpoints load with ``strict=True`` after :func:`convert_passt_state_dict`. The
registered encoder ``passt`` is configured as the DCASE 2025 Task 6 baseline uses it
(CPJKU ``dcase2025_task6_baseline``, ``d25_t6/passt.py``): ``passt_s_p16_s16_128_ap468``
(PaSST-S, 16x16 patches with stride 16, 128 mel bins, ``input_tdim=1000``), structured patch-out
of 15 time and 2 frequency patch columns/rows during training, and the embedding the baseline
reads: the mean of the final-normed class and distillation tokens (768-d).

Front end (:class:`PasstMel`): ``hear21passt``'s ``AugmentMelSTFT`` with the baseline's settings
(32 kHz; pre-emphasis ``x[n+1] - 0.97 x[n]``; STFT n_fft 1024, window 800 (symmetric Hann, zero
padded to 1024), hop 320, reflect-centred; power; 128-band Kaldi-style mel filterbank on
0-15000 Hz computed here exactly as ``torchaudio.compliance.kaldi.get_mel_banks`` does, plus a
zero column for the Nyquist bin; ``log(x + 1e-5)``; ``(x + 4.5) / 5``). In training mode the
filterbank's edges are jittered as the reference does (fmin + U{0..9} Hz, fmax + 1000 - U{0..1999}
Hz, drawn from torch's global RNG in the reference's order). The baseline sets no SpecAugment
(``freqm = timem = 0``), so none is implemented.

Clips: PaSST sees 10 s segments (62 time patches). :class:`PasstEncoder` cuts a waveform into up to
``max_segments`` (3) consecutive 10 s segments, zero-pads the last, embeds each and averages
them, which is the baseline's ``CutInputIntoSegmentsWrapper`` plus its duration rule (a clip of at
most 10 s uses segment 1, at most 20 s the mean of segments 1-2, else of all three). The
baseline knows each clip's duration (the file's, or a training crop's before padding). Here
``forward(waveform, lengths)`` takes it in samples: earshot's loaders carry each crop's true
length through the batch (``CaptionBatch.lengths``, ``ClipBatch.lengths``) into training,
validation, evaluation and the frozen-tower cache. Without ``lengths`` the row's full width is
its duration (whole clips are batched by length, never padded). Trailing zeros never shorten a
clip: a clip whose last seconds are digital silence keeps its segments. Beyond ``max_segments``
segments the rest of a clip is ignored (the baseline crops clips to 30 s before the model).

The classifier heads (``head``, ``head_dist``) load but never train (:meth:`unused_modules`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from earshot.config import from_dict, to_dict
from earshot.errors import ConfigError, WeightsError
from earshot.models.base import AudioEncoder, register_audio_encoder
from earshot.models.converters import read_state_dict, register_converter

__all__ = [
    "PasstConfig",
    "PasstEncoder",
    "PasstMel",
    "convert_passt_state_dict",
    "kaldi_mel_banks",
    "load_passt_checkpoint",
]


@dataclass(frozen=True)
class PasstConfig:
    """PaSST-S as the DCASE 2025 baseline builds it; smaller values make test-sized models."""

    embed_dim: int = 768  # token width (PaSST-S)
    depth: int = 12  # transformer blocks
    num_heads: int = 12  # attention heads
    mlp_ratio: float = 4.0  # MLP hidden width / embed_dim
    patch_size: int = 16  # square patch side, in mel bins and frames
    fstride: int = 16  # patch stride over frequency (passt_s_p16_s16: no overlap)
    tstride: int = 16  # patch stride over time
    input_tdim: int = 1000  # frames the time position embedding covers (baseline: 1000 -> 62)
    num_classes: int = 527  # AudioSet heads (kept for strict loading, unused)
    s_patchout_t: int = 15  # time patch columns dropped per training step (baseline)
    s_patchout_f: int = 2  # frequency patch rows dropped per training step (baseline)
    u_patchout: int = 0  # unstructured patch-out: patches dropped per step (off in the baseline)
    sample_rate: int = 32000  # Hz
    n_mels: int = 128  # mel bands (= the frequency extent of the patch grid)
    n_fft: int = 1024  # FFT size
    win_length: int = 800  # Hann window, zero-padded to n_fft
    hop_length: int = 320  # 10 ms
    fmin: float = 0.0  # lowest mel edge, Hz
    fmax: float | None = None  # highest mel edge; None: sr/2 - fmax_aug_range/2 (15000 Hz)
    fmin_aug_range: int = 10  # training jitter of fmin, Hz (1 = none)
    fmax_aug_range: int = 2000  # training jitter of fmax, Hz (1 = none)
    segment_seconds: float = 10.0  # PaSST's input length
    max_segments: int = 3  # segments per clip (30 s)

    def __post_init__(self) -> None:
        if self.embed_dim % self.num_heads:
            raise ConfigError(f"passt: embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if self.fmin_aug_range < 1 or self.fmax_aug_range < 1:
            raise ConfigError("passt: fmin_aug_range and fmax_aug_range must be >= 1 (1 = no jitter)")
        if self.max_segments < 1 or self.segment_seconds <= 0:
            raise ConfigError("passt: max_segments must be >= 1 and segment_seconds > 0")
        if min(self.s_patchout_t, self.s_patchout_f, self.u_patchout) < 0:
            raise ConfigError("passt: patch-out sizes must be >= 0")

    @property
    def mel_fmax(self) -> float:
        return float(self.fmax) if self.fmax is not None else float(self.sample_rate // 2 - self.fmax_aug_range // 2)

    @property
    def grid(self) -> tuple[int, int]:
        """(frequency, time) patch grid of the position embeddings (PatchEmbed.grid_size)."""
        return self.n_mels // self.fstride, self.input_tdim // self.tstride


# --- front end -----------------------------------------------------------------------------------


def kaldi_mel_banks(n_mels: int, n_fft: int, sample_rate: float, fmin: float, fmax: float) -> Tensor:
    """``(n_mels, n_fft // 2)`` float32 triangular filters on Kaldi's mel scale
    (``1127 ln(1 + f / 700)``), computed with the same float32 operations, in the same order, as
    ``torchaudio.compliance.kaldi.get_mel_banks`` without VTLN warping, so the values match it
    to fp32 rounding (bit for bit on one machine; ``tests/models/test_passt.py`` checks against
    torchaudio 2.11's goldens within a few ulps, since CPUs' ``log`` kernels differ by ~1 ulp).
    The highest FFT bin (Nyquist) is not covered, as in Kaldi."""
    nyquist = 0.5 * sample_rate
    if not (0.0 <= fmin < nyquist and 0.0 < fmax <= nyquist and fmin < fmax):
        raise ConfigError(f"mel edges must satisfy 0 <= fmin < fmax <= {nyquist}; got {fmin}, {fmax}")
    mel_low = 1127.0 * math.log(1.0 + fmin / 700.0)  # python floats, as torchaudio's scalars
    mel_high = 1127.0 * math.log(1.0 + fmax / 700.0)
    delta = (mel_high - mel_low) / (n_mels + 1)
    band = torch.arange(n_mels).unsqueeze(1)  # (M, 1) int64
    left = mel_low + band * delta  # (M, 1) float32
    center = mel_low + (band + 1.0) * delta
    right = mel_low + (band + 2.0) * delta
    freqs = (sample_rate / n_fft) * torch.arange(n_fft / 2)  # (n_fft/2,) float32
    mel = (1127.0 * (1.0 + freqs / 700.0).log()).unsqueeze(0)  # (1, n_fft/2)
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    return torch.max(torch.zeros(1), torch.min(up, down))  # (M, n_fft/2)


class PasstMel(nn.Module):
    """Waveforms ``(B, T)`` -> normalised log-mels ``(B, n_mels, 1 + (T - 1) // hop)``.

    No parameters; the window, the pre-emphasis filter and the evaluation filterbank are
    non-persistent buffers, so checkpoints carry none of them (as in the reference)."""

    def __init__(self, cfg: PasstConfig):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("window", torch.hann_window(cfg.win_length, periodic=False), persistent=False)
        self.register_buffer("preemphasis", torch.tensor([[[-0.97, 1.0]]]), persistent=False)
        self.register_buffer("mel_basis", self._basis(cfg.fmin, cfg.mel_fmax), persistent=False)

    def _basis(self, fmin: float, fmax: float) -> Tensor:
        c = self.cfg
        # the reference pads the Nyquist column with zeros: (M, n_fft/2 + 1)
        return F.pad(kaldi_mel_banks(c.n_mels, c.n_fft, c.sample_rate, fmin, fmax), (0, 1))

    def forward(self, waveform: Tensor) -> Tensor:
        # float32 throughout, also under mixed precision: a bf16 pre-emphasis or filterbank product
        # would add noise of the order of the quietest mel bands (the reference turns autocast off
        # for the product only)
        with torch.autocast(waveform.device.type, enabled=False):
            return self._features(waveform.float())

    def _features(self, waveform: Tensor) -> Tensor:
        c = self.cfg
        x = F.conv1d(waveform.unsqueeze(1), self.preemphasis).squeeze(1)  # (B, T - 1)
        spec = torch.stft(x, c.n_fft, hop_length=c.hop_length, win_length=c.win_length, window=self.window,
                          center=True, normalized=False, return_complex=True)  # (B, n_fft/2 + 1, frames)
        power = spec.real.square() + spec.imag.square()
        basis = self.mel_basis
        if self.training:
            # the reference draws both jitters from the global RNG, fmin first
            fmin = c.fmin + torch.randint(c.fmin_aug_range, (1,)).item()
            fmax = c.mel_fmax + c.fmax_aug_range // 2 - torch.randint(c.fmax_aug_range, (1,)).item()
            basis = self._basis(fmin, fmax).to(power.device)
        mel = basis @ power  # (B, M, frames)
        return ((mel + 1e-5).log() + 4.5) / 5.0


# --- the transformer (reference names: patch_embed.proj, blocks.N.attn.qkv, ...) ----------------


class PatchEmbed(nn.Module):
    """Conv patchifier; the reference's ``norm`` is an identity without weights."""

    def __init__(self, cfg: PasstConfig):
        super().__init__()
        self.proj = nn.Conv2d(1, cfg.embed_dim, kernel_size=cfg.patch_size, stride=(cfg.fstride, cfg.tstride))

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x)  # (B, 1, F, T) -> (B, E, f, t)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (B, heads, N, head_dim) each
        # softmax(q k^T / sqrt(head_dim)) v, as the reference writes out by hand
        x = F.scaled_dot_product_attention(q, k, v)  # (B, heads, N, head_dim)
        return self.proj(x.transpose(1, 2).reshape(b, n, c))  # (B, N, C)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block (LayerNorm eps 1e-6, as the reference)."""

    def __init__(self, cfg: PasstConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.embed_dim, eps=1e-6)
        self.attn = Attention(cfg.embed_dim, cfg.num_heads)
        self.norm2 = nn.LayerNorm(cfg.embed_dim, eps=1e-6)
        self.mlp = Mlp(cfg.embed_dim, int(cfg.embed_dim * cfg.mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PasstEncoder(AudioEncoder):
    """PaSST-S (distilled: class and distillation tokens) with its mel front end; 768-d output."""

    takes_lengths = True  # the baseline's duration rule needs each clip's true length

    def __init__(self, cfg: PasstConfig | None = None):
        super().__init__()
        cfg = cfg or PasstConfig()
        self.cfg = cfg
        self.sample_rate = cfg.sample_rate
        self.embed_dim = cfg.embed_dim
        e = cfg.embed_dim
        f_grid, t_grid = cfg.grid
        self.mel = PasstMel(cfg)
        self.patch_embed = PatchEmbed(cfg)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, e))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, e))
        self.new_pos_embed = nn.Parameter(torch.zeros(1, 2, e))  # class and distillation tokens
        self.freq_new_pos_embed = nn.Parameter(torch.zeros(1, e, f_grid, 1))
        self.time_new_pos_embed = nn.Parameter(torch.zeros(1, e, 1, t_grid))
        self.blocks = nn.Sequential(*[Block(cfg) for _ in range(cfg.depth)])
        self.norm = nn.LayerNorm(e, eps=1e-6)
        self.head = nn.Sequential(nn.LayerNorm(e), nn.Linear(e, cfg.num_classes))
        self.head_dist = nn.Linear(e, cfg.num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # the reference's init: truncated normal (std 0.02) for tokens, position embeddings and
        # every Linear (zero biases); LayerNorms at 1/0; the patch conv keeps PyTorch's default
        for p in (self.new_pos_embed, self.freq_new_pos_embed, self.time_new_pos_embed, self.dist_token,
                  self.cls_token):
            nn.init.trunc_normal_(p, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    # -- AudioEncoder facts -----------------------------------------------------------------
    @property
    def trunk(self) -> nn.Sequential:
        """The transformer blocks. They are registered as ``blocks`` (the reference's key prefix),
        which the :meth:`blocks` method of the encoder interface shadows as an attribute."""
        return self._modules["blocks"]

    def blocks(self) -> list[nn.Module]:  # type: ignore[override]
        return list(self.trunk)

    def unused_modules(self) -> list[nn.Module]:
        return [self.head, self.head_dist]

    def frontend_settings(self) -> dict[str, Any]:
        c = self.cfg
        return {"sample_rate": c.sample_rate, "frontend": "passt_kaldi_mel", "n_fft": c.n_fft,
                "win_length": c.win_length, "hop_length": c.hop_length, "n_mels": c.n_mels,
                "fmin": c.fmin, "fmax": c.mel_fmax, "preemphasis": 0.97,
                "segment_seconds": c.segment_seconds, "max_segments": c.max_segments}

    @property
    def segment_samples(self) -> int:
        return int(round(self.cfg.segment_seconds * self.cfg.sample_rate))

    # -- forward --------------------------------------------------------------------------------
    def _patchout(self, x: Tensor) -> Tensor:
        """Structured patch-out (training only): drop random time columns, then frequency rows,
        of the patch grid, drawing from the global RNG in the reference's order."""
        c = self.cfg
        _, _, f_dim, t_dim = x.shape
        if c.s_patchout_t:
            keep = torch.randperm(t_dim)[: t_dim - c.s_patchout_t].sort().values
            x = x[:, :, :, keep.to(x.device)]
        if c.s_patchout_f:
            keep = torch.randperm(f_dim)[: f_dim - c.s_patchout_f].sort().values
            x = x[:, :, keep.to(x.device), :]
        return x

    def embed_mel(self, mel: Tensor) -> Tensor:
        """Log-mels ``(B, n_mels, frames)`` -> the reference's ``features``: the mean of the
        final-normed class and distillation tokens, ``(B, E)``."""
        x = self.patch_embed(mel.unsqueeze(1))  # (B, E, f, t)
        b = x.shape[0]
        x = x + self.time_new_pos_embed[:, :, :, : x.shape[-1]] + self.freq_new_pos_embed  # (B, E, f, t)
        if self.training:
            x = self._patchout(x)  # (B, E, f', t')
        x = x.flatten(2).transpose(1, 2)  # (B, f' t', E)
        if self.training and self.cfg.u_patchout:
            n = x.shape[1]
            keep = torch.randperm(n)[: n - self.cfg.u_patchout].sort().values
            x = x[:, keep.to(x.device), :]
        cls = self.cls_token.expand(b, -1, -1) + self.new_pos_embed[:, :1]  # (B, 1, E)
        dist = self.dist_token.expand(b, -1, -1) + self.new_pos_embed[:, 1:]  # (B, 1, E)
        x = self.norm(self.trunk(torch.cat((cls, dist, x), dim=1)))  # (B, 2 + N, E)
        return (x[:, 0] + x[:, 1]) / 2  # (B, E)

    def embed_segments(self, segments: Tensor) -> Tensor:
        """10 s waveforms ``(S, segment_samples)`` -> ``(S, E)``."""
        return self.embed_mel(self.mel(segments))

    def forward(self, waveform: Tensor, lengths: Tensor | None = None) -> Tensor:
        """``(B, T)`` -> ``(B, E)``; ``lengths`` ``(B,)``: each clip's duration in samples
        (default: see the module docstring)."""
        seg = self.segment_samples
        b, t = waveform.shape  # (B, T)
        if lengths is None:
            lengths = torch.full((b,), t, dtype=torch.long, device=waveform.device)
        n_seg = duration_segments(lengths.to(waveform.device), seg, self.cfg.max_segments)  # (B,)
        s = int(n_seg.max())
        x = waveform[:, : s * seg] if t >= s * seg else F.pad(waveform, (0, s * seg - t))
        x = x.reshape(b, s, seg)  # (B, S, seg)
        used = torch.arange(s, device=x.device)[None, :] < n_seg[:, None]  # (B, S)
        emb = self.embed_segments(x[used])  # (sum n_seg, E): only segments a clip has
        out = torch.zeros(b, s, emb.shape[-1], dtype=emb.dtype, device=emb.device)
        out[used] = emb
        return out.sum(dim=1) / n_seg[:, None].to(emb.dtype)  # (B, E): mean over each clip's segments


def duration_segments(lengths: Tensor, segment: int, max_segments: int) -> Tensor:
    """``(B,)`` segments of clips ``lengths`` samples long: whole or partial segments, between 1
    and ``max_segments`` (the baseline's rule: <= 10 s one, <= 20 s two, else three)."""
    return ((lengths.long() + segment - 1) // segment).clamp(1, max_segments)


@register_audio_encoder("passt")
def passt(config: Mapping[str, Any] | None = None) -> PasstEncoder:
    """PaSST-S as in the DCASE 2025 baseline (randomly initialised; weights through the registry
    entry ``passt_s_p16_s16_128_ap468``); ``config`` overrides :class:`PasstConfig` fields."""
    merged = {**to_dict(PasstConfig()), **dict(config or {})}
    return PasstEncoder(from_dict(PasstConfig, merged, where="passt.config"))


# --- published checkpoints ------------------------------------------------------------------------


def convert_passt_state_dict(sd: Mapping[str, Any]) -> dict[str, Tensor]:
    """A released PaSST state dict (``kkoutini/PaSST`` releases) -> this encoder's keys.

    Pure. The layouts are the same; what the reference's ``checkpoint_filter_fn`` and its
    pre-conv checkpoints need is repeated here: a ``{"model": sd}`` wrapper is opened, and a
    patch projection stored as a ``(E, 1 * p * p)`` matrix becomes the ``(E, 1, p, p)`` conv
    weight. ``torch.compile``'s ``_orig_mod.`` infix is removed. Anything else is passed on for
    the strict load to judge."""
    if "model" in sd and isinstance(sd["model"], Mapping):
        sd = sd["model"]
    out: dict[str, Tensor] = {}
    for key, value in sd.items():
        if not isinstance(value, Tensor):
            raise WeightsError(f"PaSST state dict entry {key!r} is a {type(value).__name__}, not a tensor")
        key = key.replace("_orig_mod.", "")
        if key == "patch_embed.proj.weight" and value.dim() < 4:
            side = math.isqrt(value[0].numel())
            if side * side != value[0].numel():
                raise WeightsError(f"patch_embed.proj.weight {tuple(value.shape)} is not square patches")
            value = value.reshape(value.shape[0], 1, side, side)
        out[key] = value
    return out


def load_passt_state_dict(model: PasstEncoder, sd: Mapping[str, Tensor]) -> None:
    """Strict load that names missing, unexpected and mis-shaped keys."""
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    shapes = [f"{k}: {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        raise WeightsError(f"PaSST weights do not match the model: missing {missing[:8]}, "
                           f"unexpected {unexpected[:8]}, shape mismatches {shapes[:8]}")
    model.load_state_dict(dict(sd), strict=True)


def load_passt_checkpoint(model: PasstEncoder, path: str | Path) -> PasstEncoder:
    """Read a released PaSST ``.pt`` (``weights_only=True``), convert, load strictly."""
    load_passt_state_dict(model, convert_passt_state_dict(read_state_dict(path, what="PaSST checkpoint")))
    return model


def _looks_like_passt(obj: Any) -> bool:
    return isinstance(obj, Mapping) and "patch_embed.proj.weight" in obj and "dist_token" in obj


@register_converter("passt", detect=_looks_like_passt)
def load_passt_weights(tower: PasstEncoder, path: Path) -> None:
    """``weights:`` on a ``passt`` tower: a released AudioSet checkpoint, loaded strictly."""
    if not isinstance(tower, PasstEncoder):
        raise ConfigError(f"PaSST weights need the passt encoder, got {type(tower).__name__}")
    load_passt_checkpoint(tower, path)
