"""DCASE submission writer and scorer: hand-worked scores, awkward names, malformed files."""

import csv
from pathlib import Path

import pytest

from earshot.errors import DataError
from earshot.metrics import Z95
from earshot.submission import HEADER, load_ground_truth, read_submission, score_submission, write_submission

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared"

# Ten files, awkward names included (leading space, comma, quote).
FILES = [" lead.wav", "comma, name.wav", 'quo"te.wav'] + [f"f{i}.wav" for i in range(3, 10)]
# One caption per file; files 8 and 9 share the caption "wind" (as 16 Clotho development
# captions do), so there are 9 distinct queries.
CAPTIONS = ["a dog barks, twice", ' she said "hi"', "rain"] + [f"cap {i}" for i in range(3, 8)]
CAPTIONS += ["wind", "wind"]
# Rank of the relevant file in each query's submitted top 10 (queries in ground-truth order).
RANK = {CAPTIONS[i]: r for i, r in enumerate([1, 2, 5, 10, 3, 1, 1, 4])}


def _ranking(front: dict[int, str]) -> list[str]:
    """10 distinct files with ``front[pos]`` placed at 1-based position ``pos``."""
    rest = iter(f for f in FILES if f not in front.values())
    return [front[p] if p in front else next(rest) for p in range(1, 11)]


def _rows() -> tuple[list[str], list[list[str]]]:
    caps, ranked = [], []
    for i, cap in enumerate(CAPTIONS[:8]):
        caps.append(cap)
        ranked.append(_ranking({RANK[cap]: FILES[i]}))
    caps.append("wind")  # f8.wav at rank 2, f9.wav at rank 6
    ranked.append(_ranking({2: "f8.wav", 6: "f9.wav"}))
    return caps, ranked


def write_ground_truth(path: Path) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["file_name", "caption_1"])
        w.writerows([name, cap] for name, cap in zip(FILES, CAPTIONS))
    return path


@pytest.fixture
def gt(tmp_path: Path) -> Path:
    return write_ground_truth(tmp_path / "gt.csv")


@pytest.fixture
def sub(tmp_path: Path) -> Path:
    caps, ranked = _rows()
    write_submission(tmp_path / "sub.csv", caps, ranked)
    return tmp_path / "sub.csv"


def test_scores_by_hand(gt, sub):
    # Per query (ranks 1, 2, 5, 10, 3, 1, 1, 4; "wind" relevant {f8 rank 2, f9 rank 6}):
    #   R@1  = (1+0+0+0+0+1+1+0+0)/9 = 3/9
    #   R@5  = (1+1+1+0+1+1+1+1+1)/9 = 8/9
    #   R@10 = 9/9
    #   AP@10 = 1, 1/2, 1/5, 1/10, 1/3, 1, 1, 1/4, (1/2 + 2/6)/2 = 5/12 -> sum 4.8 -> 4.8/9
    s = score_submission(gt, sub, relevance="caption")
    assert s["n_queries"] == 9
    assert s["R@1"] == pytest.approx(3 / 9)
    assert s["R@5"] == pytest.approx(8 / 9)
    assert s["R@10"] == pytest.approx(1.0)
    assert s["mAP@10"] == pytest.approx(4.8 / 9)
    # R@1 values: three 1s, six 0s -> std(ddof=1) = 0.5, SE = 0.5/3
    assert s["R@1/ci95"] == pytest.approx(Z95 * 0.5 / 3)
    assert s["R@10/ci95"] == 0.0


def test_clip_rule_scores_each_caption_for_its_own_file(gt, sub):
    # "wind" is two queries answered by the same row: f8 at rank 2, f9 at rank 6
    #   R@1 = 3/10, R@5 = 8/10 (f9's query misses), R@10 = 10/10
    #   AP@10 = 1, 1/2, 1/5, 1/10, 1/3, 1, 1, 1/4, 1/2, 1/6 -> sum 5.05 -> 5.05/10
    s = score_submission(gt, sub)  # clip is the default, as in earshot evaluate
    assert s["n_queries"] == 10
    assert s["R@1"] == pytest.approx(0.3) and s["R@5"] == pytest.approx(0.8)
    assert s["mAP@10"] == pytest.approx(0.505)


