"""Retrieval metrics: hand-worked examples, tie-breaking, chunked vs. naive, jackknife CI."""

import math

import numpy as np
import pytest
import torch

from earshot.errors import DataError
from earshot.metrics import (
    Z95,
    bidirectional_metrics,
    jackknife_ci95,
    per_query_scores,
    relevant_ranks,
    retrieval_metrics,
)


def test_single_relevant_by_hand():
    # 3 queries over 4 items.
    #   q0 scores (0.9, 0.1, 0.5, 0.3), relevant 0 -> rank 1
    #   q1 scores (0.2, 0.8, 0.4, 0.6), relevant 2 -> order 1, 3, 2, 0 -> rank 3
    #   q2 scores (0.7, 0.6, 0.5, 0.1), relevant 3 -> rank 4
    sim = np.array([[0.9, 0.1, 0.5, 0.3], [0.2, 0.8, 0.4, 0.6], [0.7, 0.6, 0.5, 0.1]])
    m = retrieval_metrics(sim, [0, 2, 3], ks=(1, 3), map_k=3, prefix="t2a/")
    assert m["t2a/R@1"] == pytest.approx(1 / 3)
    assert m["t2a/R@3"] == pytest.approx(2 / 3)
    # AP@3 = 1/rank if rank <= 3: 1, 1/3, 0 -> mean 4/9
    assert m["t2a/mAP@3"] == pytest.approx(4 / 9)
    assert m["t2a/medR"] == 3.0
    assert m["t2a/meanR"] == pytest.approx(8 / 3)


def test_multi_relevant_ap_by_hand():
    # One query, 6 items, scores descending by index: ranking 0,1,2,3,4,5.
    # relevant {1, 3, 5}: hits at ranks 2, 4, 6.
    #   AP@10 = (1/2 + 2/4 + 3/6) / 3 = 0.5
    #   AP@2  = (1/2) / 3 = 1/6   (normalised by |rel| = 3, not by min(k, |rel|) = 2)
    #   R@1 = 0, R@2 = 1 (any relevant in top 2)
    sim = np.array([[6.0, 5.0, 4.0, 3.0, 2.0, 1.0]])
    m = retrieval_metrics(sim, [{1, 3, 5}], ks=(1, 2), map_k=10, prefix="")
    assert m["mAP@10"] == pytest.approx(0.5)
    assert m["R@1"] == 0.0 and m["R@2"] == 1.0
    ap2 = retrieval_metrics(sim, [{1, 3, 5}], ks=(1,), map_k=2, prefix="")["mAP@2"]
    assert ap2 == pytest.approx(1 / 6)
    assert relevant_ranks(sim, [{5, 1, 3}])[0].tolist() == [2, 4, 6]


def test_ties_broken_by_item_index():
    # All scores equal: rank = 1 + number of items with a smaller index.
    sim = np.zeros((3, 5))
    ranks = relevant_ranks(sim, [0, 3, {2, 4}])
    assert [r.tolist() for r in ranks] == [[1], [4], [3, 5]]
    # A tie with a lower-index item puts the relevant item second, with a higher-index one first.
    sim = np.array([[0.5, 0.5, 0.1], [0.5, 0.5, 0.1]])
    assert [r.tolist() for r in relevant_ranks(sim, [1, 0])] == [[2], [1]]


def _naive_metrics(sim: np.ndarray, relevant: list[set[int]], ks, map_k):
    """Plain reference: full argsort per query (stable, so ties go to the lower index)."""
    r_at = {k: [] for k in ks}
    aps = []
    for q in range(sim.shape[0]):
        order = np.argsort(-sim[q], kind="stable")
        ranks = sorted(int(np.where(order == i)[0][0]) + 1 for i in relevant[q])
        for k in ks:
            r_at[k].append(1.0 if ranks[0] <= k else 0.0)
        ap = 0.0
        for n_hit, rank in enumerate(ranks, start=1):
            if rank <= map_k:
                ap += n_hit / rank
        aps.append(ap / len(relevant[q]))
    return {f"R@{k}": np.mean(v) for k, v in r_at.items()} | {f"mAP@{map_k}": np.mean(aps)}


@pytest.mark.parametrize("chunk", [1, 3, 7, 1000])
def test_chunked_equals_naive_full_matrix(chunk):
    rng = np.random.default_rng(0)
    sim = rng.normal(size=(23, 40)).round(1)  # rounding creates many ties
    relevant = [set(rng.choice(40, size=rng.integers(1, 6), replace=False).tolist()) for _ in range(23)]
    ref = _naive_metrics(sim, relevant, ks=(1, 5, 10), map_k=10)
    got = retrieval_metrics(sim, relevant, prefix="", chunk_size=chunk)
    for key, value in ref.items():
        assert got[key] == pytest.approx(value), key
    full = per_query_scores(sim, relevant, chunk_size=1000)
    part = per_query_scores(sim, relevant, chunk_size=chunk)
    for key in full:
        # float64 per-query scores (ranks are integers; AP sums a few reciprocals): a chunk's
        # vector kernels may sum in another order, 1e-12 is ~1e4 float64 ulps of values <= 1
        np.testing.assert_allclose(full[key], part[key], rtol=0, atol=1e-12)


