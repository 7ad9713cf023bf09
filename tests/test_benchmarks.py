"""The benchmark harness (benchmarks/run.py, benchmarks/common.py): statistics on fake timings,
goals, the Markdown writer, and failing modules recorded as errors while the others still run.
No timing assertions: speed itself is what `make bench` measures, not what tests check."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))  # the benchmark scripts import `common` from their folder
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


common = _load("common")
harness = _load("run")


# ---- statistics ------------------------------------------------------------------------------


def test_summarize_hand_worked():
    # sorted 1, 2, 3, 10: median (2+3)/2 = 2.5; q1 at position 0.75 -> 1 + 0.75*(2-1) = 1.75;
    # q3 at position 2.25 -> 3 + 0.25*(10-3) = 4.75; IQR 3.0; mean 16/4 = 4
    s = common.summarize([3.0, 1.0, 10.0, 2.0])
    assert (s.n, s.median, s.min, s.max, s.mean) == (4, 2.5, 1.0, 10.0, 4.0)
    assert s.iqr == pytest.approx(3.0)


def test_quantile_matches_numpy_percentile():
    rng = np.random.default_rng(0)
    for n in (1, 2, 5, 8, 13):
        xs = rng.exponential(size=n).tolist()
        for q in (0.0, 0.25, 0.5, 0.75, 1.0):
            assert common.quantile(xs, q) == pytest.approx(float(np.percentile(xs, 100 * q)))


def test_single_repeat_has_zero_spread_and_empty_input_is_an_error():
    assert common.summarize([0.7]).iqr == 0.0
    with pytest.raises(ValueError):
        common.summarize([])
    with pytest.raises(ValueError):
        common.quantile([1.0], 1.5)


def test_time_fn_uses_warmup_then_times_each_call_with_the_given_clock():
    ticks = iter([0.0, 1.0, 10.0, 12.0, 20.0, 23.5])  # start/stop pairs of three timed calls
    calls = []
    times = common.time_fn(lambda: calls.append(1), repeats=3, warmup=2, clock=lambda: next(ticks))
    assert len(calls) == 5  # 2 untimed warm-ups + 3 timed
    assert times == [1.0, 2.0, 3.5]
    with pytest.raises(ValueError):
        common.time_fn(lambda: None, repeats=0)


def test_time_rates_inverts_each_repeat():
    # 8 clips in 0.5, 1, 2 s -> 16, 8, 4 clips/s: median 8; q1 = 6, q3 = 12 -> IQR 6
    r = common.time_rates([0.5, 1.0, 2.0], 8)
    assert (r.median, r.min, r.max) == (8.0, 4.0, 16.0)
    assert r.iqr == pytest.approx(6.0)
    with pytest.raises(ValueError):
        common.time_rates([0.0], 1)


def test_repeats_for_clamps_to_the_budget():
    assert common.repeats_for(2.0, 9.0) == 4  # 9 // 2
    assert common.repeats_for(20.0, 9.0) == 2  # never fewer than lo: a spread needs two
    assert common.repeats_for(0.001, 9.0) == 7  # never more than hi


def test_traced_peak_sees_a_numpy_allocation():
    result, peak = common.traced_peak_mib(lambda: np.ones(2**20, dtype=np.float64).sum())  # 8 MiB
    assert result == 2**20
    assert 7.9 < peak < 16


def test_rss_sampler_records_growth_of_a_held_allocation():
    import mmap

    # fresh anonymous pages: a malloc could hand back memory that is already resident
    with common.RSSSampler(interval_s=0.001) as s:
        block = mmap.mmap(-1, 64 * 2**20)
        block.write(b"\x01" * (64 * 2**20))  # touched, so resident
    assert s.growth_mib > 32
    block.close()


# ---- goals and machine facts -----------------------------------------------------------------


def test_goals():
    assert common.parse_goal(">= 0.85") == (">=", 0.85)
    assert common.goal_met(5.0, ">= 5") and not common.goal_met(4.99, ">= 5")
    assert common.goal_met(1e-3, "<= 1e-3") and not common.goal_met(2e-3, "<= 1e-3")
    assert not common.goal_met(float("nan"), ">= 0")
    with pytest.raises(ValueError, match="'at least 5'"):
        common.parse_goal("at least 5")
    f = common.figure("x", 0.9, goal=">= 0.85", spread=0.01, n=3)
    assert f["met"] is True and f["spread"] == 0.01
    assert common.figure("y", 1.0)["met"] is None


def test_cpu_info_parses_model_and_flags():
    text = "processor\t: 0\nmodel name\t: Fake CPU 9000\nflags\t\t: fpu avx2 avx512f avx512_bf16\n"
    info = common.cpu_info(text)
    assert info == {"model": "Fake CPU 9000", "flags": ["fpu", "avx2", "avx512f", "avx512_bf16"]}
    assert common.native_bf16(info["flags"])
    assert common.native_bf16(["amx_bf16"]) and not common.native_bf16(["avx2", "avx512f"])


def test_jsonable_turns_numpy_and_non_finite_values_into_plain_json():
    out = harness.jsonable({"a": np.float32(0.5), "b": (1, np.int64(2)), "c": float("nan"), 3: math.inf})
    assert out == {"a": 0.5, "b": [1, 2], "c": None, "3": None}
    json.dumps(out, allow_nan=False)


# ---- the Markdown writer ---------------------------------------------------------------------


def _results():
    return {
        "generated": "2025-01-01 00:00 UTC", "duration_s": 12.0, "argv": ["--quick"],
        "machine": {"cpu_model": "Fake CPU", "cpu_flags_of_interest": ["avx2", "avx512_bf16"],
                    "logical_cores": 2, "torch": "2.x"},
        "matmul": {"float32": {"gflops_median": 100.0, "gflops_iqr": 2.0, "gflops_best": 104.0, "n": 64}},
        "sections": {
            "encoders": {"ok": True, "seconds": 5.0, "peak_rss_mib": 300.0, "run_at": "2025-01-01 00:00 UTC",
                         "result": {"notes": ["random weights"], "figures": [
                             common.figure("cnn14 fp32 fraction", 0.9, goal=">= 0.85", n=3, spread=0.02),
                             common.figure("cnn14 bf16 cosine", 0.99, goal=">= 0.999", n=8),
                             common.figure("a|b clips/s", 12.5, unit="clips/s"),
                         ]}},
            "frontend": {"ok": True, "seconds": 1.0, "peak_rss_mib": 10.0,
                         "result": {"b1/earshot/speedup_vs_torchlibrosa": 6.0, "label": "text is skipped"}},
            "index": {"ok": False, "error": "RuntimeError: boom", "seconds": 0.1,
                      "traceback": "Traceback (most recent call last):\n  ...\nRuntimeError: boom"},
        },
    }


def test_markdown_tables_goals_and_errors():
    md = harness.markdown(_results())
    lines = md.splitlines()
    assert lines[0] == "# earshot benchmarks"
    assert "| cpu_model | Fake CPU |" in lines
    assert "| cpu_flags_of_interest | avx2, avx512_bf16 |" in lines
    assert "| matmul float32 64x64 GFLOP/s (median, IQR, best) | 100, 2, 104 |" in lines
    # section table: a met goal, a missed goal in bold, a pipe escaped, unit beside the value
    assert "| cnn14 fp32 fraction | 0.9 | >= 0.85 | yes | 0.02 | 3 |  |" in lines
    assert "| cnn14 bf16 cosine | 0.99 | >= 0.999 | **NO** |  | 8 |  |" in lines
    assert "| a\\|b clips/s | 12.5 clips/s |  |  |  |  |  |" in lines
    assert "- random weights" in lines
    # a flat result gets one row per number, goals from DEFAULT_GOALS; strings are left out
    assert "| b1/earshot/speedup_vs_torchlibrosa | 6 | >= 5 | yes |  |  |  |" in lines
    assert not any("text is skipped" in line for line in lines)
    # the goals summary lists every goal of every section
    assert "| encoders | cnn14 bf16 cosine | >= 0.999 | 0.99 | **NO** |" in lines
    assert "| frontend | b1/earshot/speedup_vs_torchlibrosa | >= 5 | 6 | yes |" in lines
    # the failed section: marked in its place and its traceback tail under Errors
    assert "**error**: `RuntimeError: boom`" in lines
    assert "## Errors" in lines and lines.index("## Errors") < lines.index("RuntimeError: boom")
    assert "Sections that failed: index (see Errors)." in lines


def test_module_goals_override_defaults_for_flat_results():
    rec = {"ok": True, "result": {"speed": 3.0}, "goals": {"speed": ">= 4"}}
    (row,) = harness.section_figures("frontend", rec)
    assert row["goal"] == ">= 4" and row["met"] is False


def test_flat_results_gather_median_with_its_spread_and_range():
    rec = {"ok": True, "result": {"b1/x/median_ms": 10.0, "b1/x/iqr_ms": 2.0, "b1/x/min_ms": 9.0,
                                  "b1/x/max_ms": 13.0, "b1/y/min_ms": 4.0, "count": 3}}
    rows = harness.section_figures("other", rec)
    assert [(r["name"], r["value"], r["spread"], r["context"]) for r in rows] == [
        ("b1/x/median_ms", 10.0, 2.0, "min 9, max 13"),
        ("b1/y/min_ms", 4.0, None, ""),  # no median of its own: stays a row
        ("count", 3.0, None, ""),
    ]


def test_render_rewrites_markdown_from_saved_results(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps(_results()))
    assert harness.main(["--render", "--out-dir", str(tmp_path)]) == 0
    assert (tmp_path / "RESULTS.md").read_text() == harness.markdown(_results())


# ---- modules that fail -----------------------------------------------------------------------


def _write(folder: Path, name: str, body: str) -> Path:
    path = folder / f"bench_{name}.py"
    path.write_text(textwrap.dedent(body))
    return path


def test_run_module_records_exceptions_and_bad_modules(tmp_path):
    raises = _write(tmp_path, "raises", "def run():\n    raise RuntimeError('disk on fire')\n")
    rec = harness.run_module(raises)
    assert rec["ok"] is False and rec["error"] == "RuntimeError: disk on fire"
    assert "disk on fire" in rec["traceback"]
    no_run = _write(tmp_path, "norun", "x = 1\n")
    assert "has no run()" in harness.run_module(no_run)["error"]
    not_dict = _write(tmp_path, "list", "def run():\n    return [1]\n")
    assert "returned list, not a dict" in harness.run_module(not_dict)["error"]
    broken = _write(tmp_path, "syntax", "def run(:\n")
    assert harness.run_module(broken)["error"].startswith("SyntaxError")


def test_quick_is_passed_only_to_modules_that_take_it(tmp_path):
    takes = _write(tmp_path, "takes", "def run(quick=False):\n    return {'quick': quick}\n")
    plain = _write(tmp_path, "plain", "def run():\n    return {'x': 1}\n")
    assert harness.run_module(takes, quick=True)["result"] == {"quick": True}
    assert harness.run_module(plain, quick=True)["result"] == {"x": 1}


def test_select_rejects_unknown_sections(tmp_path):
    for name in ("alpha", "beta"):
        _write(tmp_path, name, "def run():\n    return {}\n")
    found = harness.discover(tmp_path)
    assert list(found) == ["alpha", "beta"]
    assert list(harness.select(found, "beta")) == ["beta"]
    with pytest.raises(SystemExit, match="unknown section"):
        harness.select(found, "beta,gamma")


def test_harness_runs_every_module_even_when_some_fail(tmp_path):
    bench = tmp_path / "bench"
    bench.mkdir()
    _write(bench, "good", """
        from common import figure
        def run(quick=False):
            return {"figures": [figure("answer", 42.0, goal=">= 40", n=3)], "quick": quick}
    """)
    _write(bench, "bad", "def run():\n    raise ValueError('no data')\n")
    _write(bench, "crash", "import os\ndef run():\n    os._exit(3)\n")
    out = tmp_path / "out"
    rc = harness.main(["--bench-dir", str(bench), "--out-dir", str(out), "--quick", "--probe-size", "64"])
    assert rc == 1  # some section failed
    results = json.loads((out / "results.json").read_text())
    s = results["sections"]
    assert list(s) == ["bad", "crash", "good"]
    assert s["good"]["ok"] and s["good"]["result"]["quick"] is True
    assert s["good"]["result"]["figures"][0]["met"] is True
    assert s["bad"]["ok"] is False and s["bad"]["error"] == "ValueError: no data"
    assert s["crash"]["ok"] is False and "status 3" in s["crash"]["error"]
    assert results["matmul"]["float32"]["n"] == 64
    md = (out / "RESULTS.md").read_text()
    assert "| answer | 42 | >= 40 | yes |  | 3 |  |" in md and "ValueError: no data" in md

    # a subset run replaces its own section and keeps the others from the last run
    _write(bench, "bad", "def run():\n    return {'fixed': 1.0}\n")
    rc = harness.main(["--bench-dir", str(bench), "--out-dir", str(out), "--only", "bad", "--probe-size", "64"])
    assert rc == 0
    s = json.loads((out / "results.json").read_text())["sections"]
    assert s["bad"]["ok"] and s["bad"]["result"] == {"fixed": 1.0}
    assert s["good"]["result"]["figures"][0]["value"] == 42.0 and s["crash"]["ok"] is False


def test_a_module_past_its_time_is_an_error(tmp_path):
    path = _write(tmp_path, "slow", "import time\ndef run():\n    time.sleep(30)\n    return {}\n")
    rec = harness.run_isolated(path, quick=False, timeout_s=1.0)
    assert rec["ok"] is False and rec["error"] == "timed out after 1 s"


# ---- paired, interleaved method and background load (issue 15) --------------------------------


class _FakeClock:
    """Each timed call advances time by the duration its function scheduled."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_interleaved_alternates_and_pairs_ratios_cancel_a_load_drift():
    clock = _FakeClock()
    calls = []
    load = iter([1.0, 1.0, 3.0, 3.0, 2.0, 2.0])  # the machine slows down and recovers, per round

    def timed(name, cost):
        def fn():
            calls.append(name)
            if len(calls) > 2:  # after the warm-up round
                clock.now += cost * next(load)
        return fn

    times = common.interleaved({"a": timed("a", 1.0), "b": timed("b", 5.0)}, repeats=3, warmup=1,
                               seed=None, clock=clock)
    assert calls == ["a", "b"] * 4  # warm-up, then A, B, A, B, ... in the given order
    assert times == {"a": [1.0, 3.0, 2.0], "b": [5.0, 15.0, 10.0]}
    r = common.ratio_stats(times["b"], times["a"])
    # every round says B is 5x slower although B's times spread from 5 to 15
    assert (r.median, r.iqr, r.n) == (5.0, 0.0, 3)


