"""``earshot search`` on a library: modes, filters, exports, copying out, more like this."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from earshot.errors import EarshotError

SR = 16000
WIDE = {"COLUMNS": "200", "NO_COLOR": "1"}


@pytest.fixture(scope="module")
def app():
    from earshot.app import cli

    cli._register()
    return cli.app


@pytest.fixture(scope="module")
def ix(tmp_path_factory, app):
    from earshot.models import checkpoint
    from earshot.models.biencoder import create_model

    tmp = tmp_path_factory.mktemp("cli_library")
    torch.manual_seed(0)
    model = create_model({"audio": {"name": "small_cnn", "options": {"channels": [8, 16], "sample_rate": SR}},
                          "text": {"name": "bow", "options": {"dim": 32}}, "embed_dim": 16})
    checkpoint.save(model, tmp / "model")
    root = tmp / "s"
    (root / "Foley" / "Doors").mkdir(parents=True)
    t = np.arange(2 * SR) / SR
    for name, f in (("kick_808_hard.wav", 60), ("kick_909.wav", 70), ("Foley/Doors/doorSlam.wav", 300),
                    ("Foley/Doors/door creak.wav", 900)):
        sf.write(root / name, (0.3 * np.sin(2 * np.pi * f * t)).astype(np.float32), SR)
    r = CliRunner().invoke(app, ["index", str(root), "--model", str(tmp / "model"), "--out", str(tmp / "ix"),
                                 "--window", "1", "--hop", "0.5", "--workers", "0"], env=WIDE)
    assert r.exit_code == 0, r.output
    return tmp


def test_table_shows_moments_and_words_mode_finds_names(app, ix):
    r = CliRunner().invoke(app, ["search", str(ix / "ix"), "door slam", "--mode", "words"], env=WIDE)
    assert r.exit_code == 0, r.output
    assert "moments" in r.output and r.output.index("doorSlam.wav") < r.output.index("door creak.wav")
    js = json.loads(CliRunner().invoke(app, ["search", str(ix / "ix"), "a thud", "--json"], env=WIDE).output)
    assert js["mode"] == "hybrid" and js["ranking"] == "windows" and all(h["moments"] for h in js["results"])
    assert js["results"][0]["file"] == str(ix / "s" / js["results"][0]["path"])


def test_filters_csv_m3u_and_copy_to(app, ix, tmp_path):
    r = CliRunner().invoke(app, ["search", str(ix / "ix"), "a thud", "--folder", "Foley/Doors", "--format", "csv"],
                           env=WIDE)
    rows = list(csv.DictReader(io.StringIO(r.output)))
    assert {row["path"] for row in rows} == {"Foley/Doors/doorSlam.wav", "Foley/Doors/door creak.wav"}
    assert all(row["moments"] for row in rows)
    m3u = CliRunner().invoke(app, ["search", str(ix / "ix"), "kick", "--where", "name~kick", "--format", "m3u",
                                   "--copy-to", str(tmp_path / "out")], env=WIDE)
    assert m3u.exit_code == 0, m3u.output
    lines = [x for x in m3u.stdout.splitlines() if x and not x.startswith("#")]
    assert lines and all(x.startswith(str(ix / "s")) and "kick" in x for x in lines)
    assert m3u.stdout.startswith("#EXTM3U") and "#EXTINF:2," in m3u.stdout and "copied 2 file(s)" in m3u.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["kick_808_hard.wav", "kick_909.wav"]
    again = CliRunner().invoke(app, ["search", str(ix / "ix"), "kick", "--where", "name~kick",
                                     "--copy-to", str(tmp_path / "out")], env=WIDE)
    assert isinstance(again.exception, EarshotError) and "would overwrite" in str(again.exception)
    bad = CliRunner().invoke(app, ["search", str(ix / "ix"), "kick", "--where", "duration<<2"], env=WIDE)
    assert isinstance(bad.exception, EarshotError) and "--where" in str(bad.exception)


def test_like_an_indexed_file_at_a_moment(app, ix):
    r = CliRunner().invoke(app, ["search", str(ix / "ix"), "--like", "kick_909.wav@0:01.0", "--json"], env=WIDE)
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert len(doc["results"]) == 3 and "kick_909.wav" not in {h["path"] for h in doc["results"]}
    missing = CliRunner().invoke(app, ["search", str(ix / "ix"), "--like", "nope.wav"], env=WIDE)
    assert isinstance(missing.exception, EarshotError) and "not in this index" in str(missing.exception)


@pytest.mark.slow
def test_index_watch_picks_up_a_new_file_until_interrupted(ix, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    root, out = tmp_path / "w", tmp_path / "wix"
    root.mkdir()
    t = np.arange(SR) / SR
    sf.write(root / "a.wav", (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32), SR)
    proc = subprocess.Popen([sys.executable, "-c", "from earshot.app.cli import main; main()", "index", str(root), "--model",
                             str(ix / "model"), "--out", str(out), "--workers", "0", "--watch"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **WIDE})
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 120  # generous: a cold start imports torch on a shared machine
        while not any("watching" in x for x in lines):
            assert time.monotonic() < deadline and proc.poll() is None, "".join(lines)
            lines.append(proc.stdout.readline())
        time.sleep(0.5)
        sf.write(root / "b.wav", (0.3 * np.sin(2 * np.pi * 400 * t)).astype(np.float32), SR)
        while not any("updated: 1 file(s) encoded" in x for x in lines):
            assert time.monotonic() < deadline and proc.poll() is None, "".join(lines)
            lines.append(proc.stdout.readline())
    finally:
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(30)
    assert rc == 0, "".join(lines)
    from earshot.index.store import Store

    assert set(Store.open(out).files()) == {"a.wav", "b.wav"}
