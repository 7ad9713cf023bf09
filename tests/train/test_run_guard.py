"""A run is checked before it starts and protected once it exists: bad configs fail before any
clip is cached, an existing run needs --resume or --overwrite, resuming keeps metrics.csv, and
training off a terminal prints one line per epoch without third-party chatter."""

import csv
import io
import logging
import time
import warnings

import pytest
from typer.testing import CliRunner

from earshot.errors import ConfigError, DataError
from earshot.train.checks import check_config, check_out_dir
from earshot.train.progress import EpochLines, quiet_third_party
from earshot.train.run import load_config, train

from .conftest import small_config


def _rows(out_dir):
    with open(out_dir / "logs" / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_bad_configs_fail_before_anything_is_built(tone_corpus, tmp_path, monkeypatch):
    def never(*a, **k):
        raise AssertionError("data was loaded before the config was checked")

    monkeypatch.setenv("EARSHOT_CACHE", str(tmp_path / "cache"))  # no weights downloaded there
    monkeypatch.setattr("earshot.train.run._loaders", never)
    monkeypatch.setattr("earshot.train.run._initial_model", never)
    cases = [
        ({"loss": {"name": "nope"}}, ConfigError, "unknown loss 'nope'"),
        ({"loss": {"name": "infonce", "options": {"margn": 1}}}, ConfigError, "margn"),
        ({"model": {"audio": {"name": "cnn99"}, "text": {"name": "bow"}}}, ConfigError, "cnn99"),
        ({"model": {"audio": {"name": "cnn14", "weights": "panns_cnn14"}, "text": {"name": "bow"}}},
         Exception, "not downloaded"),
    ]
    for over, err, text in cases:
        cfg = load_config(small_config(tone_corpus, tmp_path / "run", **over))
        with pytest.raises(err, match=text):
            train(cfg, progress=False)
    missing = small_config(tone_corpus, tmp_path / "run")
    missing["data"]["train"] = {"table": str(tmp_path / "nope.csv")}
    with pytest.raises(DataError, match="nope.csv: no such file"):
        check_config(load_config(missing))


def test_missing_audio_files_are_all_named(tone_corpus, tmp_path):
    import shutil

    audio = tmp_path / "audio"
    shutil.copytree(tone_corpus["audio_dir"], audio)
    gone = sorted(audio.iterdir())[:2]
    for p in gone:
        p.unlink()
    data = small_config(tone_corpus, tmp_path / "run")
    data["data"]["train"]["audio_dir"] = str(audio)
    with pytest.raises(DataError) as e:
        check_config(load_config(data))
    assert "2 of 8 audio files missing" in str(e.value)
    assert all(p.name in str(e.value) for p in gone)


def test_out_dir_states(tmp_path):
    check_out_dir(tmp_path / "new", resume=False, overwrite=False)  # nothing there: fine
    (tmp_path / "cache_only" / "cache").mkdir(parents=True)
    check_out_dir(tmp_path / "cache_only", resume=False, overwrite=False)  # a cache is no run
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        check_out_dir(tmp_path / "f", resume=False, overwrite=False)
    with pytest.raises(ConfigError, match="contradict"):
        check_out_dir(tmp_path / "new", resume=True, overwrite=True)
    (tmp_path / "started" / "checkpoints").mkdir(parents=True)
    with pytest.raises(ConfigError, match="holds a started run"):
        check_out_dir(tmp_path / "started", resume=False, overwrite=False)


@pytest.mark.slow
def test_existing_run_is_refused_resume_keeps_metrics_overwrite_restarts(tone_corpus, tmp_path):
    cfg = load_config(small_config(tone_corpus, tmp_path, epochs=1))
    lines = io.StringIO()
    train(cfg, progress=False, callbacks=[EpochLines(lines)])
    assert lines.getvalue().startswith("epoch 1/1  loss ") and "val mAP@10 " in lines.getvalue()
    first = _rows(tmp_path)
    before = (tmp_path / "averaged" / "model.safetensors").stat().st_mtime_ns

    with pytest.raises(ConfigError, match="holds a finished run"):
        train(cfg, progress=False)
    assert (tmp_path / "averaged" / "model.safetensors").stat().st_mtime_ns == before

    more = load_config(small_config(tone_corpus, tmp_path, epochs=2))
    train(more, resume=True, progress=False)
    resumed = _rows(tmp_path)
    assert resumed[: len(first)] == [{**r, **{k: "" for k in resumed[0] if k not in r}} for r in first]
    assert {r["epoch"] for r in resumed if r["epoch"]} == {"0", "1"}

    time.sleep(0.01)
    train(cfg, progress=False, overwrite=True)
    assert {r["epoch"] for r in _rows(tmp_path) if r["epoch"]} == {"0"}  # a fresh run, fresh log


def test_epoch_line_format():
    class _T:
        current_epoch, max_epochs = 2, 10
        callback_metrics = {"train/loss_epoch": 2.91449, "val/t2a/mAP@10": 0.41234}

    assert EpochLines(prefix="m: ").format(_T(), 4.06) == "m: epoch 3/10  loss 2.9145  val mAP@10 0.4123  4.1 s"
    _T.callback_metrics = {"train/loss_epoch": 1.0}
    assert EpochLines().format(_T(), 1.0) == "epoch 3/10  loss 1.0000  val mAP@10 -  1.0 s"


def test_quiet_third_party_is_scoped():
    log = logging.getLogger("lightning.pytorch")
    level = log.level
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with quiet_third_party():
            assert log.getEffectiveLevel() == logging.WARNING
            warnings.warn("Found 160 module(s) in eval mode at the start of training.")
            warnings.warn("something else")
        warnings.warn("Found 3 module(s) in eval mode at the start of training.")
    assert [str(w.message)[:9] for w in seen] == ["something", "Found 3 m"]
    assert log.level == level


def test_cli_train_fails_fast_without_lightning(tone_corpus, tmp_path, monkeypatch):
    import sys

    import yaml

    import earshot.app.cli as cli

    cli._register()
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(small_config(tone_corpus, tmp_path / "run", loss={"name": "nope"})))
    monkeypatch.delitem(sys.modules, "earshot.train.run", raising=False)
    r = CliRunner().invoke(cli.app, ["train", str(path)])
    assert isinstance(r.exception, ConfigError) and "unknown loss" in str(r.exception)
    assert "earshot.train.run" not in sys.modules  # failed before the trainer was imported
