"""PaSST AudioSet checkpoints (kkoutini/PaSST GitHub releases)."""

from __future__ import annotations

from earshot.weights.entry import AudioPreprocessing, Tower, WeightsEntry, register_weights

# The file the DCASE 2025 Task 6 baseline starts from: `get_model_passt("passt_s_p16_s16_128_ap468",
# input_tdim=1000, fstride=16, tstride=16)` (CPJKU dcase2025_task6_baseline d25_t6/passt.py), whose
# URL is hear21passt 0.0.26's `default_cfgs["passt_s_p16_s16_128_ap468"]` (models/passt.py). GitHub
# release assets of this age carry no published digest and hear21passt downloads with
# check_hash=False, so none is recorded (a download needs --allow-unverified). Licence: the
# repositories' Apache-2.0; no separate licence is stated for the weights.
_PASST_SOURCE = ("PaSST (Koutini et al., Interspeech 2022), github.com/kkoutini/PaSST releases; "
                 "URL as in hear21passt 0.0.26 models/passt.py default_cfgs")
_PASST_LICENCE = "Apache-2.0 (kkoutini/PaSST and hear21passt); no separate weights licence stated"
# hear21passt's AugmentMelSTFT with the baseline's settings: pre-emphasis 0.97, Kaldi mel banks
# 0-15000 Hz, log(x + 1e-5), (x + 4.5) / 5.
PASST_AUDIO = AudioPreprocessing(sample_rate=32000, frontend="passt_kaldi_mel", n_fft=1024, win_length=800,
                                 hop_length=320, window="hann_symmetric", n_mels=128, fmin=0.0, fmax=15000.0)

register_weights(WeightsEntry(
    name="passt_s_p16_s16_128_ap468", file_name="passt-s-f128-p16-s16-ap.468.pt",
    urls=("https://github.com/kkoutini/PaSST/releases/download/v0.0.2-audioset/passt-s-f128-p16-s16-ap.468.pt",),
    checksum=None, size_bytes=None, towers=(Tower("audio", "passt", "passt", 768),),
    file_format="torch_pickle", source=_PASST_SOURCE, licence=_PASST_LICENCE, audio=PASST_AUDIO))

# The DCASE 2025 Task 6 baseline's model trained on Clotho + AudioCaps + WavCaps (a Lightning
# checkpoint of PaSST-S + RoBERTa-large + projections). Its README links a cloud.cp.jku.at
# (Nextcloud) share; "/download" is Nextcloud's direct-download form of a single-file share (the
# form salsa's scripts/download_checkpoint.sh uses on the same server). A share link is not a
# versioned release, no file name or digest is published, and the file holds a whole bi-encoder,
# not one tower: it is imported with earshot.models.dcase2025.import_dcase2025_baseline.
register_weights(WeightsEntry(
    name="dcase2025_baseline", file_name="dcase2025_task6_baseline.ckpt",
    urls=("https://cloud.cp.jku.at/index.php/s/6ZTQ3mcwk9AAS4i/download",),
    checksum=None, size_bytes=None, towers=(), file_format="torch_pickle",
    source=("DCASE 2025 Task 6 baseline (CPJKU dcase2025_task6_baseline README, commit c78422f): "
            "model trained on Clotho, AudioCaps, WavCaps; file name ours (none published)"),
    licence="not stated for the checkpoint (repository has no licence file)", audio=PASST_AUDIO))
