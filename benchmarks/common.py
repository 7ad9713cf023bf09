"""Shared pieces of the benchmark suite: timing statistics, memory probes, the machine's
matmul FLOP/s, machine facts, and the ``figure`` record every benchmark reports.

A benchmark module ``benchmarks/bench_<section>.py`` exposes ``run(quick: bool = False) -> dict``
(``quick`` is optional). The harness (``benchmarks/run.py``) renders a result dict as follows:

- ``result["figures"]``: a list of :func:`figure` records, one table row each (figure, value,
  goal, met?, median, spread, n, context). Goals are checked here, not by the reader.
- every other key is kept in ``results.json`` as raw numbers; a module that returns no
  ``figures`` gets one row per numeric key instead (goals for it may come from a module-level
  ``GOALS = {key: ">= 5"}``).

Absolute times appear only as context: every figure with a goal is a ratio against a peer or a
limit measured in the same run, because the machine (2 shared cores here) is noisy. Ratios come
from paired, interleaved repeats (:func:`paired`, :func:`interleaved`): A and B alternate in a
shuffled order, and the reported ratio is the median of the per-pair ratios with its IQR (minima
and ratios of medians are context only). :func:`load_average` is recorded around every section.

This module imports torch lazily, so the harness and its tests start fast.
"""

from __future__ import annotations

import gc
import math
import os
import platform
import random
import re
import resource
import statistics
import threading
import time
import tracemalloc
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

# ---- statistics ------------------------------------------------------------------------------


