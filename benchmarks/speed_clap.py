"""The CLAP tower's speed-up steps (issue 22, section 0), each as a fraction of the matmul peak
measured in the same run: HTSAT as in laion_clap_general, MS-CLAP 2023's HTSAT (7 s at 44.1 kHz,
no projection) and PaSST (DCASE 2025 baseline), random weights, audio towers only.

Steps, each against the same tower's fp32 output (cosine, worst clip):

* ``fp32``: the tower as earshot runs it (batch ``--clips``);
* ``fp32 x2 batch``: twice the windows per forward pass;
* ``fp32 channels-last``: the tower's weights and its conv input in channels-last layout;
* ``bf16 autocast``: what ``--precision bf16`` does (per-op casts);
* ``bf16 whole tower``: every weight stored in bf16 (the front end stays fp32, its output is cast
  once), so no per-op casts;
* ``int8 dynamic linears``: what ``--precision int8`` does (every linear layer int8, activations
  quantised per batch); its fraction is of the fp32 peak, as no int8 peak is measured;
* with ``--compile``: ``torch.compile`` (inductor, CPU, weights frozen, which pre-packs the linear
  weights for oneDNN) of the fp32 and the whole-bf16 towers; the compile time is reported.

Steps are timed in interleaved rounds (best of ``--repeats``). Fraction of peak = clips/s x FLOPs per clip (``torch.utils.flop_counter``, one clip) / the
matmul rate of the step's dtype (``common.matmul_flops``, measured before and after the steps;
their mean). Not part of ``make bench`` (a study, minutes per tower on 2 cores):
``python benchmarks/speed_clap.py [--towers laion,msclap2023,passt] [--clips 4] [--compile]``.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from common import matmul_flops
from earshot.models.inference import quantize_linears


def _laion():
    from earshot.models.audio.clap import clap_htsat

    return clap_htsat(), "logmel", 48000, 10.0


def _msclap2023():
    from earshot.models.audio.clap import clap_htsat
    from earshot.models.audio.msclap import MSCLAP_2023_FRONTEND

    return clap_htsat(config={}, frontend=MSCLAP_2023_FRONTEND, projection=False), "logmel", 44100, 7.0


def _passt():
    from earshot.models.audio.passt import passt

    return passt(), "mel", 32000, 10.0


TOWERS: dict[str, Callable[[], tuple[torch.nn.Module, str, int, float]]] = {
    "laion": _laion, "msclap2023": _msclap2023, "passt": _passt}


def whole_bf16(tower: torch.nn.Module, frontend: str) -> torch.nn.Module:
    """A copy of ``tower`` with every weight in bf16 except its front end (``frontend``), whose
    float32 output is cast to bf16 once."""
    t = copy.deepcopy(tower).to(torch.bfloat16)
    fe = getattr(t, frontend).float()
    fe.register_forward_hook(lambda m, i, o: o.to(torch.bfloat16))
    return t


def channels_last(tower: torch.nn.Module) -> torch.nn.Module:
    t = copy.deepcopy(tower).to(memory_format=torch.channels_last)
    for m in t.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.register_forward_pre_hook(lambda m, i: (i[0].contiguous(memory_format=torch.channels_last),))
    return t


def run_tower(name: str, clips: int, repeats: int, compile_: bool, peaks: dict[str, float]) -> dict[str, Any]:
    torch.manual_seed(0)
    tower, frontend, sr, seconds = TOWERS[name]()
    tower.eval()
    g = torch.Generator().manual_seed(1)
    x = 0.1 * torch.randn(clips, int(sr * seconds), generator=g)  # (B, T)
    with FlopCounterMode(display=False) as fc, torch.inference_mode():
        tower(x[:1])
    gflop = fc.get_total_flops() / 1e9
    res: dict[str, Any] = {"tower": name, "gflop_per_clip": gflop, "clips": clips, "threads": torch.get_num_threads()}
    bf = whole_bf16(tower, frontend)

    def autocast(t):
        def f(v):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return t(v)
        return f

    steps: list[tuple[str, str, Callable, torch.Tensor]] = [
        ("fp32", "fp32", tower, x),
        ("fp32 x2 batch", "fp32", tower, torch.cat([x, x])),
        ("fp32 channels-last", "fp32", channels_last(tower), x),
        ("bf16 autocast", "bf16", autocast(tower), x),
        ("bf16 whole tower", "bf16", bf, x),
        ("bf16 whole tower x2 batch", "bf16", bf, torch.cat([x, x])),
        # what --precision int8 does; its fraction is of the fp32 peak (no int8 peak is measured)
        ("int8 dynamic linears", "fp32", quantize_linears(copy.deepcopy(tower)), x),
    ]
    if compile_:
        import torch._inductor.config as ic

        ic.freezing = True  # constant weights: inductor pre-packs the linear weights for oneDNN
        for label, dt, t in (("fp32 compiled", "fp32", tower), ("bf16 whole tower compiled", "bf16", bf)):
            t0 = time.perf_counter()
            c = torch.compile(t, backend="inductor")
            with torch.inference_mode():
                c(x)
            res[f"{label}/compile_s"] = time.perf_counter() - t0
            steps.append((label, dt, c, x))
    # warm up every step, then time them in interleaved rounds (each step once per round, the
    # best round kept), so a change in the machine's load hits every step alike
    outs, best = {}, {}
    with torch.inference_mode():
        for label, _, fn, inp in steps:
            outs[label] = fn(inp).float()[: len(x)]
        for _ in range(repeats):
            for label, _, fn, inp in steps:
                t = time.perf_counter()
                fn(inp)
                best[label] = min(best.get(label, float("inf")), time.perf_counter() - t)
    ref = outs["fp32"]
    for label, dt, _, inp in steps:
        rate = len(inp) / best[label]
        res[label] = {"clips_per_s": round(rate, 3),
                      "fraction_of_peak": round(rate * gflop / peaks[dt], 3),
                      "min_cosine_to_fp32": round(float(F.cosine_similarity(outs[label], ref, dim=-1).min()), 6)}
        print(json.dumps({name: {label: res[label]}}), flush=True)
    return res


def main(towers: list[str], clips: int, repeats: int, compile_: bool) -> dict[str, Any]:
    before = {"fp32": matmul_flops(dtype="float32", repeats=5)["gflops_median"],
              "bf16": matmul_flops(dtype="bfloat16", repeats=5)["gflops_median"]}
    out: dict[str, Any] = {"peaks_before_gflops": before}
    results = [run_tower(t, clips, repeats, compile_, before) for t in towers]
    after = {"fp32": matmul_flops(dtype="float32", repeats=5)["gflops_median"],
             "bf16": matmul_flops(dtype="bfloat16", repeats=5)["gflops_median"]}
    out["peaks_after_gflops"] = after
    mean = {k: (before[k] + after[k]) / 2 for k in before}
    for r in results:  # fractions against the mean of the peaks measured before and after
        for label, v in list(r.items()):
            if isinstance(v, dict) and "clips_per_s" in v:
                dt = "bf16" if label.startswith("bf16") else "fp32"
                v["fraction_of_peak"] = round(v["clips_per_s"] * r["gflop_per_clip"] / mean[dt], 3)
    out["towers"] = results
    out["peaks_mean_gflops"] = mean
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--towers", default="laion,msclap2023,passt", help=f"comma-separated: {', '.join(TOWERS)}")
    ap.add_argument("--clips", type=int, default=4, help="clips per forward pass")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved timing rounds (the best per step is kept)")
    ap.add_argument("--compile", action="store_true", help="also torch.compile (inductor) the fp32 and bf16 towers")
    a = ap.parse_args()
    print(json.dumps(main(a.towers.split(","), a.clips, a.repeats, a.compile), indent=2))
