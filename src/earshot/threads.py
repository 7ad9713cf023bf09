"""How many torch threads each kind of work uses: one policy, one override (``EARSHOT_THREADS``).

Why a policy at all: torch's CPU kernels run in OpenMP parallel regions that end in a barrier,
so a region takes as long as its slowest thread. On a machine another process also uses (a
laptop, a shared server, a CI runner), one of torch's threads shares its core and every region
waits for it; worse, idle OpenMP threads spin-wait at the barrier and steal that core back from
the thread doing the work. Small operations (a log-mel block, a batch-32 projection head) then
run several times slower on two threads than on one, while large convolutions still gain from
every core. So the thread count is chosen per kind of operation:

==================  =========================  ==============================================
operation           threads                    why
==================  =========================  ==============================================
``frontend``        1                          ~1 ms FFT and matmul blocks: parallel overhead
                                               and a busy core cost more than a core gives
``heads``           1                          training projection heads on cached tower
                                               outputs: (32 x 2048) @ (2048 x 1024) matmuls
``encode``          torch's default            CNN / transformer forward passes (index,
                    (one per core, or          evaluate, tower caching): big convolutions and
                    ``OMP_NUM_THREADS``)       matmuls scale with cores
``train``           torch's default            a tower that trains: same as ``encode``
==================  =========================  ==============================================

Measured on the 2-core benchmark machine with other processes running (load average ~5): a
batch-32 linear-head training step took 14 ms on one thread and 155 ms on two with OpenMP's
default spin-waiting (20 ms with passive waiting), which is why ``heads`` is pinned to one.

``EARSHOT_THREADS=N`` (a positive integer) overrides every row: all work runs on N threads. An
invalid value is a ConfigError naming the variable, not a silent fallback.

:func:`configure_openmp` sets ``OMP_WAIT_POLICY=PASSIVE`` (unless the user set it) so idle
OpenMP threads sleep at the barrier instead of spinning; it only takes effect before torch starts
its OpenMP runtime, so the CLI calls it first thing. :func:`use_threads` switches torch's
intra-op thread count for a block and restores it after (cheap: one ``omp_set_num_threads``).
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

from earshot.errors import ConfigError

__all__ = ["OPERATIONS", "configure_openmp", "threads_for", "usable_cores", "use_threads"]

ENV = "EARSHOT_THREADS"
# operation -> thread count; None means torch's default (set_num_threads / OMP_NUM_THREADS)
OPERATIONS: dict[str, int | None] = {"frontend": 1, "heads": 1, "encode": None, "train": None}


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, e.g. a container's quota of cores)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def _override() -> int | None:
    raw = os.environ.get(ENV)
    if raw is None or raw.strip() == "":
        return None
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if n < 1:
        raise ConfigError(f"{ENV}={raw!r}: expected a positive integer number of threads")
    return n


def threads_for(operation: str) -> int:
    """Threads ``operation`` runs on: ``EARSHOT_THREADS`` if set, else the policy's entry."""
    if operation not in OPERATIONS:
        raise ConfigError(f"unknown thread-policy operation {operation!r}; known: {sorted(OPERATIONS)}")
    override = _override()
    if override is not None:
        return override
    n = OPERATIONS[operation]
    if n is None:
        import torch

        return torch.get_num_threads()
    return min(n, usable_cores())


@contextlib.contextmanager
def use_threads(operation: str) -> Iterator[int]:
    """Run the block on :func:`threads_for` ``(operation)`` torch threads, then restore the
    previous count (also after an error). Yields the count in use."""
    import torch

    n = threads_for(operation)
    previous = torch.get_num_threads()
    if n == previous:
        yield n
        return
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(previous)


def configure_openmp() -> None:
    """``OMP_WAIT_POLICY=PASSIVE`` unless set: idle OpenMP threads sleep instead of spinning on
    a core another process (or our own decoding workers) needs. With ``EARSHOT_THREADS=N`` also
    ``OMP_NUM_THREADS=N``, so torch's default count (every entry without a fixed count) is N
    from the start. Call before torch is imported."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    override = _override()
    if override is not None:
        os.environ["OMP_NUM_THREADS"] = str(override)
