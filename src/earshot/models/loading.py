"""One entry point that opens whatever a user names as "the model".

* a directory holding an earshot checkpoint (``checkpoint.load``);
* a directory laid out as a Hugging Face CLAP model (``config.json`` of ``model_type`` "clap",
  weights, tokenizer), as ``ClapModel.save_pretrained`` and the hub's ``laion/clap-*`` write it;
* a ``.json``/``.yaml`` ensemble manifest (``earshot.ensemble``);
* a name from ``earshot weights list`` that holds a whole retriever (LAION-CLAP, MS-CLAP): its
  files are downloaded once into the cache (progress bar, SHA-256 verified), then opened;
* a local copy of such a file, recognised by its published file name.

Callers (evaluate, submit, index, serve, classify) use this and never need to know which they
got: all present ``sample_rate``, ``embed_audio`` and ``embed_text`` (STYLE.md convention 2).
:func:`load_model` wraps the result for Python users: numpy in, L2-normalised numpy out.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from earshot.errors import ConfigError, WeightsError


def _is_hf_clap_folder(p: Path) -> bool:
    cfg = p / "config.json"
    if not cfg.is_file():
        return False
    try:
        return json.loads(cfg.read_text()).get("model_type") == "clap"
    except (json.JSONDecodeError, OSError, AttributeError):
        return False


def _registered_retriever(name: str):
    from earshot import weights as registry

    if name in registry.WEIGHTS and registry.get_weights(name).retriever is not None:
        return registry.get_weights(name)
    return None


def is_pretrained_name(name: str | Path) -> bool:
    """True when ``name`` is a registry name holding a whole retriever (``laion_clap_general``)
    and no file or folder of that name exists (a path always wins, as in :func:`load_retriever`)."""
    return not Path(name).expanduser().exists() and _registered_retriever(str(name)) is not None


def _entry_for_file(p: Path):
    # A downloaded LAION/MS-CLAP file opened by path: recognised by its exact published name.
    from earshot import weights as registry

    for name in registry.list_weights():
        entry = registry.get_weights(name)
        if entry.retriever is not None and entry.file_name == p.name:
            return entry
    return None


def load_retriever(path: str | Path, progress: bool = True):
    """Open a checkpoint directory, a Hugging Face CLAP folder, an ensemble manifest, or a
    registered pretrained retriever (by name, or a local copy of its file)."""
    p = Path(path).expanduser()
    if p.is_dir():
        if _is_hf_clap_folder(p):
            return clap_from_hf_folder(p)
        from earshot.models import checkpoint

        return checkpoint.load(p)
    if p.is_file() and p.suffix.lower() in (".json", ".yaml", ".yml"):
        from earshot.ensemble import load_ensemble

        return load_ensemble(p)
    if p.is_file() and (entry := _entry_for_file(p)) is not None:
        return retriever_from_entry(entry, p)
    if not p.exists() and (entry := _registered_retriever(str(path))) is not None:
        return load_registered(entry.name, progress=progress)
    if not p.exists():
        raise WeightsError(f"{p}: no such model (expected a checkpoint directory, a Hugging Face "
                           f"CLAP folder, an ensemble manifest or a pretrained model name from "
                           f"`earshot weights list`)")
    raise WeightsError(f"{p}: not a checkpoint directory, CLAP folder, ensemble manifest "
                       f"(.json/.yaml) nor a known pretrained file")


def prompt_template(name_or_path: str | Path) -> str:
    """The zero-shot prompt of a registered model (its publisher's), else LAION's default."""
    from earshot.zeroshot import DEFAULT_PROMPT

    entry = _registered_retriever(str(name_or_path))
    if entry is None and Path(name_or_path).expanduser().is_file():
        entry = _entry_for_file(Path(name_or_path).expanduser())
    return entry.retriever.prompt if entry is not None else DEFAULT_PROMPT


def retriever_identity(path: str | Path) -> str | None:
    """Stable id of a pretrained retriever named by registry name, file or HF folder (the
    published digest, or the weights file's SHA-256); None for earshot checkpoints/manifests."""
    from earshot.utils import sha256_file

    p = Path(path).expanduser()
    if p.is_dir() and _is_hf_clap_folder(p):
        from earshot.models.clap import read_hf_clap_folder

        weights = read_hf_clap_folder(p).weights
        if weights is None:
            raise WeightsError(f"{p}: CLAP folder without weights")
        return "sha256:" + sha256_file(weights)[:16]
    entry = (_entry_for_file(p) if p.is_file() else
             _registered_retriever(str(path)) if not p.exists() else None)
    if entry is None:
        return None
    if entry.checksum is not None and entry.checksum.algorithm == "sha256":
        return "sha256:" + entry.checksum.digest[:16]
    from earshot import weights as registry

    found = p if p.is_file() else registry.locate(entry)
    if found is None:
        raise WeightsError(f"{entry.name}: not downloaded")
    return "sha256:" + sha256_file(found)[:16]


# --- pretrained retrievers -------------------------------------------------------------------


def _read_clap_hf(path: Path, model) -> dict:
    from earshot.models import clap

    return clap.biencoder_state_dict(clap.convert_clap_hf_state_dict(clap.read_hf_clap_weights(path)))


def _read_laion_clap(path: Path, model) -> dict:
    from earshot.models import clap

    sd = clap.read_laion_checkpoint(path)
    return clap.biencoder_state_dict(
        clap.convert_laion_clap_state_dict(sd, model.audio_encoder.frontend_cfg))


def _read_msclap(path: Path, model) -> dict:
    from earshot.models import msclap

    return msclap.biencoder_state_dict(msclap.read_msclap_checkpoint(path), model)


def _read_dcase2025_baseline(path: Path, model) -> dict:
    from earshot.models.dcase2025 import convert_dcase2025_baseline_state_dict
    from earshot.models.passt import read_torch_dict

    return convert_dcase2025_baseline_state_dict(read_torch_dict(path, "baseline checkpoint"))


# Per weights format: a file -> the complete BiEncoder state dict of the entry's model.
_MODEL_STATE_READERS: dict[str, Callable[[Path, Any], dict]] = {
    "clap_hf": _read_clap_hf, "laion_clap": _read_laion_clap, "msclap": _read_msclap,
    "dcase2025_baseline": _read_dcase2025_baseline,
}


def _strict_load(model, sd: dict, where: Path) -> None:
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise WeightsError(f"{where}: does not fit the model: {e}") from None


def retriever_from_entry(entry, path: Path, tokenizer_dir: Path | None = None):
    """Build the bi-encoder a registered file holds and load ``path`` into it strictly, once."""
    from earshot.models.biencoder import create_model

    spec = entry.retriever
    cfg = json.loads(json.dumps(dict(spec.config)))  # deep copy, plain types
    fmt = spec.state_format or entry.towers[0].converter
    for side in ("audio", "text"):
        cfg[side]["weights"] = entry.name
        cfg[side]["weights_format"] = fmt
    model = create_model(cfg, load_weights=False)
    _strict_load(model, _MODEL_STATE_READERS[fmt](path, model), path)
    return model.eval()


def load_registered(name: str, progress: bool = True, cache_dir: str | Path | None = None):
    """Download (once, verified) a registered retriever and its companion files, then open it.

    Companion files whose source publishes no digest (tokenizer JSON, which the hub keeps out of
    LFS) are fetched unverified and their SHA-256 is logged, as the entry states.
    """
    from earshot import weights as registry

    entry = registry.get_weights(name)
    if entry.retriever is None:
        raise ConfigError(f"{name}: this file is not a whole model (it feeds "
                          f"{', '.join(entry.architectures) or 'no tower'})")
    from earshot.weights.cache import locate_checked

    # A copy already in the cache is checked (size, digest once) and used; a file whose source
    # publishes no digest is downloaded only by `earshot weights download NAME --allow-unverified`.
    path = locate_checked(entry, cache_dir) or registry.download(entry, cache_dir, progress=progress)
    for companion in entry.retriever.companions:
        c = registry.get_weights(companion)
        registry.download(c, cache_dir, progress=progress, allow_unverified=c.checksum is None)
    return retriever_from_entry(entry, path)


def clap_from_hf_folder(folder: str | Path):
    """A bi-encoder from a Hugging Face CLAP folder (config.json, weights, tokenizer)."""
    from earshot.config import to_dict
    from earshot.models import clap
    from earshot.models.biencoder import create_model

    info = clap.read_hf_clap_folder(folder)
    if info.weights is None:
        raise WeightsError(f"{info.path}: no model.safetensors or pytorch_model.bin")
    cfg = {
        "audio": {"name": "clap_htsat", "weights": str(info.path), "weights_format": "clap_hf",
                  "options": {"config": info.audio_config, "frontend": to_dict(info.frontend)}},
        "text": {"name": "clap_roberta", "weights": str(info.path), "weights_format": "clap_hf",
                 "options": {"config": info.text_config, "tokenizer": str(info.path)}},
        "embed_dim": int(info.audio_config["projection_dim"]),
        "audio_head": {"kind": "identity"}, "text_head": {"kind": "identity"},
    }
    model = create_model(cfg, load_weights=False)
    _strict_load(model, _read_clap_hf(info.weights, model), info.weights)
    return model.eval()


# --- the Python API --------------------------------------------------------------------------


class Model:
    """What :func:`earshot.load_model` returns: a retriever behind a numpy API.

    Every method returns float32 ``(N, D)`` arrays with unit-length rows, so ``a @ t.T`` is the
    cosine similarity (for an ensemble: its ``mean`` fusion).
    """

    def __init__(self, retriever, source: str):
        self.retriever = retriever
        self.source = source

    def __repr__(self) -> str:
        return f"earshot.Model({self.source!r}, sample_rate={self.sample_rate}, dim={self.dim})"

    @property
    def sample_rate(self) -> int:
        return int(self.retriever.sample_rate)

    @property
    def dim(self) -> int:
        return int(self.retriever.embed_dim)

    @staticmethod
    def _unit(x) -> np.ndarray:
        a = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x, dtype=np.float32)
        norms = np.linalg.norm(a, axis=1, keepdims=True)
        return np.ascontiguousarray(a / np.maximum(norms, 1e-12))

    def embed_text(self, texts: Sequence[str], batch_size: int = 128) -> np.ndarray:
        """Captions or queries -> ``(N, D)``."""
        if isinstance(texts, str):
            raise TypeError("embed_text takes a list of strings")
        return self._unit(self.retriever.embed_text(list(texts), batch_size=batch_size))

    def embed_audio(self, waveforms: Sequence[np.ndarray] | np.ndarray, sample_rate: int,
                    batch_size: int = 16) -> np.ndarray:
        """Mono waveforms (a list of 1-D arrays, or a ``(N, T)`` array) at ``sample_rate`` ->
        ``(N, D)``; resampled (soxr) to the model's rate when they differ."""
        from earshot.audio.io import resample

        if isinstance(waveforms, np.ndarray) and waveforms.ndim == 1:
            raise TypeError("embed_audio takes a batch: a list of 1-D waveforms or an (N, T) array")
        waves = [np.asarray(w, dtype=np.float32) for w in waveforms]
        if int(sample_rate) != self.sample_rate:
            waves = [resample(w, int(sample_rate), self.sample_rate) for w in waves]
        return self._unit(self.retriever.embed_audio(waves, batch_size=batch_size))

    def embed_audio_files(self, paths: Sequence[str | Path], batch_size: int = 16,
                          progress: bool = False) -> np.ndarray:
        """Audio files -> ``(N, D)``, in order; each file is decoded to mono at the model's rate.
        A file that cannot be decoded raises AudioError naming it."""
        from tqdm.auto import tqdm

        from earshot.audio.io import load_audio

        paths = [Path(p).expanduser() for p in paths]
        out = np.empty((len(paths), self.dim), dtype=np.float32)
        bar = tqdm(total=len(paths), unit="file", disable=not progress)
        for start in range(0, len(paths), batch_size):
            chunk = paths[start : start + batch_size]
            waves = [load_audio(p, self.sample_rate) for p in chunk]
            out[start : start + len(chunk)] = self.embed_audio(waves, self.sample_rate, batch_size)
            bar.update(len(chunk))
        bar.close()
        return out


    def find_moments(self, audio: str | Path | np.ndarray, text: str, top: int = 5,
                     sample_rate: int | None = None) -> list[tuple[float, float, float]]:
        """Where ``text`` happens in a long recording (a file, or a mono waveform at
        ``sample_rate``, default the model's): up to ``top`` ``(start_s, end_s, score)``, best
        first, by the zero-shot sliding-window baseline (:mod:`earshot.moments.sliding`)."""
        from earshot.moments.predict import find_moments

        if isinstance(audio, np.ndarray) and sample_rate is not None and int(sample_rate) != self.sample_rate:
            from earshot.audio.io import resample

            audio = resample(audio, int(sample_rate), self.sample_rate)
        return find_moments(self.retriever, audio, text, top=top)


def load_model(name_or_path: str | Path, progress: bool = True) -> Model:
    """Open any model earshot knows (checkpoint, ensemble manifest, registry name, Hugging Face
    CLAP folder; ``~`` expanded) behind :class:`Model`'s numpy API."""
    return Model(load_retriever(name_or_path, progress=progress), str(name_or_path))
