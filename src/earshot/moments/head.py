"""A trained moment head with the features it reads: QD-DETR over an earshot retriever's towers.

:class:`MomentHead` = a :class:`~earshot.moments.qddetr.QDDETR` + :class:`FeatureSpec` (which
retriever's audio tower gives the per-window features, at which window/hop, and how the text is
featurised). ``find_moments`` and ``predict`` run the whole chain on a recording; ``save`` /
:func:`load_moment_head` keep it self-describing (``moment_head.json`` + ``head.safetensors``).
:func:`load_lighthouse_checkpoint` opens lighthouse's published ``.ckpt`` files (``opt`` + ``model``).

Inputs as lighthouse's ``QDDETRPredictor.encode_audio`` builds them: the "video" features are
only the temporal endpoint features (tef), the audio window features are passed unnormalised,
the text token features L2-normalised (eps 1e-5).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from earshot.errors import ConfigError, WeightsError
from earshot.loading.resolve import MOMENT_HEAD_FILE, ModelRef, OpenOptions, downloaded_file, register_opener
from earshot.moments.features import WindowConfig, window_features
from earshot.moments.qddetr import QDDETR, QDDETRConfig, convert_lighthouse_qddetr_state_dict, predict_spans, tef

__all__ = ["FeatureSpec", "MomentHead", "TEXT_FEATURES", "frame_inputs", "load_lighthouse_checkpoint",
           "load_moment_head", "text_features", "window_text_similarity"]

HEAD_CONFIG = MOMENT_HEAD_FILE  # what the resolver recognises a head folder by
HEAD_WEIGHTS = "head.safetensors"


@dataclass(frozen=True)
class FeatureSpec:
    """Where a moment head's inputs come from."""

    retriever: str  # the earshot retriever (path or registry name) whose towers give features
    window_s: float = 1.0  # audio window (lighthouse AMR: 1 s)
    hop_s: float = 1.0  # audio hop = the head's clip length (lighthouse: 1 s)
    text: str = "tokens"  # "tokens": per-token features where the text tower has them, else pooled
    max_windows: int = 300  # longest input (lighthouse max_a_l); longer audio is read in chunks
    # windows to the audio tower: "tower" = padded as it pads short clips; "none" = unpadded,
    # as lighthouse's CLAPAudio (its presets and checkpoints; see WindowConfig.pad)
    pad: Literal["tower", "none"] = "tower"
    # files not at the retriever's rate: "soxr" or "sinc" (torchaudio's, as CLAPAudio)
    resampler: Literal["soxr", "sinc"] = "soxr"
    # earshot: also give the head, per window, the retriever's own cosine between the window's
    # joint-space embedding and the text's (a third "video" channel beside the tef; vid_dim 3).
    # lighthouse has no such input (off in its presets and checkpoints); with few training
    # queries it lets the head start from what the sliding-window baseline sees.
    similarity: bool = False

    def window_config(self) -> WindowConfig:
        """How the audio is cut and fed to the tower for these features."""
        return WindowConfig(window_s=self.window_s, hop_s=self.hop_s, output="tower", pad=self.pad,
                            resampler=self.resampler)


# --- text features ---------------------------------------------------------------------------

# Text towers that expose per-token features: type -> fn(tower, texts) -> list of (Lq_i, D).
TEXT_FEATURES: dict[type, Callable[[Any, list[str]], list[torch.Tensor]]] = {}


def _msclap_gpt2_tokens(tower, texts: list[str]) -> list[torch.Tensor]:
    # lighthouse CLAPText: the GPT-2 last hidden state of every non-pad token of
    # "<caption> <|endoftext|>" (MS-CLAP's preprocess_text).
    device = tower.hf.wte.weight.device
    out = []
    for t in texts:
        batch = tower.tokenizer([t + " <|endoftext|>"], truncation=True, max_length=tower.max_length,
                                return_tensors="pt")
        hidden = tower.hf(input_ids=batch["input_ids"].to(device),
                          attention_mask=batch["attention_mask"].to(device)).last_hidden_state
        out.append(hidden[0].float().cpu())
    return out


