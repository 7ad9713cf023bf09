"""Verified, resumable downloads into the user cache.

Files are verified by checksum, never by size: a size can match a truncated-then-padded or
substituted file, a digest cannot.

Downloads stream into ``<cache>/weights/<file>.part``, resume with an HTTP ``Range`` request
after an interruption (and start over if the server ignores ``Range``), are verified, and only
then renamed into place, so nothing unverified ever sits at the final path. ``<cache>`` is
``earshot.utils.cache_dir()`` (``$EARSHOT_CACHE`` overrides it, read at call time).

Nothing here touches the network at import time; only :func:`download` does.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from tqdm.auto import tqdm

from earshot import __version__
from earshot.errors import WeightsError
from earshot.utils import cache_dir as _user_cache_dir
from earshot.weights.entry import WeightsEntry, get_weights, list_weights

log = logging.getLogger(__name__)

_CHUNK = 1 << 20  # bytes read per network/disk read


# --------------------------------------------------------------------------------------------
# Finding and checking files in the cache
# --------------------------------------------------------------------------------------------


def weights_dir(cache_dir: str | Path | None = None) -> Path:
    """Where weights live: ``<cache>/weights``; ``<cache>`` is ``cache_dir`` or the user cache."""
    root = Path(cache_dir) if cache_dir is not None else _user_cache_dir()
    return root / "weights"


def _entry(name_or_entry: str | WeightsEntry) -> WeightsEntry:
    return name_or_entry if isinstance(name_or_entry, WeightsEntry) else get_weights(name_or_entry)


def file_digests(path: str | Path, algorithms: tuple[str, ...] = ("sha256",)) -> dict[str, str]:
    """Hex digests of a file's content, all algorithms computed in one read."""
    hashers = {a: hashlib.new(a) for a in algorithms}
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            for h in hashers.values():
                h.update(block)
    return {a: h.hexdigest() for a, h in hashers.items()}


def _algorithms(entry: WeightsEntry) -> tuple[str, ...]:
    # Always compute SHA-256 too, so a user can pin files whose source only gives an MD5.
    if entry.checksum is None or entry.checksum.algorithm == "sha256":
        return ("sha256",)
    return (entry.checksum.algorithm, "sha256")


def _matches(entry: WeightsEntry, digests: dict[str, str]) -> bool:
    c = entry.checksum
    return c is not None and digests[c.algorithm] == c.digest.lower()


def verify(path: str | Path, name_or_entry: str | WeightsEntry) -> bool:
    """True when the file's digest equals the published one (False also when none is published)."""
    entry = _entry(name_or_entry)
    return entry.checksum is not None and _matches(entry, file_digests(path, _algorithms(entry)))


def locate(name_or_entry: str | WeightsEntry, cache_dir: str | Path | None = None,
           verify_checksum: bool = False) -> Path | None:
    """Path of the cached file, or None when it is absent (or fails verification, if asked).

    Only :func:`download` writes the final path, and only after verification, so presence is
    normally enough; ``verify_checksum=True`` re-hashes for files put there by hand.
    """
    entry = _entry(name_or_entry)
    path = weights_dir(cache_dir) / entry.file_name
    if not path.is_file():
        return None
    if verify_checksum and not verify(path, entry):
        return None
    return path


def locate_checked(name_or_entry: str | WeightsEntry, cache_dir: str | Path | None = None) -> Path | None:
    """Like :func:`locate`, for loading: the cached file is checked before anything reads it.

    Its size must equal the published size (when known), on every call; its digest is
    computed once and remembered beside it (``<file>.verified.json``, keyed by size and
    mtime), so a file changed or replaced later is hashed again. A wrong size or digest raises
    WeightsError naming the file: a corrupt or wrong file never loads silently. A file whose
    source publishes no checksum loads with a warning giving its SHA-256 to pin.
    """
    import json

    from earshot.utils import atomic_write

    entry = _entry(name_or_entry)
    path = locate(entry, cache_dir)
    if path is None:
        return None
    st = path.stat()
    fix = f"delete it and run `earshot weights download {entry.name}`"
    if entry.size_bytes is not None and st.st_size != entry.size_bytes:
        raise WeightsError(f"{path}: {st.st_size} bytes, but {entry.name} has {entry.size_bytes}; "
                           f"the file is truncated or another file: {fix}")
    memo = path.with_name(path.name + ".verified.json")
    stamp = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    try:
        known = json.loads(memo.read_text())
    except (OSError, ValueError):
        known = {}
    if {k: known.get(k) for k in stamp} != stamp:
        digests = file_digests(path, _algorithms(entry))
        known = {**stamp, "sha256": digests["sha256"],
                 "verified": _matches(entry, digests) if entry.checksum is not None else None}
        with atomic_write(memo, "w") as f:
            json.dump(known, f)
        if known["verified"] is None:
            log.warning("%s is UNVERIFIED (%s publishes no checksum); its sha256 is %s",
                        path, entry.name, known["sha256"])
    if known.get("verified") is False:
        raise WeightsError(f"{path}: its {entry.checksum.algorithm} digest is not the published one for "
                           f"{entry.name}; the file is corrupt or another file: {fix}")
    return path


