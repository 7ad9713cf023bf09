"""`earshot evaluate` on a checkpoint (table, JSON, per-query ranks) and `earshot submit`."""

import csv
import json

import numpy as np
import soundfile as sf
import torch
from typer.testing import CliRunner

from earshot.app import cli
from earshot.models import checkpoint
from earshot.models.biencoder import create_model
from earshot.submission import score_submission

SR = 16000


def _corpus(root):
    audio = root / "audio"
    audio.mkdir()
    rows = []
    for i, f0 in enumerate(np.geomspace(200.0, 5000.0, 11)):
        name = f"tone {i}, {int(f0)} Hz.wav"
        t = np.arange(SR) / SR
        sf.write(audio / name, (0.3 * np.sin(2 * np.pi * f0 * t)).astype(np.float32), SR)
        rows.append([name] + [f"tone number {i} caption {k}" for k in range(5)])
    table = root / "captions.csv"
    with table.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file_name"] + [f"caption_{k}" for k in range(1, 6)])
        w.writerows(rows)
    return table, audio


def _model(root):
    torch.manual_seed(0)
    model = create_model({"audio": {"name": "small_cnn", "options": {"channels": [8, 16], "sample_rate": SR}},
                          "text": {"name": "bow", "options": {"dim": 32}}, "embed_dim": 16})
    return checkpoint.save(model, root / "model")


def _run(*args):
    cli._register()
    return CliRunner().invoke(cli.app, [str(a) for a in args], catch_exceptions=False)


def test_evaluate_writes_metrics_ranks_and_a_submission_that_scores_the_same(tmp_path):
    table, audio = _corpus(tmp_path)
    model = _model(tmp_path)
    res = _run("evaluate", model, "--data", table, "--audio-dir", audio, "--out", tmp_path / "eval",
               "--submission", tmp_path / "sub.csv", "--json")
    assert res.exit_code == 0, res.output
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert json.loads(res.stdout)["t2a/mAP@10"] == metrics["t2a/mAP@10"]
    with (tmp_path / "eval" / "ranks.csv").open() as f:
        ranks = list(csv.DictReader(f))
    assert len(ranks) == 55 and {r["file_name"] for r in ranks} == {p.name for p in audio.iterdir()}
    # mAP@10 with one relevant clip is the mean of 1/rank over queries, 0 beyond rank 10
    expected = sum(1 / int(r["rank"]) for r in ranks if int(r["rank"]) <= 10) / 55
    assert abs(metrics["t2a/mAP@10"] - expected) < 1e-9
    scored = score_submission(table, tmp_path / "sub.csv")
    assert abs(scored["mAP@10"] - metrics["t2a/mAP@10"]) < 1e-9


def test_submit_ranks_every_file_for_each_caption(tmp_path):
    table, audio = _corpus(tmp_path)
    model = _model(tmp_path)
    queries = tmp_path / "retrieval_captions.csv"
    queries.write_text("caption\na low tone\na high tone\na low tone\n")
    res = _run("submit", model, "--captions", queries, "--audio-dir", audio, "--out", tmp_path / "s.csv")
    assert res.exit_code == 0, res.output
    with (tmp_path / "s.csv").open() as f:
        rows = list(csv.reader(f))
    assert rows[0][:2] == ["caption", "file_name_1"]
    assert [r[0] for r in rows[1:]] == ["a low tone", "a high tone"]  # one row per distinct caption
    names = {p.name for p in audio.iterdir()}
    assert all(len(set(r[1:])) == 10 and set(r[1:]) <= names for r in rows[1:])


def _repeating_corpus(root):
    """11 tones; captions repeat across clips: "a tone" on every clip, "a low tone" on clips 0-3."""
    table, audio = _corpus(root)
    rows = list(csv.reader(table.open()))
    for i, row in enumerate(rows[1:]):
        row[2] = "a tone"
        if i < 4:
            row[3] = "a low tone"
    with table.open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    rel = root / "metadata_eval.csv"  # DCASE 2025 layout
    with rel.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["query", "audio_filenames"])
        w.writerow(["a low tone", repr([r[0] for r in rows[1:5]])])
        w.writerow(["tone number 7 caption 0", repr([rows[8][0], rows[9][0]])])
    return table, audio, rel


def test_evaluate_and_score_agree_under_every_relevance_rule(tmp_path):
    table, audio, rel_file = _repeating_corpus(tmp_path)
    model = _model(tmp_path)
    seen = {}
    for rule in ("clip", "caption", str(rel_file)):
        sub = tmp_path / f"sub-{len(seen)}.csv"
        res = _run("evaluate", model, "--data", table, "--audio-dir", audio, "--relevance", rule,
                   "--submission", sub, "--json")
        assert res.exit_code == 0, res.output
        metrics = json.loads(res.stdout)
        res = _run("score", table, sub, "--relevance", rule, "--json")
        assert res.exit_code == 0, res.output
        scored = json.loads(res.stdout)
        for k in ("R@1", "R@5", "R@10", "mAP@10"):
            assert abs(scored[k] - metrics[f"t2a/{k}"]) < 1e-9, (rule, k)
        seen[rule] = (scored["n_queries"], metrics["t2a/mAP@10"])
    # 55 captions; 55 - 10 repeats of "a tone" - 3 of "a low tone" = 42 distinct; 2 file queries
    assert [n for n, _ in seen.values()] == [55, 42, 2]
    assert len({m for _, m in seen.values()}) == 3  # the rule matters here


def test_evaluate_table_shows_asked_metrics_and_run_name(tmp_path):
    table, audio = _corpus(tmp_path)
    run = tmp_path / "runs" / "infonce"
    run.mkdir(parents=True)
    _model(tmp_path).rename(run / "averaged")
    res = _run("evaluate", run / "averaged", "--data", table, "--audio-dir", audio, "--map-k", "16")
    assert res.exit_code == 0, res.output
    head, row = res.stdout.strip().splitlines()[-3:-1]
    assert row.startswith("infonce/averaged")
    assert "t2a mAP@16" in head and "a2t mAP@16" in head and "t2a mAP@10" in head
