"""`earshot demo` end to end on a tiny corpus: every stage runs, writes its outputs, resumes."""

import pytest
from rich.console import Console

from earshot.app.demo import run_demo


@pytest.mark.slow
def test_demo_runs_every_stage_and_resumes(tmp_path):
    console = Console(record=True, width=160)
    metrics = run_demo(tmp_path, clips=15, seed=2, epochs=1, console=console, progress=False)
    assert set(metrics) == {"infonce", "triplet_sum", "ensemble (mean)"}
    for m in metrics.values():
        assert 0.0 <= m["t2a/mAP@10"] <= 1.0 and m["t2a/R@10"] == 1.0  # 3 clips: all in the top 10
    assert (tmp_path / "ensemble.json").is_file()
    assert (tmp_path / "index" / "meta.sqlite").is_file()
    text = console.export_text()
    assert "top 10 for" in text and "earshot search" in text and "chance" in text

    again = Console(record=True, width=160)
    run_demo(tmp_path, clips=15, seed=2, epochs=1, console=again, progress=False)
    out = again.export_text()
    assert out.count("already trained") == 2 and "0 encoded now" in out
    table = (tmp_path / "results.md").read_text()
    assert table.startswith("| system | R@1 | R@5 | R@10 | mAP@10 |") and "| chance | 0.333 | 1.000 | 1.000 |" in table
    assert "earshot demo --clips 15 --epochs 1 --seed 2" in table and "load average" in table

    # Other --epochs: both models are trained again (and the index rebuilt); the corpus is kept.
    changed = Console(record=True, width=160)
    run_demo(tmp_path, clips=15, seed=2, epochs=2, console=changed, progress=False, epoch_lines=True)
    out = changed.export_text()
    assert out.count("training again") == 2 and "already trained" not in out
    assert "written 0, already present 15" in out and "3 encoded now" in out
    assert "--epochs 2" in (tmp_path / "results.md").read_text()


def test_demo_model_is_the_preset(tmp_path):
    from earshot.app.demo import PRESET, demo_train_config
    from earshot.config import load_yaml

    cfg = demo_train_config(tmp_path / "c", tmp_path / "m" / "triplet_sum", "triplet_sum", 3, 7)
    preset = load_yaml(PRESET)
    assert cfg["model"] == preset["model"] and cfg["data"]["train"] == preset["data"]["train"]
    assert preset["model"]["text"] == {"name": "sbert", "train": "none"}  # MiniLM ships offline
    assert "weights" not in preset["model"]["audio"]  # nothing to download
    assert (cfg["epochs"], cfg["seed"], cfg["loss"]["name"], cfg["optim"]["lr"]) == (3, 7, "triplet_sum", 1e-3)


@pytest.mark.slow
def test_the_moments_section_runs_end_to_end_on_a_toy_demo_and_resumes(tmp_path, capsys):
    """`earshot demo --moments` at toy size: recordings mixed from the demo's corpus, the sliding
    window (ranked by score and by expected IoU), the head trained and kept by validation, chance; the table written with every row
    in percent; a rerun reuses the recordings."""
    from earshot.app.demo_moments import COLUMNS, MOMENTS_RESULTS, run_moments_demo

    run_demo(tmp_path, clips=15, seed=2, epochs=1, console=Console(record=True, width=160), progress=False)
    console = Console(record=True, width=200)
    scores = run_moments_demo(tmp_path, seed=2, console=console, recordings=6, val_recordings=3,
                              test_recordings=3, epochs=2, duration_s=20.0)
    names = list(scores)
    assert names[0].startswith("sliding window") and names[1] == "sliding window, ranked by expected IoU" and \
        names[2].startswith("QD-DETR head") and names[3].startswith("chance")
    for m in scores.values():
        assert set(COLUMNS) <= set(m) and all(0.0 <= m[c] <= 100.0 for c in COLUMNS)
    table = (tmp_path / MOMENTS_RESULTS).read_text()
    assert table.startswith("| system | R1@0.5 | R1@0.7 | mAP/avg |") and table.count("\n| ") == 4  # four rows
    assert "earshot demo --moments --seed 2" in table and "3 test recordings of 20 s" in table
    assert (tmp_path / "moments" / "head").is_dir() and any((tmp_path / "moments" / "head").iterdir())
    assert "kept epoch" in console.export_text()
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("head: epoch")]
    assert len(lines) == 2 and all("val mAP/avg" in ln for ln in lines), lines  # one line per epoch
    jsonl = (tmp_path / "moments" / "test" / "moments.jsonl").read_bytes()
    again = Console(record=True, width=200)
    assert run_moments_demo(tmp_path, seed=2, console=again, recordings=6, val_recordings=3, test_recordings=3,
                            epochs=2, duration_s=20.0)[names[0]] == scores[names[0]]  # same recordings, same baseline
    assert (tmp_path / "moments" / "test" / "moments.jsonl").read_bytes() == jsonl
