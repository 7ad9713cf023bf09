"""Where the CLAP audio tower's time goes (issue 22, "profile first"): torch.profiler over earshot's
LAION-CLAP audio embedding (transformers' ClapConfig defaults = the laion_clap_general / HTSAT-tiny
architecture, random weights, 10 s clips at 48 kHz) in fp32 and under bf16 autocast, with the
matmul peak of each dtype measured in the same run.

Prints, per precision: clips/s, the fraction of the matmul peak (FLOPs counted by
``torch.utils.flop_counter`` on one clip), and the share of self CPU time by kind of operation
(matmul/linear, attention softmax, layer norm, dtype casts, copies/permutes of window partition
and patch merging, convolution/front end, other). Not part of ``make bench`` (a profile, not a
figure with a goal): ``python benchmarks/profile_clap.py [--clips 4]``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from common import matmul_flops

KINDS = (  # first match wins: (kind, substrings of aten op names)
    ("matmul", ("addmm", "mm", "bmm", "matmul", "linear", "baddbmm", "mkldnn_linear")),
    ("softmax", ("softmax",)),
    ("layer_norm", ("layer_norm", "native_layer_norm")),
    ("casts", ("_to_copy", "aten::to", "copy_")),
    ("layout", ("permute", "contiguous", "clone", "roll", "view", "reshape", "cat", "pad", "index", "transpose")),
    ("conv_frontend", ("conv", "stft", "fft", "mel", "log", "pow", "abs")),
)


def kind_of(name: str) -> str:
    for kind, words in KINDS:
        if any(w in name for w in words):
            return kind
    return "other"


def main(clips_n: int) -> dict:
    import bench_clap

    with tempfile.TemporaryDirectory(prefix="earshot-profile-clap-") as d:
        _, _, model = bench_clap._models(Path(d))
    model.eval()
    clips = bench_clap._clips(clips_n)
    with FlopCounterMode(display=False) as fc:
        model.embed_audio(clips[:1], batch_size=1)
    flops_per_clip = fc.get_total_flops()
    out: dict = {"gflop_per_clip": flops_per_clip / 1e9, "clips": clips_n, "threads": torch.get_num_threads()}
    for precision in ("fp32", "bf16"):
        peak = matmul_flops(dtype="float32" if precision == "fp32" else "bfloat16", repeats=5)["gflops_median"]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            model.embed_audio(clips[:2], batch_size=2)  # warm-up
            t = time.perf_counter()
            model.embed_audio(clips, batch_size=clips_n)
            dt = time.perf_counter() - t
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                model.embed_audio(clips, batch_size=clips_n)
        share: dict[str, float] = defaultdict(float)
        total = 0.0
        top = []
        for ev in prof.key_averages():
            if ev.self_cpu_time_total <= 0:
                continue
            share[kind_of(ev.key)] += ev.self_cpu_time_total
            total += ev.self_cpu_time_total
            top.append((ev.self_cpu_time_total, ev.key))
        rate = clips_n / dt
        out[precision] = {
            "clips_per_s": rate,
            "matmul_peak_gflops": peak,
            "fraction_of_peak": rate * flops_per_clip / (peak * 1e9),
            "self_cpu_share": {k: round(v / total, 3) for k, v in sorted(share.items(), key=lambda kv: -kv[1])},
            "top_ops": [(name, round(t / total, 3)) for t, name in sorted(top, reverse=True)[:12]],
        }
        print(json.dumps({precision: out[precision]}), flush=True)
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clips", type=int, default=4)
    print(json.dumps(main(ap.parse_args().clips), indent=2))
