"""Fixtures of the reliability tests (issue 21): one tiny model for the whole session."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # rel_util, whatever pytest's import mode

from rel_util import save_model  # noqa: E402


@pytest.fixture(scope="session")
def rel_model(tmp_path_factory) -> Path:
    return save_model(tmp_path_factory.mktemp("rel_model") / "tiny", seed=0)
