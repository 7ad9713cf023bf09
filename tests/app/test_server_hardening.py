"""Issue 13, server side: bounded uploads, a responsive loop, only indexed files served, same-origin
and Host checks, re-index noticed, small 4xx fixes, batched text queries.

Concurrency is tested against a real uvicorn server on 127.0.0.1 in a thread, with encoders
that block on an event, so "answers while busy" is a fact, not a timing.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from fastapi.testclient import TestClient

SR = 16000
MODEL = {"audio": {"name": "small_cnn", "options": {"channels": [8, 16], "sample_rate": SR}},
         "text": {"name": "bow", "options": {"dim": 32}}, "embed_dim": 16}
HOSTS = ("testserver",)


def _tone(freq: float, seconds: float) -> np.ndarray:
    return (0.3 * np.sin(2 * np.pi * freq * np.arange(int(seconds * SR)) / SR)).astype(np.float32)


def _build(tmp: Path, n: int = 5) -> Path:
    from earshot.index import IndexConfig, index_folder, open_encoder
    from earshot.models import checkpoint
    from earshot.models.biencoder import create_model

    if not (tmp / "model").exists():
        torch.manual_seed(0)
        checkpoint.save(create_model(MODEL), tmp / "model")
    (tmp / "s" / "sub").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        sf.write(tmp / "s" / ("sub" if i % 2 else "") / f"tone{i}.wav", _tone(200 + 100 * i, 1.0 + 0.25 * i), SR)
    index_folder(tmp / "s", open_encoder(tmp / "model"), tmp / "ix", IndexConfig(window_s=2.0, hop_s=1.0, workers=0))
    return tmp


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    return _build(tmp_path_factory.mktemp("hard"))


@pytest.fixture(scope="module")
def client(built):
    from earshot.app.server import create_app

    return TestClient(create_app(built / "ix", max_upload_bytes=300_000, max_upload_s=60, allowed_hosts=HOSTS))


class Gate:
    """Wraps an encoder; embed_audio / embed_text wait on events when asked to (and count calls)."""

    def __init__(self, inner):
        self.inner = inner
        self.model_id, self.model_path = inner.model_id, inner.model_path
        self.sample_rate, self.dim, self.normalize = inner.sample_rate, inner.dim, inner.normalize
        self.audio_open, self.text_open = threading.Event(), threading.Event()
        self.audio_open.set(), self.text_open.set()
        self.audio_entered = threading.Event()
        self.text_calls: list[int] = []

    def embed_audio(self, waves, batch_size=16):
        self.audio_entered.set()
        assert self.audio_open.wait(20)
        return self.inner.embed_audio(waves, batch_size=batch_size)

    def embed_text(self, texts):
        assert self.text_open.wait(20)
        self.text_calls.append(len(texts))
        return self.inner.embed_text(texts)


class Served:
    """uvicorn serving an app on a free loopback port, in a daemon thread."""

    def __init__(self, app):
        import uvicorn

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started:
            assert time.time() < deadline, "uvicorn did not start"
            time.sleep(0.02)

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
                timeout: float = 10.0) -> tuple[int, dict]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, json.loads(data) if data[:1] in (b"{", b"[") else {"raw": data}
        finally:
            conn.close()

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def _multipart(name: str, data: bytes) -> tuple[bytes, dict]:
    boundary = "earshotboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def _silence_flac(path: Path, seconds: float, sr: int = 8000) -> None:
    with sf.SoundFile(path, "w", sr, 1, format="FLAC") as f:
        block = np.zeros(sr * 60, dtype=np.float32)
        for _ in range(int(seconds // 60)):
            f.write(block)


# -- bounded uploads ---------------------------------------------------------------------------
def test_a_decoded_size_bomb_is_refused_from_its_header(client, tmp_path):
    _silence_flac(tmp_path / "hour.flac", 3600)  # an hour of silence in ~100 kB
    data = (tmp_path / "hour.flac").read_bytes()
    assert len(data) < 300_000
    t = time.perf_counter()
    r = client.post("/search/audio", files={"file": ("hour.flac", data, "audio/flac")})
    assert r.status_code == 422 and "hour.flac: header declares 1:00:00 of audio; the limit is 0:01:00" in r.text
    assert time.perf_counter() - t < 5  # refused from the header, nothing decoded
    # The same hour with its length cleared from the header: decoding stops at the limit.
    b = bytearray(data)
    b[18:26] = (int.from_bytes(b[18:26], "big") & ~((1 << 36) - 1)).to_bytes(8, "big")
    r = client.post("/search/audio", files={"file": ("nolength.flac", bytes(b), "audio/flac")})
    assert r.status_code == 422 and "nolength.flac: decodes to more than 0:01:00 of audio" in r.text


def test_an_upload_is_bounded_by_bytes_while_it_streams(built):
    from earshot.app.server import create_app

    app = create_app(built / "ix", max_upload_bytes=100_000, allowed_hosts=HOSTS)
    chunks = {"sent": 0}

    head = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\nContent-Type: audio/wav\r\n\r\n'

    async def receive():  # a well-formed multipart upload of 65 MB, without a Content-Length
        chunks["sent"] += 1
        body = (head if chunks["sent"] == 1 else b"") + b"x" * 65536
        return {"type": "http.request", "body": body, "more_body": chunks["sent"] < 1000}

    sent: list[dict] = []

    async def send(msg):
        sent.append(msg)

    scope = {"type": "http", "method": "POST", "path": "/search/audio", "raw_path": b"/search/audio",
             "query_string": b"", "root_path": "", "scheme": "http", "server": ("testserver", 80),
             "headers": [(b"host", b"testserver"), (b"content-type", b"multipart/form-data; boundary=b")]}
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 413 and b"larger than 100000 bytes" in sent[-1]["body"]
    assert chunks["sent"] <= (100_000 + 64 * 1024) // 65536 + 1  # stopped reading at the limit
    big = TestClient(app).post("/search/audio", files={"file": ("big.wav", b"0" * 200_000, "audio/wav")})
    assert big.status_code == 413  # a declared Content-Length over the limit: refused up front


def test_crafted_and_broken_uploads_are_422_naming_the_upload_not_the_temp_file(client, tmp_path):
    sf.write(tmp_path / "c.flac", _tone(300, 1.0), SR)
    b = bytearray((tmp_path / "c.flac").read_bytes())
    x = int.from_bytes(b[18:26], "big")
    b[18:26] = ((x & ~((1 << 36) - 1)) | 400_000).to_bytes(8, "big")  # claims 25 s, holds 1 s
    cases = {"crafted.flac": bytes(b), "noise.flac": os.urandom(5000), "broken.wav": b"RIFF1234WAVEjunk",
             "text.mp3": b"hello\n" * 300, "empty.ogg": b""}
    for name, data in cases.items():
        r = client.post("/search/audio", files={"file": (name, data, "application/octet-stream")})
        assert r.status_code == 422, (name, r.status_code, r.text)
        detail = r.json()["detail"]
        assert detail.startswith(f"{name}: ") and "earshot-query-" not in detail and "/tmp" not in detail


def test_422_bodies_do_not_echo_the_whole_input(client):
    r = client.get("/search", params={"q": "x" * 30_000, "k": 3})
    assert r.status_code == 422 and len(r.content) < 1000 and "at most 500 characters" in r.text


# -- only what was indexed -----------------------------------------------------------------------
def test_ids_beyond_64_bits_are_404_not_500(client):
    for fid in (2**63, 2**63 + 5, 10**30, -(2**63) - 1):
        r = client.get(f"/audio/{fid}")
        assert r.status_code == 404, (fid, r.status_code)


def test_a_swapped_or_changed_file_is_410(tmp_path):
    from earshot.app.server import create_app

    built = _build(tmp_path)
    c = TestClient(create_app(built / "ix", allowed_hosts=HOSTS))
    hit = c.get("/search", params={"q": "tone", "k": 5}).json()["results"][0]
    target = built / "s" / hit["path"]
    original = target.read_bytes()
    st = target.stat()
    assert c.get(hit["audio_url"]).content == original
    (tmp_path / "passwd").write_bytes(b"root:x:0:0:root:/root:/bin/bash\n")
    target.unlink()
    os.symlink(tmp_path / "passwd", target)  # swapped for a link to a secret outside the folder
    r = c.get(hit["audio_url"])
    assert r.status_code == 410 and "root:x" not in r.text and "outside the indexed folder" in r.text
    target.unlink()
    target.write_bytes(original[:-2] + b"\0\0")  # same size, new mtime
    assert c.get(hit["audio_url"]).status_code == 410
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size and mtime again: served
    assert c.get(hit["audio_url"]).status_code == 200
    target.unlink()
    assert c.get(hit["audio_url"]).status_code == 410


# -- cross-site and rebinding -----------------------------------------------------------------------
def test_foreign_hosts_and_cross_site_posts_are_403(built, client, tmp_path):
    from earshot.app.server import create_app

    assert client.get("/health", headers={"Host": "evil.example"}).status_code == 403
    assert client.get("/health", headers={"Host": "evil.example:8000"}).status_code == 403
    local = TestClient(create_app(built / "ix"), base_url="http://127.0.0.1:8000")
    assert local.get("/health").status_code == 200
    assert local.get("/health", headers={"Host": "localhost:8000"}).status_code == 200
    assert local.get("/health", headers={"Host": "[::1]:8000"}).status_code == 200
    assert local.get("/health", headers={"Host": "testserver"}).status_code == 403
    clip = (built / "s" / "tone0.wav").read_bytes()
    files = {"file": ("mine.wav", clip, "audio/wav")}
    r = client.post("/search/audio", files=files, headers={"Origin": "http://evil.example"})
    assert r.status_code == 403 and "cross-site" in r.text
    assert client.post("/search/audio", files=files, headers={"Origin": "null"}).status_code == 403
    assert client.post("/search/audio", files=files, headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
    assert client.post("/search/audio", files=files, headers={"Origin": "http://testserver"}).status_code == 200
    assert client.post("/search/audio", files=files).status_code == 200  # curl sends no Origin


# -- the loop stays free, the model is ready, queries are batched --------------------------------
def test_health_answers_while_an_upload_and_text_searches_are_busy(built):
    from earshot.app.server import create_app
    from earshot.index import open_encoder

    gate = Gate(open_encoder(built / "model"))
    app = create_app(built / "ix", model=gate)
    srv = Served(app)
    try:
        gate.audio_open.clear()
        gate.text_open.clear()
        body, headers = _multipart("mine.wav", (built / "s" / "tone0.wav").read_bytes())
        pool = ThreadPoolExecutor(12)
        upload = pool.submit(srv.request, "POST", "/search/audio?k=2", body, headers)
        texts = [pool.submit(srv.request, "GET", f"/search?q=tone+{i}&k=3") for i in range(10)]
        assert gate.audio_entered.wait(10)  # the upload is inside the model now
        for _ in range(5):
            status, doc = srv.request("GET", "/health", timeout=2.0)
            assert status == 200 and doc["status"] == "ok"
        assert not upload.done() and not any(t.done() for t in texts)
        gate.audio_open.set()
        gate.text_open.set()
        assert upload.result(20)[0] == 200
        results = [t.result(20) for t in texts]
        assert all(s == 200 and len(d["results"]) == 3 for s, d in results)
        # 10 queries waited together: far fewer encoder calls than queries, same answers.
        assert sum(gate.text_calls) == 10 and len(gate.text_calls) < 10
        alone = srv.request("GET", "/search?q=tone+3&k=3")[1]
        assert alone["results"] == results[3][1]["results"]
        pool.shutdown()
    finally:
        gate.audio_open.set(), gate.text_open.set()
        srv.close()


def test_the_model_is_loaded_before_the_app_is_returned(built):
    from earshot.app.server import create_app

    app = create_app(built / "ix")
    assert app.state.live.index._encoder is not None
    lazy = create_app(built / "ix", preload=False)
    assert lazy.state.live.index._encoder is None


# -- index changes -------------------------------------------------------------------------------
def test_a_reindex_is_seen_and_k_hits_come_back_while_vectors_lag(tmp_path):
    from earshot.app.server import create_app
    from earshot.index import Index, IndexConfig, index_folder, open_encoder

    built = _build(tmp_path, n=5)
    app = create_app(built / "ix", allowed_hosts=HOSTS, poll_s=0.05)
    c = TestClient(app)
    assert c.get("/health").json()["items"] == 5
    stale = Index.open(built / "ix")  # opened before the re-index, like a long-running reader
    for i in range(5, 9):
        sf.write(built / "s" / f"new{i}.wav", _tone(150 * i, 1.2), SR)
    sf.write(built / "s" / "tone0.wav", _tone(999, 1.0), SR)  # changed: a new id
    index_folder(built / "s", open_encoder(built / "model"), built / "ix", IndexConfig(window_s=2.0, hop_s=1.0, workers=0))
    hits = stale.search("tone", k=50)  # its vectors know 5 files, one of them gone
    assert len(hits) == 9 and len({h.id for h in hits}) == 9
    deadline = time.time() + 10
    while c.get("/health").json()["items"] != 9:
        assert time.time() < deadline, "the server did not notice the re-index"
        time.sleep(0.05)
    assert len(c.get("/search", params={"q": "tone", "k": 50}).json()["results"]) == 9
    assert app.state.live.reopened >= 1


def test_health_reports_a_partial_index(tmp_path):
    from earshot.app.server import create_app
    from earshot.index import IndexConfig, index_folder, open_encoder

    built = _build(tmp_path, n=5)
    enc = open_encoder(built / "model")

    class Dies:
        model_id, model_path, sample_rate, dim, normalize = (enc.model_id, enc.model_path, enc.sample_rate,
                                                              enc.dim, enc.normalize)

        def embed_audio(self, waves, batch_size=16):
            raise KeyboardInterrupt

    for i in range(5, 8):
        sf.write(built / "s" / f"new{i}.wav", _tone(150 * i, 1.2), SR)
    with pytest.raises(KeyboardInterrupt):
        index_folder(built / "s", Dies(), built / "ix", IndexConfig(window_s=2.0, hop_s=1.0, workers=0))
    doc = TestClient(create_app(built / "ix", allowed_hosts=HOSTS)).get("/health").json()
    assert doc["status"] == "partial" and doc["partial"].startswith("partial: 5 of 8 files")


def test_health_says_restart_needed_when_the_index_was_rebuilt_with_another_model(tmp_path):
    import shutil

    from earshot.app.server import create_app
    from earshot.index import IndexConfig, index_folder, open_encoder
    from earshot.models import checkpoint
    from earshot.models.biencoder import create_model

    built = _build(tmp_path, n=3)
    app = create_app(built / "ix", allowed_hosts=HOSTS, poll_s=0.05)
    c = TestClient(app)
    torch.manual_seed(7)
    checkpoint.save(create_model(MODEL), tmp_path / "other")
    shutil.rmtree(built / "ix")
    index_folder(built / "s", open_encoder(tmp_path / "other"), built / "ix", IndexConfig(window_s=2.0, hop_s=1.0, workers=0))
    deadline = time.time() + 10
    while not c.get("/health").json()["restart_needed"]:
        assert time.time() < deadline, "the server did not notice the rebuilt index"
        time.sleep(0.05)
    assert "built with model" in c.get("/health").json()["restart_needed"]
    assert c.get("/search", params={"q": "tone", "k": 3}).status_code == 200  # still answers from the old one
