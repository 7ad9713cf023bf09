"""Readers: names survive exactly, errors name file and line, real files load with known counts."""

import json
from pathlib import Path

import pytest

from earshot.data.readers import read_audiocaps, read_clotho, read_pairs, read_table, write_clotho
from earshot.errors import ConfigError, DataError

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
CLOTHO = {"development": (3839, 19195), "validation": (1045, 5225), "evaluation": (1045, 5225)}
AUDIOCAPS = {"val": (495, 2475), "test": (975, 4875)}


def _shared(*parts: str) -> Path:
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"{p} not available")
    return p


def _write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8"))
    return path


# A record spanning two lines (line 3-4) shifts later line numbers: errors must count them.
CLOTHO_TEXT = (
    "file_name,caption_1,caption_2\n"
    '" leading, comma ""quoted"".wav",one,two\n'
    'plain.wav,"first line\nsecond line",b\n'
    "last.wav,x,y\n"
)


def test_clotho_keeps_names_and_captions_exactly(tmp_path):
    t = read_clotho(_write(tmp_path / "c.csv", CLOTHO_TEXT))
    assert [c.clip_id for c in t] == [' leading, comma "quoted".wav', "plain.wav", "last.wav"]
    assert t[0].audio == Path(' leading, comma "quoted".wav')
    assert t[1].captions == ("first line\nsecond line", "b")
    assert [c.meta["line"] for c in t] == [2, 3, 5]
    assert t.num_captions == 6 and t.report.ok


def test_clotho_write_read_round_trip(tmp_path):
    src = _write(tmp_path / "c.csv", CLOTHO_TEXT)
    t = read_clotho(src)
    write_clotho(t, tmp_path / "out.csv")
    back = read_clotho(tmp_path / "out.csv")
    assert [(c.clip_id, c.captions) for c in back] == [(c.clip_id, c.captions) for c in t]
    assert (tmp_path / "out.csv").read_bytes() == src.read_bytes()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_write_clotho_needs_equal_caption_counts(tmp_path):
    from earshot.data.records import AudioCaptions, CaptionTable

    t = CaptionTable([AudioCaptions(Path("a.wav"), ("x",), "a"),
                      AudioCaptions(Path("b.wav"), ("x", "y"), "b")])
    with pytest.raises(DataError, match=r"\[1, 2\]"):
        write_clotho(t, tmp_path / "out.csv")
    assert not (tmp_path / "out.csv").exists()


def test_clotho_errors_name_file_columns_and_lines(tmp_path):
    p = _write(tmp_path / "cols.csv", "file_name,caption_2\nx.wav,a\n")
    with pytest.raises(DataError, match=r"cols\.csv.*missing column.*caption_1"):
        read_clotho(p)
    p = _write(tmp_path / "gap.csv", "file_name,caption_1,caption_3\nx.wav,a,b\n")
    with pytest.raises(DataError, match=r"gap\.csv.*caption_2"):
        read_clotho(p)
    p = _write(tmp_path / "empty.csv", CLOTHO_TEXT + "blank.wav,ok,  \n")
    with pytest.raises(DataError, match=r"empty\.csv: line 6: empty caption_2"):
        read_clotho(p)
    p = _write(tmp_path / "twice.csv", CLOTHO_TEXT + "plain.wav,c,d\n")
    with pytest.raises(DataError, match=r"lines 3 and 6.*plain\.wav"):
        read_clotho(p)
    p = _write(tmp_path / "short.csv", "file_name,caption_1,caption_2\nx.wav,a\n")
    with pytest.raises(DataError, match=r"short\.csv: line 2: 2 fields"):
        read_clotho(p)


def test_clotho_duplicate_captions_error_or_report(tmp_path):
    p = _write(tmp_path / "dup.csv", CLOTHO_TEXT + "again.wav,same,same\n")
    with pytest.raises(DataError, match=r"lines 6, 6.*again\.wav.*'same'"):
        read_clotho(p)
    t = read_clotho(p, duplicates="report")
    assert t[3].captions == ("same", "same")  # kept, not dropped
    (d,) = t.report.duplicates
    assert (d.clip_id, d.caption, d.lines, d.source) == ("again.wav", "same", (6, 6), str(p))


