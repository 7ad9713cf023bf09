"""What the CLI used to write itself now lives in the library: ranks.csv, the ranked submission,
the query reader (issue 18, §2: each command parses, calls the library, prints)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from earshot.errors import DataError
from earshot.evaluation import EvalResult, save_evaluation
from earshot.relevance import Queries
from earshot.submission import read_queries, write_ranked_submission

FILES = [f"f{i}.wav" for i in range(12)]


def test_ranked_submission_is_top10_per_distinct_caption(tmp_path):
    sim = torch.zeros(3, 12)
    sim[0] = torch.arange(12.0)  # f11 best, then f10, ...
    sim[1] = -torch.arange(12.0)  # f0 best
    sim[2] = torch.arange(12.0)  # a repeat of caption 0: written once
    write_ranked_submission(tmp_path / "s.csv", ["rain", "a dog", "rain"], FILES, sim)
    rows = list(csv.reader((tmp_path / "s.csv").open()))
    assert rows[0][0] == "caption" and len(rows) == 3
    assert rows[1] == ["rain"] + [f"f{i}.wav" for i in range(11, 1, -1)]
    assert rows[2] == ["a dog"] + [f"f{i}.wav" for i in range(10)]
    with pytest.raises(DataError, match="only 5 files"):
        write_ranked_submission(tmp_path / "t.csv", ["rain"], FILES[:5], torch.zeros(1, 5))


def test_read_queries_takes_a_caption_column_or_a_clotho_table(tmp_path):
    (tmp_path / "q.csv").write_text("caption\nrain on a roof\n\na dog barks\n")
    assert read_queries(tmp_path / "q.csv") == ["rain on a roof", "a dog barks"]
    (tmp_path / "c.csv").write_text("file_name,caption_1,caption_2\na.wav,one,two\nb.wav,three,\n")
    assert read_queries(tmp_path / "c.csv") == ["one", "two", "three"]
    (tmp_path / "bad.csv").write_text("text\nx\n")
    with pytest.raises(DataError, match="bad.csv: needs a 'caption' column"):
        read_queries(tmp_path / "bad.csv")
    with pytest.raises(DataError, match="no such file"):
        read_queries(tmp_path / "missing.csv")


def test_save_evaluation_writes_metrics_and_ranks(tmp_path):
    # two queries over three files; query 1's relevant file f2 is ranked second (by hand)
    sim = torch.tensor([[0.9, 0.1, 0.0], [0.5, 0.0, 0.4]])
    queries = Queries(("rain", "a dog"), (frozenset({"f0.wav"}), frozenset({"f2.wav", "f1.wav"})))
    result = EvalResult({"t2a/R@1": 0.5}, sim, np.array([1, 2]), queries)
    out = save_evaluation(tmp_path / "eval", result, FILES[:3])
    assert json.loads((out / "metrics.json").read_text()) == {"t2a/R@1": 0.5}
    rows = list(csv.reader((out / "ranks.csv").open()))
    assert rows == [["query", "caption", "file_name", "rank"], ["0", "rain", "f0.wav", "1"],
                    ["1", "a dog", "f2.wav", "2"]]  # the best-ranked of its relevant files