@dataclass(frozen=True)
class WeightsStatus:
    """One row of :func:`status`."""

    name: str  # registry name
    architectures: tuple[str, ...]  # encoder architectures the file feeds
    size_bytes: int | None  # published size, if known
    algorithm: str | None  # checksum algorithm the source publishes (None: unpublished)
    present: bool  # the file is at its final cache path
    verified: bool | None  # digest matches (None: not checked, or absent)
    path: Path  # where the file is or would be
    caveat: str | None = None  # the entry's known problem, if any


def status(cache_dir: str | Path | None = None,
           verify_checksum: bool = False) -> list[WeightsStatus]:
    """One row per registered file: what it is, whether it is cached, optionally re-verified."""
    rows = []
    for name in list_weights():
        entry = get_weights(name)
        path = weights_dir(cache_dir) / entry.file_name
        present = path.is_file()
        verified = verify(path, entry) if (present and verify_checksum) else None
        rows.append(WeightsStatus(name, entry.architectures, entry.size_bytes,
                                  entry.checksum.algorithm if entry.checksum else None,
                                  present, verified, path, entry.caveat))
    return rows


# --------------------------------------------------------------------------------------------
# Downloading
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DownloadReport:
    """What :func:`fetch_weights` did."""

    path: Path  # the verified file at its final path
    sha256: str  # SHA-256 of the file (pin it if the source publishes none)
    verified: bool  # its digest matched the published one
    downloaded: bool  # False when a verified copy was already present
    url: str | None  # the URL it came from (None when nothing was downloaded)


class _Interrupted(WeightsError):
    """The transfer stopped part-way; the .part file is kept so that a re-run resumes."""


def _content_range_start(value: str | None) -> int | None:
    m = re.match(r"\s*bytes\s+(\d+)-", value or "")
    return int(m.group(1)) if m else None


