"""Small shared helpers: atomic writes, the user cache directory, hashing."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator

import platformdirs


def cache_dir() -> Path:
    """earshot's user cache directory (``$EARSHOT_CACHE`` overrides it; read at call time)."""
    env = os.environ.get("EARSHOT_CACHE")
    return Path(env) if env else Path(platformdirs.user_cache_dir("earshot"))


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """Write to a temporary file beside ``path`` and rename it into place on success.

    A crash mid-write leaves the old file (or none) behind, never a truncated one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file 0600; the finished file gets what open() would give it.
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    """The process umask (reading it means setting it; it is set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's content."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def lazy_exports(package: str, exports: dict[str, str]):
    """Module-level ``__getattr__`` and ``__dir__`` for a package whose names load on first use.

    ``exports`` maps a public name to the submodule defining it, so importing the package stays
    cheap (no torch or FAISS) until a name is actually used.
    """
    import importlib

    def __getattr__(name: str):
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{module}"), name)

    def __dir__() -> list[str]:
        return sorted(set(exports) | {"__all__"})

    return __getattr__, __dir__


def check_out_file(path: str | Path | None, option: str) -> Path | None:
    """An output file path (``option`` names it in the error), expanded; a ConfigError when it
    names a folder. None stays None."""
    from earshot.errors import ConfigError

    if path is None:
        return None
    path = Path(path).expanduser()
    if path.is_dir():
        raise ConfigError(f"{option} {path}: is a folder; give a file name")
    return path


def check_out_folder(path: str | Path | None, option: str) -> Path | None:
    """An output folder path, expanded; a ConfigError when it names a file. None stays None."""
    from earshot.errors import ConfigError

    if path is None:
        return None
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{option} {path}: is a file; give a folder")
    return path
