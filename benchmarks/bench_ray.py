"""Ray indexing throughput (issue 22), end to end on the same files: Ray with 2 embedding workers vs
1, and Ray vs the local indexer.

Same clips and model as ``bench_index`` (10 s and 20 s recordings at 44.1 kHz, the untrained
``small_cnn`` at 32 kHz, fp32 so every path computes the same numbers). One local Ray cluster
(``ray.init(num_cpus=2)``, temp dir under ``benchmarks/out/bench_ray``) is started before the
rounds and its start-up time is reported apart; each round indexes the folder afresh with
each of the three set-ups in a shuffled order, and the ratios are medians of per-round ratios.

What bounds it here: the machine has 2 cores, so 2 Ray workers share them with the decode tasks
and with each other; torch already uses both cores in one process. Ray also moves every window
through its object store (pickled) and schedules tasks; on one 2-core machine that is pure cost.
``run() -> dict``; ``python benchmarks/bench_ray.py`` prints it.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from common import figure, ratio_stats, summarize

OUT = Path(__file__).resolve().parent / "out" / "bench_ray"


LOADS = (0,)  # Ray's 2-workers-vs-1 ratio needs both cores

def run(quick: bool = False, clips: int = 32, rounds: int | None = None) -> dict[str, Any]:
    import bench_index
    import ray

    from earshot.index import IndexConfig, index_folder, open_encoder
    from earshot.index.engine_ray import EncoderSpec, RayConfig, index_folder_ray

    clips = 12 if quick else clips
    rounds = rounds or (1 if quick else 3)
    folder, model = bench_index._clips(clips), bench_index._model()
    OUT.mkdir(parents=True, exist_ok=True)
    temp = tempfile.mkdtemp(prefix="r", dir="/tmp")  # Ray's socket paths must stay short
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    t = time.perf_counter()
    ray.init(num_cpus=2, _temp_dir=temp, include_dashboard=False, log_to_driver=False, configure_logging=False)
    res: dict[str, Any] = {"clips": clips, "rounds": rounds, "ray_start_s": time.perf_counter() - t}
    cfg = IndexConfig(window_s=10.0, hop_s=5.0, batch_size=16, workers=2)
    spec = EncoderSpec(str(model), "fp32")
    local_encoder = open_encoder(model, "fp32")

    def local() -> None:
        index_folder(folder, local_encoder, OUT / "local", cfg)

    def ray_with(workers: int):
        rc = RayConfig(workers=workers, files_per_shard=8, files_per_task=4)  # half the CPUs embed, half decode
        return lambda: index_folder_ray(folder, spec, OUT / f"ray{workers}", cfg, rc)

    jobs = {"local": local, "ray1": ray_with(1), "ray2": ray_with(2)}
    times: dict[str, list[float]] = {name: [] for name in jobs}
    order = random.Random(0)
    try:
        for _ in range(rounds):
            names = list(jobs)
            order.shuffle(names)
            for name in names:
                shutil.rmtree(OUT / name, ignore_errors=True)
                t = time.perf_counter()
                jobs[name]()
                times[name].append(time.perf_counter() - t)
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
    two_vs_one = ratio_stats(times["ray1"], times["ray2"])  # > 1: two workers are faster
    ray_vs_local = ratio_stats(times["local"], times["ray2"])  # > 1: Ray is faster
    for name, ts in times.items():
        res[f"{name}_s"] = summarize(ts).median
    res["ray2_vs_ray1_speedup"] = two_vs_one.median
    res["ray2_vs_local_speedup"] = ray_vs_local.median
    ctx = f"{clips} clips, small_cnn fp32, 2 cores; Ray start {res['ray_start_s']:.0f} s not counted"
    res["figures"] = [
        figure("Ray 2 workers vs 1: speed-up, end to end", two_vs_one.median, spread=two_vs_one.iqr,
               n=two_vs_one.n, context=f"{res['ray1_s']:.1f} s vs {res['ray2_s']:.1f} s; {ctx}"),
        figure("Ray (2 workers) vs local indexer: speed-up", ray_vs_local.median, spread=ray_vs_local.iqr,
               n=ray_vs_local.n, context=f"local {res['local_s']:.1f} s (2 decode processes); {ctx}"),
    ]
    return res


if __name__ == "__main__":
    print(json.dumps({k: v for k, v in run().items() if k != "figures"}, indent=2, default=str))
