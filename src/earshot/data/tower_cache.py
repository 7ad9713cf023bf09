"""On-disk cache of frozen-tower outputs, so training only the heads needs no encoder passes.

Outputs are keyed by (tower fingerprint, item key). The fingerprint hashes the tower's config
and every weight, so other weights or options never read stale outputs. Item keys say what
was encoded: a caption's text, or an audio file plus its framing (and augmented-view index).
Outputs are written in shards, each atomically, so an interrupted pass resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from torch import nn
from tqdm.auto import tqdm

from earshot.errors import DataError
from earshot.utils import atomic_write


def tower_fingerprint(tower: nn.Module, description: dict[str, Any]) -> str:
    """SHA-256 over a JSON description of the tower and the bytes of every tensor of its state."""
    h = hashlib.sha256(json.dumps(description, sort_keys=True, default=str).encode())
    for name, tensor in sorted(tower.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().to("cpu").contiguous().numpy().tobytes())
    return h.hexdigest()


class TowerCache:
    """Shards of ``(keys, outputs)`` under ``root/<fingerprint[:20]>/``."""

    def __init__(self, root: str | Path, fingerprint: str):
        self.dir = Path(root) / fingerprint[:20]
        self.dir.mkdir(parents=True, exist_ok=True)
        self.fingerprint = fingerprint

    def _shards(self) -> list[Path]:
        return sorted(self.dir.glob("shard-*.safetensors"))

    def known(self) -> dict[str, torch.Tensor]:
        """Every cached output by key."""
        out: dict[str, torch.Tensor] = {}
        for shard in self._shards():
            try:
                data = load_file(str(shard))
                keys = json.loads((shard.with_suffix(".json")).read_text())
            except (OSError, ValueError) as e:
                raise DataError(f"{shard}: unreadable cache shard ({e}); delete it to recompute") from None
            if len(keys) != data["outputs"].shape[0]:
                raise DataError(f"{shard}: {len(keys)} keys for {data['outputs'].shape[0]} rows")
            out.update(zip(keys, data["outputs"]))
        return out

    def get_or_compute(
        self,
        keys: Sequence[str],
        compute: Callable[[list[str]], torch.Tensor],
        batch_size: int = 32,
        desc: str = "encoding",
        progress: bool = True,
    ) -> torch.Tensor:
        """Outputs for ``keys`` in order (N, D): cached rows are read, the rest computed in
        batches by ``compute(batch_keys) -> (b, D)`` and saved shard by shard."""
        known = self.known()
        missing = list(dict.fromkeys(k for k in keys if k not in known))
        next_id = len(self._shards())
        bar = tqdm(total=len(missing), desc=desc, unit="item", disable=not progress or not missing)
        for start in range(0, len(missing), batch_size):
            batch = missing[start : start + batch_size]
            outputs = compute(batch).detach().to("cpu", torch.float32).contiguous()
            if outputs.shape[0] != len(batch):
                raise DataError(f"compute returned {outputs.shape[0]} rows for {len(batch)} keys")
            shard = self.dir / f"shard-{next_id:06d}.safetensors"
            # keys first, then the weights file: a shard counts only once its .safetensors exists.
            with atomic_write(shard.with_suffix(".json"), "w") as f:
                json.dump(batch, f)
            with atomic_write(shard) as f:
                f.write(safetensors_bytes({"outputs": outputs}))
            known.update(zip(batch, outputs))
            next_id += 1
            bar.update(len(batch))
        bar.close()
        if not keys:
            return torch.empty(0)
        return torch.stack([known[k] for k in keys])
