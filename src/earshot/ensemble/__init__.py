"""Ensembles: score-level fusion of several trained models, and the search for the best set.

An :class:`Ensemble` is a list of models with weights and a fusion rule. It presents the same
interface as one model (``sample_rate``, ``embed_dim``, ``embed_audio``, ``embed_text``, plus the
``encode_clips`` and ``similarity`` hooks that :mod:`earshot.evaluation` uses), so evaluation,
submission writing and indexing never need to know they hold an ensemble (STYLE.md, 2).

Fusion rules, over the members' ``(Q, N)`` caption-by-clip similarity matrices ``S_m`` with
weights ``w_m`` normalised to sum to 1:

* ``mean``: ``sum_m w_m S_m``.
* ``zmean``: the same after standardising each row (each caption query) of each ``S_m`` to zero
  mean and unit (population) standard deviation over the clips. Models trained with different
  losses score on different scales; without this a model whose scores spread wider dominates.
  A row with no spread becomes all zeros (it carries no ranking information).
* ``rrf``: reciprocal-rank fusion, ``sum_m w_m / (k + rank_m(q, j))`` with ``rank_m`` the 1-based
  rank of clip ``j`` for query ``q`` under model ``m`` (ties broken by the lower clip index, as
  :mod:`earshot.metrics` does) and ``k = 60`` by default (Cormack, Clarke and Buettcher, SIGIR
  2009: the constant damps the weight of the very top ranks; 60 is their recommended value).

All rules standardise or rank per caption query, which is the text-to-audio task's direction;
the audio-to-text figures of a fused matrix read its columns.

Embeddings of an ensemble are the concatenation of its members' embeddings, member ``m`` scaled
by ``sqrt(w_m)``: their dot product is exactly the ``mean`` fusion (and, for L2-normalised
members, the concatenation has unit norm), so a plain inner-product index ranks an ensemble with
rule ``mean`` exactly. :meth:`Ensemble.similarity` splits them back and applies any rule.

Members may have different front ends (a 32 kHz PANNs and a 44.1 kHz ESResNeXt):
:meth:`Ensemble.encode_clips` lets each member decode files at its own rate, and
:meth:`Ensemble.embed_audio` takes waveforms at ``Ensemble.sample_rate`` (by default the highest
member rate, so no member is fed audio that lost band it could use) and resamples them with soxr
for each member whose rate differs.

The combination search (:func:`search_ensembles`) encodes the validation set once per member,
caches each member's similarity matrix on disk (keyed by the checkpoint's content hash and the
table's content, so a rerun encodes nothing), and scores every combination from those matrices.

Layout: ``fusion.py`` (the rules, pure), ``model.py`` (:class:`Ensemble`), ``manifest.py``
(typed manifests, :func:`load_ensemble`), ``search.py`` (similarity cache and the combination
search).
"""

from earshot.ensemble.fusion import RRF_K, fuse, rank_rows, standardize_rows
from earshot.ensemble.manifest import (FORMAT, EnsembleConfig, MemberConfig, load_ensemble,
                                       member_paths, read_manifest, save_manifest)
from earshot.ensemble.model import Ensemble
from earshot.ensemble.fingerprint import checkpoint_fingerprint, table_fingerprint
from earshot.ensemble.search import (ComboScore, SearchReport, SimilarityCache, member_similarity,
                                     search_combinations, search_ensembles, similarity_key)

__all__ = [
    "FORMAT",
    "RRF_K",
    "ComboScore",
    "Ensemble",
    "EnsembleConfig",
    "MemberConfig",
    "SearchReport",
    "SimilarityCache",
    "checkpoint_fingerprint",
    "fuse",
    "load_ensemble",
    "member_paths",
    "member_similarity",
    "rank_rows",
    "read_manifest",
    "save_manifest",
    "search_combinations",
    "search_ensembles",
    "similarity_key",
    "standardize_rows",
    "table_fingerprint",
]
