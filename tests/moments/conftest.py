"""Shared fixtures: a tiny synthetic corpus (8 kHz) and long recordings generated from it."""

import pytest

from earshot.data.synth import generate_corpus


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    generate_corpus(out, clips=30, seed=3, sample_rate=16000, min_duration=2.0, max_duration=6.0)
    return out
