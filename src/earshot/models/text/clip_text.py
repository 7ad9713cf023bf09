"""CLIP's text transformer with OpenAI's parameter names, and converters for two foreign formats.

The tower (Radford et al. 2021, as in openai/CLIP ``model.py``): token + learned positional
embeddings, ``layers`` pre-LayerNorm residual attention blocks under a causal mask, QuickGELU
MLPs of width ``4 * width``, a final LayerNorm, and the feature read at the end-of-text token
(the largest id in each row) multiplied by ``text_projection``. Module and parameter names match
OpenAI's exactly (``transformer.resblocks.{i}.attn.in_proj_weight``, ``mlp.c_fc``, ...), so the
text part of an OpenAI CLIP or AudioCLIP checkpoint loads with ``strict=True`` after a converter
has removed the other towers.

Two foreign formats are read:

* OpenAI CLIP (``RN50.pt``, ``ViT-B-32.pt``, ...) ships TorchScript archives with fp16 weights:
  :func:`read_openai_clip_checkpoint` does ``torch.jit.load(path, map_location="cpu").state_dict()``
  and :func:`convert_openai_clip_text_state_dict` keeps the text keys as float32.
* AudioCLIP (``AudioCLIP-Full-Training.pt``) is a plain ``torch.save`` of the whole model's state
  dict, text keys at the top level beside ``visual.*``, ``audio.*`` and three logit scales:
  :func:`read_audioclip_checkpoint` and :func:`convert_audioclip_text_state_dict`.

Every key of a checkpoint is either a text key or on an explicit list of known non-text keys;
anything else is a WeightsError, so a checkpoint from an unexpected source fails loudly.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from earshot.errors import ConfigError, WeightsError


@dataclass(frozen=True)
class CLIPTextConfig:
    """Shape of a CLIP text tower. Defaults are RN50's, which AudioCLIP reuses."""

    embed_dim: int = 1024  # output size of text_projection (1024: RN50/AudioCLIP; 512: ViT-B/32)
    context_length: int = 77  # number of positions; the tokenizer pads/truncates to it
    vocab_size: int = 49408  # CLIP BPE vocabulary, including <|startoftext|> and <|endoftext|>
    width: int = 512  # residual stream width
    layers: int = 12  # residual attention blocks
    heads: int = 8  # attention heads (OpenAI uses width // 64)

    def __post_init__(self) -> None:
        for name in ("embed_dim", "context_length", "vocab_size", "width", "layers", "heads"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"CLIPTextConfig.{name} must be positive, got {getattr(self, name)}")
        if self.width % self.heads:
            raise ConfigError(
                f"CLIPTextConfig: width {self.width} is not divisible by heads {self.heads}"
            )


# Text towers of the released OpenAI models (from their checkpoints' tensor shapes).
CLIP_TEXT_PRESETS: dict[str, CLIPTextConfig] = {
    "rn50": CLIPTextConfig(embed_dim=1024),
    "audioclip": CLIPTextConfig(embed_dim=1024),
    "rn101": CLIPTextConfig(embed_dim=512),
    "vit_b32": CLIPTextConfig(embed_dim=512),
    "vit_b16": CLIPTextConfig(embed_dim=512),
    "vit_l14": CLIPTextConfig(embed_dim=768, width=768, heads=12),
}


class QuickGELU(nn.Module):
    """``x * sigmoid(1.702 x)``: the GELU approximation CLIP was trained with (not nn.GELU)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    """Pre-LN block: ``x + attn(ln_1(x))`` then ``x + mlp(ln_2(x))``."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        # batch_first only changes the call convention; parameter names stay OpenAI's.
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            OrderedDict(
                [
                    ("c_fc", nn.Linear(width, 4 * width)),
                    ("gelu", QuickGELU()),
                    ("c_proj", nn.Linear(4 * width, width)),
                ]
            )
        )
        self.ln_2 = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        h = self.ln_1(x)  # (B, L, W)
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=attn_mask)[0]  # (B, L, W)
        return x + self.mlp(self.ln_2(x))  # (B, L, W)


class _Transformer(nn.Module):
    """Holds ``resblocks`` so that keys read ``transformer.resblocks.{i}....`` as in OpenAI's."""

    def __init__(self, width: int, layers: int, heads: int):
        super().__init__()
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(width, heads) for _ in range(layers))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x, attn_mask)
        return x


