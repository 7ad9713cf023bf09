"""Each crop's true length travels from the loader through the batch to the tower (issue 18,
section 4): PaSST counts its 10 s segments from a clip's duration as the DCASE 2025 baseline
does, never from where its trailing zeros begin, in training, validation and evaluation."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import DataLoader

from earshot.data.dataset import CaptionDataset, ClipDataset, collate_clips
from earshot.data.records import AudioCaptions, CaptionTable
from earshot.models.biencoder import create_model
from earshot.train.data import CaptionInputs, collate_inputs
from earshot.train.module import RetrievalModule

SR = 32000
SEG = 10 * SR  # PaSST's segment
TINY = {"embed_dim": 32, "depth": 1, "num_heads": 2, "num_classes": 4}
# The same weights, input and RNG draws on the same machine; 1e-5 allows a BLAS blocking a
# 1- vs 2-row product differently (fp32, depth 1), while the one-segment embedding of the
# trailing-zero rule is ~1e-1 away.
ATOL = 1e-5


def _clip(tmp_path: Path) -> tuple[CaptionTable, Path, np.ndarray]:
    # 12 s: 7 s of a decaying tone, then 5 s of exact digital silence.
    t = np.arange(7 * SR) / SR
    tone = 0.3 * np.sin(2 * np.pi * 440 * t) * np.exp(-(t % 1.0) * 3)
    wave = np.concatenate([tone, np.zeros(5 * SR)]).astype(np.float32)
    sf.write(tmp_path / "tail.wav", wave, SR, subtype="FLOAT")
    table = CaptionTable([AudioCaptions(Path("tail.wav"), ("a tone, then silence",), "tail")], name="t")
    return table, tmp_path, wave


def _baseline(model, wave: np.ndarray, seed: int) -> torch.Tensor:
    # The baseline's rule on the clip's duration (12 s -> segments 1-2), the last zero-padded.
    w = torch.from_numpy(wave)
    segments = torch.stack([w[:SEG], torch.nn.functional.pad(w[SEG:], (0, 2 * SEG - len(w)))])
    torch.manual_seed(seed)
    return model.audio_encoder.embed_segments(segments).mean(dim=0)


def test_a_training_batch_carries_each_crops_true_length_to_passt(tmp_path):
    table, root, wave = _clip(tmp_path)
    torch.manual_seed(0)
    model = create_model({"audio": {"name": "passt", "options": {"config": TINY}},
                          "text": {"name": "bow", "options": {"dim": 16}}, "embed_dim": 8})
    waves = CaptionDataset(table, root, "waveform", SR, clip_seconds=20.0, train=True)
    inputs = CaptionInputs(table.caption_clip_indices(), waves=waves, captions=table.captions())
    audio, text, clips, lengths = next(iter(DataLoader(inputs, batch_size=1, collate_fn=collate_inputs)))
    assert audio.shape == (1, 20 * SR) and lengths.tolist() == [12 * SR]  # padded to 20 s; 12 s real
    model.train()
    with torch.no_grad():
        want = _baseline(model, wave, seed=3)
        torch.manual_seed(3)  # the same mel jitter and patch-out draws as the baseline's
        got = model.audio_features(audio, lengths)[0]
        torch.manual_seed(3)
        one = model.audio_encoder.embed_segments(audio[:, :SEG])[0]  # the trailing-zero rule's
        # What the training step embeds (RetrievalModule._embed on the loader's batch).
        module = SimpleNamespace(model=model, audio_cached=False, text_cached=False)
        torch.manual_seed(3)
        a, _ = RetrievalModule._embed(module, audio, text, lengths)
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=ATOL, rtol=0)
    assert (one - want).abs().max() > 100 * ATOL  # the old rule is detectably different
    np.testing.assert_allclose(a.numpy(), model.project_audio(want[None]).detach().numpy(), atol=ATOL, rtol=0)


def test_validation_and_evaluation_frames_carry_their_true_length(tmp_path):
    from earshot.evaluation import encode_clips

    table, root, wave = _clip(tmp_path)
    torch.manual_seed(0)
    model = create_model({"audio": {"name": "passt", "options": {"config": TINY}},
                          "text": {"name": "bow", "options": {"dim": 16}}, "embed_dim": 8}).eval()
    batch = next(iter(DataLoader(ClipDataset(table, root, "waveform", SR, clip_seconds=30.0),
                                 batch_size=1, collate_fn=collate_clips)))
    assert batch.audio.shape == (1, 30 * SR) and batch.lengths.tolist() == [12 * SR]
    whole = model.embed_audio([wave])  # the whole 12 s clip, unpadded: 2 segments
    framed = encode_clips(model, table, root, clip_seconds=30.0, progress=False)  # padded to 30 s
    np.testing.assert_allclose(framed.numpy(), whole.numpy(), atol=ATOL, rtol=0)
    padded_as_is = model.embed_audio(batch.audio)  # without lengths: 3 segments, another vector
    assert (padded_as_is - whole).abs().max() > 100 * ATOL
