"""The benchmark harness behind ``make bench``.

Finds every ``benchmarks/bench_<section>.py``, runs each module's ``run()`` in its own Python
process (so a crash, a hang or a leaked thread setting in one never touches the others, and each
section's peak memory is its own), and writes ``benchmarks/results.json`` and
``benchmarks/RESULTS.md``: machine facts, the machine's matmul FLOP/s, then one table per
section (figure, value, goal, met?, spread, repeats, context). A module that raises, dies or
runs past its time is recorded as an error and the others still run.

Every section can run in several passes: ``--load 0,1`` runs each section on the machine as it
is (pass "idle", load 0) and then again with one background busy process started for it
(``--load 1``: a bounded ``while True`` loop per process, stopped when the section ends, also on
an error or Ctrl-C, and self-terminating if the harness dies). RESULTS.md shows the passes' values
side by side, and every section's record carries the load averages before and after it.

    python benchmarks/run.py --load 0,1           # what `make bench` runs (2-3 h on 2 cores)
    python benchmarks/run.py --only frontend,encoders --quick
    python benchmarks/run.py --only frontend --load 1   # only the loaded pass of one section
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # a script's own folder; makes `import common` work when imported
    sys.path.insert(0, str(HERE))

from common import figure, fmt_num, goal_met, load_average, machine_facts, matmul_flops, peak_rss_mib  # noqa: E402

# Goals of modules that report flat numbers and carry no GOALS of their own (exact keys).
DEFAULT_GOALS: dict[str, dict[str, str]] = {
    "frontend": {
        "b1/earshot/speedup_vs_torchlibrosa": ">= 5",
        "b8/earshot/speedup_vs_torchlibrosa": ">= 5",
        "b1/earshot/max_abs_db_vs_torchlibrosa": "<= 1e-3",
        "b8/earshot/max_abs_db_vs_torchlibrosa": "<= 1e-3",
    },
    "index": {"index_vs_model": ">= 0.9"},  # indexing end to end vs the model alone (old flat results)
}

OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


# ---- background load ------------------------------------------------------------------------

# One busy process: spins until its deadline or until its parent (the harness) is gone, so a
# killed harness never leaves a CPU burner behind.
_BUSY = (
    "import os, sys, time\n"
    "end = time.monotonic() + float(sys.argv[1]); parent = os.getppid()\n"
    "while time.monotonic() < end and os.getppid() == parent:\n"
    "    for _ in range(200000):\n"
    "        pass\n"
)


class BackgroundLoad:
    """Context manager running ``n`` busy Python processes (each keeps one core busy) for at
    most ``max_s`` seconds; they are terminated on exit, whatever ends the block."""

    def __init__(self, n: int, max_s: float):
        if n < 0:
            raise ValueError("--load must be >= 0")
        self.n, self.max_s = n, max_s
        self.procs: list[subprocess.Popen] = []

    def __enter__(self) -> "BackgroundLoad":
        try:
            for _ in range(self.n):
                self.procs.append(subprocess.Popen(
                    [sys.executable, "-c", _BUSY, str(self.max_s)],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def parse_loads(text: str) -> list[int]:
    """``"0,1"`` -> ``[0, 1]``: the passes to run, each with that many busy processes."""
    try:
        loads = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SystemExit(f"--load: expected comma-separated integers like 0,1, got {text!r}") from None
    if not loads or any(v < 0 for v in loads) or len(set(loads)) != len(loads):
        raise SystemExit(f"--load: expected distinct non-negative integers like 0,1, got {text!r}")
    return loads


def pass_key(load: int) -> str:
    """The key of a pass in results.json: ``"idle"`` for load 0, ``"load1"`` for load 1..."""
    return "idle" if load == 0 else f"load{load}"


# ---- discovery and one module ----------------------------------------------------------------


def discover(folder: Path = HERE) -> dict[str, Path]:
    """``{section: path}`` of every ``bench_<section>.py`` in ``folder``, sorted by section."""
    return {p.stem[len("bench_"):]: p for p in sorted(folder.glob("bench_*.py"))}


def select(found: dict[str, Path], only: str | None) -> dict[str, Path]:
    """The sections named in ``--only a,b`` (all when None); an unknown name is an error that
    lists the known ones, never a silently empty run."""
    if not only:
        return found
    wanted = [s.strip() for s in only.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in found]
    if unknown:
        raise SystemExit(f"--only: unknown section(s) {unknown}; known: {sorted(found)}")
    return {s: found[s] for s in wanted}


def section_limits(path: Path, default_timeout: float) -> tuple[float, tuple[int, ...] | None]:
    """(time-out, loads) a section declares at its top level, read from its text so nothing is
    imported: ``TIMEOUT_S = 1800`` (a section that needs longer than ``--timeout``) and
    ``LOADS = (0,)`` (passes it runs in; heavy sections whose figures are sizes and ratios run
    idle only). None: every pass ``--load`` asks for."""
    text = path.read_text()
    m = re.search(r"^TIMEOUT_S\s*=\s*([0-9_.]+)", text, re.M)
    timeout = max(default_timeout, float(m.group(1).replace("_", ""))) if m else default_timeout
    m = re.search(r"^LOADS\s*=\s*\(([0-9,\s]*)\)", text, re.M)
    loads = tuple(int(v) for v in m.group(1).replace(" ", "").split(",") if v) if m else None
    return timeout, loads


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(f"bench_module_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"{path}: not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and pickling look their module up by name
    spec.loader.exec_module(module)
    return module


def run_module(path: Path, quick: bool = False) -> dict[str, Any]:
    """Import ``path`` and call its ``run()`` (with ``quick`` when it takes it), in this process.
    Never raises: a failure comes back as ``{"ok": False, "error": ..., "traceback": ...}``."""
    start = time.perf_counter()
    try:
        module = _load(path)
        fn = getattr(module, "run", None)
        if not callable(fn):
            raise AttributeError(f"{path.name} has no run() function")
        kwargs = {"quick": True} if quick and "quick" in inspect.signature(fn).parameters else {}
        result = fn(**kwargs)
        if not isinstance(result, dict):
            raise TypeError(f"{path.name}: run() returned {type(result).__name__}, not a dict")
        goals = getattr(module, "GOALS", None)
        out: dict[str, Any] = {"ok": True, "result": jsonable(result)}
        if isinstance(goals, dict):
            out["goals"] = dict(goals)
    except BaseException as e:  # noqa: BLE001 - a benchmark's failure is data, not a crash
        if isinstance(e, KeyboardInterrupt):
            raise
        out = {"ok": False, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
    out["seconds"] = time.perf_counter() - start
    out["peak_rss_mib"] = peak_rss_mib()
    return out


def run_isolated(path: Path, quick: bool, timeout_s: float) -> dict[str, Any]:
    """Run one module in a child Python (``run.py --child``); a crash, a non-zero exit or a
    timeout becomes an error record carrying the tail of the child's output."""
    with tempfile.TemporaryDirectory(prefix="earshot-bench-") as tmp:
        out_file = Path(tmp) / "result.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(path),
               "--child-out", str(out_file)] + (["--quick"] if quick else [])
        # the CLI's OpenMP setting (earshot.threads.configure_openmp), unless the caller set one
        env = {**OFFLINE_ENV, "OMP_WAIT_POLICY": "PASSIVE", **os.environ}
        start = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env)
        except subprocess.TimeoutExpired as e:
            tail = _tail((e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or ""))
            return {"ok": False, "error": f"timed out after {timeout_s:.0f} s", "output_tail": tail,
                    "seconds": time.perf_counter() - start}
        if out_file.is_file():
            record = json.loads(out_file.read_text())
        else:
            record = {"ok": False, "error": f"child exited with status {proc.returncode} and wrote no result",
                      "seconds": time.perf_counter() - start}
        if not record.get("ok"):
            record["output_tail"] = _tail(proc.stdout + proc.stderr)
        return record


