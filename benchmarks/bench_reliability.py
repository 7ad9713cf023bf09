"""Memory bounded by the window (issue 21): indexing peak RSS for 3 min vs 3 h of audio, and
the server's peak RSS under 20 concurrent uploads.

Indexing: one 22.05 kHz FLAC (a wobbling tone, so it compresses and generates quickly) of
3 min and one of 3 h are indexed, each in a fresh process with the small CNN model at 16 kHz
(the resampler runs), one decoding worker; the figure is the ratio of the two runs' peak RSS
over the process tree (its own high-water mark plus its largest worker's; goal <= 1.2).

Server: `earshot serve` with 2 decoding slots; after one warm-up upload, 20 clients upload a
9 min 48 kHz stereo FLAC (nearly silent: ~100 kB that decode to 100 MB of float32) at once;
the figure is peak RSS after / after the warm-up (goal <= 1.25); 200s and 503s are context.
``run() -> dict``.
"""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from common import figure

OUT = Path(__file__).resolve().parent / "out" / "bench_reliability"
SR = 16000
MODEL = {"audio": {"name": "small_cnn", "options": {"channels": [8, 16], "sample_rate": SR}},
         "text": {"name": "bow", "options": {"dim": 32}}, "embed_dim": 16}
CLI = [sys.executable, "-c", "from earshot.app.cli import main; main()"]

_INDEX = r"""
import json, resource, sys
from earshot.index import IndexConfig, index_folder, open_encoder
rep = index_folder(sys.argv[1], open_encoder(sys.argv[2]), sys.argv[3], IndexConfig(workers=1))
print(json.dumps({"kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                  + resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
                  "windows": rep.windows, "audio_s": rep.audio_s, "seconds": rep.seconds}))
"""


TIMEOUT_S = 1800  # indexes 3 h of audio, then 20 concurrent 9-minute uploads
LOADS = (0,)  # memory ratios: idle only

def _model() -> Path:
    import torch

    from earshot.models import checkpoint
    from earshot.models.biencoder import create_model

    path = OUT / "model"
    if not (path / "model.safetensors").is_file():
        torch.manual_seed(0)
        checkpoint.save(create_model(MODEL), path)
    return path


def _tone_flac(path: Path, seconds: float, sr: int = 22050) -> None:
    import numpy as np
    import soundfile as sf

    if path.is_file():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with sf.SoundFile(path, "w", sr, 1, format="FLAC") as f:
        for start in range(0, int(seconds * sr), 60 * sr):
            t = (start + np.arange(min(60 * sr, int(seconds * sr) - start))) / sr
            f.write((0.3 * np.sin(2 * np.pi * (300 + 80 * np.sin(t / 5)) * t)).astype(np.float32))


def _index_peak(seconds: float, model: Path) -> dict[str, Any]:
    folder = OUT / f"audio{int(seconds)}"
    _tone_flac(folder / "long.flac", seconds)
    out = OUT / f"index{int(seconds)}"
    shutil.rmtree(out, ignore_errors=True)
    r = subprocess.run([sys.executable, "-c", _INDEX, str(folder), str(model), str(out)], capture_output=True,
                       text=True, timeout=3600)
    if r.returncode:
        raise RuntimeError(r.stderr[-2000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def _vm(pid: int, key: str) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def _uploads(model: Path) -> dict[str, Any]:
    import numpy as np
    import soundfile as sf

    folder = OUT / "small"
    for i in range(3):
        _tone_flac(folder / f"t{i}.flac", 3.0 + i)
    ix = OUT / "index_small"
    shutil.rmtree(ix, ignore_errors=True)
    subprocess.run([*CLI, "index", str(folder), "--model", str(model), "--out", str(ix)], check=True,
                   capture_output=True, timeout=600)
    clip = OUT / "nine.flac"
    if not clip.is_file():
        with sf.SoundFile(clip, "w", 48000, 2, format="FLAC") as f:
            for _ in range(9):
                f.write(np.zeros((48000 * 60, 2), dtype=np.float32))
    data = clip.read_bytes()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([*CLI, "serve", str(ix), "--port", str(port), "--max-decoding", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                c.request("GET", "/health")
                if c.getresponse().status == 200:
                    break
            except OSError:
                time.sleep(0.1)
        start = _vm(proc.pid, "VmRSS")

        def upload(_):
            body = (b"--xx\r\nContent-Disposition: form-data; name=\"file\"; filename=\"nine.flac\"\r\n\r\n"
                    + data + b"\r\n--xx--\r\n")
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
            c.request("POST", "/search/audio?k=3", body=body, headers={"Content-Type": "multipart/form-data; boundary=xx"})
            r = c.getresponse()
            r.read()
            return r.status

        upload(0)
        warm = _vm(proc.pid, "VmHWM")
        with ThreadPoolExecutor(20) as pool:
            statuses = list(pool.map(upload, range(20)))
        peak = _vm(proc.pid, "VmHWM")
    finally:
        proc.terminate()
        proc.wait(30)
    return {"start_mib": start / 1024, "warm_mib": warm / 1024, "peak_mib": peak / 1024,
            "ok": statuses.count(200), "busy": statuses.count(503), "other": len(statuses) - statuses.count(200)
            - statuses.count(503), "upload_bytes": len(data)}


def run(quick: bool = False) -> dict[str, Any]:
    OUT.mkdir(parents=True, exist_ok=True)
    model = _model()
    short = _index_peak(180.0, model)
    long = _index_peak(1800.0 if quick else 3 * 3600.0, model)
    up = _uploads(model)
    hours = long["audio_s"] / 3600
    return {
        "figures": [
            figure("index peak RSS, long / 3 min file", long["kb"] / short["kb"], goal="<= 1.2",
                   context=f"{short['kb'] / 1024:.0f} MiB for 3 min, {long['kb'] / 1024:.0f} MiB for {hours:.1f} h "
                           f"({long['windows']} windows in {long['seconds']:.0f} s); process tree"),
            figure("server peak RSS, 20 concurrent uploads / warm", up["peak_mib"] / up["warm_mib"], goal="<= 1.25",
                   context=f"{up['warm_mib']:.0f} -> {up['peak_mib']:.0f} MiB (started at {up['start_mib']:.0f}); "
                           f"9 min 48 kHz stereo, {up['upload_bytes'] // 1000} kB each: {up['ok']} answered, "
                           f"{up['busy']} told 503 + Retry-After, {up['other']} other"),
        ],
        "index_short": short, "index_long": long, "uploads": up,
    }


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
