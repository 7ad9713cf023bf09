"""`earshot moments predict` / `evaluate` on generated long recordings with a tiny checkpoint."""

import json

import pytest
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


def test_demo_chance_row_and_table():
    from earshot.app.demo_moments import chance_predictions, moments_markdown
    from earshot.moments.data import MomentQuery, MomentRecording

    q = MomentQuery(qid="a", query="x", vid="r", duration=60.0, windows=((10.0, 20.0),))
    rec = MomentRecording(vid="r", audio=None, duration=60.0, queries=(q,))
    preds = chance_predictions([rec], seed=0)
    assert len(preds["a"]) == 10 and all(0 <= s < e <= 60.0 for s, e, _ in preds["a"])
    assert preds == chance_predictions([rec], seed=0)  # seeded
    md = moments_markdown([("chance", {"R1@0.5": 1.234, "R1@0.7": 0.0, "mAP/avg": 2.0})], "footer")
    assert md.splitlines()[2] == "| chance | 1.2 | 0.0 | 2.0 |" and md.endswith("footer\n")


@pytest.mark.slow
def test_train_cli_saves_a_head_that_predict_opens(tiny_corpus, tmp_path):
    import yaml

    cfg = MomentGenConfig(recordings=2, duration_s=12.0, sample_rate=16000, seed=4)
    generate_moments(tmp_path / "m", tiny_corpus / "clotho_captions_development.csv", config=cfg)
    torch.manual_seed(0)
    model = create_model({"audio": {"name": "small_cnn", "options": {"channels": [8, 16], "sample_rate": 16000}},
                          "text": {"name": "bow", "options": {"dim": 32}}, "embed_dim": 16})
    ckpt = checkpoint.save(model, tmp_path / "model")
    data, audio = tmp_path / "m/moments.jsonl", tmp_path / "m/audio"
    preset = tmp_path / "tiny.yaml"
    preset.write_text(yaml.safe_dump({
        "model": {"txt_dim": 32, "aud_dim": 16, "dim_feedforward": 32},
        "features": {"retriever": str(ckpt), "text": "tokens"},
        "data": {"train": str(data), "train_audio": str(audio), "val": str(data), "val_audio": str(audio)},
        "n_epoch": 1, "bsz": 4, "accelerator": "cpu", "out_dir": str(tmp_path / "head")}))
    r = _run("moments", "train", preset, "--no-progress")
    assert r.exit_code == 0, r.output
    assert "saved" in r.output and "mAP/avg" in r.output
    assert (tmp_path / "head/moment_head.json").is_file()
    r = _run("moments", "predict", tmp_path / "head", "--data", data, "--audio-dir", audio,
             "--out", tmp_path / "p.jsonl", "--top", "3")
    assert r.exit_code == 0, r.output
    rows = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert rows and all(1 <= len(x["pred_relevant_windows"]) <= 3 for x in rows)
    # --ranking expected_iou: the same spans, each scored by its p_fg-weighted mean IoU with all ten
    from earshot.moments.sliding import expected_iou

    for ranking in ("score", "expected_iou"):
        r = _run("moments", "predict", tmp_path / "head", "--data", data, "--audio-dir", audio,
                 "--out", tmp_path / f"{ranking}.jsonl", "--ranking", ranking)
        assert r.exit_code == 0, r.output
    by_p, by_iou = ([json.loads(x)["pred_relevant_windows"] for x in (tmp_path / f"{k}.jsonl").read_text().splitlines()]
                    for k in ("score", "expected_iou"))
    for a, b in zip(by_p, by_iou):
        assert len(a) == len(b) == 10
        want = expected_iou(torch.tensor([w[:2] for w in a], dtype=torch.float64), torch.tensor([w[2] for w in a],
                                                                                          dtype=torch.float64))
        want = sorted(([*w[:2], float(e)] for w, e in zip(a, want)), key=lambda w: -w[2])
        assert [w[2] for w in b] == pytest.approx([w[2] for w in want], abs=2e-4)
        assert sorted(map(tuple, (w[:2] for w in b))) == sorted(map(tuple, (w[:2] for w in a)))
    from earshot.errors import ConfigError

    with pytest.raises(ConfigError, match="ranking must be 'score' or 'expected_iou'"):
        _run("moments", "predict", tmp_path / "head", "--data", data, "--audio-dir", audio, "--ranking", "nms")
    with pytest.raises(ConfigError, match="--ranking applies to a moment head"):
        _run("moments", "predict", ckpt, "--data", data, "--audio-dir", audio, "--ranking", "score")


def test_score_on_bad_window_reports_each_change(tmp_path):
    gt, pred = tmp_path / "gt.jsonl", tmp_path / "pred.jsonl"
    gt.write_text(json.dumps({"qid": "a", "query": "a beep", "vid": "r", "duration": 10,
                              "relevant_windows": [[2, 4], [10, 90]]}) + "\n")
    pred.write_text(json.dumps({"qid": "a", "pred_relevant_windows": [[2, 4, 1.0]]}) + "\n")
    cli._register()
    r = CliRunner().invoke(cli.app, ["moments", "score", str(gt), str(pred), "--json"])
    assert r.exit_code != 0 and "--on-bad-window" in str(r.exception)
    r = CliRunner().invoke(cli.app, ["moments", "score", str(gt), str(pred), "--json", "--on-bad-window", "drop"])
    assert r.exit_code == 0, r.output
    assert "note: " in r.stderr and "gt.jsonl:1: relevant_windows[1] = [10.0, 90.0] dropped" in r.stderr
    assert json.loads(r.stdout)["R1@0.5"] == 100.0  # one window left, predicted exactly
    r = CliRunner().invoke(cli.app, ["moments", "score", str(gt), str(pred), "--on-bad-window", "fix"])
    assert r.exit_code == 2 and "choose error | clip | drop" in r.output
