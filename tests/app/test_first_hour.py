"""A new user's first hour: ``~`` paths, Clotho's default audio folder, missing audio up front,
one-line errors for bad output paths, an empty folder, umask-respecting files, literal file
names, flags, ``--version``/``-h`` and installing weights fetched elsewhere."""

from __future__ import annotations

import csv
import hashlib
import os
import stat

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

import earshot
from earshot.errors import DataError, EarshotError

SR = 16000
WIDE = {"COLUMNS": "200", "NO_COLOR": "1"}
runner = CliRunner()


@pytest.fixture(scope="module")
def app():
    from earshot.app import cli

    cli._register()
    return cli.app


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from earshot.models import checkpoint
    from earshot.models.biencoder import create_model

    torch.manual_seed(0)
    m = create_model({"audio": {"name": "small_cnn", "options": {"channels": [8, 16], "sample_rate": SR}},
                      "text": {"name": "bow", "options": {"dim": 32}}, "embed_dim": 16})
    return checkpoint.save(m, tmp_path_factory.mktemp("model") / "m")


def _tone(path, freq, seconds=1.5):
    t = np.arange(int(seconds * SR)) / SR
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), SR)


def _clotho(root, split, names):
    """clotho_captions_<split>.csv beside <split>/ holding ``names`` (tones)."""
    (root / split).mkdir(parents=True)
    with open(root / f"clotho_captions_{split}.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file_name"] + [f"caption_{i}" for i in range(1, 6)])
        for i, n in enumerate(names):
            w.writerow([n] + [f"tone number {i} variant {k}" for k in range(5)])
    return root / f"clotho_captions_{split}.csv"


def test_version_and_short_help(app):
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.output.strip() == f"earshot {earshot.__version__}"
    r = runner.invoke(app, ["evaluate", "-h"], env=WIDE)
    assert r.exit_code == 0 and "--data" in r.output


def test_boolean_options_are_shown_as_flags(app):
    for args in (["score", "-h"], ["search", "-h"], ["train", "-h"], ["evaluate", "-h"]):
        out = runner.invoke(app, args, env=WIDE).output
        flags = [line for line in out.splitlines() if "--" in line and "--help" not in line]
        assert flags and not [line for line in flags if "<bool>" in line], out


def test_evaluate_finds_clotho_audio_and_reports_every_missing_file_first(app, model, tmp_path):
    table = _clotho(tmp_path, "evaluation", ["a.wav", "b [x].wav", "c.wav"])
    for n, f in (("a.wav", 300), ("b [x].wav", 900), ("c.wav", 2000)):
        _tone(tmp_path / "evaluation" / n, f)
    r = runner.invoke(app, ["evaluate", str(model), "--data", str(table), "--no-progress", "--json"])
    assert r.exit_code == 0, r.output  # audio found in evaluation/ without --audio-dir
    assert '"t2a/R@10": 1.0' in r.output

    (tmp_path / "evaluation" / "a.wav").unlink()
    (tmp_path / "evaluation" / "c.wav").unlink()
    # Not a checkpoint: had the model been opened first, this would be a model error instead.
    (tmp_path / "notamodel").mkdir()
    r = runner.invoke(app, ["evaluate", str(tmp_path / "notamodel"), "--data", str(table)])
    assert isinstance(r.exception, DataError)
    msg = str(r.exception)
    assert "2 of 3 audio files missing" in msg and "a.wav" in msg and "c.wav" in msg
    assert "--audio-dir" in msg  # no --audio-dir given: the error says how to point elsewhere


def test_submit_without_audio_dir_outside_clotho_layout_says_what_to_give(app, model, tmp_path):
    caps = tmp_path / "queries.csv"
    caps.write_text("caption\na dog barks\n")
    r = runner.invoke(app, ["submit", str(model), "--captions", str(caps)])
    assert isinstance(r.exception, DataError) and "--audio-dir" in str(r.exception)


