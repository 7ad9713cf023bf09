"""The end-to-end demonstration behind ``make demo`` / ``earshot demo``.

synthetic corpus -> two small models (small_cnn audio tower trained from scratch, frozen
all-MiniLM-L6-v2 text tower, different losses) -> evaluation table shaped like the seed tables ->
top 10 for example captions -> the ensemble of both -> a folder index of the evaluation clips
searched by text. Everything runs on a 2-core CPU in a few minutes and resumes when rerun.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from earshot.data.readers import read_clotho
from earshot.data.synth import caption_csv_name, write_audiocaps_view
from earshot.errors import ConfigError
from earshot.utils import atomic_write

# The demo model is the preset configs/demo_small_cnn.yaml: a small log-mel CNN at 16 kHz,
# trained from scratch on 6 s crops, with the frozen MiniLM sentence encoder (its caption
# outputs are computed once and cached). No download is needed.
PRESET = Path(__file__).resolve().parents[3] / "configs" / "demo_small_cnn.yaml"
DEMO_LOSSES = ("infonce", "triplet_sum")
EXAMPLE_QUERIES = ("a high beep repeats quickly", "low hum, then clicks", "a loud burst of noise")
RESULTS_FILE = "results.md"  # the evaluation table as markdown (README quotes it)
RUN_CONFIG = "demo_config.json"  # what a model folder was trained with (retrain when it changes)


def demo_train_config(corpus: Path, out_dir: Path, loss: str, epochs: int, seed: int) -> dict[str, Any]:
    """The training config of one demo model: the preset, moved to the corpus and run folder."""
    from earshot.config import load_yaml

    if not PRESET.is_file():
        raise ConfigError(f"{PRESET}: the demo's preset is missing (run the demo from a checkout)")
    cfg = load_yaml(PRESET)
    cfg["data"]["root"] = str(corpus.parent)  # the preset's tables are clotho/... under it
    cfg["loss"] = {"name": loss, "options": {"margin": 0.2} if loss.startswith("triplet") else {}}
    if loss.startswith("triplet"):
        # triplet-sum from scratch diverges at InfoNCE's rate on some seeds; 1e-3 trains steadily
        cfg["optim"]["lr"] = 1e-3
    cfg["cache"]["dir"] = str(out_dir.parent / "cache")
    cfg.update(epochs=epochs, seed=seed, out_dir=str(out_dir))
    return cfg


def _corpus_changed(corpus: Path, clips: int, seed: int) -> str | None:
    """What differs between the corpus on disk and the one asked for ("clips 240 -> 120")."""
    from earshot.data.synth import MANIFEST

    try:
        old = json.loads((corpus / MANIFEST).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    diff = [f"{k} {old.get(k)} -> {v}" for k, v in (("clips", clips), ("seed", seed)) if old.get(k) != v]
    return ", ".join(diff) or None


def _trained_with(run_dir: Path, cfg: dict[str, Any]) -> bool:
    """The folder holds a finished model trained with exactly ``cfg``."""
    try:
        same = json.loads((run_dir / RUN_CONFIG).read_text()) == cfg
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    return same and (run_dir / "averaged" / "model.safetensors").is_file()


def load_average() -> float:
    """The 1-minute load average (NaN where the system has none)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def machine_line() -> str:
    """The CPU and its cores: with the load averages, what a reader needs to compare a demo time."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores"


def chance_metrics(n_clips: int) -> list[float]:
    """Expected R@1, R@5, R@10 and mAP@10 of a random ranking of ``n_clips`` with one relevant
    clip per caption: R@k = min(k, n)/n, mAP@10 = sum of 1/r over the first min(10, n) ranks / n."""
    return [min(k, n_clips) / n_clips for k in (1, 5, 10)] + [
        sum(1.0 / r for r in range(1, min(10, n_clips) + 1)) / n_clips]


def results_markdown(rows: list[tuple[str, dict[str, float] | None]], n_clips: int, footer: str) -> str:
    """The evaluation table as markdown (``None`` metrics: the chance row), plus a footer."""
    lines = ["| system | R@1 | R@5 | R@10 | mAP@10 |", "| --- | ---: | ---: | ---: | ---: |"]
    for name, m in rows:
        if m is None:
            vals = chance_metrics(n_clips)
        else:
            vals = [m["t2a/R@1"], m["t2a/R@5"], m["t2a/R@10"], m["t2a/mAP@10"]]
        lines.append(f"| {name} | " + " | ".join(f"{v:.3f}" for v in vals) + " |")
    return "\n".join(lines) + "\n\n" + footer + "\n"


def _metrics_row(name: str, m: dict[str, float]) -> list[str]:
    cols = ["t2a/R@1", "t2a/R@5", "t2a/R@10", "t2a/mAP@10", "a2t/mAP@10"]
    return [name, *(f"{m[c]:.3f} ± {m[c + '/ci95']:.3f}" for c in cols)]


LABELS = {"infonce": "small_cnn + MiniLM, InfoNCE", "triplet_sum": "small_cnn + MiniLM, triplet-sum",
          "ensemble (mean)": "ensemble of both (mean)"}


def run_demo(out: Path, clips: int, seed: int, epochs: int, console: Console, progress: bool,
             epoch_lines: bool = False) -> dict[str, Any]:
    """Run every stage; return the evaluation metrics by model name (for tests and callers).

    A rerun keeps what is still valid: the corpus unless ``clips``/``seed`` changed, each model
    unless its training config changed (``epochs``, corpus), the index unless a model changed.
    ``epoch_lines`` prints one line per training epoch (for logs, where bars are noise)."""
    from earshot.app.cmd_data import make_synth
    from earshot.ensemble import search_ensembles
    from earshot.evaluation import evaluate
    from earshot.index import IndexConfig, index_folder, open_encoder
    from earshot.index.search import Index
    from earshot.loading.retriever import load_retriever
    from earshot.train.config import load_config
    from earshot.train.progress import EpochLines
    from earshot.train.run import train

    times: dict[str, float] = {}
    t0 = time.perf_counter()
    machine, load_start = machine_line(), load_average()
    corpus = out / "synth" / "clotho"
    console.rule("1. synthetic corpus")
    changed = _corpus_changed(corpus, clips, seed)
    if changed:
        console.print(f"corpus settings changed ({changed}): generating it again, retraining")
        for stale in (out / "synth", out / "cache", out / "index"):
            shutil.rmtree(stale, ignore_errors=True)
    make_synth(corpus, clips, seed, console)
    # the same clips in AudioCaps' layout: the AudioCLIP-F2 preset's first stage reads it
    write_audiocaps_view(corpus, out / "synth" / "audiocaps")
    times["corpus"] = time.perf_counter() - t0

    models: dict[str, Path] = {}
    for loss in DEMO_LOSSES:
        console.rule(f"2. train small_cnn + MiniLM with {loss}")
        t = time.perf_counter()
        run_dir = out / "models" / loss
        cfg_data = demo_train_config(corpus, run_dir, loss, epochs, seed)
        if _trained_with(run_dir, cfg_data):
            console.print(f"already trained: {escape(str(run_dir / 'averaged'))}")
        else:
            if (run_dir / RUN_CONFIG).is_file():
                console.print(f"settings changed since {escape(str(run_dir))} was trained: training again")
            shutil.rmtree(out / "index", ignore_errors=True)  # it was built with the old model
            lines = [EpochLines(prefix=f"{loss}: ")] if epoch_lines else []
            train(load_config(cfg_data), progress=progress, overwrite=True, callbacks=lines)
            with atomic_write(run_dir / RUN_CONFIG, "w") as f:
                json.dump(cfg_data, f, indent=2)
        models[loss] = run_dir / "averaged"
        times[f"train {loss}"] = time.perf_counter() - t

    console.rule("3. ensemble search on the validation split")
    t = time.perf_counter()
    val = read_clotho(corpus / caption_csv_name("validation"))
    report = search_ensembles(list(models.values()), val, corpus / "validation", rule="mean",
                              clip_seconds=30.0, cache=False, progress=progress)
    manifest = report.save(out / "ensemble.json")
    times["ensemble search"] = time.perf_counter() - t

    console.rule("4. evaluation split")
    t = time.perf_counter()
    test = read_clotho(corpus / caption_csv_name("evaluation"))
    results = {}
    for name, path in [*models.items(), ("ensemble (mean)", manifest)]:
        results[name] = evaluate(load_retriever(path), test, corpus / "evaluation", clip_seconds=30.0,
                                 progress=progress)
    times["evaluation"] = time.perf_counter() - t
    table = Table(title=f"text-to-audio retrieval, synthetic evaluation split ({len(test)} clips, "
                        f"{test.num_captions} captions); ± is the 95% jackknife interval")
    for col in ("system", "R@1", "R@5", "R@10", "mAP@10", "a2t mAP@10"):
        table.add_column(col, justify="left" if col == "system" else "right")
    for name, res in results.items():
        table.add_row(*_metrics_row(LABELS.get(name, name), res.metrics))
    table.add_row("chance", *(f"{v:.3f}" for v in chance_metrics(len(test))), "")
    console.print(table)

    best = results["ensemble (mean)"]
    captions = test.captions()
    clip_of = test.caption_clip_indices()
    for q in range(0, min(3 * 5, len(captions)), 5):
        top = best.similarity[q].topk(min(10, len(test))).indices.tolist()
        t10 = Table(title=escape(f"top 10 for {captions[q]!r}"))
        for col in ("rank", "file", "score", "match"):
            t10.add_column(col)
        for rank, i in enumerate(top, 1):
            t10.add_row(str(rank), Text(test[i].clip_id), f"{best.similarity[q, i]:.3f}", "✓" if i == clip_of[q] else "")
        console.print(t10)

    console.rule("5. index the evaluation clips and search them by text")
    t = time.perf_counter()
    index_dir = out / "index"
    rep = index_folder(corpus / "evaluation", open_encoder(manifest), index_dir, IndexConfig(workers=1))
    console.print(f"indexed {rep.items} files ({len(rep.encoded)} encoded now, {rep.unchanged} "
                  f"unchanged) into {escape(str(index_dir))}")
    with Index.open(index_dir) as ix:
        for query in EXAMPLE_QUERIES:
            hits = ix.search(query, 5)
            res_table = Table(title=escape(f"earshot search {index_dir} {query!r} -k 5"))
            for col in ("rank", "score", "file", "best window"):
                res_table.add_column(col)
            for h in hits:
                res_table.add_row(str(h.rank), f"{h.score:.3f}", Text(h.path), f"{h.window_start:.1f}-{h.window_end:.1f} s")
            console.print(res_table)
    times["index + search"] = time.perf_counter() - t
    times["total"] = time.perf_counter() - t0
    console.print("time: " + ", ".join(f"{k} {v:.0f} s" for k, v in times.items()))
    footer = (f"Measured by `earshot demo --clips {clips} --epochs {epochs} --seed {seed}` on the "
              f"{len(test)}-clip evaluation split in {times['total'] / 60:.1f} minutes (training "
              f"{sum(v for k, v in times.items() if k.startswith('train')) / 60:.1f}) on {machine}, "
              f"load average {load_start:.1f} at the start and {load_average():.1f} at the end "
              f"(the demo itself adds about 1).")
    rows = [(LABELS.get(n, n), r.metrics) for n, r in results.items()] + [("chance", None)]
    with atomic_write(out / RESULTS_FILE, "w") as f:
        f.write(results_markdown(rows, len(test), footer))
    console.print(f"table written to {escape(str(out / RESULTS_FILE))}")
    console.print(f"serve it: earshot serve {escape(str(index_dir))}   (then open http://127.0.0.1:8000/)")
    return {name: res.metrics for name, res in results.items()}
