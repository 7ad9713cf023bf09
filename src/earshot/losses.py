"""Training losses for audio-text bi-encoders, as pure functions of embeddings.

Every loss takes ``audio (B, D)`` and ``text (B, D)``, where row ``k`` of each is training
pair ``k``, and ``clip_ids (B,)``: pairs whose clip ids are equal (several captions of one clip
in the same batch) are positives of each other and are never used as negatives. Similarity is
the plain dot product ``audio @ text.T``; callers L2-normalise when they want cosine similarity.

Every loss returns a :class:`LossOutput`: the scalar ``total`` to back-propagate and a dict of
named scalar ``parts`` (the two retrieval directions, or the VICReg terms) for logging; parts are
not detached, so callers detach them before logging.

Directions: ``a2t`` means an audio anchor ranked against captions (a row of ``S = audio @ text.T``),
``t2a`` a caption anchor ranked against audio clips (a column of ``S``).

How same-clip pairs are handled, per family:

* triplet losses (``triplet_sum``, ``triplet_max``, ``triplet_weighted``): the positive of anchor
  ``i`` is pair ``i`` itself; every ``j != i`` with ``clip_ids[j] == clip_ids[i]`` is dropped from
  the negatives (its hinge is zeroed), exactly as the reference implementation does
  (XinhaoMei/audio-text_retrieval ``tools/loss.py``, used by the DCASE 2022/2023 seed systems).
* cross-entropy losses (``ntxent``, ``infonce``): the target of row ``i`` is column ``i``; the
  other same-clip entries are removed from the softmax (their logits set to ``-inf``), so they are
  neither the target nor a negative. Note: the reference ``NTXent`` builds the same mask but
  applies it to off-diagonal log-probabilities and then reads only the diagonal, so there it is a
  no-op; here the mask really removes those entries from the denominator.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Literal

import torch
import torch.nn.functional as F

from earshot.errors import ConfigError
from earshot.registry import Registry

__all__ = [
    "LOSSES",
    "LossOutput",
    "create_loss",
    "distill",
    "infonce",
    "infonce_vicreg",
    "multipositive_infonce",
    "ntxent",
    "same_clip_mask",
    "triplet_max",
    "triplet_sum",
    "triplet_weighted",
    "uses_temperature",
    "vicreg",
]


@dataclass(frozen=True)
class LossOutput:
    """A loss value plus its named parts (for logging; ``total`` is what gets back-propagated)."""

    total: torch.Tensor  # scalar
    parts: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> scalar


LOSSES: Registry[Callable[..., LossOutput]] = Registry("loss")


def _check_inputs(audio: torch.Tensor, text: torch.Tensor, clip_ids: torch.Tensor) -> None:
    if audio.ndim != 2 or text.ndim != 2:
        raise ValueError(
            f"audio and text must be (B, D); got {tuple(audio.shape)} and {tuple(text.shape)}"
        )
    if audio.shape != text.shape:
        raise ValueError(
            f"audio {tuple(audio.shape)} and text {tuple(text.shape)} must have the same shape"
        )
    if clip_ids.shape != (audio.shape[0],):
        raise ValueError(f"clip_ids must be ({audio.shape[0]},); got {tuple(clip_ids.shape)}")


def same_clip_mask(clip_ids: torch.Tensor) -> torch.Tensor:
    """``(B, B)`` bool: ``True`` where pairs ``i`` and ``j`` (``i != j``) come from the same clip.

    These are the entries that must not be treated as negatives. The diagonal is ``False``.
    """
    same = clip_ids[:, None] == clip_ids[None, :]  # (B, B)
    return same & ~torch.eye(len(clip_ids), dtype=torch.bool, device=clip_ids.device)


def _hinges(
    sim: torch.Tensor, clip_ids: torch.Tensor, margin: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Margin violations of every negative, with the diagonal and same-clip entries zeroed.

    ``cost_a2t[i, j] = max(0, margin + S[i, j] - S[i, i])``: caption ``j`` vs audio anchor ``i``.
    ``cost_t2a[i, j] = max(0, margin + S[i, j] - S[j, j])``: audio ``i`` vs caption anchor ``j``.
    """
    pos = sim.diagonal()  # (B,)
    not_negative = same_clip_mask(clip_ids) | torch.eye(
        len(clip_ids), dtype=torch.bool, device=sim.device
    )
    cost_a2t = (margin + sim - pos[:, None]).clamp(min=0).masked_fill(not_negative, 0.0)
    cost_t2a = (margin + sim - pos[None, :]).clamp(min=0).masked_fill(not_negative, 0.0)
    return cost_a2t, cost_t2a


