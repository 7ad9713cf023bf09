"""Issue 21 §2: `rm -rf IDX && earshot index ... --out IDX` while `earshot serve IDX` answers.

A real server (its own process, 127.0.0.1) is asked for a search or /health every ~10 ms while
the index is deleted and rebuilt ten times (each time with one more file). Before the fix 7 of
13 trials produced 500s (`database disk image is malformed`, `disk I/O error`) and 2 rebuilds
broke; now every request answers 200, every rebuild is whole, and the server moves to each
new index (its uid shows in /health).
"""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import subprocess
import threading
import time

import pytest

from rel_util import CLI, FAST, rel_model, write_sounds  # noqa: F401 - rel_model is a fixture

from earshot.index import IndexConfig, index_folder, open_encoder
from earshot.index.store import Store

TRIALS = 10


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def _uid(ix) -> str:
    store = Store.open(ix, readonly=True)
    try:
        return store.get_info("uid")
    finally:
        store.close()


@pytest.mark.slow
def test_deleting_and_rebuilding_the_index_under_a_running_server(tmp_path, rel_model):
    root, ix = tmp_path / "s", tmp_path / "ix"
    write_sounds(root, n=4)
    encoder = open_encoder(rel_model)
    cfg = IndexConfig(**FAST)
    index_folder(root, encoder, ix, cfg)
    port = _free_port()
    server = subprocess.Popen([*CLI, "serve", str(ix), "--port", str(port)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if _get(port, "/health", 1.0)[0] == 200:
                    break
            except OSError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, server.stderr.read() if server.poll() else ""
            time.sleep(0.1)

        errors: list[str] = []
        done = threading.Event()
        asked = 0

        def client() -> None:
            nonlocal asked
            while not done.is_set():
                path = "/search?q=a+low+tone&k=3" if asked % 2 else "/health"
                try:
                    status, body = _get(port, path)
                    if status != 200:
                        errors.append(f"{path}: {status} {body[:200]!r}")
                except OSError as e:
                    errors.append(f"{path}: {type(e).__name__}: {e}")
                asked += 1
                time.sleep(0.01)

        thread = threading.Thread(target=client, daemon=True)
        thread.start()
        broken = []
        for trial in range(TRIALS):
            shutil.rmtree(ix)
            write_sounds(root, n=1, offset=40 + trial)  # one more file each time
            report = index_folder(root, encoder, ix, cfg)
            if report.items != 5 + trial or report.bad:
                broken.append((trial, report.items, report.bad))
            uid = _uid(ix)
            deadline = time.monotonic() + 10
            while json.loads(_get(port, "/health")[1])["index_uid"] != uid:  # the server moved on
                assert time.monotonic() < deadline, f"trial {trial}: server still on the old index"
                time.sleep(0.02)
            status, body = _get(port, "/search?q=a+low+tone&k=50")
            assert status == 200 and len(json.loads(body)["results"]) == 5 + trial
        done.set()
        thread.join(10)
        assert broken == []
        assert errors == [], errors[:5]
        assert asked > 50  # the loop really ran through the rebuilds
    finally:
        server.terminate()
        try:
            server.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.communicate()
