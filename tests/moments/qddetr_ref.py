"""Inputs of the QD-DETR parity goldens (``golden/qddetr.json``), made outside the repository
with lighthouse's own ``build_model`` (QD-DETR), ``SetCriterion`` and ``BasePredictor._post_processing``
on random weights in lighthouse's layout: the weights and inputs come from these functions."""

from __future__ import annotations

import torch

# lighthouse args of the small model (hidden_dim stays 256: the decoder's sine embedding is
# hard-wired to 2 x 128); feature sizes small so the test is fast.
SMALL = dict(txt_dim=16, vid_dim=2, aud_dim=12, hidden_dim=256, nheads=8, enc_layers=2,
             dec_layers=2, dim_feedforward=64, dropout=0.1, input_dropout=0.5, num_queries=10,
             n_input_proj=2, max_q_l=32, aux_loss=True)


def random_state(shapes: dict[str, tuple[int, ...]], seed: int = 19) -> dict[str, torch.Tensor]:
    """Random tensors for every key (sorted), from one seeded CPU generator."""
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(shapes[k], generator=g) * 0.2 for k in sorted(shapes)}


def inputs(seed: int = 5):
    """A batch of 3: audio lengths 37, 30 (padded), 21 (padded); text lengths 5, 3, 4."""
    g = torch.Generator().manual_seed(seed)
    L, Lq = 37, 5
    lens, qlens = [37, 30, 21], [5, 3, 4]
    aud = torch.randn(3, L, SMALL["aud_dim"], generator=g)
    txt = torch.nn.functional.normalize(torch.randn(3, Lq, SMALL["txt_dim"], generator=g), dim=-1, eps=1e-5)
    vmask = torch.zeros(3, L)
    tmask = torch.zeros(3, Lq)
    vid = torch.zeros(3, L, 2)
    for i, (n, m) in enumerate(zip(lens, qlens)):
        vmask[i, :n] = 1
        tmask[i, :m] = 1
        st = torch.arange(0, n, 1.0) / n
        vid[i, :n] = torch.stack([st, st + 1.0 / n], dim=1)
    return dict(src_txt=txt, src_txt_mask=tmask, src_vid=vid, src_vid_mask=vmask, src_aud=aud)


def targets():
    """Normalised (center, width) target spans per item and lighthouse-style saliency labels."""
    spans = [torch.tensor([[0.3, 0.2]]), torch.tensor([[0.25, 0.1], [0.7, 0.3]]), torch.tensor([[0.5, 0.6]])]
    pos = torch.tensor([[10, 12], [6, 8], [9, 5]])
    neg = torch.tensor([[30, 2], [25, 27], [0, 20]])
    all_ = torch.zeros(3, 37)
    all_[0, 9:15] = 1
    all_[1, 6:9] = 1
    all_[1, 17:26] = 1
    all_[2, 4:17] = 1
    return spans, pos, neg, all_