def test_relevance_file_replaces_the_captions(gt, sub, tmp_path):
    # DCASE 2025 metadata_eval.csv layout: "wind" -> f8 and f9, "rain" -> 'quo"te.wav' and f3.wav
    rel = tmp_path / "metadata_eval.csv"
    with open(rel, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["query", "audio_filenames"])
        w.writerow(["wind", "['f8.wav', 'f9.wav']"])
        w.writerow(["rain", repr(['quo"te.wav', "f3.wav"])])
    # rain: quo"te at rank 5; f3 is placed by _ranking among the rest: find it
    caps, ranked = _rows()
    f3 = ranked[caps.index("rain")].index("f3.wav") + 1
    ap_rain = sum((i + 1) / r for i, r in enumerate(sorted([5, f3])) if r <= 10) / 2
    s = score_submission(gt, sub, relevance=rel)
    assert s["n_queries"] == 2
    assert s["mAP@10"] == pytest.approx((5 / 12 + ap_rain) / 2)
    bad = tmp_path / "bad.csv"
    bad.write_text("query,audio_filenames\nwind,f8.wav\n")
    with pytest.raises(DataError, match="line 2"):
        score_submission(gt, sub, relevance=bad)


def test_official_duplicate_rule_keeps_last_file(gt, sub):
    # "wind" -> f9.wav only (rank 6): R@5 drops to 7/9, AP of that query 1/6 instead of 5/12
    s = score_submission(gt, sub, duplicate_captions="last")
    assert s["R@5"] == pytest.approx(7 / 9)
    assert s["mAP@10"] == pytest.approx((4.8 - 5 / 12 + 1 / 6) / 9)


def test_ground_truth_reading(gt):
    g = load_ground_truth(gt)
    assert g.queries == CAPTIONS[:9]
    assert g.relevant["wind"] == {"f8.wav", "f9.wav"}
    assert g.relevant[' she said "hi"'] == {"comma, name.wav"}
    assert g.line["wind"] == 10 and g.line["a dog barks, twice"] == 2
    assert " lead.wav" in g.files  # the leading space is part of the name


