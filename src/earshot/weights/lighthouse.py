"""lighthouse's audio moment retrieval checkpoints (line/lighthouse, Zenodo).

``clap_qd_detr_clotho-moment.ckpt``: QD-DETR trained on Clotho-Moment with MS-CLAP 2023 features
(1 s windows at 1 s hop, GPT-2 token features), the file lighthouse's ``api_example/amr_demo.py``
and ``gradio_demo/amr_demo.py`` download. Resolved as a ``moment_head`` (by this name, or a file by its content) and opened by
``earshot.moments.head.load_lighthouse_checkpoint``.
"""

from __future__ import annotations

from earshot.weights.entry import WeightsEntry, register_weights

register_weights(WeightsEntry(
    name="lighthouse_qd_detr_clotho_moment", file_name="clap_qd_detr_clotho-moment.ckpt",
    urls=("https://zenodo.org/records/13961029/files/clap_qd_detr_clotho-moment.ckpt",),
    checksum=None, size_bytes=None, towers=(), file_format="torch_pickle", moment_head=True,
    source=("lighthouse (Munakata et al., 2024), zenodo.org/records/13961029, URL as in "
            "line/lighthouse api_example/amr_demo.py; digest: none published/found in the "
            "repository (Zenodo's record page lists one; not recorded here unread)"),
    licence="Apache-2.0 (line/lighthouse); no separate weights licence stated"))