def test_interleaved_shuffles_order_per_round_reproducibly():
    calls = []
    fns = {k: (lambda k=k: calls.append(k)) for k in "abc"}
    common.interleaved(fns, repeats=20, warmup=0, seed=1)
    rounds = [tuple(calls[i:i + 3]) for i in range(0, 60, 3)]
    assert all(sorted(r) == ["a", "b", "c"] for r in rounds)  # each round calls each once
    assert len(set(rounds)) > 1  # not always the same order
    calls2 = []
    common.interleaved({k: (lambda k=k: calls2.append(k)) for k in "abc"}, repeats=20, warmup=0, seed=1)
    assert calls2 == calls


def test_paired_reports_median_of_per_pair_ratios_not_ratio_of_medians():
    clock = _FakeClock()
    ta, tb = iter([1.0, 1.0, 4.0]), iter([2.0, 3.0, 4.0])
    a = lambda: setattr(clock, "now", clock.now + next(ta))  # noqa: E731
    b = lambda: setattr(clock, "now", clock.now + next(tb))  # noqa: E731
    p = common.paired(a, b, repeats=3, warmup=0, seed=None, clock=clock)
    # per-pair ratios 2, 3, 1 -> median 2; the ratio of medians would be 3 / 1 = 3
    assert p.ratio.median == 2.0 and p.ratio.n == 3
    assert p.a.median == 1.0 and p.b.median == 3.0
    f = common.paired_figure("x vs y", p, goal=">= 2")
    assert f["value"] == 2.0 and f["met"] is True and f["n"] == 3 and "ratio of medians 3" in f["context"]
    with pytest.raises(ValueError, match="equal lengths"):
        common.ratio_stats([1.0], [1.0, 2.0])


