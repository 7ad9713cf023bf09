"""tests/conftest.py's autouse fixture: nothing a test caches lands in the user's folders."""

import os

from earshot.utils import cache_dir


def test_each_test_gets_private_caches(_private_caches):
    assert cache_dir() == _private_caches / "earshot"
    for var in ("HF_HOME", "HF_HUB_CACHE", "TORCH_HOME"):
        assert os.environ[var].startswith(str(_private_caches))


def test_the_next_test_gets_other_folders(_private_caches, request):
    # a fresh folder per test: one test's cache cannot feed another's
    assert not any(_private_caches.iterdir())