@LOSSES.register("triplet_sum")
def triplet_sum(
    audio: torch.Tensor, text: torch.Tensor, clip_ids: torch.Tensor, margin: float = 0.2
) -> LossOutput:
    """Bidirectional hinge ranking loss summed over all negatives (VSE "sum of hinges").

    Reduction as the reference ``BiDirectionalRankingLoss``: the hinges of both directions are
    summed over every anchor and every negative and divided by the batch size ``B`` (not by the
    number of negatives), so the loss grows with ``B``; ``parts`` are the two directions.
    """
    _check_inputs(audio, text, clip_ids)
    sim = audio @ text.T  # (B, B)
    cost_a2t, cost_t2a = _hinges(sim, clip_ids, margin)
    n = sim.shape[0]
    a2t = cost_a2t.sum() / n
    t2a = cost_t2a.sum() / n
    return LossOutput(a2t + t2a, {"a2t": a2t, "t2a": t2a})


@LOSSES.register("triplet_max")
def triplet_max(
    audio: torch.Tensor, text: torch.Tensor, clip_ids: torch.Tensor, margin: float = 0.2
) -> LossOutput:
    """VSE++ triplet loss on the hardest negative per anchor (Faghri et al., BMVC 2018).

    Reduction as the reference ``TripletLoss``: for each anchor only the largest hinge counts;
    those maxima are summed over anchors for both directions and divided by ``B``.
    """
    _check_inputs(audio, text, clip_ids)
    sim = audio @ text.T  # (B, B)
    cost_a2t, cost_t2a = _hinges(sim, clip_ids, margin)
    n = sim.shape[0]
    a2t = cost_a2t.max(dim=1).values.sum() / n  # hardest caption per audio anchor
    t2a = cost_t2a.max(dim=0).values.sum() / n  # hardest audio per caption anchor
    return LossOutput(a2t + t2a, {"a2t": a2t, "t2a": t2a})


# Polynomial weighting coefficients of Wei et al., "Universal Weighting Metric Learning for
# Cross-Modal Matching", CVPR 2020 (arXiv:2010.03403), as published with their PolyLoss code and
# reused unchanged by the DCASE seed system's ``WeightTriplet``:
#   positive term  P(s) = max(0, 0.2 s^2 - 0.7 s + 0.5)   (weight falls as the positive improves)
#   negative term  N(s) = max(0, 0.9 s^2 - 0.4 s + 0.03)  (weight grows as the negative gets harder)
_POLY_POS = (0.2, -0.7, 0.5)
_POLY_NEG = (0.9, -0.4, 0.03)


def _poly(x: torch.Tensor, coeffs: tuple[float, float, float]) -> torch.Tensor:
    a2, a1, a0 = coeffs
    return (a2 * x * x + a1 * x + a0).clamp(min=0)


