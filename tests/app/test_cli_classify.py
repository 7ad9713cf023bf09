"""``earshot classify`` on generated tones with a hand-made retriever whose audio embedding is
the energy in a low and a high band and whose text embedding reads "low"/"high"."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from earshot import zeroshot

SR = 16000


class BandRetriever:
    """Audio -> unit (low-band, high-band) energy; text -> (1, 0) for "low", (0, 1) for "high"."""

    sample_rate = SR
    embed_dim = 2

    def logit_scale(self) -> torch.Tensor:
        return torch.tensor(10.0)

    def embed_audio(self, waves, batch_size: int = 16) -> torch.Tensor:
        out = []
        for w in waves:
            spec = np.abs(np.fft.rfft(np.asarray(w))) ** 2
            f = np.fft.rfftfreq(len(w), 1 / SR)
            out.append([spec[f < 1000].sum(), spec[f >= 1000].sum()])
        return torch.nn.functional.normalize(torch.tensor(out, dtype=torch.float32), dim=-1)

    def embed_text(self, texts, batch_size: int = 128) -> torch.Tensor:
        return torch.tensor([[1.0, 0.0] if "low" in t else [0.0, 1.0] for t in texts])


def _tone(path, hz):
    t = np.arange(SR) / SR
    sf.write(path, (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32), SR)


@pytest.fixture
def app(monkeypatch):
    from earshot.app import cli
    from earshot.loading import retriever as loading

    cli._register()
    monkeypatch.setattr(loading, "load_retriever", lambda name, progress=True: BandRetriever())
    return cli.app


def test_probabilities_are_a_softmax_of_scaled_cosines():
    # Hand-worked: cosines (1, 0) at scale 10 -> e^10 / (e^10 + 1) = 0.9999546.
    p = zeroshot.probabilities(np.array([[1.0, 0.0]]), np.eye(2), 10.0)
    assert p[0, 0] == pytest.approx(np.exp(10) / (np.exp(10) + 1))
    assert zeroshot.prompts(["chirping_birds"]) == ["This is a sound of chirping birds."]


def test_classify_files_and_accuracy(app, tmp_path):
    _tone(tmp_path / "a.wav", 200)
    _tone(tmp_path / "b.wav", 4000)
    _tone(tmp_path / "c.wav", 300)
    (tmp_path / "meta.csv").write_text("filename,category\na.wav,low_hum\nb.wav,high_whistle\n"
                                       "c.wav,high_whistle\n")
    runner = CliRunner()
    res = runner.invoke(app, ["classify", str(tmp_path / "a.wav"), str(tmp_path / "b.wav"),
                              "--labels", "low hum,high whistle", "--model", "hand", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert [r["top"][0][0] for r in doc["results"]] == ["low hum", "high whistle"]
    assert doc["results"][0]["top"][0][1] > 0.99
    assert doc["prompt"] == zeroshot.DEFAULT_PROMPT
    (tmp_path / "labels.txt").write_text("low hum\nhigh whistle, shrill\n\n")
    res = runner.invoke(app, ["classify", str(tmp_path / "b.wav"), "--labels-file",
                              str(tmp_path / "labels.txt"), "--model", "hand", "--json"])
    assert json.loads(res.output)["results"][0]["top"][0][0] == "high whistle, shrill"
    # ESC-50-style CSV: labels from the CSV; c.wav is labelled wrongly on purpose -> 2/3.
    res = runner.invoke(app, ["classify", "--data", str(tmp_path / "meta.csv"), "--model", "hand"])
    assert res.exit_code == 0, res.output
    assert "accuracy: 0.6667 (2/3)" in res.output


def test_bad_input_names_the_problem(app, tmp_path):
    (tmp_path / "meta.csv").write_text("name,kind\nx.wav,a\n")
    res = CliRunner().invoke(app, ["classify", "--data", str(tmp_path / "meta.csv")])
    assert res.exit_code != 0 and "file column" in str(res.exception)
    res = CliRunner().invoke(app, ["classify", str(tmp_path / "x.wav"), "--labels", "one"])
    assert "at least two labels" in str(res.exception)
