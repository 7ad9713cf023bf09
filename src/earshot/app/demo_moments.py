"""The moments section of the demo (``earshot demo --moments``): audio moment retrieval on
long recordings made from the synthetic corpus.

~100 one-minute training recordings (development clips), 60 validation recordings (validation
clips) and 60 test recordings (evaluation clips) with 1-3 captioned events each -> the
sliding-window baseline with the demo model -> a two-stage QD-DETR head trained a few minutes on
the demo model's frozen features (the baseline's 2 s / 1 s windows of its audio tower, its
sentence embedding as the text, and per window the demo model's own window-text similarity as a
third frame channel), whose decoder starts from the baseline's proposals on that similarity
curve and learns to refine their boundaries and re-rank them (``QDDETRConfig.anchors =
"similarity"``), the epoch kept by validation mAP as lighthouse keeps its best checkpoint ->
R1@0.5 / R1@0.7 / mAP on the test recordings for both and for chance. Nothing is chosen on the
test recordings.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from earshot.errors import ConfigError
from earshot.utils import atomic_write

MOMENTS_RESULTS = "moments_results.md"
COLUMNS = ("R1@0.5", "R1@0.7", "mAP/avg")
EPOCHS = 15  # head training epochs (the best on validation is kept)
INPUT_DROPOUT = 0.5  # lighthouse's input_dropout
LR = 3e-4  # chosen on validation (docs/MOMENTS.md, fifth round); lighthouse: 1e-4 for 200 epochs
RANKING = "expected_iou"  # the head's predictions ranked by expected IoU (docs/MOMENTS.md, eighth round)
WINDOW_S, HOP_S = 2.0, 1.0  # the baseline's windows: the head's anchors are the baseline's proposals
# the proposals' scores are the head's foreground prior; its classifier (zero at first) learns a
# correction with half lighthouse's classification weight (2 of 4), and queries are matched to
# events by their spans only (no classification cost), chosen on validation (docs/MOMENTS.md)
LABEL_LOSS, MATCH_COST_CLASS = 2.0, 0.0


def chance_predictions(recordings, seed: int, top: int = 10) -> dict[str, list[list[float]]]:
    """Random ranked windows per query (uniform start, length uniform in 1-20 s): the chance row."""
    rng = np.random.default_rng(seed)
    out = {}
    for rec in recordings:
        for q in rec.queries:
            wins = []
            for k in range(top):
                ln = float(rng.uniform(1.0, 20.0))
                s = float(rng.uniform(0.0, max(rec.duration - ln, 0.0)))
                wins.append([round(s, 2), round(min(s + ln, rec.duration), 2), 1.0 - k / top])
            out[str(q.qid)] = wins
    return out


def moments_markdown(rows: list[tuple[str, dict[str, float]]], footer: str) -> str:
    lines = ["| system | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    lines += ["| " + name + " | " + " | ".join(f"{m[c]:.1f}" for c in COLUMNS) + " |" for name, m in rows]
    return "\n".join(lines) + "\n\n" + footer + "\n"


def run_moments_demo(out: Path, seed: int, console: Console, recordings: int = 100,
                     val_recordings: int = 60, test_recordings: int = 60, epochs: int = EPOCHS,
                     progress: bool = False, bsz: int = 16, lr: float = LR,
                     duration_s: float = 60.0) -> dict[str, Any]:
    """Generate the long recordings (resumable), run the baseline, train and score the head;
    print and write the table (``OUT/moments_results.md``); return the scores by system."""
    from earshot.app.cmd_data import _Bar
    from earshot.models.inference import prepare_for_inference
    from earshot.loading.retriever import load_retriever
    from earshot.moments.data import read_moments, windows_by_qid
    from earshot.moments.dataset import build_examples
    from earshot.moments.generate import MomentGenConfig, generate_moments
    from earshot.moments.head import FeatureSpec
    from earshot.moments.metrics import score_moments
    from earshot.moments.predict import predict_moments
    from earshot.moments.qddetr import LossConfig, QDDETRConfig
    from earshot.moments.sliding import SlidingConfig
    from earshot.train.moments import MomentOptimConfig, MomentTrainConfig, fit_moment_head
    from earshot.train.progress import EpochLines

    t0 = time.perf_counter()
    corpus, model_dir = out / "synth" / "clotho", out / "models" / "infonce" / "averaged"
    if not model_dir.is_dir():
        raise ConfigError(f"{model_dir}: the demo model is missing (run `earshot demo --out {out}` first)")
    console.rule(f"6. moments: {duration_s:g} s recordings from the synthetic corpus")
    sets = {}
    plan = (("train", "development", recordings, seed), ("val", "validation", val_recordings, seed + 2),
            ("test", "evaluation", test_recordings, seed + 1))
    for split, source, n, s in plan:
        cfg = MomentGenConfig(recordings=n, duration_s=duration_s, max_events=3, sample_rate=16000, seed=s)
        with _Bar(console, f"mixing {split} recordings") as bar:
            summary = generate_moments(out / "moments" / split, corpus / f"clotho_captions_{source}.csv",
                                       config=cfg, progress=bar)
        sets[split] = read_moments(summary.out_dir / "moments.jsonl", summary.out_dir / "audio")
        console.print(f"{split}: {summary.queries} queries in {n} recordings of {duration_s:g} s "
                      f"(from the {source} clips)")
    test = sets["test"]
    gt = windows_by_qid([q for r in test for q in r.queries])
    retriever = prepare_for_inference(load_retriever(model_dir), "fp32")
    scores: dict[str, dict[str, float]] = {}
    times: dict[str, float] = {}

    console.rule("7. sliding-window baseline (zero-shot, the demo model)")
    t = time.perf_counter()
    rows = predict_moments(retriever, test)
    scores["sliding window (2 s / 1 s, demo model)"] = score_moments(
        gt, {str(r["qid"]): r["pred_relevant_windows"] for r in rows})
    # the head's ranking on the baseline's own moments, so the head's lead is not its ranking alone
    rows = predict_moments(retriever, test, sliding=SlidingConfig(ranking="expected_iou"))
    scores["sliding window, ranked by expected IoU"] = score_moments(
        gt, {str(r["qid"]): r["pred_relevant_windows"] for r in rows})
    times["baseline"] = time.perf_counter() - t

    console.rule(f"8. QD-DETR head from the baseline's proposals, demo model's frozen features ({epochs} epochs, CPU)")
    t = time.perf_counter()
    spec = FeatureSpec(retriever=str(model_dir), window_s=WINDOW_S, hop_s=HOP_S, text="tokens",
                       max_windows=300, similarity=True)
    train_ex, val_ex, test_ex = (build_examples(retriever, sets[k], spec) for k in ("train", "val", "test"))
    tcfg = MomentTrainConfig(
        model=QDDETRConfig(txt_dim=int(train_ex[0].text.shape[1]), aud_dim=int(train_ex[0].audio.shape[1]),
                           vid_dim=3, input_dropout=INPUT_DROPOUT, anchors="similarity",
                           anchor_window=WINDOW_S / HOP_S, ranking=RANKING),
        loss=LossConfig(label_loss_coef=LABEL_LOSS, set_cost_class=MATCH_COST_CLASS),
        features=spec, n_epoch=epochs, bsz=bsz, seed=seed, accelerator="cpu",
        optim=MomentOptimConfig(lr=lr), out_dir=str(out / "moments" / "head"))
    # a few CPU minutes instead of lighthouse's 200 epochs: smaller batches, the proposals as anchors
    head = fit_moment_head(tcfg, train_ex, val_ex, progress=progress,
                           callbacks=[] if progress else [EpochLines(prefix="head: ", metric="val/mAP/avg",
                                                                           label="val mAP/avg")])
    best_epoch, best = max(head.validation, key=lambda h: h[1]["mAP/avg"])
    console.print(f"kept epoch {best_epoch + 1} of {epochs}: validation mAP/avg {best['mAP/avg']:.1f} "
                  f"({len(val_ex)} queries)")
    head._retriever = retriever
    head.save(tcfg.out_dir)
    preds = {e.qid: head.predict_features(e.audio, [e.text], sims=[e.sim])[0] for e in test_ex}
    scores[f"QD-DETR head (anchored on the baseline, {len(train_ex)} training queries)"] = score_moments(gt, preds)
    times["head"] = time.perf_counter() - t
    scores["chance (random windows)"] = score_moments(gt, chance_predictions(test, seed))

    table = Table(title=escape(f"audio moment retrieval, {len(gt)} queries in {len(test)} "
                               f"{duration_s:g} s test recordings (percent)"))
    for col in ("system", *COLUMNS):
        table.add_column(col, justify="left" if col == "system" else "right")
    for name, m in scores.items():
        table.add_row(escape(name), *(f"{m[c]:.1f}" for c in COLUMNS))
    console.print(table)
    total = time.perf_counter() - t0
    footer = (f"Measured by `earshot demo --moments --seed {seed}` on {len(gt)} queries in {test_recordings} "
              f"test recordings of {duration_s:g} s ({recordings} training, {val_recordings} validation "
              f"recordings); head anchored on the baseline's proposals (QD-DETR, anchors: similarity, "
              f"classification weight {LABEL_LOSS:g}, matched on spans, ranked by expected IoU), trained {epochs} epochs (batch "
              f"{bsz}, lr {lr:g}; lighthouse: 200 epochs, batch 32, lr 1e-4) on the CPU, epoch {best_epoch + 1} kept by validation mAP "
              f"(baseline {times['baseline']:.0f} s, head features + training {times['head']:.0f} s, "
              f"section {total / 60:.1f} min).")
    with atomic_write(out / MOMENTS_RESULTS, "w") as f:
        f.write(moments_markdown(list(scores.items()), footer))
    console.print(f"table written to {escape(str(out / MOMENTS_RESULTS))}")
    return scores