def _polyloss_rows(
    sim: torch.Tensor, clip_ids: torch.Tensor, margin: float, eps: float
) -> torch.Tensor:
    """Sum over anchors (rows of ``sim``) of ``P(pos) + N(hardest negative)``.

    An anchor contributes only when its hardest negative violates the margin
    (``neg + margin > pos``) and its positive is not already perfect (``pos < 1 - eps``),
    as in the reference implementation, which skips such anchors.
    """
    pos = sim.diagonal()  # (B,)
    not_negative = same_clip_mask(clip_ids) | torch.eye(
        len(clip_ids), dtype=torch.bool, device=sim.device
    )
    neg = sim.masked_fill(not_negative, float("-inf"))  # (B, B)
    hardest = neg.max(dim=1).values  # (B,) -inf when an anchor has no negative at all
    active = (hardest + margin > pos) & (pos < 1 - eps)
    hardest = torch.where(active, hardest, torch.zeros_like(hardest))  # keep -inf out of autograd
    per_anchor = _poly(pos, _POLY_POS) + _poly(hardest, _POLY_NEG)  # (B,)
    return torch.where(active, per_anchor, torch.zeros_like(per_anchor)).sum()


@LOSSES.register("triplet_weighted")
def triplet_weighted(
    audio: torch.Tensor,
    text: torch.Tensor,
    clip_ids: torch.Tensor,
    margin: float = 0.2,
    eps: float = 1e-5,
) -> LossOutput:
    """Polynomial-weighted triplet loss (Wei et al. 2020), both directions.

    For each anchor: ``P(s_pos) + N(s_hardest_negative)`` (coefficients above), counted only when
    the hardest negative lies within ``margin`` of the positive. Reduction as the reference
    ``WeightTriplet``: the per-anchor terms of both directions are summed and divided by ``B``.
    """
    _check_inputs(audio, text, clip_ids)
    sim = audio @ text.T  # (B, B)
    n = sim.shape[0]
    a2t = _polyloss_rows(sim, clip_ids, margin, eps) / n
    t2a = _polyloss_rows(sim.T, clip_ids, margin, eps) / n
    return LossOutput(a2t + t2a, {"a2t": a2t, "t2a": t2a})


def _masked_ce(
    logits: torch.Tensor, clip_ids: torch.Tensor, label_smoothing: float
) -> torch.Tensor:
    """Mean cross-entropy of row ``i`` against target column ``i``, same-clip columns removed.

    With label smoothing ``eps`` the target distribution is ``1 - eps`` on the positive plus
    ``eps / K_i`` on each of the ``K_i`` candidates left in row ``i`` (positive included), so it
    equals ``F.cross_entropy(..., label_smoothing=eps)`` when no entry is masked, and never puts
    mass on a removed same-clip entry.
    """
    removed = same_clip_mask(clip_ids)  # (B, B)
    logp = logits.masked_fill(removed, float("-inf")).log_softmax(dim=1)  # (B, B)
    nll = -logp.diagonal()  # (B,)
    if label_smoothing == 0.0:
        return nll.mean()
    kept = (~removed).sum(dim=1).to(logits.dtype)  # (B,) K_i
    # Sum of -log p over kept candidates; removed entries are -inf, so zero them first.
    smooth = -logp.masked_fill(removed, 0.0).sum(dim=1) / kept  # (B,)
    return ((1.0 - label_smoothing) * nll + label_smoothing * smooth).mean()


def _check_temperature(temperature: float | torch.Tensor) -> None:
    value = torch.as_tensor(temperature).detach()
    if not bool((value > 0).all()):
        raise ValueError(f"temperature must be > 0, got {value.tolist()}")


def _symmetric_ce(
    sim: torch.Tensor, clip_ids: torch.Tensor, scale: torch.Tensor | float, label_smoothing: float
) -> LossOutput:
    logits = sim * scale  # (B, B)
    a2t = _masked_ce(logits, clip_ids, label_smoothing)  # audio rows over captions
    t2a = _masked_ce(logits.T, clip_ids, label_smoothing)  # caption rows over audio clips
    return LossOutput(0.5 * (a2t + t2a), {"a2t": a2t, "t2a": t2a})


