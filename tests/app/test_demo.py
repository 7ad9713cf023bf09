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
