"""QD-DETR (Moon et al., CVPR 2023) as lighthouse ships it for audio moment retrieval (AM-DETR).

Inputs: per-window audio features ``(B, L, Da)`` with lighthouse's temporal endpoint features
(``tef``: ``[k / L, (k + 1) / L]``, the "video" part, 2-d) and text token features
``(B, Lq, Dt)`` with masks. Text-to-audio cross-attention encoder layers (T2V), a self-attention
encoder over a global token + the audio tokens, and a DAB-DETR-style decoder with ``num_queries``
learned anchor spans refined per layer; outputs per query a (center, width) span in [0, 1] and
foreground/background logits, plus per-window saliency scores (also against a batch-rolled
negative text during training, the "query-dependent" part).

Module and parameter names follow ``lighthouse/common/qd_detr.py`` and
``qd_detr_transformer.py`` exactly, so a lighthouse checkpoint's ``model`` state dict loads
strictly (:func:`convert_lighthouse_qddetr_state_dict`). The loss (:class:`SetCriterion`):
Hungarian matching (``scipy.optimize.linear_sum_assignment``) on ``cost_span * L1 +
cost_giou * (-gIoU) + cost_class * (-p_fg)``; L1 + generalized IoU on matched spans,
weighted cross-entropy on labels (background weight ``eos_coef``), auxiliary decoder-layer
losses, and the saliency loss (margin ranking + rank-contrastive + negative-pair terms).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from earshot.errors import ConfigError
from earshot.moments.sliding import RANKINGS, expected_iou, moments_from_curve

__all__ = ["QDDETR", "QDDETRConfig", "LossConfig", "SetCriterion", "build_qddetr",
           "convert_lighthouse_qddetr_state_dict", "predict_spans", "span_cxw_to_xx",
           "span_xx_to_cxw", "generalized_temporal_iou", "hungarian_match", "tef"]


@dataclass(frozen=True)
class QDDETRConfig:
    """Architecture (lighthouse ``configs/model/qd_detr.yml`` + ``feature/clap.yml``)."""

    txt_dim: int = 768  # text token feature size (MS-CLAP 2023 GPT-2)
    vid_dim: int = 2  # "video" features: for audio moment retrieval only the 2-d tef
    aud_dim: int = 768  # audio window feature size (MS-CLAP 2023 HTSAT latent)
    hidden_dim: int = 256  # transformer width (the sine query embedding assumes 256)
    nheads: int = 8
    enc_layers: int = 2  # T2V layers and self-attention layers, each
    dec_layers: int = 2
    dim_feedforward: int = 1024
    dropout: float = 0.1  # inside the transformer
    input_dropout: float = 0.5  # in the input projections
    num_queries: int = 10  # moment queries
    n_input_proj: int = 2  # LinearLayers in each input projection
    max_q_l: int = 32  # text positions of the (unused) trainable text position embedding
    aux_loss: bool = True  # losses on every decoder layer
    # "learned": lighthouse's learned reference spans (the same for every input); "similarity": each
    # input's reference spans are the sliding-window proposals of its similarity column (``vid``
    # feature 2, earshot's FeatureSpec.similarity), the learned ones filling the remaining queries,
    # so the decoder refines and re-scores spans the retriever already found (a two-stage DETR)
    anchors: Literal["learned", "similarity"] = "learned"
    anchor_window: float = 1.0  # "similarity": the column's window length in hops (2 s windows at 1 s: 2)
    # "similarity": every proposal also as copies widened about its centre by these factors
    # (multi-scale anchors, as Faster R-CNN's): the first num_queries / len(anchor_scales)
    # proposals at the first scale, then the same proposals at the next, and so on
    anchor_scales: tuple[float, ...] = (1.0,)
    # how predictions are ranked: "score" = by p_foreground (lighthouse's); "expected_iou" = by
    # each span's expected IoU with the head's own predictions weighted by their p_foreground,
    # sum_j p_j IoU(i, j) / sum_j p_j (minimum Bayes risk decoding for the IoU: a span that the
    # confident queries agree on ranks above a confident outlier); earshot's, see predict_spans
    ranking: Literal["score", "expected_iou"] = "score"

    def __post_init__(self) -> None:
        if self.ranking not in RANKINGS:
            raise ConfigError(f"QDDETRConfig.ranking must be 'score' or 'expected_iou', got {self.ranking!r}")
        if self.anchors not in ("learned", "similarity"):
            raise ConfigError(f"QDDETRConfig.anchors must be 'learned' or 'similarity', got {self.anchors!r}")
        if not self.anchor_window > 0:
            raise ConfigError(f"QDDETRConfig.anchor_window must be > 0, got {self.anchor_window}")
        if not self.anchor_scales or not all(x > 0 for x in self.anchor_scales) \
                or self.num_queries < len(self.anchor_scales):
            raise ConfigError(f"QDDETRConfig.anchor_scales must be positive factors, at most num_queries of them, "
                              f"got {self.anchor_scales}")
        if self.anchors == "similarity" and self.vid_dim < 3:
            raise ConfigError("QDDETRConfig.anchors='similarity' reads the similarity column: vid_dim must be >= 3 "
                              "(FeatureSpec.similarity on)")


@dataclass(frozen=True)
class LossConfig:
    """Matching costs and loss weights (lighthouse ``configs/base.yml``)."""

    set_cost_span: float = 10.0
    set_cost_giou: float = 1.0
    set_cost_class: float = 4.0
    span_loss_coef: float = 10.0
    giou_loss_coef: float = 1.0
    label_loss_coef: float = 4.0
    eos_coef: float = 0.1  # weight of the background class
    lw_saliency: float = 1.0
    saliency_margin: float = 0.2
    # "matched": DETR's labels (the Hungarian-matched queries are foreground, weighted against
    # background by eos_coef; lighthouse's); "iou": earshot's IoU-aware labels (as VarifocalNet's),
    # every query's foreground target is its span's best IoU with the item's windows, so the
    # score ranks queries by how well they fit, not by which one the matching picked
    label_target: Literal["matched", "iou"] = "matched"

    def __post_init__(self) -> None:
        if self.label_target not in ("matched", "iou"):
            raise ConfigError(f"loss.label_target: {self.label_target!r} is not 'matched' or 'iou'")


# --- span utilities ----------------------------------------------------------------------------


def span_cxw_to_xx(cxw: Tensor) -> Tensor:
    """(center, width) -> (start, end), any leading shape."""
    return torch.stack([cxw[..., 0] - 0.5 * cxw[..., 1], cxw[..., 0] + 0.5 * cxw[..., 1]], dim=-1)


def span_xx_to_cxw(xx: Tensor) -> Tensor:
    """(start, end) -> (center, width)."""
    return torch.stack([(xx[..., 0] + xx[..., 1]) * 0.5, xx[..., 1] - xx[..., 0]], dim=-1)


def _iou_union(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    area_a, area_b = a[:, 1] - a[:, 0], b[:, 1] - b[:, 0]
    left = torch.max(a[:, None, 0], b[:, 0])
    right = torch.min(a[:, None, 1], b[:, 1])
    inter = (right - left).clamp(min=0)
    union = area_a[:, None] + area_b - inter
    return inter / union, union


def generalized_temporal_iou(a: Tensor, b: Tensor) -> Tensor:
    """gIoU (N, M) of (start, end) spans ``a`` (N, 2) and ``b`` (M, 2)."""
    a, b = a.float(), b.float()
    iou, union = _iou_union(a, b)
    enclosing = (torch.max(a[:, None, 1], b[:, 1]) - torch.min(a[:, None, 0], b[:, 0])).clamp(min=0)
    return iou - (enclosing - union) / enclosing


def tef(length: int, device: torch.device | None = None) -> Tensor:
    """lighthouse's temporal endpoint features ``(L, 2)``: window k -> [k / L, (k + 1) / L]."""
    st = torch.arange(0, length, 1.0, device=device) / length
    return torch.stack([st, st + 1.0 / length], dim=1)