@LOSSES.register("ntxent")
def ntxent(
    audio: torch.Tensor,
    text: torch.Tensor,
    clip_ids: torch.Tensor,
    temperature: float | torch.Tensor = 0.07,
) -> LossOutput:
    """NT-Xent as in the DCASE 2023 seed system: symmetric cross-entropy over ``S / temperature``.

    ``total = (CE_a2t + CE_t2a) / 2``, each the mean over the batch; fixed temperature 0.07 by
    default (the seed's value). Same-clip entries are removed from the softmax (module docstring).
    """
    _check_inputs(audio, text, clip_ids)
    _check_temperature(temperature)
    return _symmetric_ce(audio @ text.T, clip_ids, 1.0 / temperature, 0.0)


@LOSSES.register("infonce")
def infonce(
    audio: torch.Tensor,
    text: torch.Tensor,
    clip_ids: torch.Tensor,
    temperature: float | torch.Tensor = 0.07,
    label_smoothing: float = 0.0,
) -> LossOutput:
    """CLIP-style InfoNCE: symmetric cross-entropy over ``S / temperature`` with label smoothing.

    The temperature is an argument so a learnable one can live in the model (CLIP/AudioCLIP keep
    ``logit_scale = 1 / temperature``; pass ``1 / logit_scale.exp()`` and gradients flow).
    ``label_smoothing`` defaults to 0 (plain InfoNCE); see :func:`_masked_ce` for how the smoothing
    mass avoids removed same-clip entries. The AudioCLIP preset sets its own value.
    """
    _check_inputs(audio, text, clip_ids)
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    _check_temperature(temperature)
    return _symmetric_ce(audio @ text.T, clip_ids, 1.0 / temperature, label_smoothing)


@LOSSES.register("vicreg")
def vicreg(
    audio: torch.Tensor,
    text: torch.Tensor,
    clip_ids: torch.Tensor,
    invariance_weight: float = 25.0,
    variance_weight: float = 25.0,
    covariance_weight: float = 1.0,
    gamma: float = 1.0,
    eps: float = 1e-4,
) -> LossOutput:
    """VICReg (Bardes, Ponce & LeCun, ICLR 2022) with audio and text as the two views.

    * invariance: mean squared error between the paired rows, ``mean((audio - text)^2)``;
    * variance: ``mean_d max(0, gamma - sqrt(Var_d + eps))`` per view (unbiased variance over the
      batch), averaged over the two views;
    * covariance: sum of squared off-diagonal entries of each view's covariance matrix (``/(B-1)``),
      divided by ``D``, summed over the two views.

    ``total = 25 * inv + 25 * var + 1 * cov`` by default (the paper's weights). VICReg has no
    negatives, so ``clip_ids`` is accepted for the common signature and does not change the value.
    """
    _check_inputs(audio, text, clip_ids)
    n, d = audio.shape
    if n < 2:
        raise ValueError("vicreg needs a batch of at least 2 pairs (it uses batch statistics)")
    inv = F.mse_loss(audio, text)
    xa = audio - audio.mean(dim=0)  # (B, D)
    xt = text - text.mean(dim=0)  # (B, D)
    std_a = torch.sqrt(xa.var(dim=0) + eps)  # (D,)
    std_t = torch.sqrt(xt.var(dim=0) + eps)  # (D,)
    var = 0.5 * (F.relu(gamma - std_a).mean() + F.relu(gamma - std_t).mean())
    off = ~torch.eye(d, dtype=torch.bool, device=audio.device)
    cov_a = (xa.T @ xa) / (n - 1)  # (D, D)
    cov_t = (xt.T @ xt) / (n - 1)  # (D, D)
    cov = cov_a[off].pow(2).sum() / d + cov_t[off].pow(2).sum() / d
    total = invariance_weight * inv + variance_weight * var + covariance_weight * cov
    return LossOutput(total, {"invariance": inv, "variance": var, "covariance": cov})


