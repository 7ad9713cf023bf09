"""The thread policy (issue 15): per-operation thread counts, the EARSHOT_THREADS override,
restoring torch's count after a block, and OMP_WAIT_POLICY set only when the user did not."""

from __future__ import annotations

import pytest
import torch

from earshot import threads
from earshot.errors import ConfigError


def test_policy_and_override(monkeypatch):
    monkeypatch.delenv("EARSHOT_THREADS", raising=False)
    assert threads.threads_for("frontend") == 1 and threads.threads_for("heads") == 1
    assert threads.threads_for("encode") == torch.get_num_threads()
    monkeypatch.setenv("EARSHOT_THREADS", "3")
    assert all(threads.threads_for(op) == 3 for op in threads.OPERATIONS)
    for bad in ("0", "-2", "two"):
        monkeypatch.setenv("EARSHOT_THREADS", bad)
        with pytest.raises(ConfigError, match="EARSHOT_THREADS"):
            threads.threads_for("frontend")
    with pytest.raises(ConfigError, match="unknown thread-policy operation"):
        threads.threads_for("everything")


def test_use_threads_restores_the_count_also_after_an_error(monkeypatch):
    monkeypatch.setenv("EARSHOT_THREADS", "3")
    before = torch.get_num_threads()
    with threads.use_threads("heads") as n:
        assert n == 3 and torch.get_num_threads() == 3
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError):
        with threads.use_threads("heads"):
            raise ValueError("boom")
    assert torch.get_num_threads() == before


def test_configure_openmp_keeps_a_users_choice(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    threads.configure_openmp()
    import os

    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    threads.configure_openmp()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_configure_openmp_passes_earshot_threads_to_openmp(monkeypatch):
    import os

    monkeypatch.setenv("EARSHOT_THREADS", "3")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    threads.configure_openmp()
    assert os.environ["OMP_NUM_THREADS"] == "3"


def test_inference_towers_run_on_the_encode_count(monkeypatch):
    from earshot.models.biencoder import create_model
    from earshot.models.inference import prepare_for_inference

    model = create_model({"audio": {"name": "small_cnn", "options": {"channels": [4, 8], "sample_rate": 16000}},
                          "text": {"name": "bow", "options": {"dim": 8}}, "embed_dim": 8})
    seen = []
    conv = next(m for m in model.audio_encoder.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_pre_hook(lambda *_: seen.append(torch.get_num_threads()))  # inside forward
    prepare_for_inference(model, "fp32")
    monkeypatch.setenv("EARSHOT_THREADS", "3")
    before = torch.get_num_threads()
    model.embed_audio([torch.zeros(16000).numpy()], batch_size=1)
    assert seen == [3] and torch.get_num_threads() == before