# --- building blocks (lighthouse names) ------------------------------------------------------


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU between them."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        self.num_layers = num_layers
        h = [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(n, k) for n, k in zip([input_dim] + h, h + [output_dim]))

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = F.relu(layer(x)) if i < self.num_layers - 1 else layer(x)
        return x


class LinearLayer(nn.Module):
    """LayerNorm -> dropout -> linear (-> ReLU)."""

    def __init__(self, in_hsz: int, out_hsz: int, dropout: float, relu: bool):
        super().__init__()
        self.relu = relu
        self.LayerNorm = nn.LayerNorm(in_hsz)
        self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_hsz, out_hsz))

    def forward(self, x: Tensor) -> Tensor:  # (N, L, D)
        x = self.net(self.LayerNorm(x))
        return F.relu(x) if self.relu else x


class TrainablePositionalEncoding(nn.Module):
    """Learned text positions; built (and in checkpoints) but unused by QD-DETR (use_txt_pos off)."""

    def __init__(self, max_position_embeddings: int, hidden_size: int, dropout: float):
        super().__init__()
        self.position_embeddings = nn.Embedding(max_position_embeddings, hidden_size)
        self.LayerNorm = nn.LayerNorm(hidden_size)
        self.dropout = nn.Dropout(dropout)


def sine_position(mask: Tensor, dim: int) -> Tensor:
    """DETR's normalised sine embedding of positions 1..L of the valid windows: (B, L, dim)."""
    x = mask.cumsum(1, dtype=torch.float32)
    x = x / (x[:, -1:] + 1e-6) * (2 * math.pi)
    dim_t = torch.arange(dim, dtype=torch.float32, device=mask.device)
    dim_t = 10000 ** (2 * (dim_t // 2) / dim)
    p = x[:, :, None] / dim_t
    return torch.stack((p[:, :, 0::2].sin(), p[:, :, 1::2].cos()), dim=3).flatten(2)


def sine_embed_spans(spans: Tensor) -> Tensor:
    """DAB-DETR's sine embedding of (center, width) anchors: (Q, B, 2) -> (Q, B, 256)."""
    dim_t = torch.arange(128, dtype=torch.float32, device=spans.device)
    dim_t = 10000 ** (2 * (dim_t // 2) / 128)
    out = []
    for k in (0, 1):
        p = (spans[:, :, k] * 2 * math.pi)[:, :, None] / dim_t
        out.append(torch.stack((p[:, :, 0::2].sin(), p[:, :, 1::2].cos()), dim=3).flatten(2))
    return torch.cat(out, dim=2)


def inverse_sigmoid(x: Tensor, eps: float = 1e-3) -> Tensor:
    x = x.clamp(min=0, max=1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


class OutProjAttention(nn.Module):
    """lighthouse's ``MultiheadAttention``: queries/keys/values arrive projected; only the output
    projection (``vdim -> vdim``) is learned; scaling by the query head size."""

    def __init__(self, embed_dim: int, num_heads: int, dropout: float, vdim: int):
        super().__init__()
        self.embed_dim, self.num_heads, self.dropout, self.vdim = embed_dim, num_heads, dropout, vdim
        self.out_proj = nn.Linear(vdim, vdim)
        nn.init.constant_(self.out_proj.bias, 0.0)

    def forward(self, query: Tensor, key: Tensor, value: Tensor,
                key_padding_mask: Tensor | None = None) -> Tensor:
        tgt_len, bsz, embed_dim = query.shape  # (Lq, B, E)
        h = self.num_heads
        head, v_head = embed_dim // h, self.vdim // h
        q = (query * float(head) ** -0.5).contiguous().view(tgt_len, bsz * h, head).transpose(0, 1)
        k = key.contiguous().view(-1, bsz * h, head).transpose(0, 1)
        v = value.contiguous().view(-1, bsz * h, v_head).transpose(0, 1)
        w = torch.bmm(q, k.transpose(1, 2))  # (B*h, Lq, Lk)
        if key_padding_mask is not None:
            src_len = k.shape[1]
            w = w.view(bsz, h, tgt_len, src_len).masked_fill(
                key_padding_mask.unsqueeze(1).unsqueeze(2), float("-inf")).view(bsz * h, tgt_len, src_len)
        w = torch.softmax(w - w.max(dim=-1, keepdim=True)[0], dim=-1)
        w = F.dropout(w, p=self.dropout, training=self.training)
        out = torch.bmm(w, v).transpose(0, 1).contiguous().view(tgt_len, bsz, self.vdim)
        return self.out_proj(out)


class T2V_TransformerEncoderLayer(nn.Module):
    """Audio tokens attend to the text tokens (queries: audio + pos, keys: text + pos)."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.activation = nn.PReLU()
        self.nhead = nhead

    def forward(self, src: Tensor, src_key_padding_mask: Tensor, pos: Tensor, video_length: int) -> Tensor:
        # src: (1 + L + Lq, B, d): global token, audio tokens, text tokens
        L = video_length
        pos_src = src + pos
        global_token, q, k, v = src[0].unsqueeze(0), pos_src[1:L + 1], pos_src[L + 1:], src[L + 1:]
        qmask = src_key_padding_mask[:, 1:L + 1].unsqueeze(2)
        kmask = src_key_padding_mask[:, L + 1:].unsqueeze(1)
        attn_mask = torch.matmul(qmask.float(), kmask.float()).bool().repeat(self.nhead, 1, 1)
        src2 = self.self_attn(q, k, value=v, attn_mask=attn_mask,
                              key_padding_mask=src_key_padding_mask[:, L + 1:])[0]
        src2 = src[1:L + 1] + self.dropout1(src2)
        src3 = self.linear2(self.dropout(self.activation(self.linear1(self.norm1(src2)))))
        src2 = self.norm2(src2 + self.dropout2(src3))
        return torch.cat([torch.cat([global_token, src2], dim=0), src[L + 1:]])


class TransformerEncoderLayer(nn.Module):
    """Post-norm self-attention layer (positions added to queries and keys)."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.activation = nn.PReLU()

    def forward(self, src: Tensor, src_key_padding_mask: Tensor, pos: Tensor) -> Tensor:
        q = k = src + pos
        src2 = self.self_attn(q, k, value=src, key_padding_mask=src_key_padding_mask)[0]
        src = self.norm1(src + self.dropout1(src2))
        src2 = self.linear2(self.dropout(self.activation(self.linear1(src))))
        return self.norm2(src + self.dropout2(src2))


class TransformerEncoder(nn.Module):
    def __init__(self, layer: nn.Module, num_layers: int):
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))

    def forward(self, src: Tensor, **kwargs: Any) -> Tensor:
        for layer in self.layers:
            src = layer(src, **kwargs)
        return src


class TransformerDecoderLayer(nn.Module):
    """Conditional-DETR decoder layer: content and position parts of queries/keys projected
    separately; cross-attention on [content | sine position] halves per head."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float):
        super().__init__()
        self.sa_qcontent_proj = nn.Linear(d_model, d_model)
        self.sa_qpos_proj = nn.Linear(d_model, d_model)
        self.sa_kcontent_proj = nn.Linear(d_model, d_model)
        self.sa_kpos_proj = nn.Linear(d_model, d_model)
        self.sa_v_proj = nn.Linear(d_model, d_model)
        self.self_attn = OutProjAttention(d_model, nhead, dropout, vdim=d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.ca_qcontent_proj = nn.Linear(d_model, d_model)
        self.ca_qpos_proj: nn.Linear | None = nn.Linear(d_model, d_model)
        self.ca_kcontent_proj = nn.Linear(d_model, d_model)
        self.ca_kpos_proj = nn.Linear(d_model, d_model)
        self.ca_v_proj = nn.Linear(d_model, d_model)
        self.ca_qpos_sine_proj = nn.Linear(d_model, d_model)
        self.cross_attn = OutProjAttention(d_model * 2, nhead, dropout, vdim=d_model)
        self.nhead = nhead
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)
        self.activation = nn.PReLU()

    def forward(self, tgt: Tensor, memory: Tensor, memory_key_padding_mask: Tensor, pos: Tensor,
                query_pos: Tensor, query_sine_embed: Tensor, is_first: bool) -> Tensor:
        # tgt (Q, B, d), memory (L, B, d)
        q = self.sa_qcontent_proj(tgt) + self.sa_qpos_proj(query_pos)
        k = self.sa_kcontent_proj(tgt) + self.sa_kpos_proj(query_pos)
        tgt = self.norm1(tgt + self.dropout1(self.self_attn(q, k, self.sa_v_proj(tgt))))
        nq, bs, d = tgt.shape
        hw = memory.shape[0]
        q = self.ca_qcontent_proj(tgt)
        k = self.ca_kcontent_proj(memory)
        v = self.ca_v_proj(memory)
        k_pos = self.ca_kpos_proj(pos)
        if is_first:
            q = q + self.ca_qpos_proj(query_pos)
            k = k + k_pos
        h = self.nhead
        q = torch.cat([q.view(nq, bs, h, d // h),
                       self.ca_qpos_sine_proj(query_sine_embed).view(nq, bs, h, d // h)], dim=3).view(nq, bs, 2 * d)
        k = torch.cat([k.view(hw, bs, h, d // h), k_pos.view(hw, bs, h, d // h)], dim=3).view(hw, bs, 2 * d)
        tgt = self.norm2(tgt + self.dropout2(self.cross_attn(q, k, v, key_padding_mask=memory_key_padding_mask)))
        tgt2 = self.linear2(self.dropout(self.activation(self.linear1(tgt))))
        return self.norm3(tgt + self.dropout3(tgt2))


class TransformerDecoder(nn.Module):
    """DAB-DETR decoder: anchors (center, width) refined by ``bbox_embed`` after every layer."""

    def __init__(self, layer: TransformerDecoderLayer, num_layers: int, d_model: int):
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        self.num_layers = num_layers
        self.norm = nn.LayerNorm(d_model)
        self.query_scale = MLP(d_model, d_model, d_model, 2)
        self.ref_point_head = MLP(d_model, d_model, d_model, 2)
        self.bbox_embed = MLP(d_model, d_model, 2, 3)
        nn.init.constant_(self.bbox_embed.layers[-1].weight.data, 0)
        nn.init.constant_(self.bbox_embed.layers[-1].bias.data, 0)
        self.ref_anchor_head = MLP(d_model, d_model, 1, 2)
        for layer_ in self.layers[1:]:
            layer_.ca_qpos_proj = None  # keep_query_pos off: only the first layer has it

    def forward(self, tgt: Tensor, memory: Tensor, memory_key_padding_mask: Tensor, pos: Tensor,
                refpoints_unsigmoid: Tensor) -> tuple[Tensor, Tensor]:
        output = tgt
        intermediate = []
        reference_points = refpoints_unsigmoid.sigmoid()  # (Q, B, 2)
        ref_points = [reference_points]
        for layer_id, layer in enumerate(self.layers):
            obj_center = reference_points[..., :2]
            query_sine_embed = sine_embed_spans(obj_center)
            query_pos = self.ref_point_head(query_sine_embed)
            if layer_id != 0:
                query_sine_embed = query_sine_embed * self.query_scale(output)
            reft_cond = self.ref_anchor_head(output).sigmoid()  # (Q, B, 1)
            query_sine_embed = query_sine_embed * (reft_cond[..., 0] / obj_center[..., 1]).unsqueeze(-1)
            output = layer(output, memory, memory_key_padding_mask=memory_key_padding_mask, pos=pos,
                           query_pos=query_pos, query_sine_embed=query_sine_embed, is_first=layer_id == 0)
            tmp = self.bbox_embed(output)
            new_ref = (tmp[..., :2] + inverse_sigmoid(reference_points)).sigmoid()
            if layer_id != self.num_layers - 1:
                ref_points.append(new_ref)
            reference_points = new_ref.detach()
            intermediate.append(self.norm(output))
        # (layers, B, Q, d), (layers, B, Q, 2)
        return torch.stack(intermediate).transpose(1, 2), torch.stack(ref_points).transpose(1, 2)


class Transformer(nn.Module):
    def __init__(self, cfg: QDDETRConfig):
        super().__init__()
        d = cfg.hidden_dim
        self.t2v_encoder = TransformerEncoder(
            T2V_TransformerEncoderLayer(d, cfg.nheads, cfg.dim_feedforward, cfg.dropout), cfg.enc_layers)
        self.encoder = TransformerEncoder(
            TransformerEncoderLayer(d, cfg.nheads, cfg.dim_feedforward, cfg.dropout), cfg.enc_layers)
        self.decoder = TransformerDecoder(
            TransformerDecoderLayer(d, cfg.nheads, cfg.dim_feedforward, cfg.dropout), cfg.dec_layers, d)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        self.d_model = d

    def forward(self, src: Tensor, mask: Tensor, query_embed: Tensor, pos_embed: Tensor,
                video_length: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        bs, _, d = src.shape
        src, pos_embed = src.permute(1, 0, 2), pos_embed.permute(1, 0, 2)  # (S, B, d)
        if query_embed.dim() == 3:  # per-input reference spans (B, Q, 2)
            refpoint_embed = query_embed.transpose(0, 1)
        else:
            refpoint_embed = query_embed.unsqueeze(1).repeat(1, bs, 1)  # (Q, B, 2)
        src = self.t2v_encoder(src, src_key_padding_mask=mask, pos=pos_embed, video_length=video_length)
        src, mask, pos_embed = src[:video_length + 1], mask[:, :video_length + 1], pos_embed[:video_length + 1]
        memory = self.encoder(src, src_key_padding_mask=mask, pos=pos_embed)
        memory_global, memory_local = memory[0], memory[1:]
        tgt = torch.zeros(refpoint_embed.shape[0], bs, d, device=src.device, dtype=src.dtype)
        hs, references = self.decoder(tgt, memory_local, memory_key_padding_mask=mask[:, 1:],
                                      pos=pos_embed[1:], refpoints_unsigmoid=refpoint_embed)
        return hs, references, memory_local.transpose(0, 1), memory_global


class QDDETR(nn.Module):
    """The moment head: ``forward(src_txt, src_txt_mask, src_vid, src_vid_mask, src_aud)``
    returns ``pred_logits`` (B, Q, 2; index 0 = foreground), ``pred_spans`` (B, Q, 2; (center,
    width) in [0, 1]), ``saliency_scores`` (B, L), and in training ``saliency_scores_neg`` and
    ``aux_outputs``. Masks hold 1 on valid positions."""

    def __init__(self, cfg: QDDETRConfig = QDDETRConfig()):
        super().__init__()
        self.cfg = cfg
        d = cfg.hidden_dim
        self.num_queries = cfg.num_queries
        self.transformer = Transformer(cfg)
        self.txt_position_embed = TrainablePositionalEncoding(cfg.max_q_l, d, cfg.input_dropout)
        self.span_embed = MLP(d, d, 2, 3)
        self.class_embed = nn.Linear(d, 2)
        self.query_embed = nn.Embedding(cfg.num_queries, 2)
        relu = [True] * 3
        relu[cfg.n_input_proj - 1] = False
        dims_t = [cfg.txt_dim, d, d]
        dims_v = [cfg.vid_dim + cfg.aud_dim, d, d]
        self.input_txt_proj = nn.Sequential(*[LinearLayer(dims_t[i], d, cfg.input_dropout, relu[i])
                                              for i in range(cfg.n_input_proj)])
        self.input_vid_proj = nn.Sequential(*[LinearLayer(dims_v[i], d, cfg.input_dropout, relu[i])
                                              for i in range(cfg.n_input_proj)])
        self.saliency_proj1 = nn.Linear(d, d)
        self.saliency_proj2 = nn.Linear(d, d)
        self.hidden_dim = d
        self.global_rep_token = nn.Parameter(torch.randn(d))
        self.global_rep_pos = nn.Parameter(torch.randn(d))
        if cfg.anchors == "similarity":  # predictions start at the proposals: no offset before training,
            # and in their order: the classifier starts at zero, so the proposals' scores alone rank
            for lin in (self.span_embed.layers[-1], self.transformer.decoder.bbox_embed.layers[-1], self.class_embed):
                nn.init.constant_(lin.weight.data, 0)  # (bbox_embed xavier-initialised above)
                nn.init.constant_(lin.bias.data, 0)
            self.prior_scale = nn.Parameter(torch.tensor(4.0))  # weight of the proposals' scores in the logit

    def similarity_anchors(self, sim: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, Q, 2)`` reference spans (center, width before the sigmoid) of each input and a
        ``(B, Q)`` foreground prior: its similarity curve's sliding-window proposals (position k
        covers ``[k, k + anchor_window]`` hops, best first; spans as fractions of the input's valid
        length), their scores standardised over the curve, then learned spans with the curve's
        lowest standardised value for the queries left over.  With several ``anchor_scales`` the
        best ``Q // len(anchor_scales)`` proposals come at each scale in turn, widened about their
        centres by it and clipped to the input, each copy with its proposal's score (so, on ties,
        the first scale's copy ranks first).  The prior, scaled by a learned weight, is added to
        the foreground logit of a classifier that starts at zero, so an untrained head ranks
        exactly as the sliding window (with several scales: its proposals in the same order, each
        followed by its wider copies)."""
        base = self.query_embed.weight  # (Q, 2)
        B, Q, scales = sim.shape[0], base.shape[0], self.cfg.anchor_scales
        out = base.unsqueeze(0).repeat(B, 1, 1)
        prior = torch.zeros(B, Q, dtype=out.dtype, device=out.device)
        lengths = mask.sum(1).long().tolist()
        curves = sim.detach().double().cpu().numpy()
        for i, n in enumerate(lengths):
            if n < 1:
                continue
            c = curves[i, :n]
            mu, sd = float(c.mean()), float(c.std()) + 1e-6
            prior[i] = (float(c.min()) - mu) / sd
            found = moments_from_curve(c, self.cfg.anchor_window, 1.0, n, top=Q // len(scales))
            if found:
                spans, scores = [], []
                for f in scales:
                    for a, b, sc in found:
                        mid, half = (a + b) / 2, (b - a) / 2 * f
                        lo, hi = max(mid - half, 0.0), min(mid + half, float(n))
                        spans.append(((lo + hi) / 2 / n, (hi - lo) / n))
                        scores.append((sc - mu) / sd)
                out[i, : len(spans)] = inverse_sigmoid(torch.tensor(spans, dtype=out.dtype).to(out.device))
                prior[i, : len(spans)] = torch.tensor(scores, dtype=out.dtype)
        return out, prior

    def _encode(self, src_vid: Tensor, src_txt: Tensor, src_vid_mask: Tensor, src_txt_mask: Tensor,
                pos_vid: Tensor, anchors: Tensor | None = None):
        B = src_vid.shape[0]
        src = torch.cat([src_vid, src_txt], dim=1)
        mask = torch.cat([src_vid_mask, src_txt_mask], dim=1).bool()
        pos = torch.cat([pos_vid, torch.zeros_like(src_txt)], dim=1)
        mask = torch.cat([torch.ones(B, 1, dtype=torch.bool, device=mask.device), mask], dim=1)
        src = torch.cat([self.global_rep_token.reshape(1, 1, -1).repeat(B, 1, 1), src], dim=1)
        pos = torch.cat([self.global_rep_pos.reshape(1, 1, -1).repeat(B, 1, 1), pos], dim=1)
        queries = self.query_embed.weight if anchors is None else anchors
        return self.transformer(src, ~mask, queries, pos, video_length=src_vid.shape[1])

    def _saliency(self, vid_mem: Tensor, memory_global: Tensor) -> Tensor:
        return torch.sum(self.saliency_proj1(vid_mem) * self.saliency_proj2(memory_global).unsqueeze(1),
                         dim=-1) / math.sqrt(self.hidden_dim)

    def forward(self, src_txt: Tensor, src_txt_mask: Tensor, src_vid: Tensor, src_vid_mask: Tensor,
                src_aud: Tensor | None = None, with_negatives: bool | None = None) -> dict[str, Any]:
        anchors = prior = None
        if self.cfg.anchors == "similarity":
            anchors, prior = self.similarity_anchors(src_vid[..., 2], src_vid_mask)
        if src_aud is not None:
            src_vid = torch.cat([src_vid, src_aud], dim=2)  # (B, L, 2 + Da)
        src_vid = self.input_vid_proj(src_vid)  # (B, L, d)
        src_txt = self.input_txt_proj(src_txt)  # (B, Lq, d)
        pos_vid = sine_position(src_vid_mask, self.hidden_dim)
        hs, reference, memory, memory_global = self._encode(src_vid, src_txt, src_vid_mask, src_txt_mask, pos_vid,
                                                            anchors)
        outputs_class = self.class_embed(hs)  # (layers, B, Q, 2)
        if prior is not None:  # the proposals' scores lift their foreground logits (index 0)
            outputs_class = outputs_class + torch.stack([self.prior_scale * prior, torch.zeros_like(prior)], -1)
        outputs_coord = (self.span_embed(hs) + inverse_sigmoid(reference)).sigmoid()  # (layers, B, Q, 2)
        L = src_vid.shape[1]
        out: dict[str, Any] = {"pred_logits": outputs_class[-1], "pred_spans": outputs_coord[-1],
                               "saliency_scores": self._saliency(memory[:, :L], memory_global),
                               "video_mask": src_vid_mask}
        if self.training if with_negatives is None else with_negatives:
            # the same audio against the next item's text: its saliency should be low
            txt_neg = torch.cat([src_txt[1:], src_txt[0:1]], dim=0)
            mask_neg = torch.cat([src_txt_mask[1:], src_txt_mask[0:1]], dim=0)
            _, _, mem_neg, glob_neg = self._encode(src_vid, txt_neg, src_vid_mask, mask_neg, pos_vid, anchors)
            out["saliency_scores_neg"] = self._saliency(mem_neg[:, :L], glob_neg)
        if self.cfg.aux_loss:
            out["aux_outputs"] = [{"pred_logits": a, "pred_spans": b}
                                  for a, b in zip(outputs_class[:-1], outputs_coord[:-1])]
        return out


def build_qddetr(cfg: QDDETRConfig = QDDETRConfig()) -> QDDETR:
    """A freshly initialised QD-DETR (lighthouse's initialisation)."""
    return QDDETR(cfg)


# --- matching and losses -------------------------------------------------------------------


@torch.no_grad()
def hungarian_match(pred_logits: Tensor, pred_spans: Tensor, tgt_spans: Sequence[Tensor],
                    loss: LossConfig) -> list[tuple[Tensor, Tensor]]:
    """Per item, (query indices, target indices) of the minimum-cost assignment
    (``scipy.optimize.linear_sum_assignment``) of (center, width) target spans to queries."""
    from scipy.optimize import linear_sum_assignment

    bs, nq = pred_spans.shape[:2]
    prob = pred_logits.flatten(0, 1).float().softmax(-1)  # (B*Q, 2)
    tgt = torch.cat(list(tgt_spans)).float()
    out = pred_spans.flatten(0, 1).float()
    cost = (loss.set_cost_span * torch.cdist(out, tgt, p=1)
            - loss.set_cost_giou * generalized_temporal_iou(span_cxw_to_xx(out), span_cxw_to_xx(tgt))
            - loss.set_cost_class * prob[:, [0] * len(tgt)])
    cost = cost.view(bs, nq, -1).cpu()
    sizes = [len(t) for t in tgt_spans]
    result = []
    for i, c in enumerate(cost.split(sizes, -1)):
        r, k = linear_sum_assignment(c[i].numpy())
        result.append((torch.as_tensor(r, dtype=torch.int64), torch.as_tensor(k, dtype=torch.int64)))
    return result


class SetCriterion(nn.Module):
    """lighthouse's QD-DETR loss: returns the weighted total and every named part."""

    def __init__(self, cfg: LossConfig = LossConfig(), dec_layers: int = 2, aux_loss: bool = True):
        super().__init__()
        self.cfg = cfg
        w = {"loss_span": cfg.span_loss_coef, "loss_giou": cfg.giou_loss_coef,
             "loss_label": cfg.label_loss_coef, "loss_saliency": cfg.lw_saliency}
        if aux_loss:
            for i in range(dec_layers - 1):
                w.update({f"{k}_{i}": v for k, v in list(w.items())[:3]})
        self.weight_dict = w
        empty = torch.ones(2)
        empty[-1] = cfg.eos_coef
        self.register_buffer("empty_weight", empty)

    @staticmethod
    def _src_idx(indices):
        return (torch.cat([torch.full_like(s, i) for i, (s, _) in enumerate(indices)]),
                torch.cat([s for s, _ in indices]))

    def _spans(self, out, tgt_spans, indices):
        idx = self._src_idx(indices)
        src = out["pred_spans"][idx]
        tgt = torch.cat([t[j] for t, (_, j) in zip(tgt_spans, indices)], dim=0)
        giou = torch.diag(generalized_temporal_iou(span_cxw_to_xx(src), span_cxw_to_xx(tgt)))
        return {"loss_span": F.l1_loss(src, tgt, reduction="none").mean(), "loss_giou": (1 - giou).mean()}

    def _labels(self, out, tgt_spans, indices):
        logits = out["pred_logits"]  # (B, Q, 2)
        if self.cfg.label_target == "iou":
            with torch.no_grad():  # the target, per query: its span's best IoU with a window
                fit = torch.stack([_iou_union(span_cxw_to_xx(p.float()), span_cxw_to_xx(t.float()))[0].amax(-1)
                                   for p, t in zip(out["pred_spans"], tgt_spans)])  # (B, Q)
            logp = F.log_softmax(logits.float(), -1)
            return {"loss_label": -(fit * logp[..., 0] + (1 - fit) * logp[..., 1]).mean()}
        target = torch.full(logits.shape[:2], 1, dtype=torch.int64, device=logits.device)
        target[self._src_idx(indices)] = 0
        return {"loss_label": F.cross_entropy(logits.transpose(1, 2).float(), target,
                                              self.empty_weight, reduction="none").mean()}

    def _saliency(self, out, pos_idx: Tensor, neg_idx: Tensor, all_labels: Tensor) -> Tensor:
        mask = out["video_mask"].float()
        s_neg = out["saliency_scores_neg"].float()
        loss_neg_pair = (-torch.log(1.0 - torch.sigmoid(s_neg)) * mask).sum(dim=1).mean()
        scores = torch.cat([out["saliency_scores"].float(), s_neg], dim=1)
        labels = torch.cat([all_labels, torch.zeros_like(all_labels)], dim=1)
        mask2 = mask.repeat([1, 2])
        scores = mask2 * scores + (1.0 - mask2) * -1e3
        tau, rank = 0.5, 0.0
        for rand_idx in range(1, 12):
            drop = ~(labels > 100)
            pos = labels >= rand_idx
            if torch.sum(pos) == 0:
                continue
            batch_drop = torch.sum(pos, dim=1) > 0
            cur = scores * drop / tau + ~drop * -1e3
            logits = cur - torch.max(cur, dim=1, keepdim=True)[0]
            log_prob = logits - torch.log(torch.exp(logits).sum(1, keepdim=True) + 1e-6)
            mean_pos = (pos * log_prob * mask2).sum(1) / (pos.sum(1) + 1e-6)
            rank = rank + (-mean_pos * batch_drop).mean()
        rank = rank / 12
        s = out["saliency_scores"].float()
        b = torch.arange(len(s), device=s.device)
        pairs = pos_idx.shape[1]
        ps = torch.stack([s[b, pos_idx[:, c]] for c in range(pairs)], dim=1)
        ns = torch.stack([s[b, neg_idx[:, c]] for c in range(pairs)], dim=1)
        margin = torch.clamp(self.cfg.saliency_margin + ns - ps, min=0).sum() / (len(ps) * pairs) * 2
        return margin + rank + loss_neg_pair

    def forward(self, outputs: Mapping[str, Any], tgt_spans: Sequence[Tensor], saliency_pos: Tensor,
                saliency_neg: Tensor, saliency_all: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """``tgt_spans``: per item (n_i, 2) normalised (center, width); saliency labels as
        lighthouse's ``get_saliency_labels_sub_as_query`` builds them."""
        indices = hungarian_match(outputs["pred_logits"], outputs["pred_spans"], tgt_spans, self.cfg)
        parts = {**self._spans(outputs, tgt_spans, indices), **self._labels(outputs, tgt_spans, indices),
                 "loss_saliency": self._saliency(outputs, saliency_pos, saliency_neg, saliency_all)}
        for i, aux in enumerate(outputs.get("aux_outputs", [])):
            idx = hungarian_match(aux["pred_logits"], aux["pred_spans"], tgt_spans, self.cfg)
            parts.update({f"{k}_{i}": v for k, v in {**self._spans(aux, tgt_spans, idx),
                                                      **self._labels(aux, tgt_spans, idx)}.items()})
        total = sum(parts[k] * self.weight_dict[k] for k in parts if k in self.weight_dict)
        return total, parts


# --- prediction --------------------------------------------------------------------------------


def predict_spans(outputs: Mapping[str, Tensor], duration: float, top: int = 10,
                  ranking: str = "score") -> list[list[float]]:
    """lighthouse's post-processing for one item: ``[start, end, p_foreground]`` in seconds,
    clamped to ``[0, duration]``, best first, rounded to 4 decimals, the first ``top``.
    ``ranking="expected_iou"``: best first by :func:`earshot.moments.sliding.expected_iou`
    (weights p_foreground), which then is the third value."""
    if ranking not in RANKINGS:
        raise ConfigError(f"ranking must be 'score' or 'expected_iou', got {ranking!r}")
    prob = F.softmax(outputs["pred_logits"].float(), -1)[0].cpu()  # (Q, 2)
    spans = torch.clamp(span_cxw_to_xx(outputs["pred_spans"][0].float().cpu()) * duration, min=0, max=duration)
    score = prob[:, 0].detach().numpy()
    if ranking == "expected_iou":
        score = expected_iou(spans.detach().numpy(), score).astype(np.float32)
    rows = [[*span, float(sc)] for span, sc in zip(spans.tolist(), score)]
    rows = sorted(rows, key=lambda x: x[2], reverse=True)
    return [[float(f"{e:.4f}") for e in r] for r in rows][:top]


def convert_lighthouse_qddetr_state_dict(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A lighthouse QD-DETR checkpoint's ``model`` state dict -> this module's (names are
    lighthouse's own, so this checks and copies: an unexpected layout is named, not dropped)."""
    out = dict(sd)
    if any(k.startswith("module.") for k in out):  # saved from DistributedDataParallel
        out = {k.removeprefix("module."): v for k, v in out.items()}
    return out
