"""read_moments / read_predictions: the lighthouse layout, every problem named by file and line."""

import json

import numpy as np
import pytest

from earshot.audio.io import save_audio
from earshot.errors import DataError
from earshot.moments.data import read_annotations, read_moments, read_predictions


def _write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def _row(qid, vid="rec", dur=4.0, wins=((0.5, 1.5),), **kw):
    return {"qid": qid, "query": f"text {qid}", "vid": vid, "duration": dur,
            "relevant_windows": [list(w) for w in wins], **kw}


@pytest.fixture
def audio(tmp_path):
    d = tmp_path / "audio"
    save_audio(d / "rec.wav", np.zeros(4000, np.float32), 1000)  # 4.0 s
    save_audio(d / "other.flac", np.zeros(2000, np.float32), 1000)  # 2.0 s
    return d


def test_reads_recordings_and_extensions(tmp_path, audio):
    gt = _write(tmp_path / "gt.jsonl", [_row("a"), _row("b", wins=((0, 1), (2, 4))),
                                        _row(7, vid="other", dur=2.0, fg_dB=-1.5)])
    recs = read_moments(gt, audio)
    assert [r.vid for r in recs] == ["rec", "other"]
    assert recs[1].audio.name == "other.flac" and recs[1].queries[0].fg_db == -1.5
    assert recs[0].queries[1].windows == ((0.0, 1.0), (2.0, 4.0))
    assert recs[1].queries[0].qid == 7 and recs[1].queries[0].line == 3
    with pytest.raises(DataError, match=r"gt.jsonl:3: no audio for 'other'.*tried \.wav"):
        read_moments(gt, audio, extensions=(".wav",))


@pytest.mark.parametrize("row, message", [
    (_row("x", wins=((2.0, 1.0),)), r"gt.jsonl:2: relevant_windows\[0\].*start must be before end"),
    (_row("x", wins=((1.0, 7.0),)), r"gt.jsonl:2: relevant_windows\[0\].*outside the recording \[0, 4\]"),
    (_row("x", wins=((-1.0, 1.0),)), r"gt.jsonl:2: .*starts before 0"),
    (_row("x", wins=()), r"gt.jsonl:2: relevant_windows must be a non-empty list"),
    (_row("a"), r"gt.jsonl:2: qid 'a' already used on line 1"),
    ({"qid": "x", "vid": "rec", "duration": 4, "relevant_windows": [[0, 1]]}, r"gt.jsonl:2: missing field 'query'"),
    ("{not json", r"gt.jsonl:2: not valid JSON"),
])
def test_bad_annotations_are_named(tmp_path, row, message):
    gt = _write(tmp_path / "gt.jsonl", [_row("a"), row])
    with pytest.raises(DataError, match=message):
        read_annotations(gt)


def test_late_window_within_margin_is_kept(tmp_path):
    # CASTELLA ends windows up to 2 s after its whole-second durations; kept as written.
    gt = _write(tmp_path / "gt.jsonl", [_row("a", wins=((3.0, 5.5),))])
    assert read_annotations(gt)[0].windows == ((3.0, 5.5),)
    with pytest.raises(DataError, match="outside the recording"):
        read_annotations(gt, window_tolerance_s=1.0)


def test_audio_duration_must_agree(tmp_path, audio):
    gt = _write(tmp_path / "gt.jsonl", [_row("a", dur=6.0, wins=((0, 1),)), _row("b", vid="gone")])
    with pytest.raises(DataError) as e:
        read_moments(gt, audio)
    msg = str(e.value)  # both problems reported together, each with its line
    assert "2 problem(s)" in msg
    assert "gt.jsonl:1: " in msg and "lasts 4.000 s but the annotation says 6 s" in msg
    assert "gt.jsonl:2: no audio for 'gone'" in msg


def test_predictions(tmp_path):
    p = _write(tmp_path / "p.jsonl", [{"qid": 1, "pred_relevant_windows": [[0, 1, 0.5], [2, 3, 0.1]]}])
    assert read_predictions(p) == {"1": [[0.0, 1.0, 0.5], [2.0, 3.0, 0.1]]}
    bad = _write(tmp_path / "b.jsonl", [{"qid": 1, "pred_relevant_windows": [[0, 1]]}])
    with pytest.raises(DataError, match=r"b.jsonl:1: pred_relevant_windows\[0\] must be a list of 3"):
        read_predictions(bad)


def test_window_past_the_recording_policy(tmp_path):
    # error (default) names the option; clip cuts to the recording; drop leaves the window
    # out; a query left without windows is left out; every change is reported with file:line.
    gt = _write(tmp_path / "gt.jsonl", [_row("a", wins=((1.0, 2.0), (3.0, 9.0))),
                                        _row("b", wins=((4.0, 80.0),)), _row("c")])
    with pytest.raises(DataError, match=r"gt.jsonl:1: relevant_windows\[1\].*outside.*on_bad_window"):
        read_annotations(gt)
    notes = []
    clipped = read_annotations(gt, on_bad_window="clip", report=notes.append)
    assert [q.qid for q in clipped] == ["a", "c"]
    assert clipped[0].windows == ((1.0, 2.0), (3.0, 4.0))
    assert notes[0].endswith("gt.jsonl:1: relevant_windows[1] = [3.0, 9.0] clipped to [3.0, 4.0] (duration 4 s)")
    assert "gt.jsonl:2: relevant_windows[0] = [4.0, 80.0] dropped" in notes[1]
    assert "gt.jsonl:2: query 'b' left out" in notes[2] and len(notes) == 3
    notes.clear()
    dropped = read_annotations(gt, on_bad_window="drop", report=notes.append)
    assert dropped[0].windows == ((1.0, 2.0),) and [q.qid for q in dropped] == ["a", "c"]
    assert len(notes) == 3 and "gt.jsonl:1: relevant_windows[1] = [3.0, 9.0] dropped" in notes[0]
    with pytest.warns(UserWarning) as caught:  # no report given: warnings, never silence
        read_annotations(gt, on_bad_window="drop")
    assert [str(w.message) for w in caught] == notes
    with pytest.raises(DataError, match="on_bad_window must be one of error, clip, drop"):
        read_annotations(gt, on_bad_window="fix")


@pytest.mark.shared
def test_castella_train_release_loads_with_an_explicit_choice():
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "moments" / "castella_train_release.jsonl"
    if not path.is_file():
        pytest.skip("../shared/data/moments not available")
    with pytest.raises(DataError, match=r"castella_train_release.jsonl:656: relevant_windows\[3\] = "
                                        r"\[299.0, 4800.0\].*on_bad_window"):
        read_annotations(path)
    rows = path.read_text().splitlines()
    for policy in ("clip", "drop"):
        notes = []
        qs = read_annotations(path, on_bad_window=policy, report=notes.append)
        # the one bad window starts at the recording's end: clipping leaves nothing, so it goes
        assert len(notes) == 1 and "castella_train_release.jsonl:656: relevant_windows[3]" in notes[0], notes
        assert len(qs) == len([r for r in rows if r.strip()])  # every query kept
        assert [q for q in qs if q.line == 656][0].windows == (
            (206, 209), (221, 223), (283, 285), (255, 258), (266, 270))
