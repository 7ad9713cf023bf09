"""Losses against hand-worked values, masking of same-clip pairs, and properties."""

import math

import pytest
import torch
import torch.nn.functional as F

from earshot.errors import ConfigError
from earshot.losses import (
    LOSSES,
    create_loss,
    infonce,
    infonce_vicreg,
    multipositive_infonce,
    distill,
    ntxent,
    triplet_max,
    triplet_sum,
    triplet_weighted,
    uses_temperature,
    vicreg,
)

# Shared 3-pair example (2-d embeddings, dot-product similarity S = audio @ text.T):
#   audio = a0 (1, 0), a1 (0, 1), a2 (0.6, 0.8)
#   text  = t0 (0.8, 0.6), t1 (0, 1), t2 (1, 0)
#   S = [[0.80, 0.0, 1.0],
#        [0.60, 1.0, 0.0],
#        [0.96, 0.8, 0.6]]      diagonal (positives): 0.8, 1.0, 0.6
A3 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]], dtype=torch.float64)
T3 = torch.tensor([[0.8, 0.6], [0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
DISTINCT = torch.tensor([0, 1, 2])
SHARED = torch.tensor([0, 1, 0])  # pairs 0 and 2 are two captions of the same clip


def test_similarity_of_example_is_as_written():
    expected = torch.tensor([[0.8, 0.0, 1.0], [0.6, 1.0, 0.0], [0.96, 0.8, 0.6]], dtype=torch.float64)
    torch.testing.assert_close(A3 @ T3.T, expected)


def test_triplet_sum_by_hand():
    # margin 0.2. a2t hinge[i,j] = max(0, 0.2 + S[i,j] - S[i,i]):
    #   row0: j1 0.2+0-0.8 -> 0, j2 0.2+1-0.8 = 0.4
    #   row1: j0 0.2+0.6-1 -> 0, j2 -> 0
    #   row2: j0 0.2+0.96-0.6 = 0.56, j1 0.2+0.8-0.6 = 0.4       sum 1.36
    # t2a hinge[i,j] = max(0, 0.2 + S[i,j] - S[j,j]) (column j = caption anchor):
    #   col0: i1 0.2+0.6-0.8 = 0, i2 0.2+0.96-0.8 = 0.36
    #   col1: i0 -> 0, i2 0.2+0.8-1 = 0
    #   col2: i0 0.2+1-0.6 = 0.6, i1 -> 0                          sum 0.96
    # reduction: (sum a2t + sum t2a) / B = (1.36 + 0.96) / 3
    out = triplet_sum(A3, T3, DISTINCT)
    assert out.parts["a2t"].item() == pytest.approx(1.36 / 3)
    assert out.parts["t2a"].item() == pytest.approx(0.96 / 3)
    assert out.total.item() == pytest.approx(2.32 / 3)


def test_triplet_max_by_hand():
    # Hardest negative per anchor from the hinges above:
    #   a2t rows: 0.4, 0, 0.56 -> 0.96;   t2a cols: 0.36, 0, 0.6 -> 0.96
    out = triplet_max(A3, T3, DISTINCT)
    assert out.parts["a2t"].item() == pytest.approx(0.96 / 3)
    assert out.parts["t2a"].item() == pytest.approx(0.96 / 3)
    assert out.total.item() == pytest.approx(1.92 / 3)


def test_triplet_masking_same_clip_by_hand():
    # With pairs 0 and 2 from one clip, (0,2) and (2,0) are not negatives:
    #   a2t: row0 keeps only j1 (0) -> 0; row2 keeps only j1 (0.4) -> 0.4
    #   t2a: col0 keeps only i1 (0) -> 0; col2 keeps only i1 (0) -> 0
    # sum and max both give 0.4 / 3
    assert triplet_sum(A3, T3, SHARED).total.item() == pytest.approx(0.4 / 3)
    assert triplet_max(A3, T3, SHARED).total.item() == pytest.approx(0.4 / 3)


def test_triplet_margin_is_used():
    # margin 0: every hinge above shrinks by 0.2; surviving ones: a2t row0 j2 0.2,
    # row2 j0 0.36, row2 j1 0.2; t2a col0 i2 0.16, col2 i0 0.4  -> sum 1.32 / 3
    assert triplet_sum(A3, T3, DISTINCT, margin=0.0).total.item() == pytest.approx(1.32 / 3)


def test_triplet_weighted_by_hand():
    # Wei et al. polynomials: P(s) = 0.2 s^2 - 0.7 s + 0.5, N(s) = 0.9 s^2 - 0.4 s + 0.03.
    #   P(0.8) = 0.128 - 0.56 + 0.5 = 0.068      P(0.6) = 0.072 - 0.42 + 0.5 = 0.152
    #   N(1.0) = 0.9 - 0.4 + 0.03 = 0.53          N(0.96) = 0.82944 - 0.384 + 0.03 = 0.47544
    #   N(0.8) = 0.576 - 0.32 + 0.03 = 0.286      N(0.6) = 0.324 - 0.24 + 0.03 = 0.114
    # margin 0.3. a2t anchors (rows): 0: pos 0.8, hardest 1.0 (1.3 > 0.8) -> 0.068 + 0.53
    #   1: pos 1.0 is not < 1 - 1e-5 -> skipped;  2: pos 0.6, hardest 0.96 -> 0.152 + 0.47544
    #   a2t = 1.22544 / 3
    # t2a anchors (columns): 0: pos 0.8, hardest 0.96 -> 0.068 + 0.47544; 1: skipped;
    #   2: pos 0.6, hardest 1.0 -> 0.152 + 0.53;  t2a = 1.22544 / 3
    out = triplet_weighted(A3, T3, DISTINCT, margin=0.3)
    assert out.parts["a2t"].item() == pytest.approx(1.22544 / 3)
    assert out.parts["t2a"].item() == pytest.approx(1.22544 / 3)
    # Masked (pairs 0 and 2 share a clip):
    #   a2t 0: negatives {0.0}; 0.3 > 0.8 false -> skipped. 2: negatives {0.8} -> 0.152 + 0.286
    #   t2a 0: negatives {0.6}; 0.9 > 0.8 -> 0.068 + 0.114.  2: negatives {0.0}; 0.3 > 0.6 false
    #   total = (0.438 + 0.182) / 3
    masked = triplet_weighted(A3, T3, SHARED, margin=0.3)
    assert masked.parts["a2t"].item() == pytest.approx(0.438 / 3)
    assert masked.parts["t2a"].item() == pytest.approx(0.182 / 3)
    assert masked.total.item() == pytest.approx(0.62 / 3)


# Two-pair example for the cross-entropy losses:
#   audio = (1, 0), (0, 1); text = (1, 0), (0.6, 0.8);  S = [[1, 0.6], [0, 0.8]]
#   temperature 0.5 -> logits = [[2, 1.2], [0, 1.6]]
A2 = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
T2 = torch.tensor([[1.0, 0.0], [0.6, 0.8]], dtype=torch.float64)


def test_ntxent_by_hand():
    # a2t rows: -log softmax = log(1 + e^(other - target))
    #   row0: log(1 + e^(1.2 - 2)) ; row1: log(1 + e^(0 - 1.6))
    # t2a columns: col0 logits (2, 0), target 2: log(1 + e^-2); col1 (1.2, 1.6): log(1 + e^-0.4)
    a2t = (math.log1p(math.exp(-0.8)) + math.log1p(math.exp(-1.6))) / 2  # 0.27750
    t2a = (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(-0.4))) / 2  # 0.31997
    out = ntxent(A2, T2, torch.tensor([0, 1]), temperature=0.5)
    assert out.parts["a2t"].item() == pytest.approx(a2t)
    assert out.parts["t2a"].item() == pytest.approx(t2a)
    assert out.total.item() == pytest.approx(0.5 * (a2t + t2a))
    assert out.total.item() == pytest.approx(0.298736, abs=1e-6)


def test_ntxent_masking_removes_same_clip_candidates():
    # Both pairs from one clip: each row is left with only its positive, so -log 1 = 0.
    assert ntxent(A2, T2, torch.tensor([7, 7]), temperature=0.5).total.item() == pytest.approx(0.0)
    # Three pairs, 0 and 2 share a clip: row 0 of a2t keeps columns {0, 1} only.
    out = ntxent(A3, T3, SHARED, temperature=1.0)
    s = A3 @ T3.T
    row0 = -math.log(math.exp(s[0, 0]) / (math.exp(s[0, 0]) + math.exp(s[0, 1])))
    row1 = -math.log(math.exp(s[1, 1]) / sum(math.exp(s[1, j]) for j in range(3)))
    row2 = -math.log(math.exp(s[2, 2]) / (math.exp(s[2, 1]) + math.exp(s[2, 2])))
    assert out.parts["a2t"].item() == pytest.approx((row0 + row1 + row2) / 3)
    assert out.total.item() != pytest.approx(ntxent(A3, T3, DISTINCT, temperature=1.0).total.item())


def test_infonce_label_smoothing_by_hand():
    # eps 0.1, no masking: target (0.95, 0.05). a2t row0: -log p0 = L0 = log(1 + e^-0.8),
    # -log p1 = 0.8 + L0, so 0.95 L0 + 0.05 (0.8 + L0) = L0 + 0.04.
    # Likewise every row: loss = nll + 0.05 * (logit gap); the gaps are 0.8, 1.6, 2.0, 0.4.
    l_a2t = (math.log1p(math.exp(-0.8)) + 0.04 + math.log1p(math.exp(-1.6)) + 0.08) / 2
    l_t2a = (math.log1p(math.exp(-2.0)) + 0.10 + math.log1p(math.exp(-0.4)) + 0.02) / 2
    out = infonce(A2, T2, torch.tensor([0, 1]), temperature=0.5, label_smoothing=0.1)
    assert out.parts["a2t"].item() == pytest.approx(l_a2t)
    assert out.parts["t2a"].item() == pytest.approx(l_t2a)


def test_infonce_matches_torch_cross_entropy_without_duplicates():
    g = torch.Generator().manual_seed(0)
    a = F.normalize(torch.randn(6, 4, generator=g, dtype=torch.float64), dim=1)
    t = F.normalize(torch.randn(6, 4, generator=g, dtype=torch.float64), dim=1)
    logits = a @ t.T / 0.1
    target = torch.arange(6)
    ref = 0.5 * (
        F.cross_entropy(logits, target, label_smoothing=0.2)
        + F.cross_entropy(logits.T, target, label_smoothing=0.2)
    )
    out = infonce(a, t, torch.arange(6), temperature=0.1, label_smoothing=0.2)
    torch.testing.assert_close(out.total, ref)
    # no smoothing: InfoNCE and NT-Xent are the same objective
    torch.testing.assert_close(infonce(a, t, target, 0.1).total, ntxent(a, t, target, 0.1).total)


def test_infonce_smoothing_skips_masked_entries():
    # Pairs 0 and 2 share a clip, temperature 1, eps 0.1. Row 0 of a2t keeps columns {0, 1}:
    #   lse = log(e^0.8 + e^0) ; target (0.95, 0.05) over those two only
    #   row0 = 0.95 (lse - 0.8) + 0.05 (lse - 0.0)
    out = infonce(A3, T3, SHARED, temperature=1.0, label_smoothing=0.1)
    assert torch.isfinite(out.total)  # no smoothing mass on a -inf logit
    lse = math.log(math.exp(0.8) + 1.0)
    row0 = 0.95 * (lse - 0.8) + 0.05 * lse
    # Plain reference for all rows: keep j == i or a different clip; (1-eps) nll + eps mean(-log p)
    s = (A3 @ T3.T).tolist()
    rows = []
    for i in range(3):
        keep = [j for j in range(3) if j == i or SHARED[j] != SHARED[i]]
        lse_i = math.log(sum(math.exp(s[i][j]) for j in keep))
        smooth = sum(lse_i - s[i][j] for j in keep) / len(keep)
        rows.append(0.9 * (lse_i - s[i][i]) + 0.1 * smooth)
    assert rows[0] == pytest.approx(row0)
    assert out.parts["a2t"].item() == pytest.approx(sum(rows) / 3)


def test_vicreg_by_hand():
    # audio = (1, 0), (0, 1); text = (1, 0), (0, 0)
    # invariance: squared differences 0, 0, 0, 1 -> mean 0.25
    # variance (unbiased, B = 2): audio dims [1,0] and [0,1] -> var 0.5 each, std sqrt(0.5001)
    #   text dims [1,0] -> std sqrt(0.5001); [0,0] -> std sqrt(0.0001) = 0.01
    #   audio term mean(1 - s, 1 - s) = 1 - s; text term ((1 - s) + 0.99) / 2; average of both
    # covariance: audio centred [[.5,-.5],[-.5,.5]] -> cov [[.5,-.5],[-.5,.5]], off-diag^2 sum 0.5,
    #   / D = 0.25; text centred [[.5,0],[-.5,0]] -> off-diagonal 0.  cov = 0.25
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    t = torch.tensor([[1.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    s = math.sqrt(0.5001)
    var = 0.5 * ((1 - s) + ((1 - s) + 0.99) / 2)
    out = vicreg(a, t, torch.tensor([0, 1]))
    assert out.parts["invariance"].item() == pytest.approx(0.25)
    assert out.parts["variance"].item() == pytest.approx(var)
    assert out.parts["covariance"].item() == pytest.approx(0.25)
    assert out.total.item() == pytest.approx(25 * 0.25 + 25 * var + 0.25)
    weighted = vicreg(a, t, torch.tensor([0, 1]), invariance_weight=1, variance_weight=2, covariance_weight=4)
    assert weighted.total.item() == pytest.approx(0.25 + 2 * var + 1.0)


def test_infonce_vicreg_is_sum():
    ids = torch.tensor([0, 1])
    combo = infonce_vicreg(A2, T2, ids, temperature=0.5, vicreg_weight=0.3)
    nce = infonce(A2, T2, ids, temperature=0.5).total
    reg = vicreg(A2, T2, ids).total
    assert combo.total.item() == pytest.approx(nce.item() + 0.3 * reg.item())
    assert combo.parts["infonce"].item() == pytest.approx(nce.item())


def _batch(seed: int, n: int = 8, d: int = 6, noise: float = 0.05):
    g = torch.Generator().manual_seed(seed)
    a = F.normalize(torch.randn(n, d, generator=g), dim=1)
    t = F.normalize(a + noise * torch.randn(n, d, generator=g), dim=1)
    return a, t


ALL = sorted(n for n in LOSSES.names() if n != "distill")  # distill also takes a teacher


def test_registry_has_every_loss():
    assert sorted(LOSSES.names()) == sorted(
        ["triplet_sum", "triplet_max", "triplet_weighted", "ntxent", "infonce", "infonce_vicreg", "vicreg",
         "multipositive_infonce", "distill"]
    )


@pytest.mark.parametrize("name", ALL)
def test_gradients_finite_and_reach_both_inputs(name):
    a, t = _batch(1)
    a = a.clone().requires_grad_(True)
    t = t.clone().requires_grad_(True)
    ids = torch.tensor([0, 0, 1, 2, 3, 3, 4, 5])
    # a hard batch (shuffled text) so every hinge and term is active
    out = create_loss(name)(a, t[torch.randperm(8, generator=torch.Generator().manual_seed(0))], ids)
    out.total.backward()
    assert out.total.ndim == 0 and torch.isfinite(out.total)
    assert torch.isfinite(a.grad).all() and torch.isfinite(t.grad).all()
    assert a.grad.abs().sum() > 0 and t.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ALL)
def test_aligned_batch_scores_lower_than_shuffled(name):
    a, t = _batch(2)
    ids = torch.arange(8)
    perm = torch.tensor([1, 2, 3, 4, 5, 6, 7, 0])
    loss = create_loss(name)
    assert loss(a, t, ids).total.item() < loss(a, t[perm], ids).total.item()


@pytest.mark.parametrize("name", ALL)
def test_swapping_modalities_keeps_total(name):
    # S becomes S.T, so a2t and t2a trade places; every loss here treats them symmetrically.
    a, t = _batch(3, noise=0.8)
    ids = torch.tensor([0, 0, 1, 2, 3, 4, 4, 5])
    loss = create_loss(name)
    torch.testing.assert_close(loss(a, t, ids).total, loss(t, a, ids).total)


@pytest.mark.parametrize("name", ALL)
def test_permuting_the_batch_keeps_total(name):
    a, t = _batch(4, noise=0.8)
    ids = torch.tensor([0, 0, 1, 2, 3, 4, 4, 5])
    perm = torch.tensor([5, 2, 7, 0, 1, 6, 3, 4])
    loss = create_loss(name)
    torch.testing.assert_close(loss(a, t, ids).total, loss(a[perm], t[perm], ids[perm]).total)


@pytest.mark.parametrize("name", ["triplet_sum", "triplet_max", "triplet_weighted", "ntxent", "infonce"])
def test_masking_matters_only_with_shared_clips(name):
    a, t = _batch(5, noise=0.8)
    loss = create_loss(name)
    distinct = loss(a, t, torch.arange(8)).total
    relabelled = loss(a, t, torch.arange(8) * 10 + 3).total  # other ids, still all distinct
    torch.testing.assert_close(distinct, relabelled)
    shared = loss(a, t, torch.tensor([0, 0, 0, 1, 2, 3, 4, 5])).total
    assert shared.item() != pytest.approx(distinct.item(), abs=1e-6)
    assert shared.item() < distinct.item()  # fewer negatives can only lower these losses


def test_learnable_temperature_gets_gradient():
    a, t = _batch(6, noise=0.5)
    log_scale = torch.tensor(math.log(1 / 0.07), requires_grad=True)
    infonce(a, t, torch.arange(8), temperature=1 / log_scale.exp()).total.backward()
    assert log_scale.grad is not None and torch.isfinite(log_scale.grad) and log_scale.grad != 0


def test_create_loss_binds_options_and_rejects_unknown():
    loss = create_loss("triplet_sum", margin=0.0)
    assert loss(A3, T3, DISTINCT).total.item() == pytest.approx(1.32 / 3)
    with pytest.raises(ConfigError, match="margn"):
        create_loss("triplet_sum", margn=0.1)
    with pytest.raises(ConfigError, match="unknown loss"):
        create_loss("triplet_mean")
    assert uses_temperature("infonce") and uses_temperature("ntxent")
    assert not uses_temperature("triplet_max") and not uses_temperature("vicreg")


def test_shape_errors_are_clear():
    with pytest.raises(ValueError, match="same shape"):
        triplet_sum(A3, T3[:, :1], DISTINCT)
    with pytest.raises(ValueError, match="clip_ids"):
        ntxent(A3, T3, torch.tensor([0, 1]))


# ---- multi-positive InfoNCE (DCASE 2025 baseline) ---------------------------------------------
# 4 pairs, clip ids [0, 0, 1, 2]: pairs 0 and 1 are two captions of one clip. With audio = I and
# text = log(M).T at temperature 1 the logits are log(M), so each softmax is M normalised:
#   M = [[2, 2, 1, 1],      rows (a2t), targets [.5 .5 0 0], [.5 .5 0 0], [0 0 1 0], [0 0 0 1]:
#        [1, 1, 1, 1],        row0 -(.5 ln 2/6 + .5 ln 2/6) = ln 3;   row1 -ln(1/4) = ln 4
#        [1, 1, 4, 2],        row2 -ln(4/8) = ln 2;                    row3 -ln(3/6) = ln 2
#        [1, 1, 1, 3]]        a2t = (ln 3 + ln 4 + 2 ln 2) / 4 = ln(48) / 4
#   columns (t2a), same targets: col0 [2 1 1 1]/5 -> -(.5 ln 2/5 + .5 ln 1/5) = ln 5 - ln 2 / 2
#        col1 the same; col2 [1 1 4 1]/7 -> ln 7 - 2 ln 2; col3 [1 1 2 3]/7 -> ln 7 - ln 3
#        t2a = (2 ln 5 + 2 ln 7 - 3 ln 2 - ln 3) / 4 = ln(1225 / 24) / 4
#   total = (a2t + t2a) / 2 = ln(48 * 1225 / 24) / 8 = ln(2450) / 8
M4 = torch.tensor([[2, 2, 1, 1], [1, 1, 1, 1], [1, 1, 4, 2], [1, 1, 1, 3]], dtype=torch.float64)
IDS4 = torch.tensor([0, 0, 1, 2])


def test_multipositive_infonce_by_hand():
    out = multipositive_infonce(torch.eye(4, dtype=torch.float64), M4.log().T, IDS4, temperature=1.0)
    assert out.parts["a2t"].item() == pytest.approx(math.log(48) / 4)
    assert out.parts["t2a"].item() == pytest.approx(math.log(1225 / 24) / 4)
    assert out.total.item() == pytest.approx(math.log(2450) / 8)


def test_multipositive_infonce_pairs_average_by_hand():
    # the baseline's reduction: mean -log p over the 6 positive entries (0,0) (0,1) (1,0) (1,1) (2,2) (3,3)
    #   rows:    -(2 ln 1/3 + 2 ln 1/4 + ln 1/2 + ln 3/6) / 6 = (ln 3 + 3 ln 2) / 3 = ln(24) / 3
    #   columns: -(2 ln 2/5 + 2 ln 1/5 + ln 4/7 + ln 3/7) / 6 = ln(625 * 49 / 48) / 6
    out = multipositive_infonce(torch.eye(4, dtype=torch.float64), M4.log().T, IDS4, temperature=1.0,
                                average="pairs")
    assert out.parts["a2t"].item() == pytest.approx(math.log(24) / 3)
    assert out.parts["t2a"].item() == pytest.approx(math.log(625 * 49 / 48) / 6)
    a, t = _batch(11, noise=0.5)
    torch.testing.assert_close(multipositive_infonce(a, t, torch.arange(8), average="pairs").total,
                               multipositive_infonce(a, t, torch.arange(8)).total)
    with pytest.raises(ValueError, match="average"):
        multipositive_infonce(a, t, torch.arange(8), average="mean")


def test_multipositive_infonce_is_infonce_when_clips_differ():
    a, t = _batch(7, noise=0.5)
    ids = torch.tensor([3, 1, 4, 0, 5, 9, 2, 6])
    for temp in (0.05, 0.3):
        torch.testing.assert_close(multipositive_infonce(a, t, ids, temperature=temp).total,
                                   infonce(a, t, ids, temperature=temp).total)
    assert multipositive_infonce(a, t, ids).total.item() == pytest.approx(
        infonce(a, t, ids, temperature=0.05).total.item())  # default temperature 0.05


def test_multipositive_infonce_rewards_same_clip_pairs():
    # the second caption of clip 0 is a positive here, a removed entry for infonce
    a, t = _batch(8, noise=0.5)
    ids = torch.tensor([0, 0, 1, 2, 3, 4, 5, 6])
    t_close = t.clone()
    t_close[1] = a[0]  # caption 1 now matches audio 0 perfectly: lower multi-positive loss
    assert (multipositive_infonce(a, t_close, ids).parts["a2t"].item()
            < multipositive_infonce(a, t_close, torch.arange(8)).parts["a2t"].item())


# ---- distillation -------------------------------------------------------------------------------


def _entropy_rows(logits: torch.Tensor) -> torch.Tensor:
    p = logits.softmax(dim=1)
    return -(p * p.log()).sum(dim=1).mean()


def test_distill_student_equal_to_teacher_is_the_minimum():
    a, t = _batch(9, noise=0.7)
    a, t = a.double(), t.double()
    ids = torch.arange(8)
    teacher = a @ t.T
    out = distill(a, t, ids, teacher, temperature=0.1, teacher_temperature=0.1)
    # CE(p, p) is the entropy of the teacher's rows and columns: the lower bound of CE(q, p)
    expected = 0.5 * (_entropy_rows(teacher / 0.1) + _entropy_rows(teacher.T / 0.1))
    torch.testing.assert_close(out.total, expected)
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        a2 = F.normalize(a + 0.2 * torch.randn(a.shape, generator=g, dtype=a.dtype), dim=1)
        assert distill(a2, t, ids, teacher, temperature=0.1, teacher_temperature=0.1).total > out.total
    # and the gradient vanishes there
    a_req, t_req = a.clone().requires_grad_(), t.clone().requires_grad_()
    distill(a_req, t_req, ids, teacher, temperature=0.1, teacher_temperature=0.1).total.backward()
    assert a_req.grad.abs().max() < 1e-12 and t_req.grad.abs().max() < 1e-12


def test_distill_gradcheck_and_teacher_gets_no_gradient():
    a, t = _batch(10, n=3, d=4, noise=0.5)
    a = a.double().requires_grad_()
    t = t.double().requires_grad_()
    teacher = torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).requires_grad_()
    ids = torch.tensor([0, 0, 1])

    def f(a_, t_):
        return distill(a_, t_, ids, teacher, temperature=0.2, teacher_temperature=0.5,
                       contrastive_weight=0.3).total

    assert torch.autograd.gradcheck(f, (a, t))
    f(a, t).backward()
    assert teacher.grad is None


def test_distill_by_hand_and_mixing():
    # B = 2, temperature 1: student logits S = [[0, ln 3], [0, 0]], teacher logits T = [[ln 3, 0], [0, 0]]
    s = torch.tensor([[0.0, math.log(3)], [0.0, 0.0]], dtype=torch.float64)
    teacher = torch.tensor([[math.log(3), 0.0], [0.0, 0.0]], dtype=torch.float64)
    a, t = torch.eye(2, dtype=torch.float64), s.T.clone()
    ids = torch.tensor([0, 1])
    out = distill(a, t, ids, teacher, temperature=1.0, teacher_temperature=1.0)
    # rows: q0 = [1/4, 3/4], p0 = [3/4, 1/4] -> -(3/4 ln 1/4 + 1/4 ln 3/4); q1 = p1 = [1/2, 1/2] -> ln 2
    a2t = (-(0.75 * math.log(0.25) + 0.25 * math.log(0.75)) + math.log(2)) / 2
    # columns: S.T = [[0, 0], [ln 3, 0]], T.T = [[ln 3, 0], [0, 0]]:
    # col0: q = [1/2, 1/2], p = [3/4, 1/4] -> ln 2; col1: q = [3/4, 1/4], p = [1/2, 1/2] -> -(.5 ln .75 + .5 ln .25)
    t2a = (math.log(2) - (0.5 * math.log(0.75) + 0.5 * math.log(0.25))) / 2
    assert out.parts["distill/a2t"].item() == pytest.approx(a2t)
    assert out.parts["distill/t2a"].item() == pytest.approx(t2a)
    mixed = distill(a, t, ids, teacher, temperature=1.0, teacher_temperature=1.0, distill_weight=0.5,
                    contrastive_weight=2.0)
    con = multipositive_infonce(a, t, ids, temperature=1.0).total
    assert mixed.total.item() == pytest.approx(0.5 * (a2t + t2a) / 2 + 2.0 * con.item())
    with pytest.raises(ValueError, match="teacher similarity"):
        distill(a, t, ids, teacher[:1])
    assert uses_temperature("distill") and uses_temperature("multipositive_infonce")
    with pytest.raises(ConfigError, match="teacher"):
        create_loss("distill", teacher=teacher)


def _salsa_contrastive(audio, text, clip_ids, tau):
    # OptimusPrimus/salsa experiments/ex_dcase24.py training_step, transcribed: mean over every
    # positive entry of the batch (not per anchor)
    C = (audio @ text.T) / tau
    I = clip_ids[None, :] == clip_ids[:, None]
    return -0.5 * (C.log_softmax(dim=0)[I].mean() + C.log_softmax(dim=1)[I].mean())


def test_distill_contrastive_term_averages_as_asked():
    # Clip 0 has three captions in the batch, clips 1 and 2 one each: per-anchor and per-pair
    # averages differ (1.90 on this batch; 0.407 on the batch the issue measured), and salsa's
    # reduction is per pair.
    g = torch.Generator().manual_seed(0)
    a = F.normalize(torch.randn(5, 8, generator=g, dtype=torch.float64), dim=1)
    t = F.normalize(a + 0.5 * torch.randn(5, 8, generator=g, dtype=torch.float64), dim=1)
    ids = torch.tensor([0, 0, 0, 1, 2])
    teacher = a @ t.T
    ref = _salsa_contrastive(a, t, ids, 0.05)
    pairs = distill(a, t, ids, teacher, distill_weight=0.0, contrastive_weight=1.0, average="pairs")
    anchors = distill(a, t, ids, teacher, distill_weight=0.0, contrastive_weight=1.0)
    assert pairs.parts["contrastive"].item() == pytest.approx(ref.item(), rel=1e-12)  # float64
    assert abs(anchors.parts["contrastive"].item() - ref.item()) > 1e-2  # the old, only reduction
    with pytest.raises(ValueError, match="average"):
        distill(a, t, ids, teacher, contrastive_weight=1.0, average="clips")
    with pytest.raises(ConfigError, match="averag"):
        create_loss("distill", averag="pairs")
