"""OpenAI CLIP TorchScript files (their text towers)."""

from __future__ import annotations

from earshot.weights.entry import (Checksum, TextPreprocessing, Tower, WeightsEntry,
                                   register_weights)

# CLIP's lower-cased byte-level BPE with 77-token contexts (openai/CLIP clip/clip.py tokenize).
CLIP_TEXT = TextPreprocessing(tokenizer="clip_bpe_16e6", context_length=77)

# OpenAI CLIP: openai/CLIP clip/clip.py `_MODELS`. The path component before the file name is
# the file's SHA-256; clip.py's own _download verifies exactly that. The files are TorchScript
# archives (the loader uses torch.jit.load(...).state_dict()). We use their text towers only.
_CLIP_URL = "https://openaipublic.azureedge.net/clip/models/"
_CLIP_SHA_SOURCE = "SHA-256 embedded in the URL path (openai/CLIP clip/clip.py _MODELS)"
_CLIP_SOURCE = "CLIP (Radford et al., 2021), github.com/openai/CLIP"
_CLIP_LICENCE = "MIT (openai/CLIP LICENSE)"


def _clip(name: str, file_name: str, sha256: str, dim: int) -> WeightsEntry:
    return WeightsEntry(
        name=name, file_name=file_name, urls=(f"{_CLIP_URL}{sha256}/{file_name}",),
        checksum=Checksum("sha256", sha256, _CLIP_SHA_SOURCE), size_bytes=None,
        towers=(Tower("text", "clip_text", "openai_clip_text", dim),),
        file_format="torchscript", source=_CLIP_SOURCE, licence=_CLIP_LICENCE, text=CLIP_TEXT)


register_weights(_clip("clip_rn50", "RN50.pt",
                       "afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762", 1024))
register_weights(_clip("clip_vit_b32", "ViT-B-32.pt",
                       "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af", 512))