def quantile(values: Iterable[float], q: float) -> float:
    """The q-quantile with linear interpolation between order statistics (numpy's default,
    "linear"), so IQRs here match ``np.percentile``; written out to keep numpy optional."""
    xs = sorted(values)
    if not xs:
        raise ValueError("quantile of no values")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile q must be in [0, 1], got {q}")
    pos = q * (len(xs) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


@dataclass(frozen=True)
class Stats:
    """Summary of repeated measurements (seconds, or any unit)."""

    n: int  # number of timed repeats (warm-up excluded)
    median: float  # the figure we report: robust to one slow repeat on a shared machine
    iqr: float  # spread: 75th minus 25th percentile (0 for a single repeat)
    min: float  # best case
    max: float  # worst case
    mean: float  # for readers who want it; not used for goals

    def as_dict(self, prefix: str = "", scale: float = 1.0) -> dict[str, float]:
        """Flat numbers (times ``scale``), e.g. ``as_dict("b8/", 1000)`` -> ``b8/median`` in ms."""
        return {f"{prefix}{k}": (v if k == "n" else v * scale) for k, v in asdict(self).items()}


def summarize(values: Iterable[float]) -> Stats:
    """Median, IQR, min, max and mean of repeated measurements."""
    xs = [float(v) for v in values]
    if not xs:
        raise ValueError("summarize needs at least one value")
    return Stats(
        n=len(xs),
        median=statistics.median(xs),
        iqr=quantile(xs, 0.75) - quantile(xs, 0.25),
        min=min(xs),
        max=max(xs),
        mean=statistics.fmean(xs),
    )


def time_rates(times: Iterable[float], work: float) -> Stats:
    """Summary of per-repeat rates ``work / t`` (e.g. clips/s) with an exact IQR."""
    ts = [float(t) for t in times]
    if any(t <= 0 for t in ts):
        raise ValueError("times must be positive to turn into rates")
    return summarize(work / t for t in ts)


# ---- timing ----------------------------------------------------------------------------------


def time_fn(
    fn: Callable[[], Any],
    repeats: int = 5,
    warmup: int = 1,
    clock: Callable[[], float] = time.perf_counter,
) -> list[float]:
    """Call ``fn`` ``warmup`` times untimed (allocator, oneDNN primitive caches, lazy imports),
    then ``repeats`` times timed; returns the seconds of each timed call.

    ``clock`` is injectable so the statistics can be tested with a fake clock.
    """
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = clock()
        fn()
        times.append(clock() - start)
    return times


def repeats_for(seconds_per_call: float, budget_s: float, lo: int = 2, hi: int = 7) -> int:
    """How many repeats fit in ``budget_s`` at ``seconds_per_call``, clamped to [lo, hi]: big
    models get fewer repeats, so a section's wall time stays bounded on a slow machine."""
    if seconds_per_call <= 0:
        return hi
    return max(lo, min(hi, int(budget_s // seconds_per_call)))


def interleaved(
    fns: dict[str, Callable[[], Any]],
    repeats: int = 7,
    warmup: int = 1,
    seed: int | None = 0,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, list[float]]:
    """Time several implementations of the same work in rounds: every round calls each one once,
    in an order shuffled per round (``seed``; None keeps the given order, A, B, A, B, ...).

    On a shared machine the load drifts; timed one after the other, A could meet a quiet minute
    and B a busy one. Interleaved, round ``i`` of every implementation sees nearly the same
    load, so the per-round ratios (:func:`ratio_stats`) are steady even when the times are not.
    Each ``fn`` is called ``warmup`` times untimed first. Returns ``{name: [seconds per round]}``.
    """
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    rng = random.Random(seed) if seed is not None else None
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(repeats):
        order = names[:]
        if rng is not None:
            rng.shuffle(order)
        for name in order:
            start = clock()
            fns[name]()
            times[name].append(clock() - start)
    return times


def ratio_stats(numerator: Iterable[float], denominator: Iterable[float], scale: float = 1.0) -> Stats:
    """Summary of per-round ratios ``scale * numerator[i] / denominator[i]``.

    The figure to report for "A is x times faster than B" is ``ratio_stats(t_B, t_A)``: the
    median of per-pair ratios with its IQR. The ratio of two medians (or of two minima) mixes
    rounds that saw different load and is only context."""
    num, den = [float(v) for v in numerator], [float(v) for v in denominator]
    if len(num) != len(den):
        raise ValueError(f"paired ratios need equal lengths, got {len(num)} and {len(den)}")
    if any(d <= 0 for d in den):
        raise ValueError("denominators must be positive")
    return summarize(scale * a / b for a, b in zip(num, den))


@dataclass(frozen=True)
class Paired:
    """Result of :func:`paired`: the times of both sides and the per-pair speed ratio."""

    a: Stats  # seconds per call of A
    b: Stats  # seconds per call of B
    ratio: Stats  # per pair: t_B / t_A, i.e. how many times faster A is than B
    times_a: list[float]
    times_b: list[float]

    def context(self, unit: float = 1000.0, label: str = "ms") -> str:
        """``"A 3.1 vs B 18.2 ms median; ratio of medians 5.87, of minima 5.91"``: context only."""
        return (f"A {self.a.median * unit:.3g} vs B {self.b.median * unit:.3g} {label} median; ratio of "
                f"medians {self.b.median / self.a.median:.3g}, of minima {self.b.min / self.a.min:.3g}")


def paired(fn_a: Callable[[], Any], fn_b: Callable[[], Any], repeats: int = 7, warmup: int = 1,
           seed: int | None = 0, clock: Callable[[], float] = time.perf_counter) -> Paired:
    """A and B timed in interleaved pairs (order shuffled per pair); ``ratio`` is the median of
    the per-pair ratios t_B / t_A with its IQR: the figure every "A vs B" goal is checked on."""
    times = interleaved({"a": fn_a, "b": fn_b}, repeats, warmup, seed, clock)
    return Paired(a=summarize(times["a"]), b=summarize(times["b"]),
                  ratio=ratio_stats(times["b"], times["a"]), times_a=times["a"], times_b=times["b"])


def paired_figure(name: str, result: Paired, *, goal: str | None = None, context: str = "") -> dict[str, Any]:
    """The :func:`figure` of a paired ratio: median per-pair ratio, its IQR, the pair count and
    the medians and minima as context."""
    ctx = result.context() + (f"; {context}" if context else "")
    return figure(name, result.ratio.median, goal=goal, spread=result.ratio.iqr, n=result.ratio.n, context=ctx)


# ---- load ------------------------------------------------------------------------------------


def load_average() -> list[float] | None:
    """The 1-, 5- and 15-minute load averages (None where the OS has none): recorded before
    and after each section, so a reader sees how busy the machine was."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


# ---- memory ----------------------------------------------------------------------------------


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (Linux ``ru_maxrss`` is in KiB).

    A process-lifetime high-water mark: for the peak of one phase, run it in a fresh process
    (the harness runs each module in its own) or use :class:`RSSSampler`.
    """
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mib() -> float:
    """Resident set size now, from ``/proc/self/statm`` (falls back to the peak elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return peak_rss_mib()


class RSSSampler:
    """Context manager sampling this process's RSS in a thread: ``peak_mib`` and ``growth_mib``
    (peak minus RSS at entry) of the enclosed phase, which ``ru_maxrss`` cannot give once an
    earlier phase set a higher mark. Sampling misses spikes shorter than ``interval_s``."""

    def __init__(self, interval_s: float = 0.005):
        self.interval_s = interval_s
        self.start_mib = 0.0
        self.peak_mib = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak_mib = max(self.peak_mib, current_rss_mib())
            self._stop.wait(self.interval_s)

    def __enter__(self) -> "RSSSampler":
        gc.collect()
        self.start_mib = self.peak_mib = current_rss_mib()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak_mib = max(self.peak_mib, current_rss_mib())

    @property
    def growth_mib(self) -> float:
        return self.peak_mib - self.start_mib


def traced_peak_mib(fn: Callable[[], Any]) -> tuple[Any, float]:
    """Run ``fn`` under tracemalloc; return its result and the peak of Python-heap allocations
    (numpy arrays included, torch tensors not: torch allocates outside the Python allocator)."""
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    tracemalloc.reset_peak()
    base, _ = tracemalloc.get_traced_memory()
    try:
        result = fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        if not was_tracing:
            tracemalloc.stop()
    return result, (peak - base) / 2**20


# ---- the machine's FLOP limit ----------------------------------------------------------------


def matmul_flops(n: int = 2048, dtype: str = "float32", repeats: int = 7) -> dict[str, float]:
    """Measure the machine's dense-matmul FLOP/s with torch (same threads as the models).

    A square ``n x n`` matmul is the best case for the BLAS/oneDNN kernels every encoder uses,
    so its rate is the practical limit an encoder's FLOP/s is compared with. Returns the median,
    IQR and best GFLOP/s over ``repeats`` (after one warm-up).
    """
    import torch

    dt = getattr(torch, dtype)
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(dt)
    b = torch.randn(n, n, generator=gen).to(dt)
    with torch.inference_mode():
        times = time_fn(lambda: torch.mm(a, b), repeats=repeats, warmup=1)
    rates = time_rates(times, 2.0 * n**3 / 1e9)
    return {"gflops_median": rates.median, "gflops_iqr": rates.iqr, "gflops_best": rates.max,
            "n": n, "repeats": repeats, "dtype": dtype}


# ---- machine facts ---------------------------------------------------------------------------

INTERESTING_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16",
                     "amx_tile", "amx_bf16", "amx_int8", "avx_vnni")


def cpu_info(text: str | None = None) -> dict[str, Any]:
    """CPU model and flags from ``/proc/cpuinfo`` (or the given text); empty off Linux."""
    if text is None:
        try:
            text = Path("/proc/cpuinfo").read_text()
        except OSError:
            return {"model": platform.processor() or platform.machine(), "flags": []}
    model = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    flags = re.search(r"^flags\s*:\s*(.+)$", text, re.M)
    return {"model": model.group(1).strip() if model else platform.machine(),
            "flags": flags.group(1).split() if flags else []}


def native_bf16(flags: Iterable[str]) -> bool:
    """True when the CPU computes bf16 dot products natively (AVX512-BF16 or AMX-BF16);
    elsewhere bf16 autocast is emulated and slower than fp32, so it is not benchmarked."""
    fs = set(flags)
    return "avx512_bf16" in fs or "amx_bf16" in fs


def machine_facts() -> dict[str, Any]:
    """What a reader needs to compare our numbers with theirs."""
    import torch

    cpu = cpu_info()
    mem_gib = None
    try:
        m = re.search(r"^MemTotal:\s*(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
        mem_gib = round(int(m.group(1)) / 2**20, 1) if m else None
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "cpu_model": cpu["model"],
        "cpu_flags": cpu["flags"],
        "cpu_flags_of_interest": [f for f in INTERESTING_FLAGS if f in cpu["flags"]],
        "native_bf16": native_bf16(cpu["flags"]),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "memory_gib": mem_gib,
        "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "mkldnn": bool(torch.backends.mkldnn.is_available()),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "platform": platform.platform(),
    }


# ---- figures and goals -----------------------------------------------------------------------

_GOAL = re.compile(r"^\s*(>=|<=)\s*([-+0-9.eE]+)\s*$")


def parse_goal(goal: str) -> tuple[str, float]:
    """``">= 0.85"`` -> ``(">=", 0.85)``; anything else is a ValueError naming the goal."""
    m = _GOAL.match(goal)
    if not m:
        raise ValueError(f"goal {goal!r} must look like '>= 5' or '<= 1e-3'")
    return m.group(1), float(m.group(2))


def goal_met(value: float, goal: str) -> bool:
    """Whether ``value`` meets ``goal`` (NaN never does)."""
    op, limit = parse_goal(goal)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    return value >= limit if op == ">=" else value <= limit


def figure(
    name: str,
    value: float,
    *,
    unit: str = "",
    goal: str | None = None,
    spread: float | None = None,
    n: int | None = None,
    context: str = "",
) -> dict[str, Any]:
    """One row of a results table. ``value`` is the median over ``n`` repeats, ``spread`` its
    IQR; ``goal`` like ``">= 0.85"`` is checked here, so ``met`` is None without a goal."""
    return {
        "name": name,
        "value": value,
        "unit": unit,
        "goal": goal,
        "met": goal_met(value, goal) if goal else None,
        "spread": spread,
        "n": n,
        "context": context,
    }


def fmt_num(x: Any) -> str:
    """Compact number formatting for tables: 3 significant digits, scientific when tiny/huge."""
    if x is None:
        return ""
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        if math.isnan(x):
            return "nan"
        if x == 0:
            return "0"
        if abs(x) >= 1e5 or abs(x) < 1e-2:
            return f"{x:.2e}"
        return f"{x:.3g}" if abs(x) < 100 else f"{x:.0f}"
    return str(x)