def _open(url: str, offset: int, timeout: float):
    req = urllib.request.Request(url, headers={"User-Agent": f"earshot/{__version__}"})
    if offset:
        req.add_header("Range", f"bytes={offset}-")
    try:
        return urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        e.close()
        if e.code == 416 and offset:
            return None  # nothing left to send: the .part may already be complete
        raise WeightsError(f"{url}: HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        raise _Interrupted(f"{url}: cannot connect ({e.reason})") from None
    except (TimeoutError, OSError, http.client.HTTPException) as e:
        raise _Interrupted(f"{url}: {type(e).__name__}: {e}") from None


def _transfer(url: str, part: Path, timeout: float, progress: bool) -> None:
    """Bring ``part`` up to the full file from ``url``, resuming from its current length."""
    offset = part.stat().st_size if part.exists() else 0
    resp = _open(url, offset, timeout)
    if resp is None:
        return
    with resp:
        length = resp.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        if offset and resp.status == 206 and _content_range_start(
                resp.headers.get("Content-Range")) == offset:
            mode, start = "ab", offset
        elif resp.status == 206 and offset:
            # A range other than the one asked for: never splice it; start again from zero.
            log.info("%s answered Range %s for offset %d; restarting %s", url,
                     resp.headers.get("Content-Range"), offset, part.name)
            resp.close()
            part.unlink()
            return _transfer(url, part, timeout, progress)
        elif resp.status == 206:
            raise _Interrupted(f"{url}: partial response {resp.headers.get('Content-Range')!r} "
                               f"to a request for the whole file")
        else:
            # 200: the server ignored Range (or there was nothing to resume); start over.
            if offset:
                log.info("%s ignored the Range request; restarting %s", url, part.name)
            mode, start = "wb", 0
        total = start + length if length is not None else None
        written = 0
        with open(part, mode) as f, tqdm(total=total, initial=start, unit="B", unit_scale=True,
                                         unit_divisor=1024, desc=part.name[:-len(".part")],
                                         disable=not progress, file=sys.stderr) as bar:
            try:
                while block := resp.read1(_CHUNK):
                    f.write(block)
                    written += len(block)
                    bar.update(len(block))
            except (TimeoutError, OSError, http.client.HTTPException) as e:
                raise _Interrupted(
                    f"{url}: transfer interrupted after {start + written} bytes "
                    f"({type(e).__name__}: {e}); the partial file {part} is kept, run the "
                    f"download again to resume") from None
        if length is not None and written < length:
            raise _Interrupted(f"{url}: connection closed after {start + written} of {total} "
                               f"bytes; the partial file {part} is kept, run again to resume")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock file so that two processes (e.g. DDP ranks) never share a .part.

    The lock file is removed on release. Removal happens before unlocking, so a waiter that
    then acquires the removed file notices (its inode no longer is ``path``) and tries again.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no locking
        yield
        return
    while True:
        f = open(path, "a")
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            current = os.stat(path).st_ino == os.fstat(f.fileno()).st_ino
        except FileNotFoundError:
            current = False
        if current:
            break
        f.close()
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        f.close()  # closing releases the lock


def fetch_weights(name_or_entry: str | WeightsEntry, cache_dir: str | Path | None = None,
                  progress: bool = True, url_override: str | None = None, *,
                  allow_unverified: bool = False, timeout: float = 60.0) -> DownloadReport:
    """Make a verified copy of a pretrained file available in the cache, and say what happened.

    A copy already at the final path that verifies is used as is (no network). Otherwise the
    file is streamed into ``<file>.part`` (resumed if one exists), verified, and renamed into
    place. A digest mismatch deletes the .part and raises WeightsError naming the file and both
    digests; a network failure keeps the .part for the next attempt and tries the next URL.
    An entry without a published checksum is refused unless ``allow_unverified``; its SHA-256
    is then reported so the user can pin it.
    """
    entry = _entry(name_or_entry)
    if url_override and "://" not in url_override:  # a plain path: the file:// URL of it
        url_override = Path(url_override).expanduser().resolve().as_uri()
    if entry.checksum is None and not allow_unverified:
        raise WeightsError(
            f"{entry.name} ({entry.file_name}): its source publishes no checksum, so the "
            f"download cannot be verified; pass allow_unverified (--allow-unverified) to fetch "
            f"it anyway, and pin the SHA-256 that is then printed")
    urls = (url_override,) if url_override else entry.urls
    # A file:// URL is the user's own copy (--url, `earshot weights add`); registry entries
    # always name http(s) sources.
    schemes = ("http", "https", "file") if url_override else ("http", "https")
    for url in urls:
        if urllib.parse.urlsplit(url).scheme not in schemes:
            raise WeightsError(f"{url}: only http(s) URLs (or, given by you, file:// ones) can be fetched")

    folder = weights_dir(cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / entry.file_name
    part = folder / (entry.file_name + ".part")
    algorithms = _algorithms(entry)

    with _locked(folder / (entry.file_name + ".lock")):
        if final.is_file():
            digests = file_digests(final, algorithms)
            if _matches(entry, digests) or entry.checksum is None:
                return DownloadReport(final, digests["sha256"], _matches(entry, digests),
                                      downloaded=False, url=None)
            # Keep the bad copy until a verified one replaces it (os.replace below).
            log.warning("%s does not match its published %s; downloading it again",
                        final, entry.checksum.algorithm)

        failures = []
        for url in urls:
            try:
                _transfer(url, part, timeout, progress)
            except WeightsError as e:  # network failure or HTTP error status: try the next URL
                failures.append(str(e))
                continue
            digests = file_digests(part, algorithms)
            if entry.checksum is not None and not _matches(entry, digests):
                part.unlink()
                c = entry.checksum
                if urllib.parse.urlsplit(url).scheme == "file":  # the user's own copy (weights add, --url)
                    own = urllib.request.url2pathname(urllib.parse.urlsplit(url).path)
                    raise WeightsError(
                        f"{own}: does not match the pinned {c.algorithm} of {entry.name} "
                        f"({entry.file_name}): the file has {digests[c.algorithm]}, expected "
                        f"{c.digest} ({c.source}). Nothing was installed; your file was left in place.")
                raise WeightsError(
                    f"{entry.file_name}: corrupt download from {url}: {c.algorithm} is "
                    f"{digests[c.algorithm]}, expected {c.digest} ({c.source}); the partial "
                    f"file was deleted")
            os.replace(part, final)
            if entry.checksum is None:
                log.warning("%s is UNVERIFIED (no published checksum); its sha256 is %s",
                            final, digests["sha256"])
            return DownloadReport(final, digests["sha256"], entry.checksum is not None,
                                  downloaded=True, url=url)
        raise WeightsError(f"{entry.file_name}: download failed from every URL:\n  "
                           + "\n  ".join(failures) + "\n" + _elsewhere_hint(entry, final))


def _elsewhere_hint(entry: WeightsEntry, final: Path) -> str:
    """What to do with a copy fetched another way (a browser, another machine)."""
    return (f"If you can get {entry.file_name} another way, install it with "
            f"`earshot weights add {entry.name} FILE` (it is verified first), or put it at {final}.")


def add_weights(name_or_entry: str | WeightsEntry, file: str | Path,
                cache_dir: str | Path | None = None, *, allow_unverified: bool = False) -> DownloadReport:
    """Install a file fetched elsewhere: verified against the published checksum exactly as a
    download is (a mismatch installs nothing), then copied into the cache."""
    path = Path(file).expanduser()
    if not path.is_file():
        raise WeightsError(f"{path}: no such file")
    return fetch_weights(name_or_entry, cache_dir, progress=False, url_override=path.resolve().as_uri(),
                         allow_unverified=allow_unverified)


def download(name_or_entry: str | WeightsEntry, cache_dir: str | Path | None = None,
             progress: bool = True, url_override: str | None = None, *,
             allow_unverified: bool = False, timeout: float = 60.0) -> Path:
    """Path of a verified copy of the file, downloading (or resuming) it if needed.

    See :func:`fetch_weights` for the guarantees; this returns just the path.
    """
    return fetch_weights(name_or_entry, cache_dir, progress, url_override,
                         allow_unverified=allow_unverified, timeout=timeout).path

