"""LAION-CLAP audio embedding speed: earshot against the transformers pipeline a user writes.

Both sides embed the same 10 s clips (48 kHz, noise + tones) with the same random weights of
real size (transformers' ClapConfig defaults = HTSAT-tiny + RoBERTa-base, LAION's
``clap-htsat-unfused`` shape), batch 8:

* peer: ``ClapProcessor(audio=clips, sampling_rate=48000)`` (ClapFeatureExtractor, numpy float64
  STFT per frame) then ``ClapModel.get_audio_features`` under ``torch.no_grad``;
* earshot: ``load_model``-style bi-encoder ``embed_audio`` (torch.stft front end, the same HF
  modules) in float32, and again under CPU bf16 autocast when the CPU has native bf16.

Repeats are interleaved (peer, earshot, earshot-bf16, peer, ...); each ratio is the median of
per-repeat ratios. Goals: cosines only (bf16 to fp32 >= 0.999); the speed ratios are context
(the old ">= 2x transformers" goal was dropped in issue 22: fp32 is bounded near 2.2x by the matmul peak).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from common import figure, summarize

SR = 48000
BATCH = 8


def _native_bf16() -> bool:
    try:
        return torch.backends.cpu.get_cpu_capability() in ("AVX512", "AMX") and _has_flag(("avx512_bf16", "amx_bf16"))
    except AttributeError:
        return False


def _has_flag(flags: tuple[str, ...]) -> bool:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in text.split() for f in flags)


def _clips(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    t = np.arange(10 * SR) / SR
    return [(0.05 * rng.standard_normal(t.size) + 0.2 * np.sin(2 * np.pi * (200 + 100 * i) * t))
            .astype(np.float32) for i in range(n)]


def _models(tmp: Path):
    from transformers import (ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor,
                              RobertaTokenizerFast)
    from tokenizers import ByteLevelBPETokenizer

    from earshot.loading.openers import clap_from_hf_folder

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(["a dog barks", "rain on a roof"] * 4, vocab_size=300, min_frequency=1,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.save_model(str(tmp))
    tok = RobertaTokenizerFast(vocab=str(tmp / "vocab.json"), merges=str(tmp / "merges.txt"))
    torch.manual_seed(0)
    hf = ClapModel(ClapConfig()).eval()  # HTSAT-tiny + RoBERTa-base, 512-d, random weights
    fe = ClapFeatureExtractor(truncation="rand_trunc", frequency_min=50, frequency_max=14000)
    hf.save_pretrained(str(tmp))
    tok.save_pretrained(str(tmp))
    fe.save_pretrained(str(tmp))
    return hf, ClapProcessor(feature_extractor=fe, tokenizer=tok), clap_from_hf_folder(tmp)


def run(quick: bool = False, n: int | None = None, repeats: int | None = None) -> dict[str, Any]:
    """Clips/s of the transformers pipeline and of earshot (fp32, bf16); ratios and cosines."""
    n = n or (8 if quick else 16)
    repeats = repeats or (2 if quick else 3)
    clips = _clips(n)
    with tempfile.TemporaryDirectory(prefix="earshot-bench-clap-") as d:
        hf, processor, model = _models(Path(d))
    bf16 = _native_bf16()

    def peer() -> torch.Tensor:
        outs = []
        for s in range(0, len(clips), BATCH):
            inputs = processor(audio=clips[s : s + BATCH], sampling_rate=SR, return_tensors="pt")
            with torch.no_grad():
                outs.append(hf.get_audio_features(**inputs).pooler_output)
        return torch.cat(outs)

    def ours() -> torch.Tensor:
        return model.embed_audio(clips, batch_size=BATCH)

    def ours_bf16() -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return model.embed_audio(clips, batch_size=BATCH)

    fns = {"transformers": peer, "earshot": ours}
    if bf16:
        fns["earshot_bf16"] = ours_bf16
    outputs = {k: fn() for k, fn in fns.items()}  # warm-up, and the outputs compared below
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - start)
    rates = {k: summarize(n / t for t in v) for k, v in times.items()}
    ratio = summarize(times["transformers"][i] / times["earshot"][i] for i in range(repeats))
    # transformers' extractor is float64 numpy, ours float32 torch: same model, ~1e-6 apart.
    cos_peer = float(F.cosine_similarity(outputs["earshot"], F.normalize(outputs["transformers"], dim=-1)).min())
    figures = [
        # no goal (issue 22): fp32 is near the matmul peak, so ">= 2x transformers" cannot be met;
        # the tower's goals are fractions of the peak measured beside it (bench_encoders)
        figure("earshot / transformers ClapProcessor+ClapModel audio speed (fp32)", ratio.median,
               spread=ratio.iqr, n=ratio.n,
               context=f"{rates['earshot'].median:.2f} vs {rates['transformers'].median:.2f} clips/s"),
        figure("min cosine earshot fp32 vs transformers", cos_peer, goal=">= 0.99999"),
    ]
    if bf16:
        r16 = summarize(times["transformers"][i] / times["earshot_bf16"][i] for i in range(repeats))
        cos16 = float(F.cosine_similarity(outputs["earshot_bf16"].float(), outputs["earshot"]).min())
        figures += [
            figure("earshot bf16 / transformers fp32 audio speed", r16.median,
                   spread=r16.iqr, n=r16.n, context=f"{rates['earshot_bf16'].median:.2f} clips/s"),
            figure("min cosine earshot bf16 vs fp32", cos16, goal=">= 0.999"),
        ]
    for k, r in rates.items():
        figures.append(figure(f"{k} clips/s", r.median, unit="clips/s", spread=r.iqr, n=r.n,
                              context=f"10 s clips at 48 kHz, batch {BATCH}"))
    notes = [f"{n} clips of 10 s, HTSAT-tiny (ClapConfig defaults), random weights, batch {BATCH}, "
             f"{torch.get_num_threads()} threads, interleaved repeats; native bf16: {bf16}"]
    return {"figures": figures, "notes": notes, "times_s": times}


if __name__ == "__main__":
    import sys

    for f in run(quick="--quick" in sys.argv)["figures"]:
        print(f"{f['name']:<70} {f['value']:>10.6g} goal {f['goal'] or '-':<8} met {f['met']} {f['context']}")
