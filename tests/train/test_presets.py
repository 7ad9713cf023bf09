"""Every seed-table preset parses strictly, names registered parts, and moves with one --set."""

import functools
from pathlib import Path

import pytest

from earshot.config import load_yaml
from earshot.losses import LOSSES
from earshot.models.base import list_audio_encoders, list_text_encoders
from earshot.train.data import resolve_split
from earshot.train.run import load_config
from earshot.weights import list_weights

# Retrieval presets (earshot train); the moment-head presets amr_*.yaml are `earshot moments train`
# configs, checked in tests/moments.
CONFIGS = sorted(p for p in (Path(__file__).resolve().parents[2] / "configs").glob("*.yaml")
                 if not p.name.startswith("amr_"))
ROWS = {
    "cnn14_sbert_triplet_weighted", "cnn14_sbert_triplet_max", "cnn14_sbert_ntxent",
    "cnn14_sbert_infonce_vicreg", "resnet38_sbert_triplet_weighted", "resnet38_sbert_ntxent",
    "wlcnn14_sbert_triplet_weighted", "audioclip_zeroshot", "audioclip_f1", "audioclip_f2",
    "audioclip_f1_report_split",  # the F1 row on the report's random 5719 / 200 split
    "laion_clap_finetune_clotho", "msclap2022_finetune_clotho",  # issue 11: pretrained CLAPs
}


def test_one_preset_per_seed_table_row():
    assert ROWS <= {p.stem for p in CONFIGS}  # plus non-seed presets (demo_small_cnn, ...)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_preset_is_valid_and_moves_with_one_set(path):
    cfg = load_config(load_yaml(path), ["data.root=runs/demo/synth"])
    assert cfg.model.audio.name in list_audio_encoders()
    assert cfg.model.text.name in list_text_encoders()
    assert cfg.loss.name in LOSSES
    for tower in (cfg.model.audio, cfg.model.text):
        assert tower.weights is None or tower.weights in list_weights()
    splits = cfg.data.random_split.tables if cfg.data.random_split else [cfg.data.train]
    for split in splits:
        assert resolve_split(split, cfg.data.root).table.startswith("runs/demo/synth/")
    # presets start from registry names, or (a second stage) from a run that an earlier preset writes
    assert cfg.init_from is None or cfg.init_from in list_weights() or cfg.init_from.startswith("runs/")
    for stage in cfg.stages:  # stage data stays under the same root
        for split in stage.get("data", {}).values():
            assert not Path(split["table"]).is_absolute()
    for split in cfg.data.extra_train:  # joined training tables move too
        assert resolve_split(split, cfg.data.root).table.startswith("runs/demo/synth/")


@functools.lru_cache(maxsize=None)
def _preset(name):  # configs are frozen dataclasses: one load per preset serves every test
    return load_config(load_yaml(Path(__file__).resolve().parents[2] / "configs" / f"{name}.yaml"))


DCASE2023 = sorted(p.stem for p in CONFIGS if "_sbert_" in p.stem)


@pytest.mark.parametrize("name", DCASE2023)
def test_dcase2023_presets_carry_the_stated_values(name):
    # docs/REPRODUCING.md, "DCASE 2023": 20 epochs, batch 96, Adam lr 1e-4, ReduceLROnPlateau,
    # SpecAugment, 32 kHz / window 1024 / 64 mels, everything frozen but the projector
    cfg = _preset(name)
    assert (cfg.epochs, cfg.batch_size, cfg.optim.lr, cfg.optim.scheduler) == (20, 96, 1e-4, "plateau")
    assert cfg.cache.specaugment and cfg.model.audio.options["spec_augment"]
    assert cfg.model.audio.options["frontend"] == {"sample_rate": 32000, "n_fft": 1024, "win_length": 1024,
                                                   "n_mels": 64}
    assert cfg.model.audio.train == cfg.model.text.train == "none"
    assert cfg.model.audio_head.kind == cfg.model.text_head.kind == "linear"
    assert cfg.audio_cached and cfg.text_cached


@pytest.mark.parametrize("name,seconds", [("audioclip_f1", 10.0), ("audioclip_f2", 20.0),
                                          ("audioclip_f1_report_split", 10.0)])
def test_dcase2022_audioclip_presets_carry_the_stated_values(name, seconds):
    # docs/REPRODUCING.md, "DCASE 2022": batch 6, 40 epochs, linear warm-up to 1e-5, dropout 0.2,
    # label smoothing, symmetric CE, both towers fine-tuned, random crops padded at the end,
    # top-5 weight average
    cfg = _preset(name)
    assert (cfg.batch_size, cfg.epochs, cfg.optim.lr, cfg.top_k) == (6, 40, 1e-5, 5)
    assert cfg.optim.warmup_steps > 0 and cfg.optim.scheduler == "none"
    assert cfg.model.audio_head.dropout == cfg.model.text_head.dropout == 0.2
    assert cfg.loss.name == "infonce" and cfg.loss.options["label_smoothing"] > 0
    assert cfg.model.audio.train == cfg.model.text.train == "all"
    assert (cfg.data.clip_seconds, cfg.data.random_crop) == (seconds, True)


def test_audioclip_f2_trains_audiocaps_then_clotho_and_report_split_draws_5719_200():
    f2 = _preset("audioclip_f2")
    assert [s["name"] for s in f2.stages] == ["audiocaps", "clotho"]
    assert f2.stages[0]["data"]["train"]["format"] == "audiocaps" and "clotho" in f2.data.train.table
    split = _preset("audioclip_f1_report_split").data.random_split
    assert (split.train_clips, split.val_clips) == (5719, 200)
    assert any("evaluation" in t.table for t in split.tables)  # the leak the doc describes


def test_zero_shot_preset_is_unchanged():
    cfg = _preset("audioclip_zeroshot")
    assert cfg.epochs == 0 and cfg.model.audio.train == cfg.model.text.train == "none"
