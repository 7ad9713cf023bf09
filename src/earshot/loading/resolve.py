"""What a model name or path means: the ONE place that decides (STYLE.md convention 14).

``resolve(name_or_path)`` returns a :class:`ModelRef` ``(kind, location, entry)``; openers
(:mod:`earshot.loading.openers`) open each kind, and every command, pre-check, ensemble member,
``init_from`` and distillation teacher asks this function instead of sniffing on its own. Kinds:

* ``checkpoint``: a folder holding an earshot checkpoint (``config.json`` with a format tag);
* ``hf_clap_folder``: a folder laid out as a Hugging Face CLAP model (``model_type: clap``);
* ``manifest``: a ``.json``/``.yaml``/``.yml`` ensemble manifest;
* ``published_file``: a file its publisher wrote (LAION-CLAP ``.pt``, MS-CLAP ``.pth``, the
  DCASE 2025 baseline's Lightning ``.ckpt``, a CLAP ``model.safetensors``), recognised by its
  CONTENT (the keys each format's registered ``detect`` knows), never by its file name; the
  registry entry it is is chosen by its published digest, else by the architecture its keys
  and tensor shapes show (where its converter reads one), else the only entry of that format;
* ``registry``: a name from ``earshot weights list`` that holds a whole retriever;
* ``hf_hub``: a Hugging Face hub id (``laion/clap-htsat-unfused``, ``@revision`` to pin one),
  opened from the user's hub cache (``HF_HOME``) or downloaded by ``huggingface_hub``.
* ``moment_head``: a moment-retrieval head, not a retriever: a folder from ``earshot moments
  train`` (``moment_head.json``), lighthouse's QD-DETR ``.ckpt`` (recognised by its content:
  ``opt`` + a ``model`` state dict with QD-DETR's saliency projections) or its registry name;
  :mod:`earshot.moments.head` registers its opener (it sits above loading).

An existing path wins over a registry name, which wins over a hub id; the prefixes ``path:``,
``registry:`` and ``hf-hub:`` break ties explicitly. Nothing here loads weights.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from earshot.errors import ConfigError, WeightsError
from earshot.registry import Registry

if TYPE_CHECKING:
    from earshot.weights.entry import WeightsEntry

KINDS = ("checkpoint", "hf_clap_folder", "manifest", "published_file", "registry", "hf_hub", "moment_head")
MOMENT_HEAD_FILE = "moment_head.json"  # what `earshot moments train` writes beside the head's weights
PREFIXES = ("path:", "registry:", "hf-hub:")
MANIFEST_SUFFIXES = (".json", ".yaml", ".yml")
# A hub repository id: "org/name" (letters, digits, "-", "_", "."), optionally "@revision".
_HUB_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+?)(?:@(?P<rev>[\w./-]+))?$")
_WHAT = ("an earshot checkpoint folder, a Hugging Face CLAP folder or hub id, an ensemble manifest "
         "(.json/.yaml), a published model file, or a name from `earshot weights list`")


@dataclass(frozen=True)
class ModelRef:
    """What a name or path means, decided once."""

    kind: str  # one of KINDS
    location: str  # resolved path (path kinds), registry name, or hub repository id
    entry: "WeightsEntry | None" = None  # the registry entry (registry, published_file)
    fmt: str | None = None  # weights format of a published file ("laion_clap", "dcase2025_baseline", ...)
    revision: str | None = None  # hub revision (branch, tag or commit); None: "main"

    @property
    def path(self) -> Path:
        """The local path of a path kind (a ValueError for registry names and hub ids)."""
        if self.kind in ("registry", "hf_hub") or (self.kind == "moment_head" and self.entry is not None):
            raise ValueError(f"{self.location}: a {self.kind} reference has no local path")
        return Path(self.location)

    def identity(self) -> str:
        """A short stable id of the weights this reference scores with (``sha256:`` + 16 hex):
        a checkpoint's or CLAP folder's weights file, a manifest's rule and members' identities,
        a registered file's published digest (else the file's own). Copies of the same model
        share it; other weights never do. An index stores it to refuse another model."""
        if self.kind == "checkpoint":
            return _file_id(self.path / "model.safetensors", self.location)
        if self.kind == "hf_clap_folder":
            return _folder_id(self.path)
        if self.kind == "manifest":  # the ensemble package knows manifests (it is above loading)
            return get_opener("manifest").identity(self)
        if self.kind == "moment_head":  # the head's own weights (a retriever beside it has its own id)
            if self.entry is not None:
                return _file_id(downloaded_file(self.location, "moment head"), self.location)
            if self.path.is_dir():
                return _file_id(self.path / "head.safetensors", self.location)
            return _file_id(self.path, self.location)
        if self.kind == "hf_hub":
            from earshot.loading.hub import hub_folder

            return _folder_id(hub_folder(self.location, self.revision))
        entry = self.entry
        if entry is not None and entry.checksum is not None and entry.checksum.algorithm == "sha256":
            if self.kind == "registry" or _sha256(self.path) == entry.checksum.digest:
                return "sha256:" + entry.checksum.digest[:16]
        if self.kind == "registry":
            from earshot import weights as registry

            found = registry.locate(entry)
            if found is None:
                raise WeightsError(f"{self.location}: not downloaded; run `earshot weights download {self.location}`")
            return _file_id(found, self.location)
        return _file_id(self.path, self.location)

    def __str__(self) -> str:
        return self.location if self.revision is None else f"{self.location}@{self.revision}"


def resolve(name_or_path: str | Path) -> ModelRef:
    """The :class:`ModelRef` of a model argument (``~`` expanded); a WeightsError saying what
    was expected (with a "did you mean" for a near-miss registry name) when it is none."""
    text = str(name_or_path).strip()
    if not text:
        raise no_such_model(text)
    prefix, body = _split_prefix(text)
    if prefix == "path:":
        p = Path(body).expanduser()
        if not p.exists():
            raise WeightsError(f"{p}: no such file or folder")
        return _resolve_path(p)
    if prefix == "registry:":
        ref = _resolve_registry(body)
        if ref is None:
            raise no_such_model(body, registry_only=True)
        return ref
    if prefix == "hf-hub:":
        return _resolve_hub(body, explicit=True)
    p = Path(body).expanduser()
    if p.exists():
        return _resolve_path(p)
    if (ref := _resolve_registry(body)) is not None:
        return ref
    if _looks_like_hub_id(body):
        return _resolve_hub(body, explicit=False)
    raise no_such_model(body)


def _split_prefix(text: str) -> tuple[str | None, str]:
    prefix = next((p for p in PREFIXES if text.startswith(p)), None)
    return prefix, text[len(prefix):] if prefix else text


def _looks_like_hub_id(body: str) -> bool:
    return bool(_HUB_ID.match(body)) and not body.startswith((".", "~", "/"))


def check_model_argument(model: str | Path) -> Path:
    """A command's model argument, checked before any table is read or torch imported: an
    existing path (expanded; what it holds is decided when it is opened), else a name or hub
    id that :func:`resolve` accepts; else the one "no such model" error (with a did-you-mean)."""
    p = Path(model).expanduser()
    if p.exists():
        return p
    resolve(model)
    return Path(model)


def no_such_model(name: str, registry_only: bool = False) -> WeightsError:
    """The one wording of "no such model", with close registry names when there are some."""
    from earshot import weights as registry

    names = [n for n in registry.list_weights() if registry.get_weights(n).retriever is not None]
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.75)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    if registry_only:
        return WeightsError(f"{name!r}: no such model in `earshot weights list` (models: "
                            f"{', '.join(names)}){hint}")
    return WeightsError(f"{name!r}: no such model (expected {_WHAT}){hint}")


def is_model_name(name: str | Path) -> bool:
    """True when ``name`` names a model by name (a registry name or hub id), not a local path:
    what an index remembers as given rather than as a resolved path."""
    try:
        return resolve(name).kind in ("registry", "hf_hub")
    except WeightsError:
        return False


# --- how each kind opens ----------------------------------------------------------------------


@dataclass(frozen=True)
class OpenOptions:
    """How to open a model (the same for every kind)."""

    progress: bool = True  # download progress bars (registry names, hub ids)
    text_only: bool = False  # only what text queries need (no audio tower) where the kind allows
    cache_dir: str | None = None  # earshot's weights cache; None: the user cache


@dataclass(frozen=True)
class Opener:
    """How one kind of :class:`ModelRef` becomes a retriever."""

    kind: str
    open: Callable[[ModelRef, OpenOptions], Any]  # -> a retriever (embed_audio/embed_text, eval mode)
    identity: Callable[[ModelRef], str] | None = None  # overrides ModelRef.identity for this kind


OPENERS: Registry[Opener] = Registry("model kind")
# Modules whose import registers openers: loading's own, the ensemble package's manifest kind
# and the moment heads (both sit above loading, so they register themselves rather than being
# imported here).
_OPENER_MODULES = ("earshot.loading.openers", "earshot.ensemble.manifest", "earshot.moments.head")


def register_opener(kind: str, identity: Callable[[ModelRef], str] | None = None):
    """Decorator: ``fn(ref, options) -> retriever`` opens references of ``kind``."""
    if kind not in KINDS:
        raise ValueError(f"unknown model kind {kind!r}; kinds: {', '.join(KINDS)}")

    def deco(fn: Callable[[ModelRef, OpenOptions], Any]):
        OPENERS.register(kind)(Opener(kind, fn, identity))
        return fn

    return deco


def get_opener(kind: str) -> Opener:
    """The opener registered for ``kind``."""
    import importlib

    if kind not in OPENERS:
        for mod in _OPENER_MODULES:
            importlib.import_module(mod)
    return OPENERS.get(kind)


def open_ref(ref: ModelRef | str | Path, options: OpenOptions | None = None) -> Any:
    """Open whatever ``ref`` is (resolving it first when it is a string) with its kind's opener."""
    ref = ref if isinstance(ref, ModelRef) else resolve(ref)
    return get_opener(ref.kind).open(ref, options or OpenOptions())


