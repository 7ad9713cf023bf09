"""`earshot moments predict` / `evaluate` on generated long recordings with a tiny checkpoint."""

import json

import torch
from typer.testing import CliRunner

from earshot.app import cli
from earshot.models import checkpoint
from earshot.models.biencoder import create_model
from earshot.moments.generate import MomentGenConfig, generate_moments
from earshot.moments.metrics import score_files


def _run(*args):
    cli._register()
    return CliRunner().invoke(cli.app, [str(a) for a in args], catch_exceptions=False)


def test_predict_writes_lighthouse_layout_and_evaluate_agrees_with_score(tiny_corpus, tmp_path):
    cfg = MomentGenConfig(recordings=3, duration_s=15.0, sample_rate=16000, seed=2)
    generate_moments(tmp_path / "m", tiny_corpus / "clotho_captions_development.csv", config=cfg)
    torch.manual_seed(0)
    model = create_model({"audio": {"name": "small_cnn", "options": {"channels": [8, 16], "sample_rate": 16000}},
                          "text": {"name": "bow", "options": {"dim": 32}}, "embed_dim": 16})
    ckpt = checkpoint.save(model, tmp_path / "model")
    data, audio = tmp_path / "m/moments.jsonl", tmp_path / "m/audio"
    r = _run("moments", "predict", ckpt, "--data", data, "--audio-dir", audio,
             "--out", tmp_path / "pred.jsonl", "--top", "4", "--precision", "fp32")
    assert r.exit_code == 0, r.output
    rows = [json.loads(x) for x in (tmp_path / "pred.jsonl").read_text().splitlines()]
    gt = [json.loads(x) for x in data.read_text().splitlines()]
    assert [x["qid"] for x in rows] == [x["qid"] for x in gt]
    for row in rows:
        assert set(row) == {"qid", "query", "vid", "pred_relevant_windows"}
        wins = row["pred_relevant_windows"]
        assert 1 <= len(wins) <= 4
        assert all(0 <= s < e <= 15.0 for s, e, _ in wins)
        assert [w[2] for w in wins] == sorted((w[2] for w in wins), reverse=True)
    r = _run("moments", "evaluate", ckpt, "--data", data, "--audio-dir", audio, "--json",
             "--precision", "fp32")
    assert r.exit_code == 0, r.output
    evaluated = json.loads(r.output)
    scored = score_files(data, tmp_path / "pred.jsonl")  # top 4 vs top 10: R1 is the same
    assert evaluated["R1@0.5"] == scored["R1@0.5"] and evaluated["n_queries"] == len(gt)


def test_predict_names_a_missing_recording(tiny_corpus, tmp_path):
    (tmp_path / "audio").mkdir()
    (tmp_path / "q.jsonl").write_text(json.dumps({"qid": 1, "query": "a beep", "vid": "nope",
                                                  "duration": 10}) + "\n")
    cli._register()
    r = CliRunner().invoke(cli.app, ["moments", "predict", "x", "--data", str(tmp_path / "q.jsonl"),
                                     "--audio-dir", str(tmp_path / "audio")])
    assert r.exit_code != 0
    assert "q.jsonl:1: no audio for 'nope'" in str(r.exception)
