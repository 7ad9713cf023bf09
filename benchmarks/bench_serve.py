"""The search server under load: throughput and latency at 1, 8 and 50 clients, /health while
busy, and what a decoded-size bomb upload costs.

A real ``uvicorn`` server runs in a child process on 127.0.0.1 (loopback only) over an index of
generated sounds, with a model whose text tower is all-MiniLM-L6-v2 (the local copy), so a text
query costs what it costs in use. Clients are threads with one keep-alive connection each, every
request a distinct query (the server's text cache never answers). Each round runs the three
client counts back to back (1, 8, 50, 1, 8, 50, ...) so the machine's load drifts over all alike;
the throughput ratios 8/1 and 50/1 are medians of per-round ratios. Every loop is bounded by a
request count. While the 50 clients run, another thread times ``/health``.

The bombs: an hour of 48 kHz silence in a ~0.5 MB FLAC, uploaded repeatedly while ``/health`` is
timed, once as written (refused from its header) and once with the length cleared from the header
(decoded until the 10-minute limit); the server's peak RSS (VmHWM) before and after each gives the
memory it cost.

``BENCH_SERVE_BASELINE=<git rev>`` (or ``run(baseline=...)``) also serves the same index with that
revision's ``src/`` (via ``git archive``) and interleaves its loads with this one's, round by
round, for before/after ratios.

Goals (issue 13): throughput at 8 and at 50 clients >= throughput at 1 client; /health p95
< 50 ms while 50 clients search; the bomb refused with 422 and < 50 MiB of peak memory.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

import numpy as np

from common import figure, quantile

CLIENTS = (1, 8, 50)
WORDS = ("a dog barks while cars pass by on a wet road and people talk loudly near the water "
         "birds chirp in the distance as wind blows through trees an engine idles").split()


def _build(tmp: Path, files: int) -> None:
    import soundfile as sf
    import torch

    from earshot.index import IndexConfig, index_folder, open_encoder
    from earshot.models import checkpoint
    from earshot.models.biencoder import create_model

    torch.manual_seed(0)
    model = create_model({"audio": {"name": "small_cnn", "options": {"channels": [8, 16], "sample_rate": 16000}},
                          "text": {"name": "sbert"}, "embed_dim": 64})
    checkpoint.save(model, tmp / "model")
    (tmp / "s").mkdir()
    rng = np.random.default_rng(0)
    for i in range(files):
        t = np.arange(int(16000 * rng.uniform(1, 4))) / 16000
        wave = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 4000) * t) + 0.05 * rng.standard_normal(len(t))
        sf.write(tmp / "s" / f"f{i:03d}.wav", wave.astype(np.float32), 16000)
    index_folder(tmp / "s", open_encoder(tmp / "model"), tmp / "ix", IndexConfig(window_s=2.0, hop_s=1.0, workers=0))


def _start_server(tmp: Path, src: Path | None = None) -> tuple[subprocess.Popen, int]:
    """The server in a child process; ``src`` puts another checkout's sources first (baseline)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = ("import uvicorn; from earshot.app.server import create_app; "
            f"uvicorn.run(create_app({str(tmp / 'ix')!r}), host='127.0.0.1', port={port}, log_level='warning')")
    path = ([str(src)] if src else []) + [p for p in sys.path if p]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join(path)}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    deadline = time.time() + 120
    while True:
        try:
            status, _ = _get(port, "/health")
            if status == 200:
                return proc, port
        except OSError:
            pass
        if time.time() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError("the server did not start")
        time.sleep(0.2)


def _get(port: int, path: str, conn: http.client.HTTPConnection | None = None) -> tuple[int, bytes]:
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        if own:
            conn.close()


