"""Text encoding speed: earshot's ``sbert`` tower against sentence-transformers' own ``encode``.

Same model (all-MiniLM-L6-v2, local copy), same sentences (real Clotho captions when
``shared/data/clotho`` sits beside the repository, generated captions otherwise), same batch
size. earshot's path is what indexing and evaluation run: ``BiEncoder.embed_text`` (batches
sorted by length under ``torch.inference_mode``, results in input order), as
sentence-transformers' ``encode`` also sorts; a third row feeds earshot pre-sorted input. Repeats are interleaved (each round A, B, C in a shuffled order) so the
load of a shared machine drifts over all of them alike. Goal: ratio earshot / sentence-transformers
>= 1 (no slower).
"""

from __future__ import annotations

import csv
import random
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from common import figure, interleaved, summarize

from earshot.models.biencoder import create_model
from earshot.models.text.towers import default_sbert_path

CLOTHO = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "clotho" / "clotho_captions_development.csv"
BATCH = 32  # sentence-transformers' default encode batch size


def captions(n: int, path: Path = CLOTHO, seed: int = 0) -> tuple[list[str], str]:
    """``n`` captions and where they came from: Clotho's development captions in file order, or
    generated sentences of Clotho-like lengths (8-20 words) when the file is absent."""
    if path.is_file():
        out: list[str] = []
        with path.open(newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                out += [row[k] for k in sorted(row) if k.startswith("caption_") and row[k]]
                if len(out) >= n:
                    break
        return out[:n], f"Clotho development captions ({path.name})"
    rng = random.Random(seed)
    words = ("a dog barks while cars pass by on a wet road and people talk loudly near the "
             "water birds chirp in the distance as wind blows through trees an engine idles").split()
    return [" ".join(rng.choice(words) for _ in range(rng.randint(8, 20))) for _ in range(n)], "generated sentences"


def run(quick: bool = False, n: int | None = None, repeats: int | None = None) -> dict[str, Any]:
    """Sentences/s of the three paths; figures plus raw times."""
    from sentence_transformers import SentenceTransformer

    n = n or (256 if quick else 512)
    repeats = repeats or (2 if quick else 3)
    texts, source = captions(n)
    # earshot's user-facing path: BiEncoder.embed_text (batches by length, restores the order)
    # around the sbert tower, with an identity head so the output is the tower's own.
    model = create_model({
        "audio": {"name": "small_cnn", "options": {"channels": [8, 384]}},
        "text": {"name": "sbert"}, "embed_dim": 384, "normalize": False,
        "audio_head": {"kind": "identity"}, "text_head": {"kind": "identity"},
    }).eval()
    peer = SentenceTransformer(str(default_sbert_path()), device="cpu", local_files_only=True)
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    by_length = [texts[i] for i in order]

    def earshot(xs: list[str]) -> torch.Tensor:
        return model.embed_text(xs, batch_size=BATCH)

    fns = {
        "earshot": lambda: earshot(texts),
        "sentence_transformers": lambda: peer.encode(texts, batch_size=BATCH, convert_to_numpy=True),
        "earshot_length_sorted": lambda: earshot(by_length),
    }
    times = interleaved(fns, repeats=repeats, warmup=1, seed=0)  # shuffled order per round
    rates = {k: summarize(len(texts) / t for t in v) for k, v in times.items()}
    ours = earshot(texts).numpy()
    theirs = np.asarray(peer.encode(texts, batch_size=BATCH, convert_to_numpy=True))
    max_diff = float(np.abs(ours - theirs).max())
    ratio = summarize(times["sentence_transformers"][i] / times["earshot"][i] for i in range(repeats))
    ratio_sorted = summarize(times["sentence_transformers"][i] / times["earshot_length_sorted"][i]
                             for i in range(repeats))
    figures = [
        figure("earshot / sentence-transformers speed (input order)", ratio.median, goal=">= 1",
               spread=ratio.iqr, n=ratio.n,
               context=f"{rates['earshot'].median:.0f} vs {rates['sentence_transformers'].median:.0f} sentences/s"),
        figure("earshot (length-sorted batches) / sentence-transformers speed", ratio_sorted.median,
               spread=ratio_sorted.iqr, n=ratio_sorted.n,
               context=f"{rates['earshot_length_sorted'].median:.0f} sentences/s"),
        figure("max |embedding difference| earshot vs sentence-transformers", max_diff, goal="<= 1e-4"),
    ]
    for name, r in rates.items():
        figures.append(figure(f"{name} sentences/s", r.median, unit="sent/s", spread=r.iqr, n=r.n,
                              context=f"batch {BATCH}"))
    return {"figures": figures, "notes": [f"{len(texts)} {source}, all-MiniLM-L6-v2, batch {BATCH}, "
                                          f"{torch.get_num_threads()} threads, interleaved repeats"],
            "times_s": times, "sentences": len(texts)}


if __name__ == "__main__":
    import sys

    for f in run(quick="--quick" in sys.argv)["figures"]:
        print(f"{f['name']:<65} {f['value']:>10.4g} goal {f['goal'] or '-':<6} met {f['met']} {f['context']}")