class CLIPTextTransformer(nn.Module):
    """Token ids ``(B, L)`` -> projected text features ``(B, embed_dim)`` (not normalised).

    ``L`` may be shorter than ``context_length``: under the causal mask the feature at the end
    token does not depend on the padding after it, so callers may drop trailing padding columns.
    """

    def __init__(self, cfg: CLIPTextConfig = CLIPTextConfig()):
        super().__init__()
        self.cfg = cfg
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.width)
        self.positional_embedding = nn.Parameter(torch.empty(cfg.context_length, cfg.width))
        self.transformer = _Transformer(cfg.width, cfg.layers, cfg.heads)
        self.ln_final = nn.LayerNorm(cfg.width)
        self.text_projection = nn.Parameter(torch.empty(cfg.width, cfg.embed_dim))
        # Additive causal mask; not persistent, so it never appears in (or is required from) a
        # state dict, exactly like OpenAI's attribute.
        mask = torch.full((cfg.context_length, cfg.context_length), float("-inf")).triu_(1)
        self.register_buffer("attn_mask", mask, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """OpenAI's initialisation (same normal standard deviations), for training from scratch."""
        w, n = self.cfg.width, self.cfg.layers
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        proj_std = w**-0.5 * (2 * n) ** -0.5
        for block in self.transformer.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=w**-0.5)
            nn.init.zeros_(block.attn.in_proj_bias)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.zeros_(block.attn.out_proj.bias)
            nn.init.normal_(block.mlp.c_fc.weight, std=(2 * w) ** -0.5)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
        nn.init.normal_(self.text_projection, std=w**-0.5)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.dim() != 2 or tokens.shape[1] > self.cfg.context_length:
            raise ValueError(
                f"expected token ids (B, L<={self.cfg.context_length}), got {tuple(tokens.shape)}"
            )
        length = tokens.shape[1]
        x = self.token_embedding(tokens) + self.positional_embedding[:length]  # (B, L, W)
        x = self.transformer(x, self.attn_mask[:length, :length].to(x.dtype))  # (B, L, W)
        x = self.ln_final(x)  # (B, L, W)
        # The end-of-text token has the largest id in every row (49407), so argmax finds it.
        eot = tokens.argmax(dim=-1)  # (B,)
        x = x[torch.arange(x.shape[0], device=x.device), eot]  # (B, W)
        return x @ self.text_projection  # (B, E)


# ---- foreign checkpoints -------------------------------------------------------------------

_TEXT_PREFIXES = ("token_embedding.", "transformer.resblocks.", "ln_final.")
_TEXT_NAMES = ("positional_embedding", "text_projection")
_REQUIRED = (
    "token_embedding.weight",
    "positional_embedding",
    "ln_final.weight",
    "ln_final.bias",
    "text_projection",
)
# Keys of an OpenAI checkpoint that are not the text tower: the image tower, the image-text
# temperature, and three scalar attributes that TorchScript archives carry as tensors.
OPENAI_NON_TEXT_PREFIXES = ("visual.",)
OPENAI_NON_TEXT_NAMES = ("logit_scale", "input_resolution", "context_length", "vocab_size")
# AudioCLIP adds an audio tower and two more temperatures (audio-image, audio-text).
AUDIOCLIP_NON_TEXT_PREFIXES = ("visual.", "audio.")
AUDIOCLIP_NON_TEXT_NAMES = ("logit_scale", "logit_scale_ai", "logit_scale_at")


def _is_text_key(key: str) -> bool:
    return key in _TEXT_NAMES or key.startswith(_TEXT_PREFIXES)


def _split_text_keys(
    sd: Mapping[str, torch.Tensor],
    source: str,
    drop_prefixes: tuple[str, ...],
    drop_names: tuple[str, ...],
) -> dict[str, torch.Tensor]:
    if not isinstance(sd, Mapping):
        raise WeightsError(f"{source} checkpoint: expected a state dict, got {type(sd).__name__}")
    unknown = sorted(
        k for k in sd if not _is_text_key(k) and k not in drop_names and not k.startswith(drop_prefixes)
    )
    if unknown:
        raise WeightsError(
            f"{source} checkpoint: unexpected key(s) {unknown[:8]}"
            f"{' ...' if len(unknown) > 8 else ''}; is this really a {source} checkpoint?"
        )
    out = {k: v for k, v in sd.items() if _is_text_key(k)}
    missing = [k for k in _REQUIRED if k not in out]
    if not any(k.startswith("transformer.resblocks.") for k in out):
        missing.append("transformer.resblocks.*")
    if missing:
        raise WeightsError(f"{source} checkpoint: text tower key(s) missing: {missing}")
    for k, v in out.items():
        if not isinstance(v, torch.Tensor):
            raise WeightsError(f"{source} checkpoint: {k!r} is not a tensor")
    # OpenAI ships fp16; earshot computes in float32 and casts where it wants mixed precision.
    return {k: v.detach().to(torch.float32).contiguous() for k, v in out.items()}