@LOSSES.register("infonce_vicreg")
def infonce_vicreg(
    audio: torch.Tensor,
    text: torch.Tensor,
    clip_ids: torch.Tensor,
    temperature: float | torch.Tensor = 0.07,
    label_smoothing: float = 0.0,
    vicreg_weight: float = 1.0,
    invariance_weight: float = 25.0,
    variance_weight: float = 25.0,
    covariance_weight: float = 1.0,
) -> LossOutput:
    """``InfoNCE + vicreg_weight * VICReg``: contrastive alignment plus a guard against collapse.

    ``vicreg_weight`` (lambda) defaults to 1; no published value for audio-text retrieval was
    found, so presets should set it explicitly.
    """
    nce = infonce(audio, text, clip_ids, temperature=temperature, label_smoothing=label_smoothing)
    reg = vicreg(
        audio,
        text,
        clip_ids,
        invariance_weight=invariance_weight,
        variance_weight=variance_weight,
        covariance_weight=covariance_weight,
    )
    parts = {"infonce": nce.total, "vicreg": reg.total}
    parts.update({f"infonce/{k}": v for k, v in nce.parts.items()})
    parts.update({f"vicreg/{k}": v for k, v in reg.parts.items()})
    return LossOutput(nce.total + vicreg_weight * reg.total, parts)


def _soft_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over rows of ``-sum_j targets[i, j] * log_softmax(logits)[i, j]`` (rows of
    ``targets`` sum to 1). Zero-target entries contribute nothing, even where the log-probability
    underflows to ``-inf``."""
    logp = logits.log_softmax(dim=1)  # (B, B)
    return -(targets * logp).nan_to_num(nan=0.0).sum(dim=1).mean()


def positive_targets(clip_ids: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``(B, B)`` soft targets: row ``i`` spreads mass ``1 / n_i`` over the ``n_i`` pairs whose clip
    is pair ``i``'s (itself included). Symmetric, so it serves both retrieval directions."""
    same = (clip_ids[:, None] == clip_ids[None, :]).to(dtype)  # (B, B)
    return same / same.sum(dim=1, keepdim=True)


@LOSSES.register("multipositive_infonce")
def multipositive_infonce(
    audio: torch.Tensor,
    text: torch.Tensor,
    clip_ids: torch.Tensor,
    temperature: float | torch.Tensor = 0.05,
    average: Literal["anchors", "pairs"] = "anchors",
) -> LossOutput:
    """InfoNCE in which every same-clip pair is a positive (the DCASE 2025 Task 6 baseline).

    ``logits = audio @ text.T / temperature``; the target of each row (audio anchor over the
    batch's captions) and of each column (caption anchor over the batch's clips) is the positive
    mask normalised to sum to 1 (:func:`positive_targets`); ``total = (CE_a2t + CE_t2a) / 2``.
    Unlike :func:`infonce`, a second caption of the same clip is pulled closer instead of removed.
    With all clip ids distinct the mask is the identity and this equals plain InfoNCE.

    The baseline (CPJKU ``dcase2025_task6_baseline``, ``retrieval_module.py``) averages the
    log-probabilities of all positive entries of the batch at once, which weighs a clip with two
    captions in the batch twice as much as a clip with one; ``average="pairs"`` computes exactly
    that (the DCASE 2025 presets use it), the default ``"anchors"`` normalises per row as the
    targets above say, giving every anchor the same weight. Both agree when each clip appears at
    most once per batch. Temperature 0.05, fixed in the baseline
    (``--initial_tau 0.05 --no-tau_trainable``); a learnable one lives in the model and is passed
    here, as for :func:`infonce`.
    """
    _check_inputs(audio, text, clip_ids)
    _check_temperature(temperature)
    logits = (audio @ text.T) / temperature  # (B, B)
    if average == "pairs":  # the baseline's reduction: mean log-probability over positive entries
        positive = clip_ids[:, None] == clip_ids[None, :]  # (B, B)
        a2t = -logits.log_softmax(dim=1)[positive].mean()
        t2a = -logits.log_softmax(dim=0)[positive].mean()
    elif average == "anchors":
        targets = positive_targets(clip_ids, logits.dtype)  # (B, B), symmetric
        a2t = _soft_ce(logits, targets)  # rows: audio anchors over captions
        t2a = _soft_ce(logits.T, targets)  # columns: caption anchors over clips
    else:
        raise ValueError(f"average must be 'anchors' or 'pairs', got {average!r}")
    return LossOutput(0.5 * (a2t + t2a), {"a2t": a2t, "t2a": t2a})