def test_background_load_starts_bounded_busy_processes_and_stops_them():
    with harness.BackgroundLoad(2, max_s=60) as bg:
        procs = list(bg.procs)
        assert len(procs) == 2 and all(p.poll() is None for p in procs)
    assert all(p.poll() is not None for p in procs)  # stopped on exit
    with pytest.raises(RuntimeError):
        with harness.BackgroundLoad(1, max_s=60) as bg:
            procs = list(bg.procs)
            raise RuntimeError("a section failed")
    assert all(p.poll() is not None for p in procs)  # also stopped on an error
    # a busy process ends by itself at its deadline (the harness may die without cleaning up)
    import subprocess
    proc = subprocess.Popen([sys.executable, "-c", harness._BUSY, "0.2"])
    assert proc.wait(timeout=20) == 0


def test_parse_loads():
    assert harness.parse_loads("0,1") == [0, 1] and harness.parse_loads("1") == [1]
    for bad in ("x", "-1", "1,1", ""):
        with pytest.raises(SystemExit, match="--load"):
            harness.parse_loads(bad)


def test_load_passes_are_recorded_side_by_side(tmp_path):
    bench = tmp_path / "bench"
    bench.mkdir()
    # the module reports how many busy processes its harness (its parent) started beside it
    _write(bench, "probe", """
        import os, sys
        from common import figure
        def run():
            busy = 0
            for pid in os.listdir('/proc'):
                try:
                    cmd = open(f'/proc/{pid}/cmdline', 'rb').read()
                    ppid = int(open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()[1])
                except (OSError, ValueError, IndexError):
                    continue
                busy += b'os.getppid() == parent' in cmd and ppid == os.getppid()
            return {"figures": [figure("busy processes", float(busy), goal="<= 0")]}
    """)
    out = tmp_path / "out"
    rc = harness.main(["--bench-dir", str(bench), "--out-dir", str(out), "--probe-size", "64", "--load", "0,1"])
    results = json.loads((out / "results.json").read_text())
    assert rc == 0 and results["loads"] == [0, 1]
    assert results["sections"]["probe"]["result"]["figures"][0]["value"] == 0.0
    loaded = results["loaded"]["load1"]["probe"]
    assert loaded["result"]["figures"][0]["value"] == 1.0 and loaded["load"] == 1
    assert len(loaded["load_before"]) == 3 and len(loaded["load_after"]) == 3
    md = (out / "RESULTS.md").read_text()
    assert "| section | figure | goal | idle | met? | load 1 | met? |" in md
    assert "| probe | busy processes | <= 0 | 0 | yes | 1 | **NO** |" in md
    assert "load 1 pass:" in md and "load average (1/5/15 min)" in md
    # a later loaded-only run keeps the idle pass
    rc = harness.main(["--bench-dir", str(bench), "--out-dir", str(out), "--probe-size", "64", "--load", "1"])
    results = json.loads((out / "results.json").read_text())
    assert "probe" in results["sections"] and "probe" in results["loaded"]["load1"]


def test_a_section_declares_its_own_time_out_and_passes(tmp_path):
    """TIMEOUT_S lengthens (never shortens) --timeout for one section; LOADS = (0,) runs it only
    in the idle pass; a section declaring neither gets every pass and the default."""
    plain = _write(tmp_path, "plain", "def run():\n    return {}\n")
    heavy = _write(tmp_path, "heavy", "TIMEOUT_S = 1_800  # long\nLOADS = (0,)\ndef run():\n    return {}\n")
    short = _write(tmp_path, "short", "TIMEOUT_S = 5\ndef run():\n    return {}\n")
    assert harness.section_limits(plain, 600) == (600, None)
    assert harness.section_limits(heavy, 600) == (1800.0, (0,))
    assert harness.section_limits(short, 600) == (600, None)
    bench = tmp_path / "b"
    bench.mkdir()
    _write(bench, "idle_only", "LOADS = (0,)\ndef run():\n    return {'x': 1.0}\n")
    out = tmp_path / "out"
    assert harness.main(["--bench-dir", str(bench), "--out-dir", str(out), "--probe-size", "64", "--load", "0,1"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["sections"]["idle_only"]["ok"] is True
    assert "idle_only" not in results.get("loaded", {}).get("load1", {})
