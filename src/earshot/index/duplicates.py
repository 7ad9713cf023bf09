"""Duplicates in an indexed library: exact (the same decoded audio) and near (the same sound).

- **Exact**: two files whose *decoded* samples are identical, so a WAV re-encoded as FLAC (or
  re-tagged) counts while a lossy re-encode does not. Only files agreeing in frame count,
  rate and channels can be equal, so only those are decoded (block by block, SHA-256 of the
  float32 samples); files with the same content hash are equal without decoding.
- **Near**: two files whose pooled embeddings have cosine >= ``threshold`` and whose durations
  agree within ``max(DURATION_SLACK_S, DURATION_RATIO x)``: the same recording trimmed,
  resampled, re-leveled or lossy re-encoded. The default :data:`NEAR_THRESHOLD` is justified in
  ``docs/LIBRARY.md`` by the cosines measured on generated variants (``tests/index/
  test_duplicates.py`` prints them). Candidates are the pairs found by a search over
  the pooled vectors (FAISS range search: every pair above the threshold, exact below
  :data:`IVF_FROM` files, IVF above), so memory grows with the pairs found, never N².

Groups are connected components of the duplicate pairs (union-find).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from earshot.errors import EarshotError

NEAR_THRESHOLD = 0.99  # cosine of pooled embeddings: best F1 of the demo model on generated variants (docs/LIBRARY.md)
DURATION_RATIO = 0.1  # near duplicates' durations differ by at most 10% ...
DURATION_SLACK_S = 0.5  # ... or half a second, whichever is larger
NEIGHBOURS = 10  # candidates looked at per file
IVF_FROM = 20_000  # files from which the neighbour search is approximate (IVF)
NEAR_NPROBE = 8  # IVF cells (of 4·sqrt(N)) a file's near copies are looked for in


@dataclass
class Group:
    """Files that are copies of one sound."""

    kind: str  # "exact" (same decoded audio) or "near" (embeddings agree)
    paths: list[str]  # relative to the indexed root, sorted
    similarity: float  # lowest cosine of a pair that joined the group (1.0 for exact)


@dataclass
class Report:
    groups: list[Group] = field(default_factory=list)
    files: int = 0  # files looked at
    decoded: int = 0  # files decoded for the exact check
    seconds: float = 0.0

    def to_json(self) -> str:
        return json.dumps({"files": self.files, "decoded": self.decoded, "seconds": round(self.seconds, 3),
                           "groups": [asdict(g) for g in self.groups]}, indent=2)

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(("group", "kind", "similarity", "path"))
        for i, g in enumerate(self.groups, start=1):
            for p in g.paths:
                w.writerow((i, g.kind, f"{g.similarity:.4f}", p))
        return buf.getvalue()


class _Union:
    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def find(self, x: int) -> int:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def join(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def audio_digest(path: str | Path, block: int = 1 << 16) -> str:
    """SHA-256 of a file's decoded samples (as int32, native rate and channels), streamed.

    int32, not float32: libsndfile scales 16-bit PCM to float differently per container (WAV
    and FLAC of the same samples read as different floats), but reads both as the same integers.
    """
    import soundfile as sf

    h = hashlib.sha256()
    with sf.SoundFile(str(path)) as f:
        h.update(f"{f.samplerate}:{f.channels}:".encode())
        for chunk in f.blocks(blocksize=block, dtype="int32", always_2d=True):
            h.update(np.ascontiguousarray(chunk).tobytes())
    return h.hexdigest()


def near_pairs(unit: np.ndarray, ids: np.ndarray, threshold: float, block: int = 4096
               ) -> Iterator[tuple[int, int, float]]:
    """Every pair (id a, id b, cosine) of rows of ``unit (N, D)`` with cosine >= ``threshold``,
    a < b, by FAISS range search: memory grows with the pairs found, never N².

    Exact below :data:`IVF_FROM` rows; above, an IVF index whose query visits
    :data:`NEAR_NPROBE` cells: a near copy lies in its original's cell or a neighbouring one
    (the benchmark measures the recall of planted copies at 10^5 files), and the cost is about
    N·nprobe·N/cells instead of N·N.
    """
    from earshot.index import vectors as V

    n = len(ids)
    if n < IVF_FROM:
        index = V.build(unit, ids, V.VectorConfig(kind="flat"))
    else:
        index = V.build(unit, ids, V.VectorConfig(kind="ivf", ivf_cells=int(4 * np.sqrt(n))))
        index.nprobe = NEAR_NPROBE
    for lo in range(0, n, block):
        lims, sims, found = index.range_search(np.ascontiguousarray(unit[lo:lo + block]), float(threshold))
        for row in range(min(block, n - lo)):
            a = int(ids[lo + row])
            for k in range(lims[row], lims[row + 1]):
                b = int(found[k])
                if b != a:  # a pair usually comes twice (once from each side): callers merge
                    yield min(a, b), max(a, b), float(sims[k])


def durations_agree(a: float, b: float) -> bool:
    return abs(a - b) <= max(DURATION_SLACK_S, DURATION_RATIO * max(a, b))


def find_duplicates(index, threshold: float = NEAR_THRESHOLD, near: bool = True,
                    progress: Callable[[int, int], None] | None = None) -> Report:
    """Exact and near duplicate groups of an open :class:`earshot.index.Index`."""
    import time

    from earshot.index import vectors as V

    if not -1.0 <= threshold <= 1.0:
        raise EarshotError(f"threshold {threshold}: a cosine, between -1 and 1")
    t0 = time.perf_counter()
    root = Path(index.settings.root)
    with index._lock:
        rows = list(index._store.files().values())
        ids, vecs = index._store.clip_vectors(index.settings.dim)
    report = Report(files=len(rows))
    by_id = {r.id: r for r in rows}

    # exact: same bytes, or same decoded samples among files of equal shape
    exact = _Union()
    digest: dict[int, str] = {}
    shapes: dict[tuple, list] = defaultdict(list)
    for r in rows:
        shapes[(round(r.duration * r.sample_rate), r.sample_rate, r.channels)].append(r)
    todo = [rs for rs in shapes.values() if len(rs) > 1]
    done = 0
    for rs in todo:
        by_sha: dict[str, list] = defaultdict(list)
        for r in rs:
            by_sha[r.sha256].append(r)
        for same in by_sha.values():
            for r in same[1:]:
                exact.join(same[0].id, r.id)
        if len(by_sha) > 1:
            for same in by_sha.values():
                try:
                    digest[same[0].id] = audio_digest(root / same[0].path)
                    report.decoded += 1
                except Exception:  # noqa: BLE001 - gone or unreadable since indexing: not a duplicate
                    pass
            by_digest: dict[str, list[int]] = defaultdict(list)
            for same in by_sha.values():
                if same[0].id in digest:
                    by_digest[digest[same[0].id]].append(same[0].id)
            for group in by_digest.values():
                for fid in group[1:]:
                    exact.join(group[0], fid)
        done += 1
        if progress:
            progress(done, len(todo))

    # near: neighbours by pooled cosine, durations agreeing
    near_u = _Union()
    lowest: dict[tuple[int, int], float] = {}
    if near and len(ids) > 1:
        if index.settings.normalize:
            unit = vecs
        else:
            unit = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        for a, b, sim in near_pairs(unit, ids, threshold):
            if a in by_id and b in by_id and durations_agree(by_id[a].duration, by_id[b].duration):
                near_u.join(a, b)
                key = (min(a, b), max(a, b))
                lowest[key] = min(lowest.get(key, 1.0), sim)

    groups: dict[int, list[int]] = defaultdict(list)
    for fid in list(exact.parent):
        groups[exact.find(fid)].append(fid)
    exact_groups = [sorted(g) for g in groups.values() if len(g) > 1]
    for g in exact_groups:
        report.groups.append(Group("exact", sorted(by_id[f].path for f in g), 1.0))
        for f in g[1:]:  # an exact group is one node of the near graph
            near_u.join(g[0], f)
    ngroups: dict[int, list[int]] = defaultdict(list)
    for fid in list(near_u.parent):
        ngroups[near_u.find(fid)].append(fid)
    exact_sets = [set(g) for g in exact_groups]
    for g in ngroups.values():
        if len(g) < 2 or set(g) in exact_sets:
            continue
        sims = [s for (a, b), s in lowest.items() if a in g and b in g]
        report.groups.append(Group("near", sorted(by_id[f].path for f in g), min(sims) if sims else 1.0))
    report.groups.sort(key=lambda g: (g.kind != "exact", g.paths))
    report.seconds = time.perf_counter() - t0
    return report


def also_at(index, file_ids: list[int], threshold: float = NEAR_THRESHOLD) -> dict[int, list[str]]:
    """Other paths holding the same sound as each file (same content hash, or a near
    duplicate by :func:`find_duplicates`' rule): what the page shows as "also at"."""
    from earshot.index import vectors as V

    out: dict[int, list[str]] = {}
    with index._lock:
        store = index._store
        rows = store.rows([int(f) for f in file_ids])
        for fid, row in rows.items():
            same = {r[0] for r in store.conn.execute("SELECT path FROM files WHERE sha256 = ? AND id != ?",
                                                     (row.sha256, fid))}
            vec = store.clip_vector(fid, index.settings.dim)
            if vec is not None and index.settings.normalize and index._faiss.ntotal > 1:
                scores, nbrs = V.search(index._faiss, vec, NEIGHBOURS + 1)
                cand = [(float(s), int(b)) for s, b in zip(scores[0], nbrs[0]) if b >= 0 and b != fid and s >= threshold]
                others = store.rows([b for _, b in cand])
                same |= {others[b].path for _, b in cand
                         if b in others and durations_agree(others[b].duration, row.duration)}
            if same:
                out[fid] = sorted(same)
    return out


@dataclass
class Calibration:
    """Cosines a model gives to copies of a sound versus its nearest other sounds."""

    files: int  # indexed files sampled
    variants: dict[str, float]  # kind of copy -> lowest cosine to its original
    variants_p05: float  # 5th percentile over all copies
    neighbours_p50: float  # median cosine of each sampled file's nearest other file (not a same-hash copy)
    neighbours_p95: float  # 95th percentile of those: the other sounds closest to being copies
    suggested: float | None  # midway between variants_p05 and neighbours_p95; None if they overlap


def calibrate(index, n: int = 20, seed: int = 0) -> Calibration:
    """Measure a near-duplicate threshold for the index's model: ``n`` indexed files are
    decoded, copied in memory (trimmed by 0.2 s, -6 dB, resampled to 22.05 kHz and back, and
    mp3-encoded at libsndfile's default quality where it can write mp3) and embedded as indexing
    would; their cosines to the originals are compared with each file's nearest neighbour in the
    library, which stands for "another sound": most files of a library have no copy (a library
    made of copies gets no suggestion). The suggestion lies midway between the copies' 5th
    percentile and the neighbours' 95th. Loads the model; decodes ``n`` files."""
    import soundfile as sf
    import soxr

    from earshot.index import vectors as V
    from earshot.index.decode import Framing, frame, load_checked
    from earshot.index.indexer import pool

    s = index.settings
    with index._lock:
        rows = [r for r in index._store.files().values() if r.duration >= 1.0]
    rng = np.random.default_rng(seed)
    pick = [rows[i] for i in rng.choice(len(rows), size=min(n, len(rows)), replace=False)] if rows else []
    if not pick:
        raise EarshotError(f"{index.directory}: no indexed file of 1 s or more to calibrate on")
    framing = Framing(s.sample_rate, s.window_s, s.hop_s)

    def embed(wave: np.ndarray) -> np.ndarray:
        windows, _, _ = frame(wave.astype(np.float32), framing)
        return pool(index.encoder.embed_audio(windows, batch_size=16), s.pooling, True)  # type: ignore[arg-type]

    kinds: dict[str, list[float]] = defaultdict(list)
    nearest: list[float] = []
    for row in pick:
        wave, _, _ = load_checked(Path(s.root) / row.path, s.sample_rate)
        orig = embed(wave)
        copies = {"trim 0.2 s": wave[int(0.2 * s.sample_rate):], "-6 dB": wave * 0.5,
                  "resampled": soxr.resample(soxr.resample(wave, s.sample_rate, 22050), 22050, s.sample_rate)}
        if "MP3" in sf.available_formats():
            copies["mp3"] = _mp3_round_trip(wave, s.sample_rate)
        for kind, w in copies.items():
            kinds[kind].append(float(embed(w) @ orig))
        with index._lock:
            vec = index._store.clip_vector(row.id, s.dim)
            scores, ids = V.search(index._faiss, vec / max(np.linalg.norm(vec), 1e-12), 4)
            same = {r[0] for r in index._store.conn.execute("SELECT id FROM files WHERE sha256 = ?", (row.sha256,))}
        others = [float(x) for x, i in zip(scores[0], ids[0]) if i >= 0 and int(i) not in same]
        if others:
            nearest.append(others[0])
    allv = [c for cs in kinds.values() for c in cs]
    v05 = float(np.percentile(allv, 5))
    n50 = float(np.median(nearest)) if nearest else -1.0
    n95 = float(np.percentile(nearest, 95)) if nearest else -1.0
    return Calibration(len(pick), {k: round(min(v), 4) for k, v in kinds.items()}, round(v05, 4), round(n50, 4),
                       round(n95, 4), round((v05 + n95) / 2, 4) if v05 > n95 else None)


def _mp3_round_trip(wave: np.ndarray, sr: int) -> np.ndarray:
    """``wave`` encoded as mp3 in memory and decoded again (libsndfile's default bit rate), at
    ``sr`` and trimmed or padded to its length (the encoder adds a little delay)."""
    import soundfile as sf
    import soxr

    rate = sr if sr in (32000, 44100, 48000, 16000, 22050, 24000) else 44100  # rates MPEG layer III has
    x = wave if rate == sr else soxr.resample(wave, sr, rate)
    buf = io.BytesIO()
    sf.write(buf, np.clip(x, -1, 1), rate, format="MP3")
    buf.seek(0)
    y, _ = sf.read(buf, dtype="float32")
    y = y if y.ndim == 1 else y.mean(axis=1)
    y = y if rate == sr else soxr.resample(y, rate, sr)
    return np.pad(y, (0, max(0, len(wave) - len(y))))[:len(wave)].astype(np.float32)
