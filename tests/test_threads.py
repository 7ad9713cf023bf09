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
