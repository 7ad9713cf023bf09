"""A load-time health check for retrievers: does the text tower tell captions apart?

A text tower that returns nearly the same vector for every input (reported for
``laion/larger_clap_music``: mean cosine 0.9993 between unrelated captions) ranks every query the
same way, and nothing else in a run says so. :func:`check_text_tower` embeds a fixed probe set
of varied captions and warns, once per model, when their mean pairwise cosine exceeds
:data:`MAX_MEAN_COSINE`.

The bound: a trained tower measured on :data:`PROBES` stays far below it (all-MiniLM-L6-v2:
0.115; earshot's bag-of-words tower: 0.043), the reported degenerate tower is at 0.9993, and so
are untrained ones: tiny randomly initialised CLAP-RoBERTa and BERT towers measure
0.995-0.99999 (LayerNorm's gain and bias dominate an untrained output), and are rightly warned
about. The weakest working model measured is ``make demo``'s small bag-of-words bi-encoder
(0.9575, yet it retrieves at about six times chance): 0.99 lies between it and the degenerate
towers.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any, Callable, Sequence

import numpy as np

MAX_MEAN_COSINE = 0.99

# Twenty captions of different sources, lengths and grammar (no two about the same event).
PROBES: tuple[str, ...] = (
    "a dog barks twice in a quiet street",
    "heavy rain falls on a tin roof",
    "a crowd cheers at a football match",
    "an orchestra tunes before the concert",
    "a baby laughs while someone claps",
    "the engine of a truck idles and then revs",
    "birds chirp in the forest at dawn",
    "a woman speaks french on the telephone",
    "glass shatters on a tiled floor",
    "waves crash against rocks on the shore",
    "a church bell rings slowly",
    "someone types fast on a mechanical keyboard",
    "thunder rumbles in the distance",
    "a jazz saxophone solo over drums",
    "footsteps on gravel",
    "a kettle whistles as the water boils",
    "electronic dance music with a heavy bass line",
    "a cat meows",
    "wind howls through a narrow gap",
    "children shout in a school playground",
)

_WARNED: set[str] = set()


class DegenerateTextTowerWarning(UserWarning):
    """A retriever's text tower gives (nearly) the same embedding for every caption."""


def mean_pairwise_cosine(embeddings: Any) -> float:
    """Mean cosine similarity over all distinct pairs of rows of ``(N, D)`` embeddings (N >= 2)."""
    x = np.asarray(embeddings.detach().cpu() if hasattr(embeddings, "detach") else embeddings,
                   dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"need (N >= 2, D) embeddings, got shape {x.shape}")
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    s = x @ x.T  # (N, N)
    n = len(x)
    return float((s.sum() - np.trace(s)) / (n * (n - 1)))


def check_text_tower(retriever: Any, name: str, probes: Sequence[str] = PROBES) -> float | None:
    """Embed ``probes`` with ``retriever.embed_text``; warn (once per ``name``) when their mean
    pairwise cosine exceeds :data:`MAX_MEAN_COSINE`. Returns the mean cosine, or None for a
    retriever without a text side."""
    embed = getattr(retriever, "embed_text", None)
    if not callable(embed):
        return None
    value = mean_pairwise_cosine(embed(list(probes)))
    if value > MAX_MEAN_COSINE and name not in _WARNED:
        _WARNED.add(name)
        warnings.warn(f"{name}: its text tower gives nearly the same embedding for every caption "
                      f"(mean cosine {value:.4f} over {len(probes)} unrelated captions; healthy "
                      f"towers stay below {MAX_MEAN_COSINE}): text-to-audio rankings from it are "
                      f"close to arbitrary", DegenerateTextTowerWarning, stacklevel=3)
    return value


def checked(open_retriever: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator for a function that opens a retriever from a name or path (its first argument):
    the retriever it returns has passed :func:`check_text_tower` under that name."""

    @functools.wraps(open_retriever)
    def wrapper(name_or_path, *args, **kwargs):
        retriever = open_retriever(name_or_path, *args, **kwargs)
        check_text_tower(retriever, str(name_or_path))
        return retriever

    return wrapper
