"""Audio encoder throughput against the machine's FLOP limit.

For every registered audio encoder: clips/s on 10 s clips at batch 1, 8 and 32, in fp32 and (only
where the CPU has native bf16: AVX512-BF16 or AMX-BF16) under bf16 autocast, with the cosine
similarity of the bf16 embeddings to fp32. Each encoder's FLOPs per clip are counted here with
``torch.utils.flop_counter.FlopCounterMode`` (convolutions and matmuls; the FFT front end and
elementwise ops are not counted), so the achieved FLOP/s divided by a square matmul's FLOP/s
measured in the same run is the fraction of the machine's practical limit the encoder reaches.

Weights are random (no downloads here): speed does not depend on them; the bf16 cosine on
random weights is a proxy for the one on trained weights.

The models run as earshot's indexing and evaluation run them (``earshot.models.inference``):
PANNs towers with BatchNorm folded into the convolutions, fused ReLU and pre-packed channels-last
weights; FLOPs are counted on the unfused model (the fused oneDNN op is invisible to the
counter, and the arithmetic is the same). Every measurement is interleaved with the matmul probe
(model, matmul, model, matmul, ... in shuffled order), and the fraction of the matmul FLOP/s is
the median of the per-pair ratios, so a busy minute slows both sides of a pair alike. For CNN14
the unfused fp32 model is timed in the same rounds, as context for what fusion buys.

The section has a wall-time budget (``budget_s``): big batches of big models are skipped, and
say so, rather than letting ``make bench`` run for an hour on a slow machine. CNN14, the model
with the goal, goes first and gets a double share.
"""

from __future__ import annotations

import math
import os
import sys
import time
from typing import Any, Callable

import numpy as np
import torch

from common import (  # noqa: E402
    cpu_info, figure, interleaved, matmul_flops, native_bf16, ratio_stats, repeats_for, time_fn, time_rates,
)

from earshot.models.base import create_audio_encoder, list_audio_encoders  # noqa: E402
from earshot.models.audio.panns import PannsEncoder, fuse_for_inference  # noqa: E402

SECONDS = 10.0
BATCHES = (1, 8, 32)
GOAL_MODEL = "cnn14"
CNN14_STATED_GFLOP = 42.25  # per 10 s clip, as the issue states it
PEAK_FRACTION_GOAL = ">= 0.85"
# issue 22, section 0: the CLAP tower as a fraction of the matmul peak of its own dtype, same run
PEAK_FRACTION_GOALS = {(GOAL_MODEL, "fp32"): PEAK_FRACTION_GOAL, ("clap_htsat", "fp32"): ">= 0.8",
                       ("clap_htsat", "bf16"): ">= 0.6"}
COSINE_GOAL = ">= 0.999"
PASST_SDPA_GFLOP = 2 * 2 * 498**2 * 768 * 12 / 1e9  # q k^T and attn v of PaSST-S on 2 + 496 tokens


def test_clips(batch: int, sample_rate: int, seed: int = 0) -> torch.Tensor:
    """Noise plus two tones at a recording-like level, (batch, 10 s * sample_rate) float32."""
    rng = np.random.default_rng(seed)
    n = int(SECONDS * sample_rate)
    t = np.arange(n) / sample_rate
    tones = 0.05 * np.sin(2 * np.pi * 440 * t) + 0.03 * np.sin(2 * np.pi * 3000 * t)
    x = 0.05 * rng.standard_normal((batch, n)) + tones[None]
    return torch.from_numpy(x.astype(np.float32))


