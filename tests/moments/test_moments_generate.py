"""Clotho-Moment-style generator: windows hold their events, levels as drawn, seeded, resumable."""

import json

import numpy as np
import pytest

from earshot.audio.io import audio_info, load_audio, save_audio
from earshot.data.readers import read_clotho
from earshot.errors import ConfigError, DataError
from earshot.moments.data import read_moments
from earshot.moments.generate import MIN_EVENT_S, MomentGenConfig, _render, event_level, generate_moments

CFG = MomentGenConfig(recordings=4, duration_s=20.0, max_events=3, sample_rate=8000, seed=5)


def _gen(tiny_corpus, out, cfg=CFG, **kw):
    return generate_moments(out, tiny_corpus / "clotho_captions_development.csv", config=cfg, **kw)


def test_windows_hold_the_events(tiny_corpus, tmp_path):
    s = _gen(tiny_corpus, tmp_path)
    assert s.generated == 4 and s.queries >= 4
    recs = read_moments(tmp_path / "moments.jsonl", tmp_path / "audio")  # the reader accepts it
    table = read_clotho(tiny_corpus / "clotho_captions_development.csv", tiny_corpus / "development")
    sr = CFG.sample_rate
    for i, rec in enumerate(recs):
        mix, rows, _, fg = _render(i, table, tiny_corpus / "development", [], CFG)
        written = load_audio(rec.audio, None)
        assert np.max(np.abs(written - mix)) < 2 / 32768  # 16-bit PCM of the same rendering
        inside = np.zeros(len(fg), dtype=bool)
        for q in rec.queries:
            (a, b), = q.windows
            assert -5.0 <= q.fg_db <= 5.0
            seg = fg[int(round(a * sr)):int(round(b * sr))]
            # windows are written to the millisecond: allow 1 ms either side
            inside[max(0, int((a - 0.001) * sr)):int((b + 0.001) * sr) + 1] = True
            # the event's edges were trimmed to where it sounds: both tenths of the window hold
            # foreground energy (not silence padding), unless widened to the 0.5 s minimum
            tenth = max(1, len(seg) // 10)
            if b - a <= MIN_EVENT_S + 0.02:
                continue
            assert np.mean(seg[:tenth] ** 2) > 1e-4 * np.mean(seg ** 2)
            assert np.mean(seg[-tenth:] ** 2) > 1e-4 * np.mean(seg ** 2)
        # all foreground energy is inside the annotated windows, none outside
        assert np.sum(fg[inside] ** 2) > 0
        assert np.sum(fg[~inside] ** 2) <= 1e-9 * np.sum(fg[inside] ** 2)
        # non-overlapping by default
        ws = sorted(q.windows[0] for q in rec.queries)
        assert all(ws[k][1] <= ws[k + 1][0] + 1e-9 for k in range(len(ws) - 1))


def test_level_is_fg_db_over_background(tiny_corpus, tmp_path):
    # fg_dB = 20 log10(active RMS of the event / background RMS over its window)
    table = read_clotho(tiny_corpus / "clotho_captions_development.csv", tiny_corpus / "development")
    sr = CFG.sample_rate
    for i in range(3):
        mix, rows, _, fg = _render(i, table, tiny_corpus / "development", [], CFG)
        bg = mix.astype(np.float64) - fg  # both carry the same peak scaling
        for r in rows:
            a, b = int(round(r["start"] * sr)), int(round(r["end"] * sr))
            level = 20 * np.log10(event_level(fg[a:b], sr) / np.sqrt(np.mean(bg[a:b] ** 2)))
            assert level == pytest.approx(r["fg_dB"], abs=0.05)  # float32 rounding of the mix


def test_seeded_and_resumable(tiny_corpus, tmp_path):
    _gen(tiny_corpus, tmp_path / "a")
    _gen(tiny_corpus, tmp_path / "b")
    assert (tmp_path / "a/moments.jsonl").read_text() == (tmp_path / "b/moments.jsonl").read_text()
    wav = sorted((tmp_path / "a/audio").iterdir())[1]
    assert wav.read_bytes() == (tmp_path / "b/audio" / wav.name).read_bytes()
    wav.unlink()  # a killed run: one recording missing
    s = _gen(tiny_corpus, tmp_path / "a")
    assert (s.generated, s.skipped) == (1, 3)
    assert wav.read_bytes() == (tmp_path / "b/audio" / wav.name).read_bytes()
    with pytest.raises(ConfigError, match="other settings"):
        _gen(tiny_corpus, tmp_path / "a", MomentGenConfig(recordings=4, duration_s=20.0, seed=6,
                                                          sample_rate=8000))


def test_overlap_and_background_folder(tiny_corpus, tmp_path):
    bgdir = tmp_path / "bg"
    rng = np.random.default_rng(0)
    save_audio(bgdir / "street.wav", (0.05 * rng.standard_normal(8000 * 7)).astype(np.float32), 8000)
    cfg = MomentGenConfig(recordings=3, duration_s=12.0, min_events=3, max_events=3,
                          overlap=True, sample_rate=8000, seed=1)
    _gen(tiny_corpus, tmp_path / "o", cfg, backgrounds=bgdir)
    rows = [json.loads(x) for x in (tmp_path / "o/moments.jsonl").read_text().splitlines()]
    assert {r["background"] for r in rows} == {"street.wav"}
    assert len(rows) == 9
    assert audio_info(tmp_path / "o/audio" / f"{rows[0]['vid']}.wav").duration == pytest.approx(12.0)
    with pytest.raises(DataError, match="background folder"):
        _gen(tiny_corpus, tmp_path / "p", cfg, backgrounds=tmp_path / "nope")


def test_cli_data_moments(tiny_corpus, tmp_path):
    from typer.testing import CliRunner

    from earshot.app import cli

    cli._register()
    args = ["data", "moments", str(tiny_corpus / "clotho_captions_development.csv"),
            "--out", str(tmp_path / "m"), "--recordings", "2", "--duration", "10",
            "--sample-rate", "8000", "--seed", "5"]
    r = CliRunner().invoke(cli.app, args)
    assert r.exit_code == 0, r.output
    assert "in 2 recordings of 10 s (written 2, already present 0" in r.output
    r = CliRunner().invoke(cli.app, args)
    assert "written 0, already present 2" in r.output
    assert len(read_moments(tmp_path / "m/moments.jsonl", tmp_path / "m/audio")) == 2
