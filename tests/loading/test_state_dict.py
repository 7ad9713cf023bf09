"""One reader for every family (earshot.models.converters.read_state_dict) and the converter
registry that the weights tables are views of."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from earshot.errors import WeightsError
from earshot.models.converters import model_formats, read_state_dict, tower_formats


def test_msclap_layout_with_trainer_extras_reads_with_weights_only(tmp_path):
    # microsoft/CLAP files: {"model": state_dict} plus what its trainer kept (epoch, numpy values).
    from earshot.models.audio.msclap import read_msclap_checkpoint

    sd = {"caption_encoder.projection.linear1.weight": torch.randn(3, 2), "logit_scale": torch.tensor(2.0)}
    path = tmp_path / "CLAP_weights_2022.pth"
    torch.save({"model": sd, "epoch": 39, "optimizer": {"param_groups": [{"lr": np.float64(1e-4)}]},
                "best_loss": np.float32(0.5), "dtype": np.dtype("float32")}, path)
    got = read_msclap_checkpoint(path)
    assert set(got) == set(sd) and torch.equal(got["logit_scale"], sd["logit_scale"])


def test_passt_release_layout(tmp_path):
    # The GitHub release .pt files are a bare state dict of the PaSST model.
    from earshot.models.audio.passt import load_passt_checkpoint
    from earshot.models.base import create_audio_encoder

    torch.manual_seed(0)
    tiny = {"embed_dim": 32, "depth": 1, "num_heads": 2}
    src = create_audio_encoder("passt", config=tiny)
    path = tmp_path / "passt-s-f128-p16-s16-ap.468.pt"
    torch.save({k: v for k, v in src.state_dict().items()}, path)
    torch.manual_seed(1)
    dst = create_audio_encoder("passt", config=tiny)
    assert not torch.equal(dst.state_dict()["patch_embed.proj.weight"], src.state_dict()["patch_embed.proj.weight"])
    load_passt_checkpoint(dst, path)
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k  # a copy: exact


def test_reader_refuses_code_and_names_the_file(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "hook": Evil()}, path)
    with pytest.raises(WeightsError, match=r"evil\.pt: cannot read .* weights_only=True"):
        read_state_dict(path, "state_dict")
    with pytest.raises(WeightsError, match="not found"):
        read_state_dict(tmp_path / "absent.pt")
    from safetensors.torch import save_file

    st = tmp_path / "weights.bin"  # safetensors recognised by content, not by suffix
    save_file({"w": torch.ones(2)}, str(st))
    assert torch.equal(read_state_dict(st)["w"], torch.ones(2))


def test_tables_are_views_of_the_registration():
    from earshot import weights as W
    from earshot.loading import dcase2025  # noqa: F401  (registers its format)

    assert set(W.CONVERTERS) == set(tower_formats()) == {
        "panns", "audioclip_audio", "audioclip_text", "openai_clip_text", "passt", "clap_hf", "laion_clap", "msclap"}
    assert set(model_formats()) == {"clap_hf", "laion_clap", "msclap", "dcase2025_baseline"}
    for name in W.list_weights():  # every entry names a registered format
        entry = W.get_weights(name)
        for t in entry.towers:
            assert t.converter in tower_formats(), (name, t.converter)
        if entry.retriever is not None:
            assert (entry.retriever.state_format or entry.towers[0].converter) in model_formats(), name
