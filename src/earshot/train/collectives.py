"""Collectives of the training step, on torch's current functional API.

Its own module (torch only) so a process that only gathers, such as the two-rank gradient
test, does not import Lightning.
"""

from __future__ import annotations

import torch


def gather_rows(x: torch.Tensor) -> torch.Tensor:
    """Every rank's ``(b, ...)`` rows concatenated in rank order, ``(W*b, ...)``, with gradients.

    torch's current functional collective (``all_gather_single_autograd``): its backward
    reduce-scatters (sums) the gathered rows' gradients back to the rank that produced them.
    Lightning's ``all_gather`` (with or without ``sync_grads``) goes through the deprecated
    ``torch.distributed.nn.functional.all_gather`` and warns on every run. Needs an initialised
    default process group and equal ``b`` on every rank (the global batch sampler's shares).
    """
    import torch.distributed as dist
    from torch.distributed._functional_collectives import AsyncCollectiveTensor, all_gather_single_autograd

    out = all_gather_single_autograd(x.contiguous(), 0, dist.group.WORLD)
    return out.wait() if isinstance(out, AsyncCollectiveTensor) else out
