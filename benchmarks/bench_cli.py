"""How fast the command line answers, as ratios to ``python -c "import torch"``.

Each command runs in a fresh process (cold: nothing cached in memory but the OS page cache),
paired with a fresh ``import torch`` run just before it; repeats are interleaved (torch, A,
torch, B, ..., torch, A, ...) so a shared machine's load drifts over all of them alike, and a
figure is the median of the per-pair ratios. Goals (issue 14):

- ``earshot --help`` <= 1x: the CLI imports no torch to list its commands;
- ``earshot train`` with an unknown loss, or with a missing caption table, fails in <= 1.5x:
  the config is checked before Lightning, the model or any data is touched;
- ``earshot search INDEX "text"`` on the demo index <= 3x: a text query opens only the model's
  text side (plain-torch MiniLM, no sentence-transformers, no audio tower).

The index is ``runs/demo/index`` when ``make demo`` has built it, else a small one built here
with the demo preset's model (untrained heads: same towers, same cost).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import figure, summarize

ROOT = Path(__file__).resolve().parents[1]
PRESET = ROOT / "configs" / "demo_small_cnn.yaml"
DEMO_INDEX = ROOT / "runs" / "demo" / "index"


def _earshot() -> list[str]:
    script = Path(sys.executable).parent / "earshot"
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "from earshot.app.cli import main; main()"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    src = str(ROOT / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false")
    return env


def _timed(cmd: list[str], env: dict[str, str], cwd: Path, expect: int) -> float:
    t = time.perf_counter()
    res = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - t
    if res.returncode != expect:
        raise RuntimeError(f"{' '.join(cmd)} exited {res.returncode} (expected {expect}):\n"
                           f"{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
    return seconds


def _demo_index(work: Path) -> tuple[Path, str]:
    """The demo's index, or one built here with the demo preset's model on a tiny corpus."""
    if (DEMO_INDEX / "meta.sqlite").is_file():
        return DEMO_INDEX, "runs/demo/index (make demo)"
    import torch

    from earshot.config import load_yaml
    from earshot.data.synth import generate_corpus
    from earshot.index import IndexConfig, index_folder, open_encoder
    from earshot.models import checkpoint
    from earshot.models.biencoder import create_model

    corpus = generate_corpus(work / "corpus", clips=10, seed=0, max_duration=6.0).out_dir
    torch.manual_seed(0)
    model = checkpoint.save(create_model(load_yaml(PRESET)["model"]), work / "model")
    index_folder(corpus / "evaluation", open_encoder(model), work / "index", IndexConfig(workers=0))
    return work / "index", "index of 2 synthetic clips, demo preset model (runs/demo/index absent)"


def run(quick: bool = False, repeats: int | None = None) -> dict[str, Any]:
    """Ratios of each command's wall time to a fresh ``import torch``; figures plus raw times."""
    repeats = repeats or (3 if quick else 7)
    env = _env()
    work = Path(tempfile.mkdtemp(prefix="earshot-bench-cli-"))
    try:
        index, index_source = _demo_index(work)
        bad_loss = work / "bad_loss.yaml"
        bad_loss.write_text(PRESET.read_text().replace("loss: {name: infonce", "loss: {name: infonse"))
        es = _earshot()
        commands = {
            "help": (es + ["--help"], 0),
            "train_unknown_loss": (es + ["train", str(bad_loss)], 2),
            "train_missing_file": (es + ["train", str(PRESET), "--set", f"data.root={work / 'nowhere'}"], 2),
            "search": (es + ["search", str(index), "a high beep repeats quickly", "-k", "5"], 0),
        }
        torch_cmd = [sys.executable, "-c", "import torch"]
        times: dict[str, list[float]] = {k: [] for k in commands}
        torch_times: dict[str, list[float]] = {k: [] for k in commands}
        for cmd, expect in commands.values():  # warm the page cache once (not timed)
            _timed(cmd, env, work, expect)
        for _ in range(repeats):
            for name, (cmd, expect) in commands.items():
                torch_times[name].append(_timed(torch_cmd, env, work, 0))
                times[name].append(_timed(cmd, env, work, expect))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    goals = {"help": "<= 1", "train_unknown_loss": "<= 1.5", "train_missing_file": "<= 1.5", "search": "<= 3"}
    labels = {"help": "earshot --help / import torch",
              "train_unknown_loss": "earshot train (unknown loss) / import torch",
              "train_missing_file": "earshot train (missing caption table) / import torch",
              "search": "earshot search (demo index, cold, text) / import torch"}
    figures, raw = [], {}
    for name in commands:
        ratio = summarize(a / b for a, b in zip(times[name], torch_times[name]))
        t = summarize(times[name])
        tt = summarize(torch_times[name])
        figures.append(figure(labels[name], ratio.median, unit="x", goal=goals[name], spread=ratio.iqr,
                              n=ratio.n, context=f"{t.median:.2f} s vs import torch {tt.median:.2f} s"
                              + (f"; {index_source}" if name == "search" else "")))
        raw[name] = {"seconds": times[name], "torch_seconds": torch_times[name]}
    return {"figures": figures, "raw": raw, "index": index_source}


if __name__ == "__main__":
    import json

    sys.path.insert(0, str(ROOT / "src"))
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