def test_writer_round_trip_keeps_awkward_names(gt, sub):
    caps, ranked = _rows()
    with open(sub, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == HEADER
    assert rows[1:] == [[c, *r] for c, r in zip(caps, ranked)]
    assert read_submission(sub, load_ground_truth(gt))["rain"] == ranked[2]


def test_writer_collapses_identical_duplicates_and_rejects_conflicts(tmp_path):
    r = FILES
    write_submission(tmp_path / "s.csv", ["x", "x"], [r, list(r)])
    assert len(list(csv.reader(open(tmp_path / "s.csv", newline="")))) == 2  # header + one row
    with pytest.raises(DataError, match="different ranking"):
        write_submission(tmp_path / "s.csv", ["x", "x"], [r, r[::-1]])
    with pytest.raises(DataError, match="9 file names"):
        write_submission(tmp_path / "s.csv", ["x"], [r[:9]])
    with pytest.raises(DataError, match="listed twice"):
        write_submission(tmp_path / "s.csv", ["x"], [r[:9] + r[:1]])


def _write_rows(path: Path, rows: list[list[str]], header=HEADER) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def _good_rows() -> list[list[str]]:
    caps, ranked = _rows()
    return [[c, *r] for c, r in zip(caps, ranked)]


def test_missing_query_names_ground_truth_line(gt, tmp_path):
    rows = _good_rows()
    del rows[3]  # "cap 3", ground-truth line 5
    path = _write_rows(tmp_path / "s.csv", rows)
    with pytest.raises(DataError, match=r"1 ground-truth caption\(s\) have no row: 'cap 3' \(ground-truth line 5\)"):
        score_submission(gt, path)


def test_unknown_file_names_line(gt, tmp_path):
    rows = _good_rows()
    rows[1][4] = "nope.wav"  # submission line 3, file_name_4
    with pytest.raises(DataError, match=r"line 3: file_name_4 'nope.wav' is not in the ground truth"):
        score_submission(gt, _write_rows(tmp_path / "s.csv", rows))


def test_short_row_names_line(gt, tmp_path):
    rows = _good_rows()
    rows[2] = rows[2][:10]  # line 4: caption + 9 names
    with pytest.raises(DataError, match="line 4: expected a caption and 10 file names, got 9"):
        score_submission(gt, _write_rows(tmp_path / "s.csv", rows))


def test_duplicate_file_in_row_names_line(gt, tmp_path):
    rows = _good_rows()
    rows[0][10] = rows[0][1]  # line 2 lists its first file again at position 10
    with pytest.raises(DataError, match="line 2: file ' lead.wav' is listed twice"):
        score_submission(gt, _write_rows(tmp_path / "s.csv", rows))


def test_extra_unknown_caption_names_line(gt, tmp_path):
    rows = _good_rows() + [["a caption nobody wrote", *FILES]]
    with pytest.raises(DataError, match="line 11: caption 'a caption nobody wrote' is not in the ground truth"):
        score_submission(gt, _write_rows(tmp_path / "s.csv", rows))


def test_repeated_caption_rows(gt, tmp_path):
    rows = _good_rows()
    same = _write_rows(tmp_path / "same.csv", rows + [rows[0]])
    assert score_submission(gt, same, relevance="caption")["mAP@10"] == pytest.approx(4.8 / 9)
    other = _write_rows(tmp_path / "other.csv", rows + [[rows[0][0], *rows[0][1:][::-1]]])
    with pytest.raises(DataError, match="line 11: caption 'a dog barks, twice' was already ranked differently on line 2"):
        score_submission(gt, other)


def test_bad_header_and_missing_file(gt, tmp_path):
    with pytest.raises(DataError, match="line 1: header must be"):
        score_submission(gt, _write_rows(tmp_path / "s.csv", _good_rows(), header=["query"] + HEADER[1:]))
    with pytest.raises(DataError, match="not found"):
        score_submission(gt, tmp_path / "absent.csv")


def test_malformed_ground_truth(tmp_path):
    bad = tmp_path / "gt.csv"
    bad.write_text("file_name,caption_1\na.wav,x\na.wav,y\n", encoding="utf-8")
    with pytest.raises(DataError, match="line 3: file 'a.wav' already listed on line 2"):
        load_ground_truth(bad)
    bad.write_text("name,caption_1\na.wav,x\n", encoding="utf-8")
    with pytest.raises(DataError, match="line 1: no 'file_name' column"):
        load_ground_truth(bad)


def test_dcase2022_baseline_published_scores():
    folder = SHARED / "data" / "dcase2022_baseline"
    if not (folder / "test.gt.csv").exists():
        pytest.skip("shared DCASE 2022 baseline files not available")
    s = score_submission(folder / "test.gt.csv", folder / "test.output.csv")
    # Published: R@1 0.03, R@5 0.11, R@10 0.19, mAP@10 0.07 (two decimals); four here.
    assert s["n_queries"] == 5225
    assert round(s["R@1"], 2) == 0.03 and s["R@1"] == pytest.approx(0.0316, abs=5e-5)
    assert round(s["R@5"], 2) == 0.11 and s["R@5"] == pytest.approx(0.1095, abs=5e-5)
    assert round(s["R@10"], 2) == 0.19 and s["R@10"] == pytest.approx(0.1883, abs=5e-5)
    assert round(s["mAP@10"], 2) == 0.07 and s["mAP@10"] == pytest.approx(0.0679, abs=5e-5)