def test_unreadable_files_are_named(tmp_path):
    with pytest.raises(DataError, match="nope.csv: no such caption file"):
        read_clotho(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="is a directory"):
        read_clotho(tmp_path)
    bad = tmp_path / "latin1.csv"
    bad.write_bytes("file_name,caption_1\ncaf\xe9.wav,x\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1\.csv: not UTF-8"):
        read_clotho(bad)
    with pytest.raises(DataError, match=r"e\.csv: empty file"):
        read_clotho(_write(tmp_path / "e.csv", ""))


def test_missing_audio_is_raised_or_reported_never_dropped(tmp_path):
    p = _write(tmp_path / "c.csv", CLOTHO_TEXT)
    audio = tmp_path / "audio"
    audio.mkdir()
    (audio / "plain.wav").write_bytes(b"RIFF")
    with pytest.raises(DataError) as err:
        read_clotho(p, audio_dir=audio)
    assert "2 of 3" in str(err.value)
    assert 'leading, comma "quoted".wav' in str(err.value) and "last.wav" in str(err.value)
    t = read_clotho(p, audio_dir=audio, missing="report")
    assert t.num_captions == 6
    assert [m.clip_id for m in t.report.audio.missing] == [
        ' leading, comma "quoted".wav', "last.wav"]
    assert t[1].audio == audio / "plain.wav"  # paths now resolved under audio_dir


AUDIOCAPS_TEXT = (
    "audiocap_id,youtube_id,start_time,caption\n"
    "1,yA,30,dog barks\n"
    '2,yB,0,"rain, then thunder"\n'
    "3,yA,30,a dog barks twice\n"
    "4,yA,40,another segment\n"
    "5,yA,30,dog barks\n"
)


def test_audiocaps_groups_rows_per_clip_in_file_order(tmp_path):
    t = read_audiocaps(_write(tmp_path / "a.csv", AUDIOCAPS_TEXT))
    assert [c.clip_id for c in t] == ["yA_30", "yB_0", "yA_40"]
    assert t[0].captions == ("dog barks", "a dog barks twice", "dog barks")
    assert t[0].meta["audiocap_ids"] == ("1", "3", "5")
    assert t[0].audio == Path("yA_30.wav") and t[1].captions == ("rain, then thunder",)
    (d,) = t.report.duplicates  # reported by default, lines as seen in the file
    assert (d.clip_id, d.lines) == ("yA_30", (2, 6))
    with pytest.raises(DataError, match=r"lines 2, 6"):
        read_audiocaps(tmp_path / "a.csv", duplicates="error")


def test_audiocaps_audio_name_rule(tmp_path):
    p = _write(tmp_path / "a.csv", AUDIOCAPS_TEXT)
    t = read_audiocaps(p, audio_name="Y{youtube_id}.flac")
    assert t[1].audio == Path("YyB.flac")
    t = read_audiocaps(p, audio_name=lambda row: f"{row['audiocap_id']}.wav")
    assert [c.audio.name for c in t] == ["1.wav", "2.wav", "4.wav"]  # first row of each clip
    with pytest.raises(DataError, match="column 'ytid'"):
        read_audiocaps(p, audio_name="{ytid}.wav")


def test_audiocaps_errors(tmp_path):
    with pytest.raises(DataError, match=r"missing column.*'start_time'"):
        read_audiocaps(_write(tmp_path / "m.csv", "audiocap_id,youtube_id,caption\n1,y,c\n"))
    with pytest.raises(DataError, match=r"lines 2 and 3: audiocap_id '1'"):
        read_audiocaps(_write(tmp_path / "d.csv", AUDIOCAPS_TEXT.splitlines()[0]
                              + "\n1,y,0,a\n1,y,0,b\n"))
    with pytest.raises(DataError, match=r"line 3: empty caption"):
        read_audiocaps(_write(tmp_path / "e.csv", AUDIOCAPS_TEXT.splitlines()[0]
                              + "\n1,y,0,a\n2,y,0,\n"))


