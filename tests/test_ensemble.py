"""Ensembles: fusion arithmetic by hand, invariances, the combination search on a case with a
known answer, manifests that round-trip, members at different sample rates, the on-disk cache."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

from earshot import ensemble as E
from earshot.audio.io import resample
from earshot.data.readers import read_table
from earshot.errors import ConfigError
from earshot.evaluation import evaluate, evaluate_embeddings
from earshot.metrics import bidirectional_metrics
from earshot.models import checkpoint
from earshot.models.biencoder import create_model
from earshot.loading.retriever import load_retriever

SR = 16000


def small_model(seed: int, sample_rate: int = SR):
    torch.manual_seed(seed)
    return create_model({"audio": {"name": "small_cnn", "options": {"channels": [8, 16], "sample_rate": sample_rate}},
                         "text": {"name": "bow", "options": {"dim": 32, "buckets": 512}},
                         "embed_dim": 16}).eval()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """6 clips of 0.4 s (tones and noise bursts, 16 kHz WAV) with 3 captions each."""
    root = tmp_path_factory.mktemp("ens_corpus")
    rng = np.random.default_rng(0)
    t = np.arange(int(0.4 * SR)) / SR
    rows = []
    for i, f0 in enumerate([200.0, 500.0, 900.0, 1500.0, 2500.0, 4000.0]):
        wave = 0.4 * np.sin(2 * np.pi * f0 * t) + 0.05 * rng.standard_normal(t.size)
        name = f"clip {i}.wav" if i else " clip lead.wav"  # a leading space survives
        sf.write(root / name, wave.astype(np.float32), SR)
        rows.append([name, f"a tone at {int(f0)} hertz", f"sound number {i}", f"beep {i} {i}"])
    with open(root / "val.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file_name", "caption_1", "caption_2", "caption_3"])
        w.writerows(rows)
    return {"csv": root / "val.csv", "dir": root, "table": read_table(root / "val.csv", format="clotho")}


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """Three 16 kHz checkpoints with different random weights."""
    root = tmp_path_factory.mktemp("ens_models")
    return [checkpoint.save(small_model(s), root / f"m{s}") for s in range(3)]


# -- fusion arithmetic, worked by hand --------------------------------------------------------

S1 = torch.tensor([[1.0, 0.0, 2.0]])
S2 = torch.tensor([[0.0, 2.0, 2.0]])


def test_mean_is_the_normalised_weighted_mean():
    a = torch.tensor([[1.0, 0.0, 2.0], [3.0, 1.0, 1.0]])
    b = torch.tensor([[0.0, 2.0, 2.0], [1.0, 1.0, 4.0]])
    # weights 1:3 -> 0.25, 0.75; e.g. 0.25*1 + 0.75*0 = 0.25, 0.25*1 + 0.75*4 = 3.25
    expected = torch.tensor([[0.25, 1.5, 2.0], [1.5, 1.0, 3.25]])
    torch.testing.assert_close(E.fuse([a, b], [1, 3], "mean"), expected)
    torch.testing.assert_close(E.fuse([a, b], [2, 6], "mean"), expected)  # only ratios matter


def test_zmean_standardises_each_query_row():
    # [1,0,2]: mean 1, population std sqrt(2/3) -> [0, -1.2247, 1.2247]
    # [0,2,2]: mean 4/3, std 2*sqrt(2)/3 -> [-sqrt2, 1/sqrt2, 1/sqrt2]
    z1 = torch.tensor([[0.0, -1.224745, 1.224745]])
    z2 = torch.tensor([[-1.414214, 0.707107, 0.707107]])
    torch.testing.assert_close(E.standardize_rows(S1), z1)
    torch.testing.assert_close(E.standardize_rows(S2), z2)
    # equal weights: [(0-1.4142)/2, (-1.2247+0.7071)/2, (1.2247+0.7071)/2]
    torch.testing.assert_close(E.fuse([S1, S2], None, "zmean"), torch.tensor([[-0.707107, -0.258819, 0.965926]]))
    # a flat row carries no ranking information: all zeros, not NaN
    assert E.standardize_rows(torch.full((1, 4), 3.0)).eq(0).all()


def test_rrf_adds_reciprocal_ranks():
    # ranks of S1: [2, 3, 1]; of S2: [3, 1, 2] (the tie of clips 1 and 2 goes to the lower index)
    assert E.rank_rows(S1).tolist() == [[2, 3, 1]]
    assert E.rank_rows(S2).tolist() == [[3, 1, 2]]
    # k=1: 0.5*(1/3+1/4), 0.5*(1/4+1/2), 0.5*(1/2+1/3)
    torch.testing.assert_close(E.fuse([S1, S2], None, "rrf", rrf_k=1.0),
                               torch.tensor([[0.291667, 0.375, 0.416667]]))
    # default k=60 and weights 3:1
    expected = [0.75 / 62 + 0.25 / 63, 0.75 / 63 + 0.25 / 61, 0.75 / 61 + 0.25 / 62]
    torch.testing.assert_close(E.fuse([S1, S2], [3, 1], "rrf"), torch.tensor([expected]))


def test_standardisation_makes_a_rescaled_copy_contribute_like_the_original():
    g = torch.Generator().manual_seed(1)
    a, c = torch.randn(20, 30, generator=g), torch.randn(20, 30, generator=g)
    scaled = 10.0 * a + 3.0  # same model, a loss with a wider score scale
    for rule in ("zmean", "rrf"):
        torch.testing.assert_close(E.fuse([scaled, c], None, rule), E.fuse([a, c], None, rule))
    # the plain mean lets the wider copy dominate: its ranking is then (nearly) the copy's alone
    plain_orig, plain_scaled = E.fuse([a, c], None, "mean"), E.fuse([scaled, c], None, "mean")
    assert not torch.equal(E.rank_rows(plain_orig), E.rank_rows(plain_scaled))


def test_fuse_rejects_mismatched_shapes_and_bad_rules():
    with pytest.raises(Exception, match="shape"):
        E.fuse([torch.zeros(2, 3), torch.zeros(3, 2)])
    with pytest.raises(ConfigError, match="rule"):
        E.fuse([torch.zeros(2, 3)], rule="median")
    with pytest.raises(ConfigError, match="positive"):
        E.fuse([torch.zeros(2, 3)] * 2, [1.0, 0.0])


# -- an ensemble is a retriever ---------------------------------------------------------------


def test_ensemble_of_one_model_equals_that_model(corpus):
    model = small_model(7)
    single = evaluate(model, corpus["table"], corpus["dir"], progress=False)
    alone = E.Ensemble([model], rule="mean")
    ens = evaluate(alone, corpus["table"], corpus["dir"], progress=False)
    torch.testing.assert_close(ens.similarity, single.similarity, rtol=0, atol=1e-6)
    assert ens.metrics == pytest.approx(single.metrics)
    text = model.embed_text(corpus["table"].captions())
    ens_audio = alone.encode_clips(corpus["table"], corpus["dir"], progress=False)
    for rule in ("zmean", "rrf"):  # monotone per query: the same ranking, the same metrics
        other = evaluate_embeddings(ens_audio, text, corpus["table"], model=E.Ensemble([model], rule=rule))
        assert np.array_equal(other.t2a_ranks, single.t2a_ranks)
        assert {k: v for k, v in other.metrics.items() if k.startswith("t2a/")} == pytest.approx(
            {k: v for k, v in single.metrics.items() if k.startswith("t2a/")})
    torch.testing.assert_close(ens_audio, model.embed_audio(_waves(corpus)), rtol=0, atol=1e-6)


def _waves(corpus):
    from earshot.audio.io import load_audio
    from earshot.data.records import resolve_audio

    return [load_audio(resolve_audio(c, corpus["dir"]), SR) for c in corpus["table"]]


@pytest.mark.parametrize("rule", ["mean", "zmean", "rrf"])
def test_ensemble_of_two_identical_models_ranks_like_one(corpus, ckpts, rule):
    model = checkpoint.load(ckpts[0])
    single = evaluate(model, corpus["table"], corpus["dir"], progress=False)
    twin = E.Ensemble([model, checkpoint.load(ckpts[0])], [1.0, 2.5], rule=rule)
    both = evaluate(twin, corpus["table"], corpus["dir"], progress=False)
    assert torch.equal(E.rank_rows(both.similarity), E.rank_rows(single.similarity))


def test_concatenated_embeddings_give_the_mean_fusion_as_a_dot_product(corpus):
    a, b = small_model(1), small_model(2)
    ens = E.Ensemble([a, b], [1.0, 3.0], rule="mean")
    text = ens.embed_text(corpus["table"].captions())
    assert text.shape == (18, 32) and ens.embed_dim == 32
    torch.testing.assert_close(text.norm(dim=1), torch.ones(18))  # unit norm: an IP index works as is
    waves = torch.randn(4, 6400) * 0.1
    audio = ens.embed_audio(waves)
    expected = 0.25 * (a.embed_text(corpus["table"].captions()) @ a.embed_audio(waves).T) + \
        0.75 * (b.embed_text(corpus["table"].captions()) @ b.embed_audio(waves).T)
    torch.testing.assert_close(text @ audio.T, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ens.similarity(text, audio), expected, atol=1e-5, rtol=1e-5)


def test_members_with_different_sample_rates_each_decode_at_their_own(corpus):
    m16, m22 = small_model(3, 16000), small_model(4, 22050)
    ens = E.Ensemble([m16, m22], rule="zmean")
    assert ens.sample_rate == 22050  # the highest member rate
    table = corpus["table"]
    fused = evaluate(ens, table, corpus["dir"], progress=False).similarity
    alone = [evaluate(m, table, corpus["dir"], progress=False).similarity for m in (m16, m22)]
    torch.testing.assert_close(fused, E.fuse(alone, None, "zmean"), atol=2e-4, rtol=1e-4)
    # waveforms handed over at the ensemble's rate are resampled for the 16 kHz member only
    w = (0.1 * np.random.default_rng(0).standard_normal(22050 // 2)).astype(np.float32)
    p16, p22 = ens.split(ens.embed_audio([w]))
    torch.testing.assert_close(p16, m16.embed_audio([resample(w, 22050, 16000)]), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(p22, m22.embed_audio([w]), atol=1e-5, rtol=1e-5)


# -- the combination search -------------------------------------------------------------------


def _known_case():
    """Four candidates on 8 queries (query q's clip is q): member 0 is right on queries 0-3 and
    wrong on 4-7 (a decoy first, the right clip second), member 1 the reverse, members 2 and 3 are noise. Only {0, 1} ranks
    every query right."""
    n = 8
    g = torch.Generator().manual_seed(0)
    m0, m1 = torch.zeros(n, n), torch.zeros(n, n)
    for q in range(n):
        good, bad = (m0, m1) if q < 4 else (m1, m0)
        good[q, q] = 3.0
        good[q, (q + 1) % n] = -1.0  # and ranks the other's decoy last
        bad[q, (q + 1) % n] = 1.0
        bad[q, q] = 0.8  # the wrong model still likes the right clip second best
    noise = [torch.randn(n, n, generator=g) for _ in range(2)]
    return [m0, m1, *noise], list(range(n))


@pytest.mark.parametrize("rule", ["mean", "zmean", "rrf"])
def test_exhaustive_search_finds_the_known_best_pair(rule):
    sims, clip_of = _known_case()
    results = E.search_combinations(sims, clip_of, rule=rule, max_size=4, greedy=False)
    assert len(results) == 4 + 6 + 4 + 1  # singles, pairs, triples, the quadruple
    assert results[0].members == (0, 1)
    assert results[0].metrics["t2a/mAP@10"] == pytest.approx(1.0)
    assert all(r.metrics["t2a/mAP@10"] < 1.0 for r in results if r.size == 1)
    # the reported figures are those of the fused matrix
    fused = E.fuse([sims[0], sims[1]], None, rule)
    assert results[0].metrics == pytest.approx(bidirectional_metrics(fused, clip_of))


def test_greedy_search_finds_it_with_fewer_fusions():
    sims, clip_of = _known_case()
    results = E.search_combinations(sims, clip_of, rule="zmean", max_size=4, greedy=True)
    assert results[0].members == (0, 1)
    # 4 singles + 3 extensions of the best single + 2 extensions of the pair, then it stops
    assert len(results) == 4 + 3 + 2


def test_search_on_checkpoints_uses_the_cache_and_its_manifest_scores_what_it_says(
        corpus, ckpts, tmp_path, monkeypatch):
    cache = E.SimilarityCache(tmp_path / "cache")
    report = E.search_ensembles(ckpts, corpus["table"], corpus["dir"], rule="zmean", cache=cache,
                                progress=False)
    assert len(report.results) == 3 + 3 + 1 and report.best.size >= 2
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 3  # one matrix per member
    manifest = report.save(tmp_path / "runs" / "best.json")
    doc = json.loads(manifest.read_text())
    assert doc["rule"] == "zmean" and all(not m["path"].startswith("/") for m in doc["members"])
    # evaluating the saved manifest gives the score recorded in it
    result = evaluate(load_retriever(manifest), corpus["table"], corpus["dir"], progress=False)
    assert result.metrics["t2a/mAP@10"] == pytest.approx(doc["validation"]["score"], abs=1e-6)

    def no_encoding(*args, **kwargs):
        raise AssertionError("a cached member was encoded again")

    monkeypatch.setattr(checkpoint, "load", no_encoding)
    again = E.search_ensembles(ckpts, corpus["table"], corpus["dir"], rule="zmean", cache=cache,
                               progress=False)
    assert [r.members for r in again.results] == [r.members for r in report.results]
    assert again.best.metrics == pytest.approx(report.best.metrics)


def test_cache_key_changes_when_the_model_or_the_audio_changes(corpus, ckpts, tmp_path):
    table = corpus["table"]
    k0 = E.similarity_key(ckpts[0], table, corpus["dir"], None)
    assert k0 == E.similarity_key(ckpts[0], table, corpus["dir"], None)
    assert k0 != E.similarity_key(ckpts[1], table, corpus["dir"], None)
    assert k0 != E.similarity_key(ckpts[0], table, corpus["dir"], 0.2)
    moved = tmp_path / "audio"
    shutil.copytree(corpus["dir"], moved)
    before = E.table_fingerprint(table, moved)
    sf.write(moved / "clip 3.wav", np.zeros(SR // 4, np.float32), SR)
    assert E.table_fingerprint(table, moved) != before


def test_search_needs_two_distinct_checkpoints(ckpts, corpus):
    with pytest.raises(ConfigError, match="at least 2"):
        E.search_ensembles(ckpts[:1], corpus["table"], corpus["dir"], cache=False)
    with pytest.raises(ConfigError, match="twice"):
        E.search_ensembles([ckpts[0], ckpts[0]], corpus["table"], corpus["dir"], cache=False)


# -- manifests --------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_manifest_round_trips_and_moves_with_its_folder(ckpts, tmp_path, suffix):
    run = tmp_path / "run"
    shutil.copytree(ckpts[0], run / "a")
    shutil.copytree(ckpts[1], run / "b")
    path = E.save_manifest(run / "ens" / f"e{suffix}", [run / "a", run / "b"], [1.0, 3.0], "rrf", 30.0,
                           validation={"score": 0.5})
    cfg = E.read_manifest(path)
    assert [m.path for m in cfg.members] == ["../a", "../b"]
    assert [m.weight for m in cfg.members] == [1.0, 3.0]
    assert (cfg.rule, cfg.rrf_k, cfg.validation) == ("rrf", 30.0, {"score": 0.5})
    # the folder moves as a whole and still opens; members load strictly with their weights
    shutil.move(run, tmp_path / "moved")
    moved = tmp_path / "moved" / "ens" / f"e{suffix}"
    ens = load_retriever(moved)
    assert isinstance(ens, E.Ensemble)
    assert ens.weights == [0.25, 0.75] and ens.rule == "rrf" and ens.rrf_k == 30.0
    original = checkpoint.load(ckpts[1])
    for k, v in original.state_dict().items():
        torch.testing.assert_close(ens.members[1].state_dict()[k], v)
    # its identity follows the content, not the location
    fp = ens.fingerprint()
    assert fp == E.load_ensemble(moved).fingerprint()
    E.save_manifest(moved.with_name(f"g{suffix}"), E.member_paths(cfg, moved), [1.0, 1.0], "rrf", 30.0)
    assert E.load_ensemble(moved.with_name(f"g{suffix}")).fingerprint() != fp
    # saving what was read gives the same document
    again = E.save_manifest(moved.with_name(f"f{suffix}"), E.member_paths(cfg, moved),
                            [m.weight for m in cfg.members], cfg.rule, cfg.rrf_k, validation=cfg.validation)
    assert E.read_manifest(again) == cfg


def test_fingerprint_of_members_given_by_registry_name(ckpts, tmp_path, monkeypatch):
    """A member named by the registry (no folder beside the manifest) is identified by its
    published digest, so the fingerprint needs no download, stays stable, and changes when
    the member names other weights."""
    from earshot.loading import openers

    # Opening a registry member would download it: stand in a small model (the fingerprint
    # must not depend on what was opened, only on what the name means).
    monkeypatch.setattr(openers, "load_registered", lambda name, **kw: checkpoint.load(ckpts[2]))
    manifest = tmp_path / "ens.json"

    def fingerprint(member: str) -> str:
        manifest.write_text(json.dumps({"members": [{"path": str(ckpts[0])}, {"path": member}],
                                        "rule": "mean"}))
        return E.load_ensemble(manifest).fingerprint()

    fp = fingerprint("laion_clap_general")
    assert len(fp) == 64 and fp == fingerprint("laion_clap_general")
    assert fingerprint("laion_clap_htsat_fused") != fp  # another published file
    assert fingerprint(str(ckpts[1])) != fp  # a checkpoint in its place


def test_bad_manifests_are_named_errors(ckpts, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"members": [{"path": str(ckpts[0])}], "rulez": "mean"}))
    with pytest.raises(ConfigError, match=r"bad\.json.*rulez"):
        E.read_manifest(bad)
    bad.write_text(json.dumps({"members": [{"path": str(ckpts[0])}], "rule": "median"}))
    with pytest.raises(ConfigError, match="median"):
        E.read_manifest(bad)
    bad.write_text(json.dumps({"members": [{"path": "nowhere"}]}))
    with pytest.raises(ConfigError, match="nowhere"):
        E.load_ensemble(bad)
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        E.read_manifest(bad)
