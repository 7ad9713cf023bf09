"""Issue 21 §5: two crafted WAVs that were indexed as if sound.

``bits_7.wav`` declares 7 bits per PCM sample (no such format): refused, naming the depth.
A data chunk declaring more bytes than the file holds (0xFFFFFFFF included) is indexed for what
is there, and the report says so instead of silently passing it off as whole.
"""

from __future__ import annotations

import struct

import numpy as np

from rel_util import SR, build, rel_model  # noqa: F401 - rel_model is a fixture


def wav(rate: int, bits: int, data_size: int, payload: bytes, tag: int = 1) -> bytes:
    align = max(1, bits // 8)
    fmt = struct.pack("<HHIIHH", tag, 1, rate, rate * align, align, bits)
    return (b"RIFF" + struct.pack("<I", 36 + len(payload)) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt
            + b"data" + struct.pack("<I", data_size) + payload)


def test_impossible_bit_depths_are_refused_and_oversized_data_chunks_indexed_with_a_note(tmp_path, rel_model):
    root = tmp_path / "s"
    root.mkdir()
    pcm = (0.3 * 32767 * np.sin(np.arange(SR) * 2 * np.pi * 440 / SR)).astype("<i2").tobytes()  # 1 s
    (root / "bits_7.wav").write_bytes(wav(SR, 7, len(pcm), pcm))
    (root / "float_24.wav").write_bytes(wav(SR, 24, len(pcm), pcm, tag=3))
    (root / "unknown_size.wav").write_bytes(wav(SR, 16, 0xFFFFFFFF, pcm))
    (root / "cut.wav").write_bytes(wav(SR, 16, 4 * len(pcm), pcm))  # declares 4 s, holds 1 s
    report = build(root, tmp_path / "ix", rel_model)
    bad = dict(report.bad)
    assert set(bad) == {"bits_7.wav", "float_24.wav"}
    assert "impossible bit depth in header: 7 bits per sample for PCM WAV" in bad["bits_7.wav"]
    assert "24 bits per sample for float WAV" in bad["float_24.wav"]
    assert sorted(report.encoded) == ["cut.wav", "unknown_size.wav"]
    notes = dict(report.notes)
    assert "0xffffffff in header" in notes["unknown_size.wav"] and f"{len(pcm)} bytes present" in notes[
        "unknown_size.wav"]
    assert f"declares {4 * len(pcm)} bytes of audio, only {len(pcm)} are present" in notes["cut.wav"]
    assert abs(report.audio_s - 2.0) < 1e-3  # 1 s each: what is there, not what the headers claim