@LOSSES.register("distill")
def distill(
    audio: torch.Tensor,
    text: torch.Tensor,
    clip_ids: torch.Tensor,
    teacher: torch.Tensor,
    temperature: float | torch.Tensor = 0.05,
    teacher_temperature: float = 0.05,
    distill_weight: float = 1.0,
    contrastive_weight: float = 0.0,
    average: Literal["anchors", "pairs"] = "anchors",
) -> LossOutput:
    """Distillation of a teacher's in-batch audio-caption correspondences (Primus et al.,
    DCASE 2024 workshop, "Estimated audio-caption correspondences"; ``OptimusPrimus/salsa``).

    ``teacher (B, B)`` holds the teacher's similarity of audio ``i`` and caption ``j`` of the batch
    (for an ensemble, the weighted mean of its members' cosine similarities). Its row-wise
    softmax at ``teacher_temperature`` is the target of the student's rows (``audio @ text.T /
    temperature``), and its column-wise softmax the target of the student's columns:
    ``distill = (CE_a2t + CE_t2a) / 2``. ``total = distill_weight * distill + contrastive_weight *``
    :func:`multipositive_infonce` with its ``average`` (salsa's contrastive term is ``"pairs"``;
    its second stage uses weights 1 and 0, both temperatures 0.05). salsa multiplies its
    contrastive term by ``loss_weight`` twice when distilling, so its ``loss_weight`` w is
    ``contrastive_weight`` w**2 here. The teacher is a constant: no gradient reaches it.
    """
    _check_inputs(audio, text, clip_ids)
    _check_temperature(temperature)
    _check_temperature(teacher_temperature)
    b = audio.shape[0]
    if teacher.shape != (b, b):
        raise ValueError(f"teacher similarity must be ({b}, {b}); got {tuple(teacher.shape)}")
    if distill_weight < 0 or contrastive_weight < 0 or distill_weight + contrastive_weight == 0:
        raise ValueError("distill_weight and contrastive_weight must be >= 0 and not both 0")
    if average not in ("anchors", "pairs"):
        raise ValueError(f"average must be 'anchors' or 'pairs', got {average!r}")
    logits = (audio @ text.T) / temperature  # (B, B)
    soft = teacher.detach().to(logits.dtype) / teacher_temperature  # (B, B)
    a2t = _soft_ce(logits, soft.softmax(dim=1))
    t2a = _soft_ce(logits.T, soft.T.softmax(dim=1))
    kd = 0.5 * (a2t + t2a)
    parts = {"distill": kd, "distill/a2t": a2t, "distill/t2a": t2a}
    total = distill_weight * kd
    if contrastive_weight > 0:
        con = multipositive_infonce(audio, text, clip_ids, temperature=temperature, average=average)
        parts["contrastive"] = con.total
        total = total + contrastive_weight * con.total
    return LossOutput(total, parts)


_CALL_ARGS = ("audio", "text", "clip_ids", "teacher")


def create_loss(name: str, **options: object) -> Callable[..., LossOutput]:
    """The registered loss ``name`` with ``options`` (margin, weights, ...) bound.

    Returns a callable ``loss(audio, text, clip_ids[, temperature=...]) -> LossOutput``. An
    option the loss does not take is a ConfigError (never silently ignored).
    """
    fn = LOSSES.get(name)
    params = inspect.signature(fn).parameters
    allowed = [p for p in params if p not in _CALL_ARGS]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(f"loss {name!r}: unknown option(s) {unknown}; allowed: {allowed}")
    return partial(fn, **options)


def uses_temperature(name: str) -> bool:
    """Whether loss ``name`` takes a temperature (so the trainer knows to pass the model's)."""
    return "temperature" in inspect.signature(LOSSES.get(name)).parameters