def test_tilde_paths_and_no_such_index(app, model, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "Sounds").mkdir()
    _tone(tmp_path / "Sounds" / "dog [bark].wav", 500)
    _tone(tmp_path / "Sounds" / "hum.wav", 120)
    from earshot.index import IndexConfig, index_folder, open_encoder

    index_folder("~/Sounds", open_encoder(model), tmp_path / "Sounds.index", IndexConfig(window_s=1.0, hop_s=1.0, workers=0))
    with earshot.Index.open("~/Sounds.index") as ix:
        assert len(ix.search("a dog barks", k=5)) == 2
    with pytest.raises(EarshotError, match="no such index"):
        earshot.Index.open("~/Nothing.index")

    # Search output prints names literally: rich markup would eat "[bark]".
    r = runner.invoke(app, ["search", str(tmp_path / "Sounds.index"), "a dog", "-k", "2"], env=WIDE)
    assert r.exit_code == 0 and "dog [bark].wav" in r.output


def test_index_out_is_a_file_and_empty_folder(app, model, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no sound here")
    r = runner.invoke(app, ["index", str(tmp_path / "empty"), "--model", str(model),
                            "--out", str(tmp_path / "ix"), "--workers", "0"])
    # an EarshotError: the console script prints it as one "error: ..." line and exits 2, as for
    # every other bad argument (it was a bare line and exit 1)
    assert isinstance(r.exception, EarshotError) and "no audio files" in str(r.exception)
    (tmp_path / "file").write_text("x")
    r = runner.invoke(app, ["index", str(tmp_path / "empty"), "--model", str(model), "--out", str(tmp_path / "file")])
    assert isinstance(r.exception, EarshotError) and "is a file" in str(r.exception)
    r = runner.invoke(app, ["data", "synth", "--out", str(tmp_path / "file"), "--clips", "3"])
    assert isinstance(r.exception, DataError) and "is a file" in str(r.exception)


def test_written_files_respect_the_umask(tmp_path):
    from earshot.utils import atomic_write

    old = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "a.json", "w") as f:
            f.write("{}")
        os.umask(0o077)
        with atomic_write(tmp_path / "b.json", "w") as f:
            f.write("{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "b.json").stat().st_mode) == 0o600


def test_weights_list_shows_cache_and_add_installs_a_verified_file(app, tmp_path, monkeypatch):
    from earshot.weights import WEIGHTS, Checksum, WeightsEntry, register_weights

    monkeypatch.setenv("EARSHOT_CACHE", str(tmp_path / "cache"))
    r = runner.invoke(app, ["weights", "list"], env=WIDE)
    assert r.exit_code == 0 and str(tmp_path / "cache" / "weights") in r.output.replace("\n", "")

    payload = b"tiny weights" * 1000
    name = "test_first_hour_weights"
    monkeypatch.setitem(WEIGHTS._items, name, None)  # removed again after the test
    WEIGHTS._items.pop(name)
    register_weights(WeightsEntry(name, "tiny.bin", ("http://127.0.0.1:9/tiny.bin",),
                                  Checksum("sha256", hashlib.sha256(payload).hexdigest(), "test"),
                                  None, (), "torch_pickle", "test", "none"))
    r = runner.invoke(app, ["weights", "download", name, "-q"])  # nothing listens on port 9
    assert f"earshot weights add {name} FILE" in str(r.exception)

    bad = tmp_path / "bad.bin"
    bad.write_bytes(payload[:-1])
    r = runner.invoke(app, ["weights", "add", name, str(bad)])
    assert "does not match the pinned" in str(r.exception) and "left in place" in str(r.exception)
    assert not (tmp_path / "cache" / "weights" / "tiny.bin").exists()
    assert bad.read_bytes() == payload[:-1]  # the user's file is still there, untouched
    good = tmp_path / "good.bin"
    good.write_bytes(payload)
    r = runner.invoke(app, ["weights", "add", name, str(good)])
    assert r.exit_code == 0 and "verified" in r.output, r.output
    assert (tmp_path / "cache" / "weights" / "tiny.bin").read_bytes() == payload
    # the same through a file:// URL given to download --url
    (tmp_path / "cache" / "weights" / "tiny.bin").unlink()
    r = runner.invoke(app, ["weights", "download", name, "-q", "--url", good.as_uri()])
    assert r.exit_code == 0 and "downloaded, verified" in r.output, r.output