def convert_openai_clip_text_state_dict(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The text-tower part of an OpenAI CLIP state dict, as float32, ready for a strict load.

    Drops exactly ``visual.*`` and :data:`OPENAI_NON_TEXT_NAMES`; any other non-text key, or a
    missing text key, raises WeightsError. Read the TorchScript file first with
    :func:`read_openai_clip_checkpoint`.
    """
    return _split_text_keys(sd, "OpenAI CLIP", OPENAI_NON_TEXT_PREFIXES, OPENAI_NON_TEXT_NAMES)


def convert_audioclip_text_state_dict(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The text-tower part of an AudioCLIP state dict (``AudioCLIP-*.pt``), as float32.

    Drops exactly ``visual.*``, ``audio.*`` and :data:`AUDIOCLIP_NON_TEXT_NAMES`; anything else
    unexpected, or a missing text key, raises WeightsError.
    """
    return _split_text_keys(
        sd, "AudioCLIP", AUDIOCLIP_NON_TEXT_PREFIXES, AUDIOCLIP_NON_TEXT_NAMES
    )


def clip_text_config_from_state_dict(sd: Mapping[str, torch.Tensor]) -> CLIPTextConfig:
    """The tower shape a converted state dict implies (heads = width // 64, as OpenAI's builder).

    Used to build the right model for a checkpoint and to explain a shape mismatch.
    """
    try:
        vocab, width = sd["token_embedding.weight"].shape
        context = sd["positional_embedding"].shape[0]
        embed = sd["text_projection"].shape[1]
    except KeyError as e:
        raise WeightsError(f"CLIP text state dict: missing {e.args[0]!r}") from None
    layers = len({k.split(".")[2] for k in sd if k.startswith("transformer.resblocks.")})
    return CLIPTextConfig(
        embed_dim=int(embed),
        context_length=int(context),
        vocab_size=int(vocab),
        width=int(width),
        layers=layers,
        heads=max(1, int(width) // 64),
    )


def load_clip_text_state_dict(model: CLIPTextTransformer, sd: Mapping[str, torch.Tensor]) -> None:
    """Strictly load a converted state dict; a WeightsError lists missing, extra, mis-shaped keys."""
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    shapes = [
        f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(sd))
        if tuple(sd[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        hint = ""
        try:
            hint = f"; the checkpoint looks like {clip_text_config_from_state_dict(sd)}"
        except (WeightsError, ConfigError, IndexError, ValueError):
            pass
        raise WeightsError(
            f"CLIP text weights do not match {model.cfg}: missing={missing[:8]} "
            f"unexpected={unexpected[:8]} shape mismatches={shapes[:8]}{hint}"
        )
    model.load_state_dict(dict(sd), strict=True)


def read_openai_clip_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of an OpenAI CLIP file (``torch.jit.load(path, map_location="cpu").state_dict()``).

    The released files are TorchScript archives, whose state dict has the OpenAI key names. A
    plain (non-TorchScript) state-dict file with the same keys is read with ``weights_only=True``.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such OpenAI CLIP checkpoint")
    try:
        return dict(torch.jit.load(str(path), map_location="cpu").state_dict())
    except RuntimeError:
        pass  # not a TorchScript archive: try a plain state dict below
    return _torch_load_state_dict(path, "OpenAI CLIP")


def read_audioclip_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of an AudioCLIP ``.pt`` file (a plain state dict; ``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such AudioCLIP checkpoint")
    return _torch_load_state_dict(path, "AudioCLIP")


def _torch_load_state_dict(path: Path, source: str) -> dict[str, torch.Tensor]:
    from earshot.models.converters import read_state_dict

    return read_state_dict(path, what=f"{source} checkpoint")