def _register_token_features() -> None:
    from earshot.models.text.msclap import MSClapGPT2

    TEXT_FEATURES.setdefault(MSClapGPT2, _msclap_gpt2_tokens)


@torch.inference_mode()
def text_features(retriever: Any, texts: Sequence[str], mode: str = "tokens") -> list[torch.Tensor]:
    """Per text a ``(Lq, D)`` float32 tensor: per-token features of the text tower where it has
    them (``mode="tokens"``), else its pooled output as one token (``mode="pooled"``, or a
    tower without token features)."""
    if mode not in ("tokens", "pooled"):
        raise ConfigError(f"text features must be 'tokens' or 'pooled', got {mode!r}")
    tower = getattr(retriever, "text_encoder", None)
    if tower is None:
        raise ConfigError(f"{type(retriever).__name__} has no single text tower")
    _register_token_features()
    was = tower.training
    tower.eval()
    try:
        fn = TEXT_FEATURES.get(type(tower)) if mode == "tokens" else None
        if fn is not None:
            return fn(tower, list(texts))
        pooled = tower(list(texts)).float().cpu()  # (B, D)
        return [p[None] for p in pooled]
    finally:
        tower.train(was)


def window_text_similarity(retriever: Any, audio_feats: torch.Tensor, texts: Sequence[str]) -> list[torch.Tensor]:
    """Per text, the ``(L,)`` cosine between each window's joint-space embedding (the audio
    tower's outputs ``audio_feats`` through the retriever's projection) and the text's."""
    project = getattr(retriever, "project_audio", None)
    if project is None:
        raise ConfigError(f"{type(retriever).__name__} cannot project tower features (similarity "
                          f"needs a bi-encoder)")
    with torch.inference_mode():
        aud = F.normalize(project(audio_feats.float()).float(), dim=-1)
        txt = F.normalize(torch.as_tensor(np.asarray(retriever.embed_text(list(texts)), np.float32)), dim=-1)
    return [aud @ t for t in txt]


def frame_inputs(n: int, sim: torch.Tensor | None = None, device: Any = None) -> torch.Tensor:
    """The "video" features of ``n`` windows: the tef, with the similarity as a third column."""
    v = tef(n, device)
    return v if sim is None else torch.cat([v, sim[:n, None].to(v)], dim=1)


# --- the head --------------------------------------------------------------------------------


