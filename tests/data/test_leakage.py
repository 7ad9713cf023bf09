"""Leakage check: clips shared by a training and an evaluation table, by name and by content."""

import csv

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from earshot.app import cli
from earshot.data.leakage import find_overlap
from earshot.data.readers import read_table

SR = 8000


def _table(root, name, files):
    """A Clotho table in root/name.csv with audio in root/name/: files maps file name -> seed."""
    audio = root / name
    audio.mkdir()
    for fname, seed in files.items():
        sf.write(audio / fname, np.random.default_rng(seed).uniform(-0.5, 0.5, SR).astype(np.float32), SR)
    with open(root / f"{name}.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file_name", "caption_1"])
        w.writerows([n, f"sound {n}"] for n in files)
    return root / f"{name}.csv", audio


@pytest.fixture
def tables(tmp_path):
    # train: a, b, c; eval: "a.wav" with other audio (same name), "copy of b.wav" = b's bytes,
    # d (unrelated, same size as everything: equal sizes alone must not count)
    train = _table(tmp_path, "train", {"a.wav": 1, "b.wav": 2, "c.wav": 3})
    other = _table(tmp_path, "eval", {"a.wav": 10, "copy of b.wav": 2, "d.wav": 4})
    return train, other


def test_overlap_by_name_and_by_content(tables):
    (ta, da), (tb, db) = tables
    o = find_overlap(read_table(ta, format="clotho"), da, read_table(tb, format="clotho"), db)
    assert o.by_name == (("a.wav", "a.wav"),)
    assert o.by_content == (("b.wav", "copy of b.wav"),)
    assert o.clips == {"a.wav", "b.wav"} and o.unreadable == 0


def test_data_check_command_reports_and_fails(tables, tmp_path):
    (ta, da), (tb, db) = tables
    cli._register()
    dirs = ["--train-audio-dir", str(da), "--eval-audio-dir", str(db)]
    res = CliRunner().invoke(cli.app, ["data", "check", str(ta), str(tb), *dirs])
    assert res.exit_code == 1 and "LEAKAGE" in res.output and "copy of b.wav" in res.output
    clean, clean_dir = _table(tmp_path, "clean", {"e.wav": 5})
    res = CliRunner().invoke(cli.app, ["data", "check", str(ta), str(clean), "--train-audio-dir", str(da),
                                       "--eval-audio-dir", str(clean_dir)])
    assert res.exit_code == 0 and "no clips shared" in res.output


def test_data_check_finds_clotho_split_folders_by_default(tmp_path):
    # Clotho's layout: clotho_captions_<split>.csv beside <split>/. Without that default the
    # content check would read the table's own folder, find no audio and compare names only.
    _table(tmp_path, "development", {"x.wav": 7, "y.wav": 8})
    _table(tmp_path, "evaluation", {"z.wav": 8})  # y's audio under another name
    for split in ("development", "evaluation"):
        (tmp_path / f"{split}.csv").rename(tmp_path / f"clotho_captions_{split}.csv")
    cli._register()
    res = CliRunner().invoke(cli.app, ["data", "check", str(tmp_path / "clotho_captions_development.csv"),
                                       str(tmp_path / "clotho_captions_evaluation.csv")])
    assert res.exit_code == 1 and "z.wav" in res.output and "could not be read" not in res.output


def test_training_warns_loudly_about_shared_clips(tables):
    from earshot.train.config import DataConfig, SplitConfig
    from earshot.train.run import _warn_leakage

    (ta, da), (tb, db) = tables
    d = DataConfig(train=SplitConfig(str(ta), str(da)), held_out=[SplitConfig(str(tb), str(db))])
    train = read_table(ta, format="clotho")
    with pytest.warns(UserWarning, match="DATA LEAKAGE: 2 clip"):
        _warn_leakage(d, train, str(da), None, None)
