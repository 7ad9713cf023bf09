"""Issue 13: no input stops the indexer, killed runs leave nothing behind, one writer per index.

A generated bad-input corpus (every kind of broken, lying or oddly named file we know of) is
indexed in one `earshot index` run, which must exit 0, index every good file and name every bad
one with a reason, without a traceback.
"""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from conftest import SR, CountingEncoder, noise, tone, write_sounds
from earshot.errors import EarshotError
from earshot.index import Index, IndexConfig, index_folder
from earshot.index.decode import Limits, load_checked
from earshot.index.store import FAISS_FILE, LOCK_FILE, Store, index_lock

CFG = IndexConfig(window_s=2.0, hop_s=1.0, workers=0, batch_size=4)
WIDE = {"COLUMNS": "250", "NO_COLOR": "1"}


def wav_header(rate: int, channels: int, data_bytes: int, bits: int = 16) -> bytes:
    align = channels * bits // 8
    fmt = struct.pack("<HHIIHH", 1, channels, rate, (rate * align) & 0xFFFFFFFF, align, bits)
    return (b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt
            + b"data" + struct.pack("<I", data_bytes))


def flac_declaring(path: Path, total_samples: int) -> None:
    """A valid 1 s FLAC whose STREAMINFO claims ``total_samples`` (36-bit field)."""
    sf.write(path, tone(300, 1.0), SR, format="FLAC")
    b = bytearray(path.read_bytes())
    x = int.from_bytes(b[18:26], "big")
    x = (x & ~((1 << 36) - 1)) | total_samples
    b[18:26] = x.to_bytes(8, "big")
    path.write_bytes(bytes(b))


