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


# -- each command's checks and steps as one library call (evaluate, submit, ensemble, data, index)

SR = 16000


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """Three 0.3 s tones in a Clotho-layout table and a small 16 kHz checkpoint."""
    import soundfile as sf

    from earshot.models import checkpoint
    from earshot.models.biencoder import create_model

    root = tmp_path_factory.mktemp("calls")
    t = np.arange(int(0.3 * SR)) / SR
    with open(root / "val.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file_name", "caption_1", "caption_2"])
        for i, f0 in enumerate((300.0, 900.0, 2700.0)):
            sf.write(root / f"c{i}.wav", (0.3 * np.sin(2 * np.pi * f0 * t)).astype(np.float32), SR)
            w.writerow([f"c{i}.wav", f"a tone at {int(f0)} hertz", f"sound {i}"])
    torch.manual_seed(0)
    model = create_model({"audio": {"name": "small_cnn", "options": {"channels": [4, 8], "sample_rate": SR}},
                          "text": {"name": "bow", "options": {"dim": 16}}, "embed_dim": 8})
    return {"root": root, "csv": root / "val.csv", "ckpt": checkpoint.save(model, root / "ck")}


def test_evaluate_model_checks_before_loading_and_writes_what_it_is_asked(small, tmp_path):
    from earshot.errors import ConfigError, WeightsError
    from earshot.evaluation import evaluate, evaluate_model, load_split
    from earshot.loading.retriever import load_retriever

    lines = []
    run = evaluate_model(small["ckpt"], small["csv"], out=tmp_path / "out", progress=False, precision="fp32",
                         log=lines.append)
    assert lines == ["framing: whole clips (--seconds N to frame them)"] and run.framing in lines[0]
    table, root = load_split(small["csv"])
    want = evaluate(load_retriever(small["ckpt"]), table, root, extra_map_k=16, progress=False)
    for k, v in want.metrics.items():
        assert run.result.metrics[k] == pytest.approx(v, abs=1e-6), k  # the same model, data, order
    assert len(run.clip_names) == 3 and run.result.similarity.shape == (6, 3)
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["t2a/R@1"] == pytest.approx(
        run.result.metrics["t2a/R@1"])
    assert len(list(csv.reader((tmp_path / "out" / "ranks.csv").open()))) == 1 + 6  # header + 6 queries
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ConfigError, match="--out .*afile: is a file; give a folder"):
        evaluate_model(small["ckpt"], small["csv"], out=tmp_path / "afile")
    with pytest.raises(ConfigError, match="--submission .*: is a folder; give a file name"):
        evaluate_model(small["ckpt"], small["csv"], submission=tmp_path)
    with pytest.raises(WeightsError, match="no such model"):
        evaluate_model("laion_clap_generl", small["csv"])
    bad = tmp_path / "bad.csv"
    bad.write_text("file_name,caption_1\nmissing1.wav,x\nmissing2.wav,y\n")
    with pytest.raises(DataError, match="missing1.wav.*missing2.wav|2 .*missing"):
        evaluate_model(small["ckpt"], bad)  # every missing file at once, before a model is opened


def test_submit_model_ranks_every_file_for_each_caption(small, tmp_path):
    import soundfile as sf

    from earshot.evaluation import submit_model

    folder = tmp_path / "eval"
    folder.mkdir()
    t = np.arange(int(0.3 * SR)) / SR
    for i in range(10):  # a submission lists 10 files per caption
        sf.write(folder / f"e{i}.wav", (0.3 * np.sin(2 * np.pi * 200 * (i + 1) * t)).astype(np.float32), SR)
    (tmp_path / "q.csv").write_text("caption\na tone at 300 hertz\nsound 2\na tone at 300 hertz\n")
    run = submit_model(small["ckpt"], tmp_path / "q.csv", folder, tmp_path / "sub.csv", progress=False,
                       precision="fp32")
    assert (run.path, run.captions, run.files) == (tmp_path / "sub.csv", 2, 10)
    rows = list(csv.reader(run.path.open()))
    assert [r[0] for r in rows[1:]] == ["a tone at 300 hertz", "sound 2"]
    assert all(sorted(r[1:]) == sorted(f"e{i}.wav" for i in range(10)) for r in rows[1:])
    with pytest.raises(DataError, match="only 3 files"):  # checked when written, not silently short
        submit_model(small["ckpt"], tmp_path / "q.csv", small["root"], tmp_path / "s3.csv", progress=False)
    with pytest.raises(DataError, match="--captions .*nope.csv: no such file"):
        submit_model(small["ckpt"], tmp_path / "nope.csv", folder)
    with pytest.raises(DataError, match="which audio files should be ranked"):
        submit_model(small["ckpt"], tmp_path / "q.csv")  # not a clotho_captions_<split>.csv: no default


