"""Issue 21 §6: a new user's walk with ESC-50's own files.

`earshot classify --data` rejected a CSV starting with a byte-order mark
(``found ['\\ufefffilename', ...]``) and had no way to take one fold of ESC-50's official CSV
(every other fold's audio was reported missing).
"""

from __future__ import annotations

import pytest

from earshot.errors import DataError
from earshot.zeroshot import read_labelled_csv

HEADER = "filename,fold,target,category,esc10,src_file,take\n"


def _esc50(tmp_path, bom: bool):
    rows = [("1-100032-A-0.wav", 1, "dog"), ("1-100038-A-14.wav", 1, "chirping_birds"),
            ("2-100648-A-43.wav", 2, "chainsaw"), ("5-9032-A-0.wav", 5, "dog")]
    text = HEADER + "".join(f"{f},{fold},0,{cat},False,x,A\n" for f, fold, cat in rows)
    csv = tmp_path / "esc50.csv"
    csv.write_bytes(("\ufeff" if bom else "").encode("utf-8") + text.encode("utf-8"))
    audio = tmp_path / "audio"
    audio.mkdir()
    for f, fold, _ in rows:
        if fold == 1:  # only fold 1's audio is here
            (audio / f).write_bytes(b"RIFF")
    return csv, audio


@pytest.mark.parametrize("bom", [True, False])
def test_a_bom_csv_and_one_fold_of_esc50(tmp_path, bom):
    csv, audio = _esc50(tmp_path, bom)
    rows = read_labelled_csv(csv, audio, folds=[1])
    assert [(r.path.name, r.label) for r in rows] == [("1-100032-A-0.wav", "dog"),
                                                      ("1-100038-A-14.wav", "chirping_birds")]
    with pytest.raises(DataError, match="2 audio file"):  # every fold: folds 2 and 5 are missing
        read_labelled_csv(csv, audio)
    with pytest.raises(DataError, match=r"no rows in fold\(s\) 3"):
        read_labelled_csv(csv, audio, folds=[3])


def test_fold_needs_a_fold_column(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"RIFF")
    (tmp_path / "t.csv").write_text("file,label\na.wav,dog\n")
    with pytest.raises(DataError, match="--fold needs a 'fold' column"):
        read_labelled_csv(tmp_path / "t.csv", folds=[1])


def test_evaluate_frames_as_the_checkpoint_was_validated_unless_told(tmp_path):
    # before: evaluate framed whole clips while the demo preset validated 30 s crops (0.292 vs 0.415)
    import torch

    from earshot.evaluation import evaluation_framing
    from earshot.models import checkpoint
    from earshot.models.biencoder import create_model

    from rel_util import MODEL

    torch.manual_seed(0)
    model = create_model(MODEL)
    framed = checkpoint.save(model, tmp_path / "framed", {"eval_seconds": 30.0})
    whole = checkpoint.save(model, tmp_path / "whole", {"eval_seconds": None})
    seconds, why = evaluation_framing(framed, None)
    assert seconds == 30.0 and "as this checkpoint was validated" in why
    assert evaluation_framing(framed, 0)[0] is None and evaluation_framing(framed, 5.0) == (5.0, "5 s crops (--seconds)")
    assert evaluation_framing(whole, None) == (None, "whole clips (--seconds N to frame them)")
    assert checkpoint.load(framed) is not None  # the extra key does not disturb loading


def test_score_intervals_stay_within_0_and_1():
    from earshot.app.cmd_eval import _METRICS, format_score_table

    scores = {"n_queries": 250}
    for name in _METRICS:
        scores[name], scores[f"{name}/ci95"] = 0.5, 0.01
    scores["R@1"], scores["R@1/ci95"] = 0.004, 0.0045  # before: printed [-0.0005, 0.0085]
    scores["R@10"], scores["R@10/ci95"] = 0.998, 0.004
    table = format_score_table(scores)
    assert "R@1       0.0040  [0.0000, 0.0085]" in table
    assert "R@10      0.9980  [0.9940, 1.0000]" in table


def test_ensemble_search_output_names_members_whole_and_comments_on_a_better_single(tmp_path):
    import io
    from pathlib import Path

    from rich.console import Console

    from earshot.app.cmd_ensemble import best_line, results_table
    from earshot.ensemble.search import ComboScore, SearchReport

    models = [Path("/very/long/path/to/runs/2026-12-01/experiment-with-a-long-name/seed%d/averaged" % i)
              for i in range(3)]

    def combo(members, m):
        return ComboScore(members=tuple(members), metrics={c: m for c in
                                                           ("t2a/mAP@10", "t2a/R@1", "t2a/R@5", "t2a/R@10", "a2t/mAP@10")})

    results = [combo([2], 0.41), combo([0, 1], 0.39), combo([0], 0.30), combo([1], 0.29)]
    report = SearchReport(models=models, results=results, rule="zmean", rrf_k=60.0, metric="t2a/mAP@10", data="val")
    line = best_line(report, tmp_path / "ensemble.json")
    assert line.startswith(f"best: {models[0]} + {models[1]}  t2a/mAP@10 0.3900")
    assert f"note: {models[2]} alone scores t2a/mAP@10 0.4100" in line  # before: no comment
    out = io.StringIO()
    Console(file=out, width=80).print(results_table(report))
    text = out.getvalue()
    assert "…" not in text  # before: member names cut to "…"
    members = "".join(ln.split("│")[2].strip() for ln in text.splitlines() if ln.count("│") >= 3)
    assert all(str(m) in members for m in models)  # folded over lines, but whole
