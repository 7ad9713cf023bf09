"""The MS-CLAP 2023 window-feature golden's inputs, shared by the test and by the script that made
the golden outside the repo: a small HTSAT behind MS-CLAP 2023's real front end (44.1 kHz, 64
mels, filters for 32 kHz, 1024-frame input, 256-pixel spec), weights drawn per key from a seed,
and a generated 4.5 s signal.

How ``golden/msclap_windows.json`` was made (outside the repo, msclap 1.3.4 + torchlibrosa 0.1.0
installed with ``pip install --target --no-deps``, line/lighthouse at d095eaa): this module's
:func:`earshot_tower` with :func:`seeded_weights`, renamed to msclap's HTSAT names (LAION's
HTSAT names: ``layers.N.blocks.M.attn.qkv``, ``bn0``, ...) and loaded with ``strict=True`` into
msclap's ``HTSAT_Swin_Transformer`` of the same sizes (``embed_dim=8, depths=[1,1,1,1],
num_heads=[1,1,2,2], num_classes=4``; spec_size, patch, window and the front end are msclap's
``models/config.py`` values, as ``HTSATWrapper`` builds them); that module wrapped in msclap's
``HTSATWrapper`` served as ``CLAP(...).clap.audio_encoder.base`` to lighthouse's own
``CLAPAudio.forward(audio, 44100)`` (``feature_extractor/audio_encoders/clap_a.py``, executed
unchanged; only ``torchaudio.transforms.Resample`` was replaced by the identity, which is what
it is for 44.1 kHz -> 44.1 kHz, since torchaudio is not installed here). Its output
``(1, W, 64)`` is ``features``. ``features_48k``: the same from ``signal(sample_rate=48000)``
with torchaudio 2.11.1's own ``_get_sinc_resample_kernel`` / ``_apply_sinc_resample_kernel``
(its compiled library does not load on torch 2.13; those two functions are plain torch) as the
``Resample``. ``sinc``: torchaudio's kernel for 3 -> 2 and a 64-sample ramp-and-sine resampled
3 -> 2 and 2 -> 3 by those functions.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch

from earshot.models.audio.msclap import MSCLAP_2023_FRONTEND

SR = 44100
SEED = 19
# transformers' ClapAudioConfig for a small HTSAT with MS-CLAP 2023's geometry (spec 256, patch 4,
# window 8, 64 mel bins, 4 stages): only the widths and depths are smaller than HTSAT-tiny's.
AUDIO_CONFIG = {"spec_size": 256, "num_mel_bins": 64, "window_size": 8, "patch_size": 4,
                "patch_stride": [4, 4], "patch_embeds_hidden_size": 8, "depths": [1, 1, 1, 1],
                "num_attention_heads": [1, 1, 2, 2], "hidden_size": 64, "enable_fusion": False}


def earshot_tower():
    """earshot's MS-CLAP 2023 audio tower (``clap_htsat``, no projection) at the small size,
    with MS-CLAP 2023's front end and :func:`seeded_weights`, in eval mode."""
    from earshot.models.audio.clap import clap_htsat

    tower = clap_htsat(config=AUDIO_CONFIG, frontend=MSCLAP_2023_FRONTEND, projection=False)
    tower.load_state_dict(seeded_weights(tower.state_dict()), strict=True)
    return tower.eval()


def seeded_weights(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every float tensor but the constant buffers redrawn from ``SEED`` and its key's CRC-32, so
    the same weights come back on any machine: matrices ~ N(0, 0.05²), biases ~ N(0, 0.02²),
    norm scales 1 + N(0, 0.1²), bn0's statistics near a log-mel's (mean -40 dB, var 50-150)."""
    out = {}
    for k, v in sd.items():
        if not v.is_floating_point() or k.endswith("relative_position_index"):
            out[k] = v
            continue
        g = torch.Generator().manual_seed(SEED * 1_000_003 + zlib.crc32(k.encode()))
        r = torch.randn(v.shape, generator=g)
        if k.endswith("running_mean"):
            r = -40.0 + 5.0 * r
        elif k.endswith("running_var"):
            r = 50.0 + 100.0 * torch.rand(v.shape, generator=g)
        elif ("norm" in k and k.endswith(".weight")) or v.dim() == 1 and k.endswith("weight"):
            r = 1.0 + 0.1 * r
        elif k.endswith("bias"):
            r = 0.02 * r
        else:
            r = 0.05 * r
        out[k] = r
    return out


def signal(seconds: float = 4.5, sample_rate: int = SR) -> np.ndarray:
    """Mono float32 at ``sample_rate``: a rising chirp, a tone switching on and off each half
    second and low-level noise (seeded), so each 1 s window differs."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    chirp = 0.3 * np.sin(2 * np.pi * (200 * t + 400 * t ** 2))
    gate = (np.floor(t * 2) % 2).astype(np.float64)
    tone = 0.2 * gate * np.sin(2 * np.pi * 3000 * t)
    noise = 0.02 * torch.randn(len(t), generator=torch.Generator().manual_seed(SEED)).double().numpy()
    return (chirp + tone + noise).astype(np.float32)
