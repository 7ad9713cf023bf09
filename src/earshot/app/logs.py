"""The server's log: what C decoders print on file descriptor 2 becomes log records.

libsndfile's mpg123 writes notes such as ``Note: Illegal Audio-MPEG-Header ...`` straight to
fd 2, from whichever thread decodes an upload; capturing fd 2 per request is impossible with
threads (it is process-wide). :func:`route_native_stderr` instead points fd 2 at a pipe whose
lines a thread logs as ``earshot.decoder`` records (INFO), while Python's ``sys.stderr`` (the
server's own log, tracebacks) keeps writing to the real stderr.
"""

from __future__ import annotations

import logging
import os
import sys
import threading

DECODER_LOG = "earshot.decoder"


def route_native_stderr(name: str = DECODER_LOG) -> None:
    """Send fd 2 (C libraries) to logger ``name``; ``sys.stderr`` stays the terminal. Call once,
    in the serving process, before logging is configured."""
    sys.stderr.flush()
    real = os.dup(2)
    sys.stderr = os.fdopen(real, "w", buffering=1, encoding="utf-8", errors="backslashreplace")
    read, write = os.pipe()
    os.dup2(write, 2)
    os.close(write)
    log = logging.getLogger(name)

    def pump() -> None:
        with os.fdopen(read, "rb") as f:
            for raw in f:
                text = raw.decode("utf-8", "replace").rstrip()
                if text:
                    log.info("%s", text)

    threading.Thread(target=pump, name="earshot-native-stderr", daemon=True).start()