# --- path kinds --------------------------------------------------------------------------------


def is_checkpoint(path: str | Path) -> bool:
    """True for a folder holding an earshot checkpoint: its config document
    (``earshot.models.checkpoint.CONFIG_FILE``) carries a format tag (a Hugging Face folder's
    ``config.json`` does not). Read here, without importing the checkpoint module, so the
    resolver stays below everything that builds models."""
    try:
        return "format" in json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError, TypeError):
        return False


def _resolve_path(p: Path) -> ModelRef:
    if p.is_dir():
        if (p / MOMENT_HEAD_FILE).is_file():
            return ModelRef("moment_head", str(p))
        if is_checkpoint(p):
            return ModelRef("checkpoint", str(p))
        if is_hf_clap_folder(p):
            return ModelRef("hf_clap_folder", str(p))
        raise WeightsError(f"{p}: a folder that is neither an earshot checkpoint (config.json with a "
                           f"format tag, model.safetensors) nor a Hugging Face CLAP folder "
                           f"(config.json of model_type \"clap\")")
    if p.suffix.lower() in MANIFEST_SUFFIXES:
        return ModelRef("manifest", str(p))
    try:
        fmt, entry = recognise_file(p)
    except WeightsError:
        if is_lighthouse_checkpoint(p):  # read only when no retriever format took the file
            return ModelRef("moment_head", str(p), None, "lighthouse_qddetr")
        raise
    return ModelRef("published_file", str(p), entry, fmt)


