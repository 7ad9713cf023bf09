"""Issue 21 §3, server side: slow clients are cut off, uploads cannot pile up, long queries get
an answer.

Before the fix, 40 slow request heads / slow uploads were never closed, 20 concurrent uploads
of 9 min of 48 kHz stereo took the server from 1.1 to 5.8 GB, and a 1 MB query got a reset
connection. All loopback; deadlines are shortened so the test takes seconds, and each bound is
checked with slack for a loaded machine (the property is "closed", not "closed at 1.00 s").
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import soundfile as sf

from rel_util import CLI, build, rel_model, write_sounds  # noqa: F401 - rel_model is a fixture


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path, rel_model):
    """A real uvicorn server (thread) with 1 s head and body deadlines."""
    import uvicorn

    from earshot.app.limits import ServeLimits, uvicorn_options
    from earshot.app.server import create_app

    write_sounds(tmp_path / "s", n=3)
    build(tmp_path / "s", tmp_path / "ix", rel_model)
    limits = ServeLimits(head_timeout_s=1.0, body_idle_s=1.0, body_total_s=5.0, keep_alive_s=1.0)
    app = create_app(tmp_path / "ix", serve_limits=limits)
    port = _port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                        **uvicorn_options(limits)))
    threading.Thread(target=srv.run, daemon=True).start()
    while not srv.started:
        time.sleep(0.05)
    yield port
    srv.should_exit = True


def _closed_after(sock: socket.socket, limit_s: float) -> float | None:
    """Seconds until the server closed ``sock`` (recv gives b"" or a reset), None if still open
    after ``limit_s``."""
    t0 = time.monotonic()
    sock.settimeout(0.2)
    while time.monotonic() - t0 < limit_s:
        try:
            data = sock.recv(65536)
            if data == b"":
                return time.monotonic() - t0
            if b"408" in data.split(b"\r\n", 1)[0]:
                return time.monotonic() - t0
        except socket.timeout:
            continue
        except ConnectionError:
            return time.monotonic() - t0
    return None


def test_a_slowloris_head_is_closed_while_other_requests_answer(server):
    port = server
    slow = socket.create_connection(("127.0.0.1", port))
    slow.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    stop = threading.Event()

    def trickle():  # one header line every 0.2 s, never the blank line that ends the head
        i = 0
        while not stop.is_set():
            try:
                slow.sendall(f"X-Slow-{i}: 1\r\n".encode())
            except OSError:
                return
            i += 1
            time.sleep(0.2)

    threading.Thread(target=trickle, daemon=True).start()
    answers = []
    for _ in range(5):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/health")
        answers.append(conn.getresponse().status)
        conn.close()
    took = _closed_after(slow, limit_s=6.0)
    stop.set()
    slow.close()
    assert answers == [200] * 5
    assert took is not None, "the slow connection was still open after 6 s (deadline 1 s)"


def test_a_stalled_upload_body_gets_408(server):
    port = server
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"POST /search/audio HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; "
                 b"boundary=xx\r\nContent-Length: 100000\r\n\r\n--xx\r\n")
    took = _closed_after(sock, limit_s=6.0)
    sock.close()
    assert took is not None, "a stalled body held its connection for more than 6 s (deadline 1 s)"


def test_a_1_mb_query_is_answered_422_with_a_message(server):
    conn = http.client.HTTPConnection("127.0.0.1", server, timeout=10)
    conn.request("GET", "/search?q=" + "a" * 1_000_000)
    r = conn.getresponse()
    body = json.loads(r.read())
    assert r.status == 422  # before: connection reset
    assert "at most 500 characters" in json.dumps(body) and "1000000 characters" in json.dumps(body)


def _vm(pid: int, key: str) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])  # kB
    raise KeyError(key)


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads the server's peak RSS from /proc")
def test_twenty_concurrent_uploads_are_bounded_by_the_decoding_slots(tmp_path, rel_model):
    write_sounds(tmp_path / "s", n=3)
    build(tmp_path / "s", tmp_path / "ix", rel_model, window_s=10.0, hop_s=5.0)
    # 9 min of 48 kHz stereo, nearly silent: a ~100 kB FLAC that decodes to 100 MB of float32
    clip = tmp_path / "nine.flac"
    with sf.SoundFile(clip, "w", 48000, 2, format="FLAC") as f:
        for _ in range(9):
            f.write(np.zeros((48000 * 60, 2), dtype=np.float32))
    data = clip.read_bytes()
    assert len(data) < 300_000
    port = _port()
    proc = subprocess.Popen([*CLI, "serve", str(tmp_path / "ix"), "--port", str(port), "--max-decoding", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                c.request("GET", "/health")
                if c.getresponse().status == 200:
                    break
            except OSError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)

        def upload(_):
            body = (b"--xx\r\nContent-Disposition: form-data; name=\"file\"; filename=\"nine.flac\"\r\n"
                    b"Content-Type: audio/flac\r\n\r\n" + data + b"\r\n--xx--\r\n")
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            c.request("POST", "/search/audio?k=3", body=body,
                      headers={"Content-Type": "multipart/form-data; boundary=xx", "Host": "127.0.0.1"})
            r = c.getresponse()
            r.read()
            return r.status, r.getheader("Retry-After")

        assert upload(0)[0] == 200  # warm: the model has run on one upload
        warm = _vm(proc.pid, "VmHWM")
        with ThreadPoolExecutor(20) as pool:
            answers = list(pool.map(upload, range(20)))
        peak = _vm(proc.pid, "VmHWM")
        assert {s for s, _ in answers} <= {200, 503} and any(s == 200 for s, _ in answers), answers
        assert all(ra == "2" for s, ra in answers if s == 503)
        # Two slots decoding block by block: the peak hardly moves (before: +4.7 GB for 20).
        assert peak <= 1.25 * warm, (warm, peak)
    finally:
        proc.terminate()
        try:
            proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
