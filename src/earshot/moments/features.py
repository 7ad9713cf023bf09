"""Frame features of a long recording: any earshot audio tower on sliding windows.

A recording is decoded in blocks (soundfile) and resampled as a stream (soxr, or with
``resampler="sinc"`` torchaudio's kernel as lighthouse), and windows of ``window_s`` at
``hop_s`` are embedded as they fill, so memory follows the block, never the
file (a 1 h recording costs one block plus one batch of windows). As lighthouse's
``CLAPAudio``: windows start at ``k * hop_s`` and only whole windows count (the tail shorter
than a window is dropped; a recording shorter than one window gives one zero-padded window).

``output``: ``"embedding"`` is the retriever's joint-space audio embedding (L2-normalised,
what the sliding-window baseline compares with text), ``"tower"`` the audio tower's own output
before the projection head (MS-CLAP 2023: the 768-d HTSAT latent lighthouse feeds QD-DETR).
``pad="none"`` feeds each window to the tower unpadded, as lighthouse's ``CLAPAudio`` feeds
msclap's HTSAT (whose front end stretches a 1 s log-mel to its 1024 frames); the default keeps
the tower's own padding of short clips (MS-CLAP 2023: repeated to 7 s, as for clip retrieval).
Features are cached in earshot's cache folder, one file per recording, keyed by the model's
weights, the settings and the file's content hash.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from earshot.errors import AudioError, ConfigError

__all__ = ["WindowConfig", "iter_blocks", "window_count", "window_features"]


@dataclass(frozen=True)
class WindowConfig:
    """How a long recording is cut into windows for its frame features."""

    window_s: float = 1.0  # window length (lighthouse AMR: 1 s)
    hop_s: float = 1.0  # window hop (lighthouse AMR: 1 s)
    output: Literal["embedding", "tower"] = "embedding"  # joint space, or the tower's output
    # "tower": each window padded as the tower pads short clips (MS-CLAP 2023: repeated to 7 s);
    # "none": fed unpadded (lighthouse's CLAPAudio; output="tower", a tower with accepts_padding)
    pad: Literal["tower", "none"] = "tower"
    # files not at the model's rate: "soxr" (HQ, earshot's everywhere) or "sinc" (torchaudio
    # Resample's Hann-windowed sinc, width 6, rolloff 0.99: what lighthouse's CLAPAudio uses)
    resampler: Literal["soxr", "sinc"] = "soxr"
    block_s: float = 120.0  # seconds decoded at once (bounds memory)
    batch_size: int = 32  # windows per forward pass

    def check(self) -> "WindowConfig":
        if self.window_s <= 0 or self.hop_s <= 0 or self.block_s <= 0 or self.batch_size < 1:
            raise ConfigError(f"window_s, hop_s, block_s and batch_size must be positive: {self}")
        if self.output not in ("embedding", "tower"):
            raise ConfigError(f"output must be 'embedding' or 'tower', got {self.output!r}")
        if self.pad not in ("tower", "none"):
            raise ConfigError(f"pad must be 'tower' or 'none', got {self.pad!r}")
        if self.resampler not in ("soxr", "sinc"):
            raise ConfigError(f"resampler must be 'soxr' or 'sinc', got {self.resampler!r}")
        if self.pad == "none" and self.output != "tower":
            raise ConfigError("pad='none' (lighthouse's unpadded windows) needs output='tower'")
        return self


def window_count(n_samples: int, window: int, hop: int) -> int:
    """Whole windows in ``n_samples`` (at least one: a short recording is padded)."""
    return max(1, (n_samples - window) // hop + 1) if n_samples >= window else 1


def iter_blocks(path: str | Path, sample_rate: int, block_s: float = 120.0,
                resampler: str = "soxr") -> Iterator[np.ndarray]:
    """Mono float32 blocks of a file at ``sample_rate``, decoded and resampled as a stream
    (``resampler``: ``"soxr"`` HQ, or ``"sinc"``, torchaudio's ``Resample`` as lighthouse)."""
    import soundfile as sf
    import soxr

    from earshot.audio.io import audio_info
    from earshot.audio.sinc import SincResampleStream

    path = Path(path)
    info = audio_info(path)  # checks existence, suffix, truncation, header
    block = max(1, int(block_s * info.sample_rate))
    stream: Any = None
    if info.sample_rate != sample_rate:
        stream = (SincResampleStream(info.sample_rate, sample_rate) if resampler == "sinc" else
                  soxr.ResampleStream(info.sample_rate, sample_rate, 1, dtype="float32", quality="HQ"))
    try:
        with sf.SoundFile(str(path)) as f:
            while True:
                data = f.read(block, dtype="float32", always_2d=True)
                last = data.shape[0] < block
                if not np.isfinite(data).all():
                    raise AudioError(path, "contains non-finite samples (NaN or inf)")
                mono = data.mean(axis=1).astype(np.float32)
                if stream is not None:
                    mono = stream.resample_chunk(mono, last=last)
                if mono.size:
                    yield mono
                if last:
                    return
    except (sf.SoundFileError, RuntimeError) as e:
        raise AudioError(path, f"cannot decode: {e}") from None


def _windows(blocks: Iterator[np.ndarray], window: int, hop: int) -> Iterator[np.ndarray]:
    # Whole windows from a stream of blocks; keeps only the samples a later window still needs.
    buf = np.zeros(0, np.float32)
    emitted = 0
    for b in blocks:
        buf = np.concatenate([buf, b])
        while len(buf) >= window:
            yield buf[:window]
            emitted += 1
            buf = buf[hop:]
    if emitted == 0:
        yield np.pad(buf, (0, window - len(buf)))


def _embedder(model: Any, output: str, pad: str = "tower"):
    import torch

    if output == "embedding":
        return lambda waves: np.asarray(model.embed_audio(waves, batch_size=len(waves)), np.float32)
    tower = getattr(model, "audio_encoder", None)
    if tower is None:
        raise ConfigError(f"{type(model).__name__} has no single audio tower (output='tower' needs "
                          f"a bi-encoder; use output='embedding')")
    options: dict[str, str] = {}
    if pad == "none":
        if not getattr(tower, "accepts_padding", False):
            raise ConfigError(f"pad='none': {type(tower).__name__} has no padding option (only "
                              f"towers that pad short clips, such as clap_htsat, take one)")
        options["padding"] = "none"

    def run(waves: list[np.ndarray]) -> np.ndarray:
        was = tower.training
        tower.eval()
        try:
            with torch.inference_mode():
                x = torch.as_tensor(np.stack(waves))
                return tower(x, **options).float().cpu().numpy()
        finally:
            tower.train(was)
    return run


# model -> (state stamp, SHA-256 of its weights): hashing every weight (the text tower too) for
# each recording cost more than embedding it; the stamp (each tensor's storage and in-place
# version counter) changes whenever a weight is replaced or updated, which rehashes.
_WEIGHT_HASHES: "weakref.WeakKeyDictionary[Any, tuple[tuple, str]]" = weakref.WeakKeyDictionary()


def _weights_hash(model: Any) -> str:
    from earshot.data.tower_cache import tower_fingerprint

    stamp = tuple((k, v.data_ptr(), v._version, tuple(v.shape)) for k, v in model.state_dict().items())
    try:
        known = _WEIGHT_HASHES.get(model)
    except TypeError:  # not weak-referenceable: no memo
        return tower_fingerprint(model, {})
    if known is None or known[0] != stamp:
        known = (stamp, tower_fingerprint(model, {}))
        _WEIGHT_HASHES[model] = known
    return known[1]


def _model_fingerprint(model: Any, cfg: WindowConfig) -> str:
    import hashlib

    desc = {"what": "moment window features", "window": asdict(cfg) | {"block_s": 0, "batch_size": 0},
            "sample_rate": int(model.sample_rate)}
    fp = getattr(model, "fingerprint", None)
    base = fp if isinstance(fp, str) else _weights_hash(model)
    return hashlib.sha256((base + repr(sorted(desc.items()))).encode()).hexdigest()


def _compute(model: Any, audio: str | Path | np.ndarray, cfg: WindowConfig) -> np.ndarray:
    sr = int(model.sample_rate)
    window, hop = int(round(cfg.window_s * sr)), int(round(cfg.hop_s * sr))
    blocks = (iter([np.asarray(audio, np.float32)]) if isinstance(audio, np.ndarray)
              else iter_blocks(audio, sr, cfg.block_s, cfg.resampler))
    embed = _embedder(model, cfg.output, cfg.pad)
    out, batch = [], []
    for w in _windows(blocks, window, hop):
        batch.append(w)
        if len(batch) == cfg.batch_size:
            out.append(embed(batch))
            batch = []
    if batch:
        out.append(embed(batch))
    return np.concatenate(out).astype(np.float32)


def window_features(model: Any, audio: str | Path | np.ndarray, config: WindowConfig = WindowConfig(),
                    cache: bool = True) -> np.ndarray:
    """``(W, D)`` float32 features of the windows of one recording (a file, or a mono waveform
    already at ``model.sample_rate``); window ``k`` covers ``[k * hop_s, k * hop_s + window_s]``.
    Files are cached by content (SHA-256) unless ``cache=False``."""
    cfg = config.check()
    if isinstance(audio, np.ndarray) or not cache:
        if isinstance(audio, np.ndarray) and audio.ndim != 1:
            raise ConfigError(f"expected a mono waveform (T,), got shape {audio.shape}")
        return _compute(model, audio, cfg)
    from safetensors import SafetensorError
    from safetensors.numpy import load_file, save_file

    from earshot.utils import cache_dir, sha256_file

    # one file per recording and model (a shared shard store would read every shard per
    # recording: quadratic in the data set; Clotho-Moment has ~51k recordings)
    key = sha256_file(audio)
    path = cache_dir() / "moment_features" / _model_fingerprint(model, cfg)[:20] / key[:2] / f"{key}.safetensors"
    if path.is_file():
        try:
            return load_file(str(path))["features"]
        except (OSError, ValueError, KeyError, SafetensorError):
            pass  # a damaged entry is recomputed and replaced
    feats = _compute(model, audio, cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file({"features": feats}, str(tmp))
    os.replace(tmp, path)  # atomic: readers see the whole file or none
    return feats
