"""The moment scorer equals lighthouse's standalone_eval (goldens made outside the repo with
lighthouse's own eval.py on the inputs of ``randomized.py``; see that module)."""

import json
from pathlib import Path

import numpy as np
import pytest
from randomized import digest, random_predictions, small_ground_truth
from typer.testing import CliRunner

from earshot.app import cli

from earshot.errors import DataError
from earshot.moments.data import read_annotations, windows_by_qid
from earshot.moments.metrics import IOU_THRESHOLDS, query_average_precision, score_moments

HERE = Path(__file__).resolve().parent
GOLDEN = json.loads((HERE / "golden" / "scorer.json").read_text())
SHARED = HERE.parents[1] / ".." / "shared" / "data" / "moments"
# Every step is the reference's own float64 arithmetic (same IoU formula, same sort orders), so
# the only differences are summation order in means: ~1e-14 relative. 1e-6 is the bar.
TOL = 1e-6


def _gt(rows):
    return {str(d["qid"]): d["relevant_windows"] for d in rows}


def _pred(rows):
    return {str(d["qid"]): d["pred_relevant_windows"] for d in rows}


def _check(scores, golden, rounded):
    ap = golden["mAP"] if rounded else golden["mAP_raw"]
    r1 = golden["R1"] if rounded else golden["R1_raw"]
    for t in IOU_THRESHOLDS:
        assert scores[f"mAP@{t:g}"] == pytest.approx(ap[str(t)], abs=TOL), t
        assert scores[f"R1@{t:g}"] == pytest.approx(r1[str(t)], abs=TOL), t
    assert scores["mAP/avg"] == pytest.approx(ap["average"], abs=TOL)


@pytest.mark.parametrize("rounded", [False, True])
def test_small_generated_pair_equals_lighthouse(rounded):
    g = GOLDEN["small"]
    gt = small_ground_truth(seed=g["gt_seed"])
    pred = random_predictions(gt, seed=g["pred_seed"])
    assert digest(gt) == g["gt_sha256"] and digest(pred) == g["pred_sha256"], \
        "numpy's random stream changed: the inputs are not those the goldens were made from"
    _check(score_moments(_gt(gt), _pred(pred), lighthouse_rounding=rounded), g, rounded)


@pytest.mark.shared
@pytest.mark.parametrize("rounded", [False, True])
def test_castella_test_randomized_equals_lighthouse(rounded):
    path = SHARED / "castella_test_release.jsonl"
    if not path.is_file():
        pytest.skip("../shared/data/moments not available")
    g = GOLDEN["castella_test"]
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert digest(rows) == g["gt_sha256"]
    pred = random_predictions(rows, seed=g["seed"])
    assert digest(pred) == g["pred_sha256"]
    assert sum(len(d["relevant_windows"]) > 1 for d in rows) > 500  # several windows per query
    gt = windows_by_qid(read_annotations(path))  # the reader accepts the real file as it is
    _check(score_moments(gt, _pred(pred), lighthouse_rounding=rounded), g, rounded)


def test_hand_worked_average_precision():
    # GT [0,10] and [20,30]. Predictions by score: [0,10] (IoU 1 with the first), [21,30]
    # (IoU 0.9 with the second), [0,9] (IoU 0.9 with the first, already taken at <=0.9).
    gt = [[0, 10], [20, 30]]
    pred = [[0, 9, 0.5], [0, 10, 0.9], [21, 30, 0.7]]
    ap = query_average_precision(gt, pred, [0.5, 0.95])
    # t=0.5: hits at ranks 1, 2; miss at 3 -> precision 1 at recall 0.5 and 1 -> AP 1.
    # t=0.95: hit at rank 1 only -> recall 0.5 at precision 1 -> AP 0.5.
    assert ap == pytest.approx([1.0, 0.5], abs=1e-12)
    s = score_moments({"a": gt}, {"a": pred})
    # R1 reads the first *listed* window [0, 9]: IoU 0.9 -> hit up to 0.9, miss at 0.95.
    assert s["R1@0.9"] == 100.0 and s["R1@0.95"] == 0.0
    assert s["R1/avg"] == pytest.approx(90.0)


def test_only_ten_predictions_count():
    gt = {"a": [[0, 10]]}
    wrong = [[50, 60, 1.0 - i / 100] for i in range(10)]
    assert score_moments(gt, {"a": wrong + [[0, 10, 0.0]]})["mAP/avg"] == 0.0
    assert score_moments(gt, {"a": wrong + [[0, 10, 0.0]]}, max_predictions=11)["mAP/avg"] \
        == pytest.approx(100 / 11)


def test_mismatched_queries_are_named():
    with pytest.raises(DataError, match="1 without predictions"):
        score_moments({"a": [[0, 1]], "b": [[0, 1]]}, {"a": [[0, 1, 1.0]]})


def test_cli_scores_files(tmp_path):
    gt = small_ground_truth(seed=GOLDEN["small"]["gt_seed"])
    pred = random_predictions(gt, seed=GOLDEN["small"]["pred_seed"])
    (tmp_path / "gt.jsonl").write_text("".join(json.dumps(d) + "\n" for d in gt))
    (tmp_path / "pred.jsonl").write_text("".join(json.dumps(d) + "\n" for d in pred))
    cli._register()
    result = CliRunner().invoke(cli.app, ["moments", "score", str(tmp_path / "gt.jsonl"),
                                          str(tmp_path / "pred.jsonl"), "--json"])
    assert result.exit_code == 0, result.output
    scores = json.loads(result.output)
    assert scores["n_queries"] == len(gt)
    assert scores["mAP/avg"] == pytest.approx(GOLDEN["small"]["mAP_raw"]["average"], abs=TOL)
    assert np.isclose(scores["R1@0.7"], GOLDEN["small"]["R1_raw"]["0.7"])