def is_lighthouse_checkpoint(p: Path) -> bool:
    """A file in lighthouse's ``save_checkpoint`` layout: ``{"opt": Namespace, "model": state
    dict, ...}`` whose state dict has QD-DETR's saliency projections. Read with
    ``weights_only=True``; ``argparse.Namespace`` (plain attributes) is the one class allowed."""
    import argparse

    import torch

    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(str(p), map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - unreadable or another layout: not this kind
        return False
    model = obj.get("model") if isinstance(obj, dict) else None
    return (isinstance(obj, dict) and "opt" in obj and isinstance(model, dict)
            and any(str(k).startswith("saliency_proj1.") for k in model))


def is_hf_clap_folder(p: Path) -> bool:
    """A folder whose ``config.json`` says ``model_type: clap`` (as ``ClapModel.save_pretrained``
    and the hub's ``laion/clap-*`` repositories write it)."""
    try:
        return json.loads((Path(p) / "config.json").read_text()).get("model_type") == "clap"
    except (OSError, ValueError, AttributeError):
        return False


def recognise_file(p: Path) -> tuple[str, "WeightsEntry"]:
    """(weights format, registry entry) of a published whole-model file, by its content.

    The format is the one whose registered ``detect`` accepts the file's keys. The entry is the
    one of that format whose published SHA-256 the file has; else, for a format whose converter
    reads an architecture from keys and tensor shapes (LAION-CLAP: fused or not, HTSAT sizes,
    text tower), the first entry built as that architecture (a user's fine-tuned file opens as
    what it is); else the only entry of that format. Anything else is an error that says why."""
    from earshot import weights as registry
    from earshot.loading import dcase2025  # noqa: F401  (registers the baseline's format; builds no model)
    from earshot.models.converters import detect_format, get_converter, read_file

    obj = read_file(p, "model file")
    formats = detect_format(obj)
    if len(formats) != 1:
        found = f"it looks like {' and '.join(formats)}" if formats else "its keys match no known layout"
        raise WeightsError(f"{p}: not a model earshot can open ({found}; expected {_WHAT})")
    fmt = formats[0]
    conv = get_converter(fmt)
    try:
        arch = conv.architecture(obj) if conv.architecture is not None else None
    except WeightsError as e:
        raise WeightsError(f"{p}: {e}") from None
    del obj
    candidates = [registry.get_weights(n) for n in registry.list_weights()
                  if (e := registry.get_weights(n)).retriever is not None
                  and (e.retriever.state_format or e.towers[0].converter) == fmt]
    pinned = [e for e in candidates if e.checksum is not None and e.checksum.algorithm == "sha256"]
    if pinned:
        digest = _sha256(p)
        match = [e for e in pinned if e.checksum.digest == digest]
        if match:
            return fmt, match[0]
    add = (f"if it is a copy of a registered file, `earshot weights add NAME {p}` puts it in the "
           f"cache and NAME opens it")
    if arch is not None:
        fitting = [e for e in candidates if conv.config_architecture(e.retriever.config) == arch]
        if fitting:
            return fmt, fitting[0]
        built = ", ".join(f"{k}={v}" for k, v in arch.items())
        raise WeightsError(
            f"{p}: a {fmt} file built as {built}, which is none of the registered {fmt} models "
            f"({', '.join(e.name for e in candidates) or 'none registered'}), so no registry entry "
            f"says how to build it; load it as the `weights:` (weights_format: {fmt}) of towers "
            f"configured with those sizes in a model config")
    if len(candidates) == 1:
        return fmt, candidates[0]
    raise WeightsError(
        f"{p}: a {fmt} file, but not one of the published files of that format "
        f"({', '.join(e.name for e in candidates) or 'none registered'}) by its SHA-256, so its "
        f"architecture is unknown; {add}")


# --- a tower's `weights:` ------------------------------------------------------------------


@dataclass(frozen=True)
class TowerWeights:
    """What a tower config's ``weights:`` means, decided by :func:`resolve_tower_weights`."""

    kind: str  # "file", "hf_clap_folder", "registry" or "hf_hub"
    location: str  # the path, the registry name, or the hub repository id
    fmt: str  # the converter that loads it into the tower (a weights format)
    entry: "WeightsEntry | None" = None  # the registry entry (kind "registry")
    revision: str | None = None  # hub revision (kind "hf_hub"); None: "main"

    def locate(self, progress: bool = True) -> Path:
        """The local file or folder: a path as given, a registry file from the cache (a
        WeightsError saying how to download it when absent), a hub snapshot (downloaded
        unless cached or offline)."""
        if self.kind == "registry":
            return downloaded_file(self.location, str(self))
        if self.kind == "hf_hub":
            from earshot.loading.hub import hub_folder

            return hub_folder(self.location, self.revision, progress=progress)
        return Path(self.location)

    def __str__(self) -> str:
        return self.location if self.revision is None else f"{self.location}@{self.revision}"


def resolve_tower_weights(weights: str | Path, architecture: str, kind: str,
                          weights_format: str | None = None) -> TowerWeights:
    """What ``weights:`` on the ``kind`` tower ``architecture`` means, with the same rules and
    prefixes as :func:`resolve`: an existing file (its format ``weights_format``, else read from
    its content) or Hugging Face CLAP folder, a registry name whose file holds this tower, or a
    hub id. Nothing is read from the network; :meth:`TowerWeights.locate` finds the file."""
    from earshot import weights as registry
    from earshot.models.converters import get_converter, tower_formats

    text = str(weights).strip()
    prefix, body = _split_prefix(text)
    if weights_format is not None and weights_format not in tower_formats():
        get_converter(weights_format)  # an unknown format: ConfigError naming the known ones
        raise ConfigError(f"{architecture}: weights_format {weights_format!r} holds whole models, not "
                          f"one tower; pass the file as the model instead (one of "
                          f"{', '.join(tower_formats())})")
    p = Path(body).expanduser()
    if prefix == "path:" or (prefix is None and body and p.exists()):
        if not p.exists():
            raise WeightsError(f"{p}: no such file or folder")
        if p.is_dir():
            if not is_hf_clap_folder(p):
                raise WeightsError(f"{architecture}: weights {p} is a folder but not a Hugging Face CLAP "
                                   f"folder (config.json of model_type \"clap\")")
            return TowerWeights("hf_clap_folder", str(p), weights_format or "clap_hf")
        return TowerWeights("file", str(p), weights_format or _tower_format_of(p, architecture))
    if prefix in (None, "registry:") and body in registry.WEIGHTS:
        entry = registry.get_weights(body)
        towers = [t for t in entry.towers if t.architecture == architecture and t.kind == kind]
        if not towers:
            held = ", ".join(f"{t.kind} tower {t.architecture!r}" for t in entry.towers) or "no tower"
            raise ConfigError(f"weights {body!r} hold no {kind} tower for {architecture!r} (they hold {held})")
        return TowerWeights("registry", body, weights_format or towers[0].converter, entry)
    if prefix == "hf-hub:" or (prefix is None and _looks_like_hub_id(body)):
        ref = _resolve_hub(body, explicit=prefix is not None)
        return TowerWeights("hf_hub", ref.location, weights_format or "clap_hf", revision=ref.revision)
    names = [n for n in registry.list_weights()
             if any(t.architecture == architecture and t.kind == kind for t in registry.get_weights(n).towers)]
    close = difflib.get_close_matches(body, names or registry.list_weights(), n=3, cutoff=0.75)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    holding = f" ({', '.join(names)} hold one)" if names else ""
    raise WeightsError(
        f"{body!r}: no such model or weights file for the {kind} tower {architecture!r} (expected a "
        f"weights file, a Hugging Face CLAP folder or hub id, or a name from `earshot weights "
        f"list`{holding}){hint}")


def downloaded_file(name: str, what: str) -> Path:
    """The cached file of registry entry ``name`` (``what`` needs it), or a WeightsError saying
    how to download it."""
    from earshot import weights as registry

    if name not in registry.WEIGHTS:
        raise WeightsError(f"{what}: {name!r} is neither a file, a folder nor a registry name")
    from earshot.weights.cache import locate_checked

    found = locate_checked(registry.get_weights(name))  # size every time, digest once: never loads a wrong file
    if found is None:
        raise WeightsError(f"{what}: {name!r} is not downloaded; run `earshot weights download "
                           f"{name}`")
    return found


def _tower_format_of(p: Path, architecture: str) -> str:
    # A file given without weights_format: its format is read from its content, as for models.
    from earshot.models.converters import detect_tower_format, read_file, tower_formats

    formats = detect_tower_format(read_file(p, f"{architecture} weights"))
    if len(formats) != 1:
        seen = f"it looks like {' and '.join(formats)}" if formats else "its keys match no known layout"
        raise ConfigError(f"{architecture}: weights file {p} needs weights_format ({seen}; one of "
                          f"{', '.join(tower_formats())})")
    return formats[0]


# --- names -------------------------------------------------------------------------------------


def _resolve_registry(name: str) -> ModelRef | None:
    from earshot import weights as registry

    if name not in registry.WEIGHTS:
        return None
    entry = registry.get_weights(name)
    if entry.moment_head:
        return ModelRef("moment_head", name, entry, "lighthouse_qddetr")
    if entry.retriever is None:
        raise not_a_model(entry)
    return ModelRef("registry", name, entry)


def not_a_model(entry: "WeightsEntry") -> WeightsError:
    """The error for a registry file that is not a whole model: a tower's weights (name it as
    a tower's ``weights:``) or a file models need beside their weights (a tokenizer)."""
    from earshot import weights as registry

    if entry.towers:
        towers = ", ".join(f"{t.kind} tower {t.architecture!r}" for t in entry.towers)
        return WeightsError(f"{entry.name!r}: this registry file is not a whole model (it holds the "
                            f"weights of the {towers}); name it as a tower's `weights:` in a "
                            f"training config instead")
    users = [n for n in registry.list_weights()
             if (e := registry.get_weights(n)).retriever is not None and entry.name in e.retriever.companions]
    used = (f"it is downloaded with {', '.join(users)}; open one of those" if users
            else "no model in the registry uses it")
    return WeightsError(f"{entry.name!r}: this registry file is not a whole model but a {entry.file_format} "
                        f"file that models need beside their weights ({used})")


def _resolve_hub(text: str, explicit: bool) -> ModelRef:
    m = _HUB_ID.match(text)
    if m is None:
        raise WeightsError(f"{text!r}: not a Hugging Face hub id (expected org/name or org/name@revision)")
    return ModelRef("hf_hub", m["repo"], revision=m["rev"])


# --- identities --------------------------------------------------------------------------------

_DIGESTS: dict[tuple[str, int, int], str] = {}


def _sha256(p: Path) -> str:
    # Hashed once per (file, size, mtime) in a process: resolving a 2 GB file twice costs once.
    from earshot.utils import sha256_file

    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = sha256_file(p)
    return _DIGESTS[key]


def _file_id(p: Path, what: str) -> str:
    if not p.is_file():
        raise WeightsError(f"{what}: missing weights file {p}")
    return "sha256:" + _sha256(p)[:16]


def _folder_id(folder: Path) -> str:
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return _file_id(folder / name, str(folder))
    raise WeightsError(f"{folder}: CLAP folder without weights (model.safetensors or pytorch_model.bin)")


def member_ref(resolved: Path, as_written: str) -> ModelRef:
    """An ensemble member: a path (relative ones against the manifest's folder) when it exists,
    else what the manifest wrote (a registry name, a hub id)."""
    return resolve(f"path:{resolved}" if resolved.exists() else as_written)
