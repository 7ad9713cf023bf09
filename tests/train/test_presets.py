"""Every seed-table preset parses strictly, names registered parts, and moves with one --set."""

from pathlib import Path

import pytest

from earshot.config import load_yaml
from earshot.losses import LOSSES
from earshot.models.base import list_audio_encoders, list_text_encoders
from earshot.train.data import resolve_split
from earshot.train.run import load_config
from earshot.weights import list_weights

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))
ROWS = {
    "cnn14_sbert_triplet_weighted", "cnn14_sbert_triplet_max", "cnn14_sbert_ntxent",
    "cnn14_sbert_infonce_vicreg", "resnet38_sbert_triplet_weighted", "resnet38_sbert_ntxent",
    "wlcnn14_sbert_triplet_weighted", "audioclip_zeroshot", "audioclip_f1", "audioclip_f2",
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
    train = resolve_split(cfg.data.train, cfg.data.root)
    assert train.table.startswith("runs/demo/synth/")
    for stage in cfg.stages:  # stage data stays under the same root
        for split in stage.get("data", {}).values():
            assert not Path(split["table"]).is_absolute()
