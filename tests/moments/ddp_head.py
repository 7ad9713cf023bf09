"""Run by tests/moments/test_moments_train.py in a subprocess: train the moment head a few steps
on the test's synthetic features with ``devices`` processes (gloo on CPU) or one, and save the
trained weights and each step's loss. Lightning re-runs this file once per extra rank."""

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_moments_train import Losses, _examples, ddp_config  # noqa: E402

from earshot.train.moments import fit_moment_head  # noqa: E402


if __name__ == "__main__":
    out, devices, precision = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    cb = Losses()
    head = fit_moment_head(ddp_config(devices, precision), _examples(16, 5), callbacks=[cb])
    if int(__import__("os").environ.get("LOCAL_RANK", "0")) == 0:
        torch.save(head.qddetr.state_dict(), out / "weights.pt")
        (out / "losses.json").write_text(json.dumps(cb.losses))