class MomentHead(torch.nn.Module):
    """QD-DETR with its feature recipe; call :meth:`find_moments` on a recording."""

    def __init__(self, qddetr: QDDETR, spec: FeatureSpec, retriever: Any | None = None):
        super().__init__()
        self.qddetr = qddetr
        self.spec = spec
        self._retriever = retriever  # opened lazily from spec.retriever when needed

    @property
    def retriever(self) -> Any:
        if self._retriever is None:
            from earshot.models.inference import prepare_for_inference
            from earshot.loading.retriever import load_retriever

            self._retriever = prepare_for_inference(load_retriever(self.spec.retriever), "fp32")
        return self._retriever

    @property
    def window(self) -> WindowConfig:
        return self.spec.window_config()

    def audio_features(self, audio: str | Path | np.ndarray) -> torch.Tensor:
        """``(L, Da)`` tower features of a recording's windows (cached for files)."""
        return torch.as_tensor(window_features(self.retriever, audio, self.window))

    @torch.inference_mode()
    def predict_features(self, audio_feats: torch.Tensor, text_feats: Sequence[torch.Tensor],
                         top: int = 10, sims: Sequence[torch.Tensor] | None = None) -> list[list[list[float]]]:
        """Per text, ranked ``[start, end, score]`` (seconds) over one recording's features
        (``sims``: per text its window similarities, when ``spec.similarity``).
        A recording longer than ``spec.max_windows`` is read in chunks of that many windows at
        half-chunk hops; their moments are merged (temporal NMS at IoU 0.7) and ranked."""
        from earshot.moments.sliding import temporal_nms

        if self.spec.similarity != (sims is not None):
            raise ConfigError(f"this head {'needs' if self.spec.similarity else 'takes no'} window similarities")
        self.qddetr.eval()
        L, n = audio_feats.shape[0], self.spec.max_windows
        starts = [0] if L <= n else list(range(0, L - n, n // 2)) + [L - n]
        device = next(self.qddetr.parameters()).device
        out = []
        for j, t in enumerate(text_feats):
            txt = F.normalize(t.float(), dim=-1, eps=1e-5)[None].to(device)
            found: list[tuple[float, float, float]] = []
            for s0 in starts:
                chunk = audio_feats[s0 : s0 + n].float()
                m = chunk.shape[0]
                x = dict(src_txt=txt, src_txt_mask=torch.ones(1, t.shape[0], device=device),
                         src_vid=frame_inputs(m, None if sims is None else sims[j][s0 : s0 + n], device)[None],
                         src_vid_mask=torch.ones(1, m, device=device),
                         src_aud=chunk[None].to(device))
                offset = s0 * self.spec.hop_s
                found += [(a + offset, b + offset, sc) for a, b, sc in
                          predict_spans(self.qddetr(**x), duration=m * self.spec.hop_s, top=top,
                                        ranking=self.qddetr.cfg.ranking)]
            if len(starts) > 1:
                found = temporal_nms(found, 0.7)
            out.append([[round(a, 4), round(b, 4), sc] for a, b, sc in found[:top]])
        return out

    def find_moments(self, audio: str | Path | np.ndarray, text: str, top: int = 5) -> list[tuple[float, float, float]]:
        """Where ``text`` happens in ``audio``: up to ``top`` ``(start_s, end_s, score)``, best first."""
        if isinstance(text, (list, tuple)):
            raise TypeError("find_moments takes one text")
        return [(s, e, sc) for s, e, sc in self.predict_texts(self.audio_features(audio), [text], top)[0]]

    def predict_texts(self, audio_feats: torch.Tensor, texts: Sequence[str], top: int = 10) -> list[list[list[float]]]:
        """:meth:`predict_features` for texts: their features (and similarities) computed here."""
        sims = window_text_similarity(self.retriever, audio_feats, texts) if self.spec.similarity else None
        return self.predict_features(audio_feats, text_features(self.retriever, texts, self.spec.text), top, sims)

    def save(self, folder: str | Path) -> Path:
        """``moment_head.json`` (QD-DETR config, feature spec, versions) + ``head.safetensors``."""
        from safetensors.torch import save_file

        from earshot import __version__

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        sd = {k: v.detach().cpu().contiguous() for k, v in self.qddetr.state_dict().items()}
        save_file(sd, str(folder / HEAD_WEIGHTS))
        (folder / HEAD_CONFIG).write_text(json.dumps(
            {"kind": "qd_detr", "qddetr": asdict(self.qddetr.cfg), "features": asdict(self.spec),
             "earshot": __version__}, indent=1))
        return folder


def load_moment_head(folder: str | Path, retriever: Any | None = None) -> MomentHead:
    """A head saved by :meth:`MomentHead.save`, loaded strictly."""
    from safetensors.torch import load_file

    from earshot.config import from_dict

    folder = Path(folder)
    cfg_path = folder / HEAD_CONFIG
    if not cfg_path.is_file():
        raise WeightsError(f"{folder}: not a moment head (no {HEAD_CONFIG})")
    meta = json.loads(cfg_path.read_text())
    model = QDDETR(from_dict(QDDETRConfig, meta["qddetr"], f"{cfg_path}: qddetr"))
    try:
        model.load_state_dict(load_file(str(folder / HEAD_WEIGHTS)), strict=True)
    except (RuntimeError, OSError) as e:
        raise WeightsError(f"{folder / HEAD_WEIGHTS}: does not fit the head: {e}") from None
    return MomentHead(model.eval(), from_dict(FeatureSpec, meta["features"], f"{cfg_path}: features"), retriever)


# lighthouse's opt (argparse.Namespace) -> QDDETRConfig fields
_OPT_FIELDS = {"t_feat_dim": "txt_dim", "v_feat_dim": "vid_dim", "a_feat_dim": "aud_dim",
               "hidden_dim": "hidden_dim", "nheads": "nheads", "enc_layers": "enc_layers",
               "dec_layers": "dec_layers", "dim_feedforward": "dim_feedforward", "dropout": "dropout",
               "input_dropout": "input_dropout", "num_queries": "num_queries",
               "n_input_proj": "n_input_proj", "max_q_l": "max_q_l", "aux_loss": "aux_loss"}


def read_lighthouse_checkpoint(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``(opt as a dict, model state dict)`` of a lighthouse ``.ckpt`` (``torch.save({"opt":
    Namespace, "model": state_dict, ...})``), read with ``weights_only=True`` (Namespace allowed)."""
    import argparse

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such checkpoint")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad file for the user
        raise WeightsError(f"{path}: not a readable lighthouse checkpoint ({e})") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "opt" not in ckpt:
        raise WeightsError(f"{path}: expected lighthouse's layout {{'opt', 'model', ...}}, got "
                           f"{sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__}")
    opt = ckpt["opt"]
    return (vars(opt) if isinstance(opt, argparse.Namespace) else dict(opt)), ckpt["model"]


def load_lighthouse_checkpoint(path: str | Path, retriever: str = "msclap_2023") -> MomentHead:
    """lighthouse's QD-DETR checkpoint (e.g. ``clap_qd_detr_clotho-moment.ckpt``) as a
    :class:`MomentHead` over ``retriever``'s towers (MS-CLAP 2023, 1 s windows, GPT-2 tokens),
    loaded strictly."""
    opt, sd = read_lighthouse_checkpoint(path)
    if opt.get("span_loss_type", "l1") != "l1":
        raise WeightsError(f"{path}: span_loss_type {opt['span_loss_type']!r}; only 'l1' heads are supported")
    fields = {new: opt[old] for old, new in _OPT_FIELDS.items() if old in opt}
    missing = sorted(set(_OPT_FIELDS) - set(opt))
    if missing:
        raise WeightsError(f"{path}: opt lacks {missing}")
    model = QDDETR(QDDETRConfig(**fields))
    try:
        model.load_state_dict(convert_lighthouse_qddetr_state_dict(sd), strict=True)
    except RuntimeError as e:
        raise WeightsError(f"{path}: does not fit QD-DETR: {e}") from None
    clip = float(opt.get("clip_length", 1.0))
    spec = FeatureSpec(retriever=retriever, window_s=clip, hop_s=clip, text="tokens",
                       max_windows=int(opt.get("max_a_l", opt.get("max_v_l", 300))),
                       pad="none", resampler="sinc")  # lighthouse's CLAPAudio
    return MomentHead(model.eval(), spec)


@register_opener("moment_head")
def open_moment_head(ref: ModelRef, options: OpenOptions) -> MomentHead:
    """A ``moment_head`` reference (see :func:`earshot.loading.resolve.resolve`): a folder from
    :meth:`MomentHead.save`, lighthouse's checkpoint file, or its registry name (the cached file)."""
    if ref.entry is not None:
        return load_lighthouse_checkpoint(downloaded_file(ref.location, "moment head"))
    if ref.path.is_dir():
        return load_moment_head(ref.path)
    return load_lighthouse_checkpoint(ref.path)