def test_pairs_csv_groups_resolves_and_keeps_extras(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("sub/x.wav", "y.wav"):
        (tmp_path / name).write_bytes(b"RIFF")
    elsewhere = tmp_path / "abs.wav"
    elsewhere.write_bytes(b"RIFF")
    p = _write(tmp_path / "pairs.csv",
               f"audio,caption,speaker\nsub/x.wav,a cat,ann\ny.wav,a dog,bob\n"
               f"sub/x.wav,cat meows,cy\n{elsewhere},loud,dan\n")
    t = read_pairs(p)
    assert [c.clip_id for c in t] == ["sub/x.wav", "y.wav", str(elsewhere)]
    assert t[0].audio == tmp_path / "sub" / "x.wav" and t[2].audio == elsewhere
    assert t[0].captions == ("a cat", "cat meows")
    assert t[0].meta["speaker"] == ("ann", "cy") and t[0].meta["lines"] == (2, 4)


def test_pairs_jsonl_and_its_errors(tmp_path):
    (tmp_path / "x.wav").write_bytes(b"RIFF")
    lines = [{"audio": "x.wav", "caption": "one", "rating": 3},
             {"audio": "x.wav", "caption": "two"}]
    p = _write(tmp_path / "p.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n\n")
    t = read_pairs(p)
    assert t[0].captions == ("one", "two") and t[0].meta["rating"] == (3, None)
    bad = _write(tmp_path / "b.jsonl", json.dumps(lines[0]) + "\n{oops\n")
    with pytest.raises(DataError, match=r"b\.jsonl: line 2: not valid JSON"):
        read_pairs(bad)
    bad = _write(tmp_path / "k.jsonl", '{"audio": "x.wav"}\n')
    with pytest.raises(DataError, match=r"line 1: missing key.*caption"):
        read_pairs(bad)
    with pytest.raises(DataError, match="must end in .csv or .jsonl"):
        read_pairs(_write(tmp_path / "p.txt", "audio,caption\n"))
    with pytest.raises(DataError, match=r"1 of 1 audio files missing"):
        read_pairs(_write(tmp_path / "m.jsonl", '{"audio": "gone.wav", "caption": "c"}\n'))
    with pytest.raises(DataError, match=r"lines 1, 2"):
        read_pairs(_write(tmp_path / "d.jsonl", '{"audio": "x.wav", "caption": "c"}\n' * 2))


def test_read_table_dispatches_on_the_named_format(tmp_path):
    p = _write(tmp_path / "looks_like_audiocaps.csv", CLOTHO_TEXT)
    t = read_table(p, format="clotho")  # the name of the file plays no part
    assert [c.clip_id for c in t] == [c.clip_id for c in read_clotho(p)]
    with pytest.raises(ConfigError, match="unknown caption table format 'clothoo'"):
        read_table(p, format="clothoo")  # type: ignore[arg-type]


@pytest.mark.shared
@pytest.mark.parametrize("split", sorted(CLOTHO))
def test_real_clotho_counts_and_byte_exact_round_trip(split, tmp_path):
    p = _shared("clotho", f"clotho_captions_{split}.csv")
    t = read_clotho(p)
    assert (len(t), t.num_captions) == CLOTHO[split]
    assert any(c.clip_id != c.clip_id.strip() or "," in c.clip_id for c in t)
    write_clotho(t, tmp_path / "out.csv")
    assert (tmp_path / "out.csv").read_bytes() == p.read_bytes()


@pytest.mark.shared
@pytest.mark.parametrize("split", sorted(AUDIOCAPS))
def test_real_audiocaps_counts_and_duplicate_lines(split):
    p = _shared("audiocaps", f"{split}.csv")
    t = read_table(p, format="audiocaps")
    assert (len(t), t.num_captions) == AUDIOCAPS[split]
    assert all(len(c.captions) == 5 for c in t)
    # The official files repeat some captions: each reported line really holds that caption.
    lines = p.read_text(encoding="utf-8").splitlines()
    assert t.report.duplicates
    for d in t.report.duplicates:
        for n in d.lines:
            assert d.caption in lines[n - 1] and d.clip_id.rsplit("_", 1)[0] in lines[n - 1]


@pytest.mark.shared
def test_real_audio_sample_with_leading_space_is_found(tmp_path):
    folder = _shared("audio_samples")
    p = _write(tmp_path / "c.csv", "file_name,caption_1\n Ambience Birds.wav,birds sing\n")
    t = read_clotho(p, audio_dir=folder)  # would raise if the space were stripped
    assert t[0].audio == folder / " Ambience Birds.wav" and t.report.audio.ok


# ---- WavCaps and exclusion lists (DCASE 2025 baseline) ------------------------------------------


def _wavcaps(tmp_path, data) -> Path:
    return _write(tmp_path / "fsd_final.json", json.dumps({"num_captions_per_audio": 1, "data": data}))


def test_wavcaps_reads_ids_captions_and_audio_names(tmp_path):
    from earshot.data.readers import read_wavcaps

    p = _wavcaps(tmp_path, [
        {"id": "180913", "caption": "A dog barks.", "duration": 3.5, "tags": ["dog"]},
        {"id": "Y7fmOlUlwoNg.wav", "caption": "Rain falls on a roof."},  # AudioSet_SL style id
    ])
    t = read_table(p, format="wavcaps")
    assert [c.clip_id for c in t] == ["180913", "Y7fmOlUlwoNg"]
    assert [c.audio for c in t] == [Path("180913.flac"), Path("Y7fmOlUlwoNg.flac")]
    assert t.captions() == ["A dog barks.", "Rain falls on a roof."]
    assert t[0].meta["duration"] == 3.5 and t[0].meta["tags"] == ["dog"] and t[1].meta["index"] == 1
    assert read_wavcaps(p, audio_ext=".mp3")[0].audio == Path("180913.mp3")
    (tmp_path / "audio").mkdir()
    (tmp_path / "audio" / "180913.flac").write_bytes(b"")
    with pytest.raises(DataError, match="Y7fmOlUlwoNg"):
        read_wavcaps(p, audio_dir=tmp_path / "audio")


@pytest.mark.parametrize("data,match", [
    ({"items": []}, "'data' list"),
    ({"data": [{"id": "1"}]}, r"data\[0\]: 'caption'"),
    ({"data": [{"id": "1", "caption": "a"}, {"id": "1", "caption": "b"}]}, r"data\[1\]: id '1' already at data\[0\]"),
    ({"data": ["x"]}, r"data\[0\]: expected an object"),
])
def test_wavcaps_errors_name_the_entry(tmp_path, data, match):
    p = _write(tmp_path / "bad.json", json.dumps(data))
    with pytest.raises(DataError, match=match):
        read_table(p, format="wavcaps")


def test_exclusion_list_is_applied_when_read_and_counted(tmp_path, capsys):
    p = _wavcaps(tmp_path, [{"id": str(i), "caption": f"sound {i}"} for i in (354184, 265492, 7, 8)])
    ex = _write(tmp_path / "excluded.csv", "sound_id\n354184\n265492\n999\n")
    t = read_table(p, format="wavcaps", exclude=ex)
    assert [c.clip_id for c in t] == ["7", "8"] and t.num_captions == 2
    assert "excluded 2 clips (2 captions)" in capsys.readouterr().err
    plain = _write(tmp_path / "ids.txt", "# freesound ids\n7\n")
    assert [c.clip_id for c in read_table(p, format="wavcaps", exclude=plain)] == ["354184", "265492", "8"]
    # Clotho names match by the part before the first dot, as the baseline does
    c = read_table(_write(tmp_path / "c.csv", "file_name,caption_1\n7.wav,a\nx.wav,b\n"), format="clotho",
                   exclude=plain)
    assert [x.clip_id for x in c] == ["x.wav"]