def test_torch_and_numpy_inputs_agree():
    rng = np.random.default_rng(1)
    sim = rng.normal(size=(5, 9)).astype(np.float32)
    rel = [1, 2, 3, 4, 0]
    assert retrieval_metrics(sim, rel) == retrieval_metrics(torch.from_numpy(sim), torch.tensor(rel))


def test_jackknife_ci_on_constructed_case():
    # x = (1, 0, 0, 0): mean 0.25; leave-one-out means (0, 1/3, 1/3, 1/3), their mean 0.25;
    # SE^2 = (n-1)/n * sum (m_i - 0.25)^2 = 3/4 * (0.0625 + 3 * 1/144) = 3/4 * 1/12 = 1/16
    # SE = 0.25, half-width = 1.95996 * 0.25
    assert jackknife_ci95(np.array([1.0, 0.0, 0.0, 0.0])) == pytest.approx(Z95 * 0.25)
    # equals std(ddof=1)/sqrt(n) for the mean
    x = np.random.default_rng(2).random(50)
    assert jackknife_ci95(x) == pytest.approx(Z95 * x.std(ddof=1) / math.sqrt(50))
    assert jackknife_ci95(np.ones(10)) == 0.0
    assert math.isnan(jackknife_ci95(np.array([1.0])))


def test_ci_entries_in_metrics():
    # R@1 per query (1, 0, 0, 0) -> ci95 = Z95 * 0.25 as above
    sim = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0]])
    m = retrieval_metrics(sim, [0, 0, 0, 0], ks=(1,), prefix="x/")
    assert m["x/R@1"] == 0.25
    assert m["x/R@1/ci95"] == pytest.approx(Z95 * 0.25)


def test_bidirectional_a2t_with_five_captions_by_hand():
    # 2 clips, captions 0-4 belong to clip 0 and 5-9 to clip 1 (text-by-audio similarity).
    # Clip 0's audio-to-text ranking (column 0, descending): captions 5, 0, 1, 6, 2, 3, 4, 7, 8, 9
    #   relevant {0..4} at ranks 2, 3, 5, 6, 7 -> AP@10 = (1/2 + 2/3 + 3/5 + 4/6 + 5/7) / 5
    # Clip 1 (column 1) ranks its own captions first: ranks 1..5 -> AP = 1.
    col0 = np.array([9, 8, 6, 5, 4, 10, 7, 3, 2, 1], dtype=float)
    col1 = np.array([0, 0, 0, 0, 0, 5, 4, 3, 2, 1], dtype=float)
    sim = np.stack([col0, col1], axis=1)  # (10 captions, 2 clips)
    clip_of = [0] * 5 + [1] * 5
    m = bidirectional_metrics(sim, clip_of)
    ap0 = (1 / 2 + 2 / 3 + 3 / 5 + 4 / 6 + 5 / 7) / 5
    assert m["a2t/mAP@10"] == pytest.approx((ap0 + 1.0) / 2)
    assert m["a2t/R@1"] == 0.5
    assert m["a2t/R@5"] == 1.0
    # t2a, caption c scores (col0[c], col1[c]): captions 0-4 score clip 0 higher -> rank 1;
    # captions 5, 6 score clip 0 higher (10 > 5, 7 > 4) -> rank 2; captions 7-9 tie (3/3, 2/2,
    # 1/1) and the tie goes to clip 0, the lower index -> rank 2.
    # R@1 = 5/10; mAP@10 = (5 * 1 + 5 * 1/2) / 10 = 0.75
    assert m["t2a/R@1"] == 0.5
    assert m["t2a/mAP@10"] == pytest.approx(0.75)
    assert m["t2a/R@5"] == 1.0


def test_bad_relevance_is_a_clear_error():
    sim = np.zeros((2, 3))
    with pytest.raises(DataError, match="query 1: relevant item 3"):
        retrieval_metrics(sim, [0, 3])
    with pytest.raises(DataError, match="query 0 has no relevant item"):
        retrieval_metrics(sim, [set(), {1}])
    with pytest.raises(DataError, match="2 queries"):
        retrieval_metrics(sim, [0])
    with pytest.raises(DataError, match="non-finite"):
        retrieval_metrics(np.array([[0.0, np.nan, 0.0]]), [0])
