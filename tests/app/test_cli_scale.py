"""``earshot index`` options of issue 22: --engine, --address, --gpus-per-worker, --shards, ivfpq."""

from __future__ import annotations

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
def folder(tmp_path_factory):
    from earshot.models import checkpoint
    from earshot.models.biencoder import create_model

    tmp = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    model = create_model({"audio": {"name": "small_cnn", "options": {"channels": [8, 16], "sample_rate": SR}},
                          "text": {"name": "bow", "options": {"dim": 32}}, "embed_dim": 16})
    checkpoint.save(model, tmp / "model")
    (tmp / "s").mkdir()
    t = np.arange(2 * SR) / SR
    for i, f in enumerate((150, 700, 2500)):
        sf.write(tmp / "s" / f"t{i}.wav", (0.3 * np.sin(2 * np.pi * f * t)).astype(np.float32), SR)
    return tmp


def test_help_explains_the_engines_and_the_index_types(app):
    out = CliRunner().invoke(app, ["index", "--help"], env=WIDE).output
    for word in ("--engine", "ray", "--address", "--gpus-per-worker", "--shards", "ivfpq"):
        assert word in out, word


@pytest.mark.parametrize("args, words", [
    (["--engine", "spark"], "expected one of local, ray"),
    (["--address", "auto"], "need --engine ray"),
    (["--gpus-per-worker", "1"], "need --engine ray"),
])
def test_bad_engine_options_are_clear_errors(app, folder, tmp_path, args, words):
    res = CliRunner().invoke(app, ["index", str(folder / "s"), "--model", str(folder / "model"),
                                   "--out", str(tmp_path / "ix"), *args], env=WIDE)
    assert isinstance(res.exception, EarshotError) and words in str(res.exception)
    assert not (tmp_path / "ix").exists()  # refused before anything was built


def test_index_with_compressed_shards_from_the_command_line(app, folder, tmp_path):
    res = CliRunner().invoke(app, ["index", str(folder / "s"), "--model", str(folder / "model"),
                                   "--out", str(tmp_path / "ix"), "--workers", "0", "--window", "2", "--hop", "1",
                                   "--index-type", "ivfpq", "--shards", "2"], env=WIDE)
    assert res.exit_code == 0, res.output
    assert "(ivfpq x2)" in res.output
    assert (tmp_path / "ix" / "vectors.faiss.s0.floats.npy").is_file()
