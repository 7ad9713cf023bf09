"""Training data for both regimes.

A trained tower sees raw inputs (waveform crops from :class:`CaptionDataset`, caption
strings); a frozen tower runs once over the data (:func:`cached_audio_outputs` with several
random-crop views per clip, :func:`cached_text_outputs`) and :class:`CaptionInputs` serves its
cached outputs, so with both towers frozen an epoch costs a few matrix products.
"""

from __future__ import annotations

import contextlib
import zlib
from dataclasses import replace
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from earshot.config import to_dict
from earshot.data.dataset import AudioSource, CaptionDataset
from earshot.data.records import CaptionTable
from earshot.data.readers import read_table
from earshot.models.biencoder import BiEncoder
from earshot.data.tower_cache import TowerCache, tower_fingerprint
from earshot.errors import ConfigError
from earshot.train.config import DataConfig, SplitConfig


def resolve_split(split: SplitConfig, root: str | Path) -> SplitConfig:
    """The split with relative table and audio paths placed under ``root``."""
    def under(p: str | None) -> str | None:
        return None if p is None else str(Path(root) / p)

    return SplitConfig(table=under(split.table), audio_dir=under(split.audio_dir) or str(Path(under(split.table)).parent),
                       format=split.format, exclude=under(split.exclude), audio_ext=split.audio_ext)


def load_split(split: SplitConfig) -> CaptionTable:
    """Read a split's caption table; its audio paths stay relative to ``split.audio_dir``."""
    return read_table(split.table, format=split.format, exclude=split.exclude, **split_reader_options(split))


def split_reader_options(split: SplitConfig) -> dict[str, str]:
    """Keyword arguments a split config passes to its table reader (``audio_ext`` for WavCaps)."""
    return {} if split.audio_ext is None else {"audio_ext": split.audio_ext}


def load_train_table(train: SplitConfig, extra: Sequence[SplitConfig] = ()) -> CaptionTable:
    """The training table: ``train``'s, or with ``extra`` tables (already resolved) all joined.

    Joined tables get absolute audio paths (each under its own ``audio_dir``, so the caller's
    audio folder no longer matters) and, past the first table, clip ids prefixed ``"<k>/"`` so
    ids stay unique across sources."""
    first = load_split(train)
    if not extra:
        return first
    clips = list(first.with_audio_root(Path(train.audio_dir).resolve()).clips)
    for k, split in enumerate(extra, start=1):
        table = load_split(split).with_audio_root(Path(split.audio_dir).resolve())
        clips += [replace(c, clip_id=f"{k}/{c.clip_id}") for c in table.clips]
    return CaptionTable(clips, name=" + ".join([first.name] + [s.table for s in extra]))


def load_splits(d: DataConfig) -> tuple[CaptionTable, str | None, CaptionTable | None, str | None]:
    """(train table, its audio dir, val table or None, its audio dir) of a data config: the
    named splits, or a seeded random draw from the union of ``random_split.tables`` (audio
    paths made absolute, so the drawn tables need no audio dir)."""
    if d.random_split is None:
        train = resolve_split(d.train, d.root)
        extra = [resolve_split(s, d.root) for s in d.extra_train]
        val = resolve_split(d.val, d.root) if d.val else None
        # joined extra tables carry absolute audio paths, so the joined table needs no audio dir
        return (load_train_table(train, extra), None if extra else train.audio_dir,
                load_split(val) if val else None, val.audio_dir if val else None)
    r = d.random_split
    pooled: list = []
    for split in (resolve_split(s, d.root) for s in r.tables):
        pooled += load_split(split).with_audio_root(split.audio_dir).clips
    union = CaptionTable(pooled, name="random_split")  # a clip id in two tables is an error
    if r.train_clips + r.val_clips > len(union):
        raise ConfigError(f"data.random_split: {r.train_clips} + {r.val_clips} clips asked, "
                          f"the tables hold {len(union)}")
    order = np.random.default_rng(r.seed).permutation(len(union))
    train_idx = sorted(order[:r.train_clips].tolist())
    val_idx = sorted(order[r.train_clips:r.train_clips + r.val_clips].tolist())
    return (CaptionTable([union[i] for i in train_idx], name="random_split/train"), None,
            CaptionTable([union[i] for i in val_idx], name="random_split/val"), None)


