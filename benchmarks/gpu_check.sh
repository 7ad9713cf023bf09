#!/usr/bin/env bash
# GPU figures for issue 22, run once where the device tool lends a GPU, with a short timeout:
#   bash benchmarks/gpu_check.sh > gpu_check.txt
#
# STATUS: PREPARED, NOT YET RUN. Issue 22's session had no GPU lent (device `status`:
# not_drawn), so nothing below has ever executed on a GPU and no GPU figure is in RESULTS.md.
#
# Reports (one JSON line each): the CLAP audio tower (transformers' ClapConfig defaults =
# laion/clap-htsat-unfused's HTSAT, random weights) in fp32 and bf16 autocast, clips/s and peak
# GPU memory; then `earshot index --engine ray --gpus-per-worker 1` on a generated corpus.
# Not covered (left out, see the issue 22 report): the DCASE 2025 preset train step (PaSST +
# RoBERTa-large at batch 32), which needs the roberta-large tokenizer files offline.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
PY=${PY:-.venv/bin/python}
WORK=$(mktemp -d /tmp/earshot-gpu.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

"$PY" - "$WORK" <<'EOF'
import json, sys, time
from pathlib import Path

import numpy as np
import torch
from tokenizers import ByteLevelBPETokenizer
from transformers import ClapConfig, ClapModel, RobertaTokenizerFast

from earshot.loading.openers import clap_from_hf_folder

work = Path(sys.argv[1]) / "clap"
work.mkdir()
bpe = ByteLevelBPETokenizer()
bpe.train_from_iterator(["a dog barks", "rain on a roof"] * 4, vocab_size=300, min_frequency=1,
                        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
bpe.save_model(str(work))
RobertaTokenizerFast(vocab=str(work / "vocab.json"), merges=str(work / "merges.txt")).save_pretrained(str(work))
torch.manual_seed(0)
ClapModel(ClapConfig()).save_pretrained(str(work))
model = clap_from_hf_folder(work).eval().to("cuda")
print(json.dumps({"device": torch.cuda.get_device_name(0)}))
rng = np.random.default_rng(0)
clips = [(0.1 * rng.standard_normal(480000)).astype(np.float32) for _ in range(64)]
for precision in ("fp32", "bf16"):
    torch.cuda.reset_peak_memory_stats()
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16"):
        model.embed_audio(clips[:16], batch_size=16)  # warm-up
        torch.cuda.synchronize()
        t = time.perf_counter()
        model.embed_audio(clips, batch_size=32)
        torch.cuda.synchronize()
        dt = time.perf_counter() - t
    print(json.dumps({"clap_audio": precision, "clips_per_s": len(clips) / dt,
                      "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20}))
EOF

"$PY" - "$WORK" <<'EOF'
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from earshot.models import checkpoint
from earshot.models.biencoder import create_model

work = Path(sys.argv[1])
(work / "sounds").mkdir()
rng = np.random.default_rng(0)
for i in range(64):
    sf.write(work / "sounds" / f"c{i:03d}.wav", (0.1 * rng.standard_normal(32000 * 10)).astype(np.float32), 32000)
torch.manual_seed(0)
checkpoint.save(create_model({"audio": {"name": "cnn14"}, "text": {"name": "bow", "options": {"dim": 64}},
                              "embed_dim": 256}), work / "model")
EOF

start=$(date +%s.%N)
.venv/bin/earshot index "$WORK/sounds" --model "$WORK/model" --out "$WORK/index" --engine ray \
    --workers 1 --gpus-per-worker 1 --files-per-shard 16
end=$(date +%s.%N)
echo "{\"ray_index_gpus_per_worker_1\": {\"files\": 64, \"seconds\": $(echo "$end - $start" | bc)}}"
