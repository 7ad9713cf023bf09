"""Windowed-sinc resampling as torchaudio's ``Resample`` computes it (``sinc_interp_hann``,
``lowpass_filter_width`` 6, ``rolloff`` 0.99: the defaults lighthouse's ``CLAPAudio`` uses),
streamed block by block so that memory follows the block, not the file.

The rates are reduced by their gcd to ``o`` in, ``n`` out. Output sample ``i * n + p`` is the dot
product of input samples ``i * o - width .. i * o + width + o - 1`` (zeros outside the signal)
with row ``p`` of a Hann-windowed sinc kernel of cut-off ``rolloff * min(o, n)`` (in units of
the reduced rates); a signal of ``L`` samples gives ``ceil(n * L / o)``. Needs only torch.
"""

from __future__ import annotations

import math
import numpy as np
import torch

from earshot.errors import ConfigError

__all__ = ["SincResampleStream", "sinc_kernel"]


def sinc_kernel(orig: int, new: int, lowpass_filter_width: int = 6, rolloff: float = 0.99,
                ) -> tuple[torch.Tensor, int]:
    """``(kernel (n, 2 * width + o) float32, width)`` for reduced rates ``orig`` -> ``new``
    (computed in float64, as torchaudio does by default)."""
    if orig <= 0 or new <= 0 or lowpass_filter_width <= 0 or not 0 < rolloff <= 1:
        raise ConfigError(f"sinc resampling: bad rates or filter ({orig}, {new}, {lowpass_filter_width}, {rolloff})")
    cutoff = min(orig, new) * rolloff
    width = math.ceil(lowpass_filter_width * orig / cutoff)
    taps = torch.arange(-width, width + orig, dtype=torch.float64)[None] / orig  # input offsets, in input periods
    # each output phase's offset, divided in float32 and then added in float64: torchaudio's own
    # rounding (its integer arange / new_freq is float32), which keeps the kernels equal to 1e-9
    phases = (-torch.arange(new)[:, None] / new).to(torch.float32)
    t = ((taps + phases) * cutoff).clamp(-lowpass_filter_width, lowpass_filter_width)
    window = torch.cos(t * math.pi / lowpass_filter_width / 2) ** 2  # Hann over +-lowpass_filter_width
    x = t * math.pi
    sinc = torch.where(x == 0, torch.ones_like(x), torch.sin(x) / torch.where(x == 0, torch.ones_like(x), x))
    return (sinc * window * (cutoff / orig)).float(), width


class SincResampleStream:
    """Resample a mono stream of float32 blocks from ``orig_rate`` to ``new_rate``; the same
    interface as ``soxr.ResampleStream`` (``resample_chunk(block, last=...)``). The output equals
    torchaudio's ``Resample`` of the whole signal to float32 rounding, whatever the blocks."""

    def __init__(self, orig_rate: int, new_rate: int):
        g = math.gcd(int(orig_rate), int(new_rate))
        self.o, self.n = int(orig_rate) // g, int(new_rate) // g
        kernel, self.width = sinc_kernel(self.o, self.n)
        self.kernel = kernel[:, None, :]  # (n, 1, taps): conv1d weights
        self.taps = kernel.shape[1]
        self.buf = np.zeros(self.width, np.float32)  # the left zero padding, then unread input
        self.consumed = 0  # input samples seen
        self.emitted = 0  # output samples given

    def _run(self, buf: np.ndarray, steps: int) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(buf[: (steps - 1) * self.o + self.taps]))[None, None]
        y = torch.nn.functional.conv1d(x, self.kernel, stride=self.o)  # (1, n, steps)
        return y[0].T.reshape(-1).numpy()  # phase-interleaved: i * n + p

    def resample_chunk(self, block: np.ndarray, last: bool = False) -> np.ndarray:
        """The output that ``block`` completes (all of it when ``last``)."""
        self.buf = np.concatenate([self.buf, np.asarray(block, np.float32)])
        self.consumed += len(block)
        if last:  # zeros after the signal, then exactly ceil(n * L / o) samples in all
            total = -(-self.n * self.consumed // self.o)
            steps = -(-(total - self.emitted) // self.n)
            need = (steps - 1) * self.o + self.taps if steps > 0 else 0
            buf = np.pad(self.buf, (0, max(0, need - len(self.buf))))
            out = self._run(buf, steps)[: total - self.emitted] if steps > 0 else np.zeros(0, np.float32)
            self.emitted = total
            return out.astype(np.float32)
        steps = (len(self.buf) - self.taps) // self.o + 1 if len(self.buf) >= self.taps else 0
        if steps <= 0:
            return np.zeros(0, np.float32)
        out = self._run(self.buf, steps)
        self.buf = self.buf[steps * self.o :]
        self.emitted += len(out)
        return out.astype(np.float32)