class CaptionInputs(Dataset):
    """One item per caption: (audio input, text input, clip index, true length).

    Each side is either a frozen tower's cached output or the raw input its tower trains on:
    audio views ``(clips, views, Da)`` (a view drawn per (seed, epoch, caption), so every epoch
    sees other crops) or a :class:`CaptionDataset` of waveform crops; text outputs
    ``(captions, Dt)`` or the caption strings. The true length is a waveform crop's samples
    before zero padding (PaSST counts its segments from it), None for cached outputs.
    """

    def __init__(self, caption_clip: Sequence[int], audio_views: torch.Tensor | None = None,
                 waves: CaptionDataset | None = None, text: torch.Tensor | None = None,
                 captions: Sequence[str] | None = None, seed: int = 0):
        if (audio_views is None) == (waves is None) or (text is None) == (captions is None):
            raise ValueError("give exactly one audio source and one text source")
        self.caption_clip = list(caption_clip)
        self.audio_views, self.waves, self.text, self.captions = audio_views, waves, text, captions
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if self.waves is not None:
            self.waves.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.caption_clip)

    def __getitems__(self, qs: list[int]):
        """A whole batch at once (the DataLoader calls this when it exists). With both towers
        cached that is three tensor gathers instead of B item lookups and a collate."""
        if self.audio_views is None or self.text is None:
            return [self[q] for q in qs]
        q = torch.as_tensor(qs, dtype=torch.long)
        clips = torch.as_tensor([self.caption_clip[i] for i in qs], dtype=torch.long)
        n_views = self.audio_views.shape[1]
        views = torch.zeros_like(q) if n_views == 1 else torch.as_tensor(
            [int(np.random.default_rng([self.seed, self.epoch, i]).integers(n_views)) for i in qs])
        return _Gathered((self.audio_views[clips, views], self.text[q], clips, None))

    def __getitem__(self, q: int):
        clip = self.caption_clip[q]
        if self.audio_views is not None:
            views = self.audio_views.shape[1]
            v = 0 if views == 1 else int(np.random.default_rng([self.seed, self.epoch, q]).integers(views))
            audio, length = self.audio_views[clip, v], None
        else:
            item = self.waves[q]
            audio, length = item.audio, item.length
        text = self.text[q] if self.text is not None else self.captions[q]
        return audio, text, clip, length


class _Gathered(tuple):
    """A batch that :meth:`CaptionInputs.__getitems__` already assembled."""


def collate_inputs(items):
    """Stack tensors, keep strings as a list: (audio, text, clip ids (B,), true lengths (B,)
    of waveform crops, or None for cached tower outputs)."""
    if isinstance(items, _Gathered):
        return tuple(items)
    audio, text, clips, lengths = zip(*items)
    text = torch.stack(text) if isinstance(text[0], torch.Tensor) else list(text)
    lengths = None if lengths[0] is None else torch.tensor(lengths, dtype=torch.long)
    return torch.stack(audio), text, torch.tensor(clips, dtype=torch.long), lengths


def _specaugment_on(tower: torch.nn.Module, on: bool) -> None:
    from earshot.audio.specaugment import SpecAugment

    for m in tower.modules():
        if isinstance(m, SpecAugment):
            m.train(on)


def _tower_cache(model: BiEncoder, kind: str, cache_root: str | Path) -> TowerCache:
    tower = model.audio_encoder if kind == "audio" else model.text_encoder
    tcfg = model.cfg.audio if kind == "audio" else model.cfg.text
    # The fingerprint hashes the weights themselves, so the weights' source is left out.
    desc = to_dict(tcfg) | {"weights": None, "weights_format": None, "train": None}
    return TowerCache(Path(cache_root) / kind, tower_fingerprint(tower, desc))


