"""Issue 21 §3: memory bounded by the window, not the file.

Indexing a 3 h recording must peak at no more than 1.2x the memory of indexing a 3 min one
(before the fix a 3.98 h FLAC took 7.4 GB: the whole file was decoded, resampled and framed at
once). Measured as peak RSS of the indexing process tree (the process's own high-water mark
plus its largest decoding worker's), in fresh subprocesses, with a cheap numpy encoder at
1 kHz and files at 2 kHz, so the resampler runs and the test takes seconds. Not timed.

The streamed path must give the same windows as decoding the whole file (soxr's streaming
resampler equals its one-shot call), and uploads go through it too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import soundfile as sf

from earshot.index.decode import Framing, WindowStream, frame, load_checked, peaks

RUN = textwrap.dedent("""
    import json, resource, sys
    import numpy as np
    from earshot.index import IndexConfig, index_folder

    class Cheap:  # 16 band energies of each window: no torch, any length
        model_id, model_path, sample_rate, dim, normalize = "cheap", "", 1000, 16, True
        def embed_audio(self, waves, batch_size=16):
            out = np.stack([np.abs(w[: len(w) // 16 * 16]).reshape(16, -1).mean(axis=1) for w in waves])
            return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)
        def embed_text(self, texts):
            raise NotImplementedError

    report = index_folder(sys.argv[1], Cheap(), sys.argv[2], IndexConfig(workers=int(sys.argv[3])))
    me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps({"kb": me + kids, "windows": report.windows, "seconds": report.audio_s,
                      "bad": report.bad}))
""")


def write_long(path, seconds: float, sr: int = 2000) -> None:
    """A FLAC of ``seconds`` of a wobbling tone, written block by block (never whole in memory)."""
    with sf.SoundFile(path, "w", sr, 1, format="FLAC") as f:
        block = 60 * sr
        for start in range(0, int(seconds * sr), block):
            t = (start + np.arange(min(block, int(seconds * sr) - start))) / sr
            f.write((0.3 * np.sin(2 * np.pi * (200 + 50 * np.sin(t / 7)) * t)).astype(np.float32))


def peak_kb(tmp_path, seconds: float, workers: int) -> dict:
    root = tmp_path / f"s{int(seconds)}-{workers}"
    root.mkdir()
    write_long(root / "long.flac", seconds)
    r = subprocess.run([sys.executable, "-c", RUN, str(root), str(tmp_path / f"ix{int(seconds)}-{workers}"),
                        str(workers)], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 1])
def test_indexing_peak_memory_does_not_grow_with_the_recording(tmp_path, workers):
    short = peak_kb(tmp_path, 180.0, workers)
    long = peak_kb(tmp_path, 3 * 3600.0, workers)
    assert short["bad"] == [] and long["bad"] == []
    assert long["windows"] == 2159 and abs(long["seconds"] - 10800) < 1e-6  # 10 s windows, 5 s hop
    # Before: 3 h at 2 kHz held the decoded wave, the resampled wave and 2159 windows (~300 MB
    # over a ~150 MB interpreter); now only blocks of windows and their embeddings.
    assert long["kb"] <= 1.2 * short["kb"], (short, long)


@pytest.mark.parametrize("file_rate,seconds", [(22050, 37.3), (16000, 12.0), (48000, 3.0), (44100, 0.4)])
def test_streamed_windows_equal_those_of_the_whole_file(tmp_path, file_rate, seconds):
    rng = np.random.default_rng(file_rate)
    wave = (0.3 * rng.standard_normal((int(seconds * file_rate), 2))).astype(np.float32)
    sf.write(tmp_path / "a.wav", wave, file_rate, subtype="FLOAT")
    framing = Framing(16000, 2.0, 1.0)
    whole, _, _ = load_checked(tmp_path / "a.wav", 16000)
    windows, starts, ends = frame(whole, framing)
    stream = WindowStream(tmp_path / "a.wav", framing)
    got = [part for part in stream.windows(max_windows=5)]
    assert all(len(w) <= 5 for w, _, _ in got)
    w2 = [w for ws, _, _ in got for w in ws]
    assert len(w2) == len(windows)
    # soxr's stream and one-shot resampler run the same filter on the same samples: equal to
    # float32 rounding (observed 0.0; 1e-6 allows another soxr build's summation order).
    assert max(float(np.abs(a - b).max()) for a, b in zip(windows, w2)) < 1e-6
    np.testing.assert_allclose(np.concatenate([s for _, s, _ in got]), starts, atol=1e-9)
    np.testing.assert_allclose(np.concatenate([e for _, _, e in got]), ends, atol=1e-9)
    assert stream.duration == pytest.approx(len(whole) / 16000, abs=1e-9)
    assert (stream.sample_rate, stream.channels) == (file_rate, 2)
    # The envelope is kept at cell resolution (1 sample up to 65536 samples): exact here.
    assert np.abs(stream.peaks().astype(int) - peaks(whole).astype(int)).max() <= 1


def test_a_file_with_a_path_over_1024_characters_is_indexed(tmp_path, rel_model):
    from rel_util import build, tone

    deep = tmp_path / "s"
    for i in range(9):
        deep = deep / (f"{i}" * 120)
    deep.mkdir(parents=True)
    with open(deep / "tone.wav", "wb") as f:  # libsndfile cannot open the name itself
        sf.write(f, tone(440, 1.5), 16000, format="WAV")
    assert len(str(deep / "tone.wav")) > 1024
    report = build(tmp_path / "s", tmp_path / "ix", rel_model)
    assert report.bad == [] and len(report.encoded) == 1  # before: "corrupt (Supplied filename too long)"


from rel_util import rel_model  # noqa: E402,F401 - a fixture