def _tail(text: str, n: int = 4000) -> str:
    return text[-n:]


def jsonable(x: Any) -> Any:
    """Plain JSON types: numpy/torch scalars to numbers, tuples to lists, NaN/inf to None."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if hasattr(x, "item") and callable(x.item) and getattr(x, "ndim", 0) == 0:
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    return str(x)


# ---- turning results into tables -------------------------------------------------------------


def section_figures(section: str, record: dict[str, Any]) -> list[dict[str, Any]]:
    """The table rows of one section: the module's own ``figures``, or one row per numeric key
    of a flat result (goals from the module's GOALS, else DEFAULT_GOALS)."""
    result = record.get("result") or {}
    if isinstance(result.get("figures"), list):
        rows = []
        for f in result["figures"]:
            row = dict(f)
            if row.get("goal") and row.get("met") is None and isinstance(row.get("value"), (int, float)):
                row["met"] = goal_met(float(row["value"]), row["goal"])
            rows.append(row)
        return rows
    goals = record.get("goals") or DEFAULT_GOALS.get(section, {})
    numbers = {k: float(v) for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    # "<p>median<s>" gathers its siblings "<p>iqr<s>" (spread) and "<p>min<s>", "<p>max<s>" (context)
    siblings = {}
    for key in numbers:
        m = _MEDIAN.match(key)
        if m:
            pre, suf = m.groups()
            siblings[key] = {part: f"{pre}{part}{suf}" for part in ("iqr", "min", "max")}
    consumed = {k for sib in siblings.values() for k in sib.values() if k in numbers}
    rows = []
    for key, value in numbers.items():
        if key in consumed and key not in siblings:
            continue
        sib = siblings.get(key, {})
        spread = numbers.get(sib["iqr"]) if sib else None
        context = (f"min {fmt_num(numbers[sib['min']])}, max {fmt_num(numbers[sib['max']])}"
                   if sib and sib["min"] in numbers and sib["max"] in numbers else "")
        rows.append(figure(key, value, goal=goals.get(key), spread=spread, context=context))
    return rows


_MEDIAN = re.compile(r"^(.*)median(.*)$")


def _cell(x: Any) -> str:
    return fmt_num(x).replace("|", "\\|")


def _met(m: Any) -> str:
    return "" if m is None else ("yes" if m else "**NO**")


def figures_table(rows: list[dict[str, Any]], loaded: dict[str, list[dict[str, Any]]] | None = None) -> list[str]:
    """Markdown lines of one section's table; ``loaded`` maps a pass label ("load 1") to that
    pass's rows, shown beside the idle value of the figure with the same name."""
    loaded = loaded or {}
    extra_head = "".join(f" {lab} | met? | {lab} IQR |" for lab in loaded)
    extra_rule = " ---: | --- | ---: |" * len(loaded)
    lines = ["| figure | value | goal | met? | spread (IQR) | n | context |" + extra_head,
             "| --- | ---: | --- | --- | ---: | ---: | --- |" + extra_rule]
    by_name = {lab: {r.get("name"): r for r in rs} for lab, rs in loaded.items()}
    for r in rows:
        value = _cell(r.get("value")) + (f" {r['unit']}" if r.get("unit") else "")
        extra = ""
        for lab in loaded:
            o = by_name[lab].get(r.get("name"))
            extra += (f" {_cell(o.get('value'))} | {_met(o.get('met'))} | {_cell(o.get('spread'))} |" if o
                      else " | | |")
        lines.append(
            f"| {_cell(r.get('name'))} | {value} | {_cell(r.get('goal'))} | {_met(r.get('met'))} "
            f"| {_cell(r.get('spread'))} | {_cell(r.get('n'))} | {_cell(r.get('context'))} |" + extra
        )
    return lines


def _load_summary(results: dict[str, Any]) -> list[str]:
    """One paragraph on how busy the machine was: the range of the 1-minute load averages
    recorded around the sections, per pass, against the usable cores."""
    passes = {"idle": results.get("sections") or {}, **(results.get("loaded") or {})}
    parts = []
    for key, secs in passes.items():
        ones = [float(la[0]) for rec in secs.values() for la in (rec.get("load_before"), rec.get("load_after")) if la]
        if ones:
            parts.append(f"{_load_label(key)} pass {fmt_num(min(ones))} to {fmt_num(max(ones))}")
    if not parts:
        return []
    cores = (results.get("machine") or {}).get("usable_cores")
    return [f"Machine load during this run (1-minute load average around each section, {cores} usable "
            f"cores): {'; '.join(parts)}. Other users of the machine count in it.", ""]


def _load_label(key: str) -> str:
    return "idle" if key == "idle" else key.replace("load", "load ")


def _loads_text(rec: dict[str, Any]) -> str:
    before, after = rec.get("load_before"), rec.get("load_after")
    if not before and not after:
        return ""
    show = lambda la: "/".join(fmt_num(float(v)) for v in la) if la else "?"  # noqa: E731
    return f"load average (1/5/15 min) {show(before)} before, {show(after)} after"


def markdown(results: dict[str, Any]) -> str:
    """RESULTS.md: how it was run, machine facts, every goal at a glance, one table per section,
    then errors with the last lines of their tracebacks."""
    m = results.get("machine", {})
    lines = [
        "# earshot benchmarks",
        "",
        f"Written by `benchmarks/run.py` ({' '.join(results.get('argv', [])) or 'no options'}) on "
        f"{results.get('generated', '?')} in {fmt_num(results.get('duration_s'))} s. Values are "
        "medians over repeats with the interquartile range as spread; every goal is a ratio against "
        "a peer or a limit measured in the same run, from paired interleaved repeats (the median "
        "of per-pair ratios), and absolute times are context only. Columns \"load N\" come from "
        "a second pass of the same section with N background busy processes (`--load`); each "
        "section lists the machine's load averages around each pass, which also count other "
        "users of the machine: \"idle\" means no load started by the benchmark, not an idle "
        "machine.",
        "",
        *_load_summary(results),
        "## Machine",
        "",
        "| fact | value |",
        "| --- | --- |",
    ]
    for key in ("cpu_model", "cpu_flags_of_interest", "native_bf16", "logical_cores", "usable_cores",
                "memory_gib", "load_average_1m", "python", "torch", "torch_threads", "mkldnn", "cuda",
                "platform"):
        if key in m:
            v = m[key]
            lines.append(f"| {key} | {_cell(', '.join(v) if isinstance(v, list) else v)} |")
    for dtype, probe in (results.get("matmul") or {}).items():
        if isinstance(probe, dict) and "gflops_median" in probe:
            lines.append(f"| matmul {dtype} {probe['n']}x{probe['n']} GFLOP/s (median, IQR, best) | "
                         f"{fmt_num(probe['gflops_median'])}, {fmt_num(probe['gflops_iqr'])}, "
                         f"{fmt_num(probe['gflops_best'])} |")

    sections = results.get("sections", {})
    loaded = results.get("loaded") or {}
    labels = {key: _load_label(key) for key in loaded}
    loaded_rows = {key: {s: section_figures(s, rec) for s, rec in secs.items() if rec.get("ok")}
                   for key, secs in loaded.items()}
    goal_rows = [(s, r) for s, rec in sections.items() for r in section_figures(s, rec) if r.get("goal")]
    goal_names = {(s, r["name"]) for s, r in goal_rows}
    for key, by_section in loaded_rows.items():  # goals only a loaded pass measured
        for s, rows in by_section.items():
            for r in rows:
                if r.get("goal") and (s, r["name"]) not in goal_names:
                    goal_rows.append((s, {**r, "value": None, "met": None}))
                    goal_names.add((s, r["name"]))
    lines += ["", "## Goals", ""]
    if goal_rows:
        head = "| section | figure | goal | idle | met? |" + "".join(f" {lab} | met? |" for lab in labels.values())
        rule = "| --- | --- | --- | ---: | --- |" + " ---: | --- |" * len(labels)
        lines += [head, rule]
        for s, r in goal_rows:
            row = f"| {s} | {_cell(r['name'])} | {_cell(r['goal'])} | {_cell(r['value'])} | {_met(r['met'])} |"
            for key in labels:
                o = next((x for x in loaded_rows[key].get(s, []) if x.get("name") == r["name"]), None)
                row += f" {_cell(o['value'])} | {_met(o['met'])} |" if o else " | |"
            lines.append(row)
    bounds = HERE / "BOUNDS.md"
    if bounds.is_file():  # the hand-written reading of the misses, kept beside the harness
        lines += ["", "## Misses and what bounds them", "", bounds.read_text().strip()]
    failed = [s for s, rec in sections.items() if not rec.get("ok")]
    failed += [f"{s} ({labels[key]})" for key, secs in loaded.items() for s, rec in secs.items()
               if not rec.get("ok")]
    if failed:
        lines += ["", f"Sections that failed: {', '.join(failed)} (see Errors)."]

    for s in list(sections) + [s for secs in loaded.values() for s in secs if s not in sections]:
        rec = sections.get(s, {"ok": False, "error": "no idle pass recorded"})
        lines += ["", f"## {s}", ""]
        head = f"{fmt_num(rec.get('seconds'))} s, peak RSS {fmt_num(rec.get('peak_rss_mib'))} MiB"
        if rec.get("run_at") and rec.get("run_at") != results.get("generated"):
            head += f", from the run of {rec['run_at']}"
        if _loads_text(rec):
            head += f"; idle pass: {_loads_text(rec)}"
        for key, secs in loaded.items():
            if s in secs:
                lrec = secs[s]
                head += (f"; {labels[key]} pass: {fmt_num(lrec.get('seconds'))} s"
                         + (f", from the run of {lrec['run_at']}" if lrec.get("run_at") != results.get("generated") else "")
                         + (f", {_loads_text(lrec)}" if _loads_text(lrec) else ""))
        lines.append(f"_{head}_")
        lines.append("")
        if not rec.get("ok"):
            lines.append(f"**error**: `{rec.get('error', 'unknown')}`")
            continue
        notes = (rec.get("result") or {}).get("notes")
        if isinstance(notes, list):
            lines += [f"- {n}" for n in notes] + [""]
        rows = section_figures(s, rec)
        beside = {labels[key]: loaded_rows[key][s] for key in loaded if s in loaded_rows[key]}
        lines += figures_table(rows, beside) if rows else ["(no numeric figures)"]

    if failed:
        lines += ["", "## Errors", ""]
        records = [(s, sections[s]) for s in sections if not sections[s].get("ok")]
        records += [(f"{s} ({labels[key]})", rec) for key, secs in loaded.items() for s, rec in secs.items()
                    if not rec.get("ok")]
        for s, rec in records:
            tb = (rec.get("traceback") or rec.get("output_tail") or "").strip().splitlines()[-12:]
            lines += [f"### {s}", "", f"`{rec.get('error', 'unknown')}`", "", "```", *tb, "```", ""]
    return "\n".join(lines).rstrip() + "\n"


# ---- main ------------------------------------------------------------------------------------


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _on_sigterm(handler):
    """Install ``handler`` for SIGTERM; returns the previous one (None where signals cannot be
    set: not the main thread, or no SIGTERM)."""
    try:
        return signal.signal(signal.SIGTERM, handler)
    except (ValueError, AttributeError):
        return None


def _run_sections(chosen: dict[str, Path], loads: list[int], args: argparse.Namespace, started: float,
                  generated: str, sections: dict[str, Any], loaded: dict[str, dict[str, Any]]) -> None:
    """Run every chosen section once per load, recording into ``sections`` (load 0) and
    ``loaded`` (the others)."""
    for name, path in chosen.items():
        section_timeout, section_loads = section_limits(path, args.timeout)
        for load in loads:
            label = name if load == 0 else f"{name} (load {load})"
            left = args.budget - (time.perf_counter() - started)
            if section_loads is not None and load not in section_loads:
                print(f"[bench] {label}: not run (the section runs in passes {section_loads})", file=sys.stderr)
                continue
            if left < 30:
                record = {"ok": False, "error": f"skipped: the run's {args.budget:.0f} s budget was spent",
                          "seconds": 0.0}
                print(f"[bench] {label}: skipped (budget spent)", file=sys.stderr)
            else:
                print(f"[bench] {label} ...", file=sys.stderr, flush=True)
                timeout = min(section_timeout, left)
                before = load_average()
                with BackgroundLoad(load, timeout + 30):
                    record = run_isolated(path, args.quick, timeout)
                record.update(load=load, load_before=before, load_after=load_average())
                status = "ok" if record.get("ok") else f"ERROR {record.get('error')}"
                print(f"[bench] {label}: {status} ({record.get('seconds', 0):.0f} s)", file=sys.stderr, flush=True)
            record["run_at"] = generated
            if load == 0:
                sections[name] = record
            else:
                loaded.setdefault(pass_key(load), {})[name] = record


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", help="comma-separated sections to run, e.g. frontend,encoders")
    p.add_argument("--quick", action="store_true", help="fewer repeats and sizes (a smoke run)")
    p.add_argument("--out-dir", type=Path, default=HERE, help="where results.json and RESULTS.md go")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds for the whole run (default: no bound but each section's time-out)")
    p.add_argument("--timeout", type=float, default=10 * 60, help="seconds for one section at most")
    p.add_argument("--render", action="store_true", help="only rewrite RESULTS.md from results.json")
    p.add_argument("--probe-size", type=int, default=2048, help="n of the n x n matmul FLOP/s probe")
    p.add_argument("--load", default="0", help="passes to run, as busy background processes per pass: "
                   "0 (the machine as it is), 1, or 0,1 for both side by side (make bench)")
    p.add_argument("--bench-dir", type=Path, default=HERE, help=argparse.SUPPRESS)
    p.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.child is not None:  # inside the per-module process
        record = run_module(args.child, args.quick)
        _write(args.child_out, json.dumps(record))
        return 0

    if args.render:
        results = json.loads((args.out_dir / "results.json").read_text())
        _write(args.out_dir / "RESULTS.md", markdown(results))
        return 0

    loads = parse_loads(args.load)
    if args.budget is None:
        args.budget = math.inf  # each section is bounded by its own time-out
    started = time.perf_counter()
    chosen = select(discover(args.bench_dir), args.only)
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    facts = machine_facts()
    matmul = {"float32": matmul_flops(args.probe_size, "float32")}
    if facts["native_bf16"]:
        matmul["bfloat16"] = matmul_flops(args.probe_size, "bfloat16")

    out_json = args.out_dir / "results.json"
    previous: dict[str, Any] = {}
    if out_json.is_file():  # sections and passes not run now keep their last results
        try:
            previous = json.loads(out_json.read_text())
        except (OSError, ValueError):
            previous = {}
    keep_idle = bool(args.only) or 0 not in loads
    sections: dict[str, Any] = {s: rec for s, rec in (previous.get("sections") or {}).items()
                                if keep_idle and not (s in chosen and 0 in loads)}
    loaded: dict[str, dict[str, Any]] = {}
    for key, secs in (previous.get("loaded") or {}).items():
        if not keep_idle and key not in {pass_key(v) for v in loads}:
            continue  # a full run drops passes it did not repeat
        loaded[key] = {s: rec for s, rec in secs.items()
                       if not (s in chosen and key in {pass_key(v) for v in loads})}

    # SIGTERM (a CI cancel, `timeout`) unwinds like Ctrl-C, so background load is stopped
    previous_handler = _on_sigterm(lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        _run_sections(chosen, loads, args, started, generated, sections, loaded)
    finally:
        if previous_handler is not None:
            _on_sigterm(previous_handler)

    results = {
        "generated": generated,
        "duration_s": time.perf_counter() - started,
        "argv": sys.argv[1:] if argv is None else list(argv),
        "quick": args.quick,
        "loads": loads,
        "machine": facts,
        "matmul": matmul,
        "sections": sections,
        "loaded": {k: v for k, v in sorted(loaded.items()) if v},
    }
    results = jsonable(results)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    _write(out_json, json.dumps(results, indent=2) + "\n")
    _write(args.out_dir / "RESULTS.md", markdown(results))
    print(f"[bench] wrote {out_json} and {args.out_dir / 'RESULTS.md'}", file=sys.stderr)
    ran = [r for s, r in sections.items() if s in chosen and 0 in loads]
    ran += [r for key, secs in loaded.items() for s, r in secs.items()
            if s in chosen and key in {pass_key(v) for v in loads}]
    return 0 if all(r.get("ok") for r in ran) else 1


if __name__ == "__main__":
    sys.exit(main())
