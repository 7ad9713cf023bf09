"""PANNs checkpoints (Zenodo record 3987831)."""

from __future__ import annotations

from earshot.weights.entry import (AudioPreprocessing, Checksum, Tower, WeightsEntry,
                                   register_weights)

# PANNs, Zenodo record 3987831 (Kong et al., 2020). The URL form is the one the authors' own
# scripts use (qiuqiangkong/audioset_tagging_cnn, scripts/0_inference.sh); the second is
# Zenodo's files API for the same record. Zenodo publishes an MD5 per file; the values were
# read from the record's metadata as copied into Labbeti/dcase2022task6a
# (dcase2022task6a/nn/urls.py: "Zenodo link: https://zenodo.org/record/3987831, Hash type: md5")
# and agree with independent copies of the record metadata in other public repositories.
# Sizes are Zenodo's stated byte counts where a source quoted them. The record is CC BY 4.0;
# the code (and the model definitions our encoders mirror) is MIT (LICENSE.MIT).
_ZENODO = "https://zenodo.org/record/3987831/files/"
_ZENODO_API = "https://zenodo.org/api/records/3987831/files/"
_PANNS_MD5_SOURCE = ("Zenodo record 3987831 file metadata (MD5), "
                     "via Labbeti/dcase2022task6a nn/urls.py")
_PANNS_SOURCE = ("PANNs (Kong et al., TASLP 2020), github.com/qiuqiangkong/audioset_tagging_cnn; "
                 "weights: zenodo.org/record/3987831")
_PANNS_LICENCE = "weights CC BY 4.0 (Zenodo record 3987831); code MIT"
# pytorch/inference.py defaults and the README commands: 32 kHz, window 1024, hop 320,
# 64 mel bins, 50-14000 Hz.
_PANNS_AUDIO = AudioPreprocessing(sample_rate=32000, frontend="logmel", n_fft=1024,
                                  win_length=1024, hop_length=320, window="hann",
                                  n_mels=64, fmin=50.0, fmax=14000.0)


def _panns(name: str, file_name: str, md5: str, size: int | None, arch: str,
           dim: int) -> WeightsEntry:
    quoted = file_name.replace("=", "%3D")
    return WeightsEntry(
        name=name, file_name=file_name,
        urls=(f"{_ZENODO}{quoted}?download=1", f"{_ZENODO_API}{file_name}/content"),
        checksum=Checksum("md5", md5, _PANNS_MD5_SOURCE), size_bytes=size,
        towers=(Tower("audio", arch, "panns", dim),), file_format="torch_pickle",
        source=_PANNS_SOURCE, licence=_PANNS_LICENCE, audio=_PANNS_AUDIO)


register_weights(_panns("panns_cnn14", "Cnn14_mAP=0.431.pth",
                        "541141fa2ee191a88f24a3219fff024e", 327428481, "cnn14", 2048))
register_weights(_panns("panns_resnet38", "ResNet38_mAP=0.434.pth",
                        "bf12f36aaabac4e0855e22d3c3239c1b", 299615982, "resnet38", 2048))
register_weights(_panns("panns_wavegram_logmel_cnn14", "Wavegram_Logmel_Cnn14_mAP=0.439.pth",
                        "17fa9ab65af3c0eb5ffbc5f65552c4e1", 328692198, "wavegram_logmel_cnn14",
                        2048))
register_weights(_panns("panns_cnn10", "Cnn10_mAP=0.380.pth",
                        "bfb1f1f9968938fa8ef4012b8471f5f6", 25237595, "cnn10", 512))
register_weights(_panns("panns_cnn6", "Cnn6_mAP=0.343.pth",
                        "e25e26b84585b14c7754c91e48efc9be", None, "cnn6", 512))