def write_corpus(root: Path, outside: Path) -> tuple[set[str], dict[str, str]]:
    """(good relative paths, bad relative path -> a phrase its reason must contain)."""
    (root / "sub").mkdir(parents=True)
    good = {"a.wav": tone(440, 1.5), "b.flac": tone(220, 2.5), "sub/c.wav": noise(1.2, 1),
            "odd [name] ü €.wav": tone(660, 1.0), "-dash.wav": noise(1.0, 2),
            "x.wav/inside.wav": tone(880, 1.0)}  # a directory named x.wav holds a good file
    (root / "x.wav").mkdir()
    for rel, wave in good.items():
        sf.write(root / rel, wave, SR)
    os.symlink(root / "a.wav", root / "sub" / "link-in.wav")  # inside the root: indexed
    good = set(good) | {"sub/link-in.wav"}

    bad: dict[str, str] = {}

    def put(rel: str, data: bytes, why: str) -> None:
        (root / rel).write_bytes(data)
        bad[rel] = why

    put("empty.wav", b"", "empty file")
    put("empty.flac", b"", "empty file")
    full = wav_header(SR, 1, 64000) + np.zeros(32000, "<i2").tobytes()
    (root / "truncated.wav").write_bytes(full[:20000])  # issue 21: what is there is indexed, with a note
    good.add("truncated.wav")
    sf.write(root / "whole.flac", noise(3.0, 3), SR)
    flac = (root / "whole.flac").read_bytes()
    (root / "whole.flac").unlink()
    put("truncated.flac", flac[: len(flac) // 3], "truncated")
    flac_declaring(root / "huge-frames.flac", (1 << 36) - 1)
    bad["huge-frames.flac"] = "the limit is 4:00:00"
    rng = np.random.default_rng(0)
    for suffix in (".wav", ".flac", ".ogg", ".mp3", ".aiff"):
        put(f"random{suffix}", rng.integers(0, 256, 4000, dtype=np.uint8).tobytes(), "cannot decode")
    put("text.mp3", b"this is a text file, not an mp3\n" * 60, "cannot decode")
    put("zero-hz.wav", wav_header(0, 1, 3200) + b"\0" * 3200, "sample rate 0 Hz in header")
    put("2g-hz.wav", wav_header(2**31, 1, 3200) + b"\0" * 3200, "sample rate 2147483648 Hz in header")
    put("1000-ch.wav", wav_header(SR, 1000, 4000) + b"\0" * 4000, "1000 channels in header")
    sf.write(root / "nan.wav", np.array([0.1, np.nan] * 4000, np.float32), SR, subtype="FLOAT")
    sf.write(root / "inf.wav", np.array([0.1, np.inf] * 4000, np.float32), SR, subtype="FLOAT")
    bad["nan.wav"] = bad["inf.wav"] = "non-finite"
    with open(os.path.join(os.fsencode(root), b"caf\xe9 latin1.wav"), "wb") as f:
        sf.write(f, tone(500, 1.0), SR, format="WAV")
    bad["caf\\xe9 latin1.wav"] = "not valid UTF-8"
    os.symlink("loop.wav", root / "loop.wav")
    os.symlink("loop-b.wav", root / "loop-a.wav")
    os.symlink("loop-a.wav", root / "loop-b.wav")
    bad["loop.wav"] = bad["loop-a.wav"] = bad["loop-b.wav"] = "symbolic links"
    outside.mkdir(parents=True, exist_ok=True)
    sf.write(outside / "secret.wav", tone(100, 1.0), SR)
    os.symlink(outside / "secret.wav", root / "sub" / "escape.wav")
    bad["sub/escape.wav"] = "outside the indexed folder"
    put("notes.txt", b"recorded on a Tuesday", "unsupported")
    os.mkfifo(root / "pipe.wav")  # opening it would block for ever
    bad["pipe.wav"] = "not a regular file"
    return good, bad


@pytest.fixture(scope="module")
def app():
    from earshot.app import cli

    cli._register()
    return cli.app


def test_one_index_run_over_the_bad_corpus_indexes_the_good_and_names_the_bad(tmp_path, app, model_dir):
    good, bad = write_corpus(tmp_path / "s", tmp_path / "elsewhere")
    out = tmp_path / "ix"
    r = CliRunner().invoke(app, ["index", str(tmp_path / "s"), "--model", str(model_dir), "--out", str(out),
                                 "--window", "2", "--hop", "1", "--workers", "2", "--batch-size", "4"], env=WIDE)
    assert r.exit_code == 0, r.output
    assert r.exception is None and "Traceback" not in r.output
    store = Store.open(out)
    assert set(store.files()) == good
    reasons = {p: why for p, (_, _, why) in store.bad().items()}
    assert set(reasons) == set(bad), set(reasons) ^ set(bad)
    for rel, phrase in bad.items():
        assert phrase in reasons[rel], (rel, reasons[rel])
        assert str(tmp_path) not in reasons[rel] and "Error opening" not in reasons[rel]
    assert f"skipped {len(bad)} file(s)" in r.output and "1000-ch.wav" in r.output
    assert "note: truncated.wav: truncated WAV: header declares 64000 bytes of audio, only 19956" in r.output
    store.close()
    # A rerun decodes nothing new and still names every bad file.
    again = CliRunner().invoke(app, ["index", str(tmp_path / "s"), "--model", str(model_dir), "--out", str(out),
                                     "--window", "2", "--hop", "1", "--workers", "0"], env=WIDE)
    assert again.exit_code == 0 and f"skipped {len(bad)} file(s)" in again.output


def test_decoder_chatter_on_stderr_is_captured_into_the_reason(tmp_path, capfd):
    from earshot.index.decode import Framing, decode

    (tmp_path / "text.mp3").write_bytes(b"not an mp3 at all\n" * 100)
    d = decode(str(tmp_path / "text.mp3"), "text.mp3", 1800, 0, None, Framing(SR, 2.0, 1.0))
    assert d.error is not None and d.error.startswith("cannot decode")
    _, err = capfd.readouterr()
    assert "Illegal Audio-MPEG-Header" not in err  # mpg123's notes did not reach the terminal
    assert "decoder said: Note: Illegal Audio-MPEG-Header" in d.error


def test_header_limits_are_checked_before_decoding_and_are_configurable(tmp_path):
    flac_declaring(tmp_path / "claims.flac", 200_000_000)  # 3:28:20 at 16 kHz, truly 1 s
    with pytest.raises(EarshotError, match="the limit is 0:10:00"):
        load_checked(tmp_path / "claims.flac", SR, Limits(max_duration_s=600))
    # Within a looser limit the header is believed, and the lie is caught while decoding.
    with pytest.raises(EarshotError, match="cannot decode: corrupt or truncated data"):
        load_checked(tmp_path / "claims.flac", SR, Limits())
    sf.write(tmp_path / "long.wav", tone(200, 3.0), SR)
    with pytest.raises(EarshotError, match="header declares 0:00:03"):
        load_checked(tmp_path / "long.wav", SR, Limits(max_duration_s=2.0))
    wave, rate, ch = load_checked(tmp_path / "long.wav", SR, Limits(max_duration_s=4.0))
    assert wave.shape == (3 * SR,) and (rate, ch) == (SR, 1)
    (tmp_path / "48.wav").write_bytes(wav_header(48, 1, 96) + b"\0" * 96)
    with pytest.raises(EarshotError, match=r"48 Hz in header \(expected 1 kHz to 768 kHz\)"):
        load_checked(tmp_path / "48.wav", SR)


def test_symlinks_outside_the_folder_are_indexed_only_when_asked(tmp_path, encoder):
    (tmp_path / "s").mkdir()
    sf.write(tmp_path / "s" / "in.wav", tone(300, 1.0), SR)
    sf.write(tmp_path / "away.wav", tone(600, 1.0), SR)
    os.symlink(tmp_path / "away.wav", tmp_path / "s" / "out.wav")
    refused = index_folder(tmp_path / "s", encoder, tmp_path / "a", CFG)
    assert refused.encoded == ["in.wav"] and dict(refused.bad)["out.wav"].startswith("symbolic link")
    from dataclasses import replace

    allowed = index_folder(tmp_path / "s", encoder, tmp_path / "b", replace(CFG, links_outside=True))
    assert sorted(allowed.encoded) == ["in.wav", "out.wav"] and allowed.bad == []


def test_a_second_indexer_on_the_same_out_is_refused_and_stale_temp_files_go(tmp_path, encoder):
    sf.write((tmp_path / "s").mkdir() or tmp_path / "s" / "a.wav", tone(300, 1.0), SR)
    out = tmp_path / "ix"
    out.mkdir()
    stale = out / f".{FAISS_FILE}.abc123.tmp"
    stale.write_bytes(b"half a file from a killed run")
    with index_lock(out):
        with pytest.raises(EarshotError, match=rf"another `earshot index` \(pid {os.getpid()}\) is writing"):
            index_folder(tmp_path / "s", encoder, out, CFG)
    assert stale.exists()  # the refused run touched nothing
    index_folder(tmp_path / "s", encoder, out, CFG)
    assert not stale.exists() and (out / LOCK_FILE).exists()
    with pytest.raises(EarshotError, match="must be a folder"):
        index_folder(tmp_path / "s", encoder, tmp_path / "s" / "a.wav", CFG)


def test_an_interrupted_index_says_partial_and_an_empty_one_is_an_error(tmp_path, encoder):
    write_sounds(tmp_path / "s")
    with pytest.raises(KeyboardInterrupt):
        index_folder(tmp_path / "s", CountingEncoder(encoder, fail_after=1), tmp_path / "ix", CFG)
    with Index.open(tmp_path / "ix", encoder) as ix:
        n = len(ix)
        assert ix.partial() is not None and ix.partial().startswith(f"partial: {n} of 6 files")
        assert len(ix.search("anything", k=10)) == n
    index_folder(tmp_path / "s", encoder, tmp_path / "ix", CFG)
    with Index.open(tmp_path / "ix", encoder) as ix:
        assert ix.partial() is None
    (tmp_path / "none").mkdir()
    index_folder(tmp_path / "none", encoder, tmp_path / "empty", CFG)
    with Index.open(tmp_path / "empty", encoder) as ix, pytest.raises(EarshotError, match="index is empty"):
        ix.search("a dog", k=3)


def test_search_command_reports_a_partial_index(tmp_path, app, model_dir, encoder):

    write_sounds(tmp_path / "s")
    with pytest.raises(KeyboardInterrupt):
        index_folder(tmp_path / "s", CountingEncoder(encoder, fail_after=1), tmp_path / "ix", CFG)
    r = CliRunner().invoke(app, ["search", str(tmp_path / "ix"), "a tone", "--json"], env=WIDE)
    assert r.exit_code == 0, r.output
    assert "partial: " in r.output and " of 6 files" in r.output


def _children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(d.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to find the worker processes")
def test_no_decode_worker_outlives_a_killed_indexer(tmp_path, model_dir):
    (tmp_path / "s").mkdir()
    for i in range(12):
        sf.write(tmp_path / "s" / f"n{i}.wav", noise(1.0, i), SR)
    script = textwrap.dedent(f"""
        import time
        from earshot.index import IndexConfig, index_folder, open_encoder
        enc = open_encoder({str(model_dir)!r})
        class Stuck:
            model_id, model_path = enc.model_id, enc.model_path
            sample_rate, dim, normalize = enc.sample_rate, enc.dim, enc.normalize
            def embed_audio(self, waves, batch_size=16):
                print("encoding", flush=True)
                time.sleep(60)
        index_folder({str(tmp_path / "s")!r}, Stuck(), {str(tmp_path / "ix")!r},
                     IndexConfig(window_s=2.0, hop_s=1.0, workers=2, batch_size=2))
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert proc.stdout.readline().strip() == "encoding"
        workers = _children(proc.pid)
        assert len(workers) >= 2, workers
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 5
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    survivors = [w for w in workers if _alive(w)]
    for w in survivors:  # never leave them behind, even when the test fails
        os.kill(w, signal.SIGKILL)
    assert not survivors, "decode workers outlived the indexer"
