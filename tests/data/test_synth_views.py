"""The synthetic corpus in AudioCaps' layout, and the presets resolving on the synthetic root."""

from pathlib import Path

import pytest

from earshot.config import load_yaml
from earshot.data.readers import read_audiocaps, read_clotho
from earshot.data.synth import caption_csv_name, generate_corpus, write_audiocaps_view
from earshot.train.data import resolve_split
from earshot.train.run import load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    generate_corpus(root / "clotho", clips=12, seed=3, min_duration=5.0, max_duration=6.0)
    write_audiocaps_view(root / "clotho", root / "audiocaps", sample_rate=16000)
    return root


def test_audiocaps_view_reads_back_with_the_same_captions(synth_root):
    for split, source in (("train", "development"), ("val", "validation"), ("test", "evaluation")):
        clotho = read_clotho(synth_root / "clotho" / caption_csv_name(source))
        caps = read_audiocaps(synth_root / "audiocaps" / f"{split}.csv", synth_root / "audiocaps" / split)
        assert len(caps) == len(clotho) and caps.num_captions == clotho.num_captions
        assert sorted(caps.captions()) == sorted(clotho.captions())
        assert not caps.check_audio(synth_root / "audiocaps" / split).missing


# Retrieval presets only: the moment-head presets amr_*.yaml are `earshot moments train` configs.
@pytest.mark.parametrize("preset", sorted(p for p in CONFIGS.glob("*.yaml") if not p.name.startswith("amr_")),
                         ids=lambda p: p.stem)
def test_every_preset_finds_its_data_with_one_set(preset, synth_root):
    cfg = load_config(load_yaml(preset), [f"data.root={synth_root}"])
    pooled = cfg.data.random_split.tables if cfg.data.random_split else []
    splits = [s for s in (cfg.data.train, cfg.data.val, *pooled, *cfg.data.held_out) if s is not None]
    for stage in cfg.stages:
        for key in ("train", "val"):
            if key in stage.get("data", {}):
                from earshot.config import from_dict
                from earshot.train.config import SplitConfig

                splits.append(from_dict(SplitConfig, stage["data"][key]))
    for split in splits:
        resolved = resolve_split(split, cfg.data.root)
        assert Path(resolved.table).is_file(), resolved.table
        assert Path(resolved.audio_dir).is_dir(), resolved.audio_dir


@pytest.mark.slow
def test_cnn14_preset_trains_on_the_synthetic_corpus(synth_root, tmp_path, monkeypatch, pin_weights):
    """The preset as given (CNN14 weights in the official layout, generated here, in the user
    cache as `earshot weights download panns_cnn14` puts them) with one --set for the data and
    only run-size overrides."""
    import torch

    from earshot.audio.frontend import torchlibrosa_buffers
    from earshot.models import checkpoint
    from earshot.models.base import create_audio_encoder
    from earshot.train.run import train

    monkeypatch.setenv("EARSHOT_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    weights = tmp_path / "cache" / "weights" / "Cnn14_mAP=0.431.pth"
    weights.parent.mkdir(parents=True)
    torch.save({"model": {**create_audio_encoder("cnn14").state_dict(), **torchlibrosa_buffers()}}, weights)
    pin_weights("panns_cnn14", weights)
    cfg = load_config(load_yaml(CONFIGS / "cnn14_sbert_ntxent.yaml"), [
        f"data.root={synth_root}", "epochs=1", "cache.audio_views=1", f"out_dir={tmp_path / 'run'}"])
    paths = train(cfg, progress=False)
    model = checkpoint.load(paths["averaged"])
    assert model.cfg.audio.name == "cnn14" and model.embed_text(["a beep"]).shape == (1, 1024)