def count_flops(model: torch.nn.Module, x: torch.Tensor) -> float:
    """FLOPs of one forward on ``x`` (FlopCounterMode: 2 per multiply-add of convs and matmuls)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(x)
    return float(counter.get_total_flops())


def _forward(model: torch.nn.Module, x: torch.Tensor, bf16: bool, device: str) -> Callable[[], Any]:
    def call() -> torch.Tensor:
        with torch.inference_mode(), torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            out = model(x)
        if device == "cuda":
            torch.cuda.synchronize()
        return out

    return call


def _cosine_min(a: torch.Tensor, b: torch.Tensor) -> float:
    """Smallest per-row cosine similarity between two (B, D) embedding batches."""
    return float(torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1).min())


def _order(names: list[str]) -> list[str]:
    return sorted(names, key=lambda n: (n != GOAL_MODEL, n))


def _matmul_call(dtype: torch.dtype, n: int = 2048) -> tuple[Callable[[], Any], float]:
    """The matmul probe as a callable (inputs built once) and its GFLOP per call."""
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=gen).to(dtype), torch.randn(n, n, generator=gen).to(dtype)

    def call() -> torch.Tensor:
        with torch.inference_mode():
            return torch.mm(a, b)

    return call, 2.0 * n**3 / 1e9


def run(quick: bool = False, budget_s: float | None = None, encoders: list[str] | None = None,
        batches: tuple[int, ...] = BATCHES) -> dict[str, Any]:
    """Measure every encoder within ``budget_s`` (default 240 s, quick 60 s); return figures and
    raw numbers (``raw[name][precision][batch]``)."""
    started = time.perf_counter()
    budget = budget_s if budget_s is not None else (60.0 if quick else 240.0)
    names = _order(encoders or list_audio_encoders())
    bf16 = native_bf16(cpu_info()["flags"])
    precisions = ["fp32"] + (["bf16"] if bf16 else [])

    limit = {"fp32": matmul_flops(dtype="float32", repeats=5)}
    if bf16:
        limit["bf16"] = matmul_flops(dtype="bfloat16", repeats=5)
    probes = {"fp32": _matmul_call(torch.float32), "bf16": _matmul_call(torch.bfloat16)}

    raw: dict[str, Any] = {}
    figures: list[dict[str, Any]] = []
    notes = [
        f"10 s clips, random weights, {torch.get_num_threads()} torch threads, OMP_WAIT_POLICY="
        f"{os.environ.get('OMP_WAIT_POLICY', 'unset')}; PANNs fused for inference; bf16 "
        + ("autocast measured (CPU has native bf16)" if bf16 else "skipped: no native bf16 on this CPU")
        + "; fraction of matmul FLOP/s = median over interleaved (model, matmul) pairs",
    ]
    shares = {n: (2.0 if n == GOAL_MODEL else 1.0) for n in names}

    for i, name in enumerate(names):
        spent = time.perf_counter() - started
        left_total = budget - spent
        my_budget = left_total * shares[name] / sum(shares[n] for n in names[i:])
        enc_start = time.perf_counter()
        plain = create_audio_encoder(name).eval()
        sr = int(plain.sample_rate)
        gflop = count_flops(plain, test_clips(1, sr)) / 1e9  # also the first warm-up
        model = fuse_for_inference(plain) if isinstance(plain, PannsEncoder) else plain
        entry: dict[str, Any] = {"gflop_per_clip": gflop, "sample_rate": sr, "fused": model is not plain,
                                 "params_m": sum(p.numel() for p in plain.parameters()) / 1e6}
        per_clip_s: dict[str, float] = {}
        outputs: dict[tuple[str, int], torch.Tensor] = {}
        combos = [(p, b) for b in batches for p in precisions]
        for j, (prec, b) in enumerate(combos):
            left = my_budget - (time.perf_counter() - enc_start)
            est_call = b * per_clip_s.get(prec, per_clip_s.get("fp32", 0.0))
            if b != 1 and (est_call == 0.0 or 2.5 * est_call > left):
                entry.setdefault("skipped", []).append(f"{prec}/b{b}")
                continue
            x = test_clips(b, sr)
            call = _forward(model, x, prec == "bf16", "cpu")
            reps = repeats_for(est_call + 0.1, left / max(1, len(combos) - j), lo=2, hi=5) if est_call else 3
            warm = 1 if est_call < 1.0 else 0
            last: dict[str, torch.Tensor] = {}
            mm_call, mm_gflop = probes[prec]
            fns: dict[str, Callable[[], Any]] = {"model": lambda: last.__setitem__("out", call()), "matmul": mm_call}
            context_unfused = name == GOAL_MODEL and prec == "fp32" and model is not plain and b <= 8
            if context_unfused:
                fns["unfused"] = _forward(plain, x, False, "cpu")
            times = interleaved(fns, repeats=reps, warmup=warm, seed=j)
            rates = time_rates(times["model"], b)  # clips/s
            per_clip_s[prec] = min(per_clip_s.get(prec, math.inf), 1.0 / rates.median)
            if b <= 8:
                outputs[(prec, b)] = last["out"]
            frac = ratio_stats(times["matmul"], times["model"], scale=gflop * b / mm_gflop)
            m = {
                "clips_per_s": rates.median, "clips_per_s_iqr": rates.iqr, "repeats": rates.n,
                "seconds_per_call_median": float(np.median(times["model"])), "gflops": gflop * rates.median,
                "fraction_of_matmul": frac.median, "fraction_iqr": frac.iqr,
                "matmul_gflops_in_pairs": mm_gflop / float(np.median(times["matmul"])),
            }
            if context_unfused:
                m["fusion_speedup"] = ratio_stats(times["unfused"], times["model"]).median
            entry.setdefault(prec, {})[f"b{b}"] = m
        # bf16 vs fp32 on the same clips (the largest batch measured in both, at most 8)
        for b in (8, 1):
            if ("fp32", b) in outputs and ("bf16", b) in outputs:
                entry["bf16_cosine_min"] = _cosine_min(outputs[("fp32", b)], outputs[("bf16", b)])
                entry["bf16_cosine_batch"] = b
                break
        entry["seconds"] = time.perf_counter() - enc_start
        raw[name] = entry
        figures += _figures(name, entry, precisions)
        del model, plain, outputs

    figures.insert(0, figure("matmul fp32 limit", limit["fp32"]["gflops_median"], unit="GFLOP/s",
                             spread=limit["fp32"]["gflops_iqr"], n=limit["fp32"]["repeats"],
                             context=f"best {limit['fp32']['gflops_best']:.1f}, {limit['fp32']['n']}^2 matmul"))
    if bf16:
        figures.insert(1, figure("matmul bf16 limit", limit["bf16"]["gflops_median"], unit="GFLOP/s",
                                 spread=limit["bf16"]["gflops_iqr"], n=limit["bf16"]["repeats"],
                                 context=f"best {limit['bf16']['gflops_best']:.1f}"))
    if GOAL_MODEL in raw:
        measured = raw[GOAL_MODEL]["gflop_per_clip"]
        notes.append(f"cnn14 counted at {measured:.2f} GFLOP per clip (convs + matmuls) against the "
                     f"stated {CNN14_STATED_GFLOP}; fractions use the counted FLOPs")
    if "passt" in raw:
        notes.append("passt: FlopCounterMode does not see CPU scaled_dot_product_attention, so its attention "
                     f"products (2 x 2 x 498^2 x 768 x 12 = {PASST_SDPA_GFLOP:.1f} GFLOP per 10 s clip) are "
                     "left out of its GFLOP and fraction, as for the FFT front ends")
    for name, entry in raw.items():
        if entry.get("skipped"):
            notes.append(f"{name}: skipped for the section's time budget: {', '.join(entry['skipped'])}")
    if torch.cuda.is_available():
        figures += _gpu_figures(names, quick)
    return {"figures": figures, "notes": notes, "raw": raw, "limit": limit,
            "budget_s": budget, "seconds": time.perf_counter() - started}


def _figures(name: str, entry: dict[str, Any], precisions: list[str]) -> list[dict[str, Any]]:
    rows = []
    for prec in precisions:
        by_batch = entry.get(prec, {})
        for key, m in by_batch.items():
            extra = f", fused vs unfused x{m['fusion_speedup']:.2f}" if "fusion_speedup" in m else ""
            rows.append(figure(
                f"{name} {prec} {key} clips/s", m["clips_per_s"], unit="clips/s", spread=m["clips_per_s_iqr"],
                n=m["repeats"], context=f"{m['seconds_per_call_median']:.2f} s/call, {m['gflops']:.1f} GFLOP/s, "
                                        f"{entry['gflop_per_clip']:.1f} GFLOP/clip{extra}"))
        if by_batch:
            best_key = max(by_batch, key=lambda k: by_batch[k]["fraction_of_matmul"])
            best = by_batch[best_key]
            goal = PEAK_FRACTION_GOALS.get((name, prec))
            rows.append(figure(f"{name} {prec} fraction of matmul FLOP/s (best batch)", best["fraction_of_matmul"],
                               goal=goal, spread=best["fraction_iqr"], n=best["repeats"],
                               context=f"at {best_key}, matmul {best['matmul_gflops_in_pairs']:.0f} GFLOP/s in "
                                       "the same rounds"))
    if "bf16_cosine_min" in entry:
        rows.append(figure(f"{name} bf16 vs fp32 cosine (min over clips)", entry["bf16_cosine_min"],
                           goal=COSINE_GOAL, n=entry["bf16_cosine_batch"]))
    return rows


def _gpu_figures(names: list[str], quick: bool) -> list[dict[str, Any]]:
    """On a CUDA machine: clips/s at batch 32 in fp32 and bf16 autocast (the GPU section)."""
    rows = []
    for name in names:
        model = create_audio_encoder(name).eval().to("cuda")
        x = test_clips(32, int(model.sample_rate)).to("cuda")
        for prec in ("fp32", "bf16"):
            times = time_fn(_forward(model, x, prec == "bf16", "cuda"), repeats=3 if quick else 10, warmup=2)
            r = time_rates(times, 32)
            rows.append(figure(f"gpu {torch.cuda.get_device_name(0)}: {name} {prec} b32 clips/s", r.median,
                               unit="clips/s", spread=r.iqr, n=r.n))
        if name == "passt":  # fine-tuning cost: forward + backward, bf16 autocast, batch 32
            rows.append(_gpu_train_figure(model, x, quick))
        del model
        torch.cuda.empty_cache()
    return rows


def _gpu_train_figure(model: torch.nn.Module, x: torch.Tensor, quick: bool) -> dict[str, Any]:
    """Training-mode (patch-out on) forward + backward clips/s at batch 32 under bf16 autocast."""
    model.train()

    def step() -> None:
        model.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            model(x).float().pow(2).mean().backward()
        torch.cuda.synchronize()

    times = time_fn(step, repeats=3 if quick else 10, warmup=2)
    r = time_rates(times, x.shape[0])
    model.eval()
    return figure(f"gpu {torch.cuda.get_device_name(0)}: passt bf16 b32 forward+backward clips/s", r.median,
                  unit="clips/s", spread=r.iqr, n=r.n)


if __name__ == "__main__":
    import json

    quick = "--quick" in sys.argv
    result = run(quick=quick)
    for f in result["figures"]:
        print(f"{f['name']:<55} {f['value']:>10.4g} {f['unit']:<8} goal {f['goal'] or '-':<8} met {f['met']}")
    print("\n".join(result["notes"]))
    print(json.dumps(result["raw"], indent=1)[:2000])