@contextlib.contextmanager
def _exclusive(cache: TowerCache) -> Iterator[None]:
    """One process at a time fills a tower cache. DDP ranks started together (torchrun, SLURM)
    would otherwise both compute and number their shards alike, and a shard's keys file from
    one rank could pair with the other rank's outputs file. The waiter then reads everything
    from the cache. The lock file stays (removing it would race with the next waiter)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no locking
        yield
        return
    with open(cache.dir / ".lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def cached_text_outputs(model: BiEncoder, table: CaptionTable, cache_root: str | Path,
                        progress: bool = True) -> torch.Tensor:
    """(captions, Dt) outputs of the frozen text tower, computed once and cached on disk."""
    model.eval()

    def compute(batch: list[str]) -> torch.Tensor:
        with torch.inference_mode():
            return model.text_encoder(batch)

    cache = _tower_cache(model, "text", cache_root)
    with _exclusive(cache):
        return cache.get_or_compute(table.captions(), compute, 128, "text tower", progress)


def cached_audio_outputs(
    model: BiEncoder,
    table: CaptionTable,
    audio_dir: str | None,
    cache_root: str | Path,
    *,
    seconds: float | None,
    views: int,
    train: bool,
    seed: int,
    specaugment: bool = False,
    batch_size: int = 16,
    num_workers: int = 0,
    progress: bool = True,
) -> torch.Tensor:
    """(clips, views, Da) outputs of the frozen audio tower, computed once and cached on disk.

    Training views are random crops of ``seconds`` (+ SpecAugment when asked), seeded by
    (seed, clip, view); evaluation uses one deterministic frame (or the whole clip).
    """
    model.eval()
    sr = model.sample_rate
    views = views if train else 1
    spec = f"sr={sr}|sec={seconds}|train={train}|seed={seed}|specaug={specaugment and train}"
    keys = [f"{clip.audio.as_posix()}|{spec}|view={v}" for clip in table for v in range(views)]
    position = {k: divmod(i, views) for i, k in enumerate(keys)}

    views_of = _Views(AudioSource(table, audio_dir, "waveform", sr, seconds, None), train, seed)

    def compute(batch_keys: list[str]) -> torch.Tensor:
        loaded = _load(views_of, [position[k] for k in batch_keys], num_workers)
        waves = [w for w, _ in loaded]
        lengths = torch.tensor([n for _, n in loaded], dtype=torch.long)
        _specaugment_on(model.audio_encoder, specaugment and train)
        try:
            with torch.inference_mode():
                if seconds is None:  # whole clips differ in length: one at a time
                    return torch.cat([model.audio_features(w[None]) for w in waves])
                return model.audio_features(torch.stack(waves), lengths)
        finally:
            _specaugment_on(model.audio_encoder, False)

    cache = _tower_cache(model, "audio", cache_root)
    with _exclusive(cache):
        out = cache.get_or_compute(keys, compute, batch_size if seconds else 1, "audio tower", progress)
    return out.reshape(len(table), views, -1)


class _Views(Dataset):
    """Item ``(clip, view)`` -> that view's waveform: a random crop seeded by (seed, clip id,
    view) when training, else the clip's deterministic frame (the datasets' own framing)."""

    def __init__(self, source: AudioSource, train: bool, seed: int):
        self.source, self.train, self.seed = source, train, seed

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, int]:
        """(waveform, its true length before zero padding)."""
        clip, view = item
        rng = None
        if self.train:
            clip_id = self.source.table[clip].clip_id
            rng = np.random.default_rng([self.seed, zlib.crc32(clip_id.encode()), view])
        return self.source.item(clip, rng)


def _load(views: _Views, items: list[tuple[int, int]], num_workers: int) -> list[tuple[torch.Tensor, int]]:
    """Decode ``items`` here, or in ``num_workers`` processes."""
    if num_workers <= 0 or len(items) < 2:
        return [views[item] for item in items]
    return list(DataLoader(views, batch_size=None, sampler=items, num_workers=num_workers))


def _dist_rank_world() -> tuple[int, int]:
    """(rank, world size) of the running process group; (0, 1) without one. Read when a
    loader is iterated, i.e. after Lightning has set up DDP, so loaders can be built before."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class GlobalBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Batches of caption indices: a per-epoch seeded order cut into global batches of
    ``batch_size``, of which each rank takes its contiguous ``batch_size / world`` slice.

    The concatenation of the ranks' batches (in rank order) is the batch one process would see
    with the same seed, so a DDP run and a one-process run take the same optimisation steps
    (Lightning's DistributedSampler would deal captions out round-robin from another order).
    The rank is read when iterating, after Lightning has set up DDP.
    """

    def __init__(self, n: int, batch_size: int, seed: int, drop_last: bool):
        self.n, self.batch_size, self.seed, self.drop_last = n, batch_size, seed, drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _global_batches(self) -> list[list[int]]:
        _, world = _dist_rank_world()
        if self.batch_size % world:
            from earshot.errors import ConfigError

            raise ConfigError(f"batch_size {self.batch_size} is the global batch; it must divide "
                              f"by the {world} processes")
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.n, generator=gen).tolist()
        batches = [order[i:i + self.batch_size] for i in range(0, self.n, self.batch_size)]
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        # every rank needs the same number of rows for the gathered loss: trim to a multiple
        batches = [b[:len(b) - len(b) % world] for b in batches]
        return [b for b in batches if b]

    def __iter__(self):
        rank, world = _dist_rank_world()
        for batch in self._global_batches():
            part = len(batch) // world
            yield batch[rank * part:(rank + 1) * part]

    def __len__(self) -> int:
        return len(self._global_batches())


def rank_shard(n: int) -> range:
    """This rank's contiguous share of ``n`` items (``ceil(n / world)`` each, the last ones
    shorter or empty): shards concatenated in rank order are ``range(n)``."""
    rank, world = _dist_rank_world()
    per = -(-n // world)
    return range(min(n, rank * per), min(n, (rank + 1) * per))


class ShardSampler(torch.utils.data.Sampler[int]):
    """Sequential sampler over :func:`rank_shard` (validation: every item once, no padding,
    unlike DistributedSampler which repeats items to even out the ranks)."""

    def __init__(self, n: int):
        self.n = n

    def __iter__(self):
        return iter(rank_shard(self.n))

    def __len__(self) -> int:
        return len(rank_shard(self.n))