def test_make_manifest_checks_members_and_opens_what_it_wrote(small, tmp_path):
    from earshot.ensemble.manifest import make_manifest
    from earshot.errors import ConfigError

    ens, path = make_manifest([small["ckpt"], small["ckpt"]], tmp_path / "e.json", [1.0, 3.0], "mean")
    assert path.is_file() and ens.weights == [0.25, 0.75] and ens.rule == "mean"
    with pytest.raises(ConfigError, match="1 --weight values for 2 models"):
        make_manifest([small["ckpt"], small["ckpt"]], tmp_path / "f.json", [1.0])
    with pytest.raises(ConfigError, match="nowhere: not a checkpoint directory"):
        make_manifest([small["ckpt"], tmp_path / "nowhere"], tmp_path / "g.json")
    assert not (tmp_path / "g.json").exists()


def test_check_leakage_reads_both_tables_and_finds_copies(small, tmp_path):
    import shutil

    from earshot.data.leakage import check_leakage

    other = tmp_path / "train"
    other.mkdir()
    shutil.copy(small["root"] / "c1.wav", other / "renamed.wav")  # the same audio under another name
    (other / "train.csv").write_text("file_name,caption_1\nrenamed.wav,a copy\n")
    found = check_leakage(other / "train.csv", small["csv"])
    assert (found.train_clips, found.eval_clips) == (1, 3) and found.overlap
    clean = check_leakage(small["csv"], other / "train.csv", train_audio_dir=small["root"])
    assert clean.overlap  # symmetric: the copy is found from either side


def test_check_index_request_refuses_before_opening_a_model(small, tmp_path):
    from earshot.errors import EarshotError
    from earshot.index.indexer import check_index_request

    req = check_index_request(small["root"], small["ckpt"], tmp_path / "idx")
    assert (req.folder, req.out, req.has_audio) == (small["root"], tmp_path / "idx", True)
    (tmp_path / "empty").mkdir()
    assert not check_index_request(tmp_path / "empty", small["ckpt"], tmp_path / "idx2").has_audio
    (tmp_path / "f").write_text("x")
    for args, why in (((tmp_path / "nope", small["ckpt"], tmp_path / "i"), "no such folder"),
                      ((small["root"], small["ckpt"], tmp_path / "f"), "--out .*is a file"),
                      ((small["root"], "laion_clap_generl", tmp_path / "i"), "--model .*did you mean"),
                      ((small["root"], small["ckpt"], tmp_path / "i", "spark"), "--engine 'spark'")):
        with pytest.raises(EarshotError, match=why):
            check_index_request(*args)
    with pytest.raises(EarshotError, match="--watch .*--engine local"):
        check_index_request(small["root"], small["ckpt"], tmp_path / "i", "ray", watch=True)


def test_run_index_then_search_index_answer_what_the_commands_print(small, tmp_path):
    """`earshot index` is check_index_request + run_index, `earshot search` is search_index: a text,
    an example and a like-this query over the three tones, each with the same hits as Index."""
    from earshot.errors import EarshotError
    from earshot.index import Index, IndexConfig
    from earshot.index.indexer import check_index_request
    from earshot.index.run import run_index
    from earshot.index.search import parse_like, search_index

    req = check_index_request(small["root"], small["ckpt"], tmp_path / "idx")
    report, encoder = run_index(req, small["ckpt"], IndexConfig(window_s=0.1, hop_s=0.1, workers=0))
    assert report.items == 3 and encoder is not None and report.index == (tmp_path / "idx").resolve()
    with Index.open(tmp_path / "idx") as ix:
        want_text = [h.path for h in ix.search("a tone at 900 hertz", 3)]
        want_like = [h.path for h in ix.search_like("c1.wav", 0.1, 2)]
    found = search_index(tmp_path / "idx", query="a tone at 900 hertz", k=3)
    assert [h.path for h in found.hits] == want_text and found.title == "'a tone at 900 hertz'"
    assert found.root == str(small["root"].resolve()) and found.partial is None
    like = search_index(tmp_path / "idx", like="c1.wav@0.1", k=2)
    assert [h.path for h in like.hits] == want_like and "c1.wav" not in want_like
    by_example = search_index(tmp_path / "idx", audio=small["root"] / "c2.wav", k=1)
    assert by_example.hits[0].path == "c2.wav"  # a clip is its own nearest neighbour
    assert parse_like("a@b.wav") == ("a@b.wav", None) and parse_like("x.wav@1:05") == ("x.wav", 65.0)
    with pytest.raises(EarshotError, match="exactly one"):
        search_index(tmp_path / "idx", query="rain", like="c1.wav")