def _load(port: int, clients: int, total: int, start: int) -> dict[str, float]:
    """``total`` distinct text queries spread over ``clients`` keep-alive connections."""
    lat: list[float] = []
    errors = [0]
    lock = threading.Lock()
    per = max(1, total // clients)

    def client(c: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        mine = []
        for j in range(per):
            n = start + c * per + j
            words = " ".join(WORDS[(n * 7 + i * 3) % len(WORDS)] for i in range(6 + n % 9))
            q = urllib.parse.quote(f"{words} {n}")
            t = time.perf_counter()
            status, _ = _get(port, f"/search?q={q}&k=10", conn)
            mine.append(time.perf_counter() - t)
            if status != 200:
                with lock:
                    errors[0] += 1
        conn.close()
        with lock:
            lat.extend(mine)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {"rps": len(lat) / wall, "p50_ms": 1000 * quantile(lat, 0.5), "p95_ms": 1000 * quantile(lat, 0.95),
            "errors": errors[0], "n": len(lat)}


class HealthProbe:
    """Times GET /health every ``every_s`` on its own connection until stopped."""

    def __init__(self, port: int, every_s: float = 0.02):
        self.port, self.every_s = port, every_s
        self.times: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "HealthProbe":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        while not self._stop.wait(self.every_s):
            t = time.perf_counter()
            _get(self.port, "/health", conn)
            self.times.append(time.perf_counter() - t)
        conn.close()


def _hwm_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def bomb_bytes(tmp: Path, declare_length: bool = True) -> bytes:
    """An hour of silence at 48 kHz as FLAC (~0.5 MB); without ``declare_length`` the header's
    total-samples field is cleared, so only decoding can find out how long it is."""
    import soundfile as sf

    path = tmp / "hour.flac"
    with sf.SoundFile(path, "w", 48000, 1, format="FLAC") as f:
        block = np.zeros(48000 * 60, dtype=np.float32)
        for _ in range(60):
            f.write(block)
    data = bytearray(path.read_bytes())
    if not declare_length:
        data[18:26] = (int.from_bytes(data[18:26], "big") & ~((1 << 36) - 1)).to_bytes(8, "big")
    return bytes(data)


def _bomb(data: bytes, port: int, pid: int, uploads: int) -> dict[str, Any]:
    boundary = "benchboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"hour.flac\"\r\n"
            "Content-Type: audio/flac\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    before = _hwm_mib(pid)
    statuses, times = [], []
    with HealthProbe(port) as probe:
        for _ in range(uploads):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            t = time.perf_counter()
            conn.request("POST", "/search/audio?k=5", body=body,
                         headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
            resp = conn.getresponse()
            resp.read()
            times.append(time.perf_counter() - t)
            statuses.append(resp.status)
            conn.close()
            time.sleep(0.05)
    return {"bytes": len(data), "statuses": statuses, "upload_ms": 1000 * float(np.median(times)),
            "rss_growth_mib": _hwm_mib(pid) - before, "health_p95_ms": 1000 * quantile(probe.times, 0.95),
            "health_n": len(probe.times)}


def _export(rev: str, into: Path) -> Path:
    """``src/`` of git revision ``rev`` of this repository, unpacked under ``into``."""
    repo = Path(__file__).resolve().parents[1]
    archive = subprocess.run(["git", "-C", str(repo), "archive", rev, "src"], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into / "src"


def run(quick: bool = False, rounds: int | None = None,
        baseline: str | None = os.environ.get("BENCH_SERVE_BASELINE")) -> dict[str, Any]:
    """``baseline`` (a git revision, e.g. the commit before issue 13) runs that revision's server
    over the same index, its loads interleaved with this one's, for before/after figures."""
    rounds = rounds or (2 if quick else 3)
    total = 100 if quick else 200  # requests per client count per round
    with tempfile.TemporaryDirectory(prefix="earshot-bench-serve-") as d:
        tmp = Path(d)
        _build(tmp, files=40 if quick else 200)
        proc, port = _start_server(tmp)
        old = _start_server(tmp, _export(baseline, tmp)) if baseline else None
        try:
            _load(port, 8, 40, start=10**6)  # warm-up: thread pool, allocator, tokenizer
            if old:
                _load(old[1], 8, 40, start=10**6)
            per: dict[int, list[dict[str, float]]] = {c: [] for c in CLIENTS}
            base: dict[int, list[dict[str, float]]] = {c: [] for c in CLIENTS}
            health: list[float] = []
            base_health: list[float] = []
            start = 0
            for _ in range(rounds):
                for c in CLIENTS:
                    for side, p_, hs in ((per, port, health), (base, old[1] if old else None, base_health)):
                        if p_ is None:
                            continue
                        if c == max(CLIENTS):
                            with HealthProbe(p_) as probe:
                                side[c].append(_load(p_, c, total, start))
                            hs += probe.times
                        else:
                            side[c].append(_load(p_, c, total, start))
                    start += total + c
            bomb = _bomb(bomb_bytes(tmp), port, proc.pid, uploads=3 if quick else 5)
            unknown = _bomb(bomb_bytes(tmp, declare_length=False), port, proc.pid, uploads=3 if quick else 5)
        finally:
            for p_ in (proc, old[0] if old else None):
                if p_ is not None:
                    p_.terminate()
                    p_.wait(30)
    ratios = {c: [r[c]["rps"] / r[1]["rps"] for r in (dict(zip(CLIENTS, x)) for x in zip(*per.values()))]
              for c in CLIENTS[1:]}
    figs = []
    for c in CLIENTS:
        rps = [x["rps"] for x in per[c]]
        figs.append(figure(f"{c} client(s): requests/s", float(np.median(rps)), unit="req/s",
                           spread=float(quantile(rps, 0.75) - quantile(rps, 0.25)), n=len(rps),
                           context=f"p50 {np.median([x['p50_ms'] for x in per[c]]):.1f} ms, "
                                   f"p95 {np.median([x['p95_ms'] for x in per[c]]):.1f} ms, "
                                   f"errors {sum(x['errors'] for x in per[c])}"))
    for c in CLIENTS[1:]:
        figs.append(figure(f"throughput {c} clients / 1 client", float(np.median(ratios[c])), goal=">= 1",
                           n=len(ratios[c]), context="median of per-round ratios"))
    figs.append(figure("/health p95 while 50 clients search", 1000 * quantile(health, 0.95), unit="ms",
                       goal="<= 50", n=len(health)))
    figs.append(figure("bomb upload (1 h silence FLAC) peak RSS growth", bomb["rss_growth_mib"], unit="MiB",
                       goal="<= 50", n=len(bomb["statuses"]),
                       context=f"{bomb['bytes'] // 1024} kB upload, statuses {sorted(set(bomb['statuses']))}, "
                               f"answered in {bomb['upload_ms']:.0f} ms"))
    figs.append(figure("/health p95 during bomb uploads", bomb["health_p95_ms"], unit="ms", goal="<= 50",
                       n=bomb["health_n"]))
    figs.append(figure("length-less bomb (1 h, length cleared) peak RSS growth", unknown["rss_growth_mib"],
                       unit="MiB", n=len(unknown["statuses"]),
                       context=f"decoded up to the 10 min limit, statuses {sorted(set(unknown['statuses']))}, "
                               f"answered in {unknown['upload_ms']:.0f} ms"))
    figs.append(figure("/health p95 during length-less bomb uploads", unknown["health_p95_ms"], unit="ms",
                       goal="<= 50", n=unknown["health_n"]))
    if baseline:
        for c in CLIENTS:
            rps = [x["rps"] for x in base[c]]
            figs.append(figure(f"baseline {baseline}: {c} client(s) requests/s", float(np.median(rps)), unit="req/s",
                               n=len(rps), context=f"p50 {np.median([x['p50_ms'] for x in base[c]]):.1f} ms, "
                                                   f"p95 {np.median([x['p95_ms'] for x in base[c]]):.1f} ms"))
            figs.append(figure(f"{c} client(s): requests/s now / baseline",
                               float(np.median([a["rps"] / b["rps"] for a, b in zip(per[c], base[c])])),
                               n=len(rps), context="median of per-round ratios (interleaved)"))
        figs.append(figure(f"baseline {baseline}: /health p95 while 50 clients search",
                           1000 * quantile(base_health, 0.95), unit="ms", n=len(base_health)))
    return {"figures": figs, "baseline_per_clients": {str(c): base[c] for c in CLIENTS}, "per_clients": {str(c): per[c] for c in CLIENTS}, "bomb": bomb, "unknown": unknown,
            "health_ms": [1000 * t for t in health]}


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=1, default=str)[:6000])
