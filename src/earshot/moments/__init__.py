"""Audio moment retrieval (DCASE 2026): find where in a long recording a text happens.

One file per concept: ``data`` (lighthouse JSON Lines annotations and predictions), ``metrics``
(Moment-DETR's standalone_eval R1@IoU / mAP@IoU), ``generate`` (Clotho-Moment-style long
recordings), ``features`` (frame features of any audio tower on sliding windows), ``sliding``
(the zero-shot sliding-window baseline), ``qddetr`` (the QD-DETR moment head and lighthouse's
checkpoint converter), ``predict`` (predictions for a data set and ``find_moments``).
"""

from earshot.utils import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "MomentQuery": "data",
    "read_annotations": "data",
    "read_moments": "data",
    "read_predictions": "data",
    "score_moments": "metrics",
    "score_files": "metrics",
})
