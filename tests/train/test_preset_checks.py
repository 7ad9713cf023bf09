"""Every preset in configs/ passes ``check_config`` on the synthetic corpus (issue 18, §3).

The published weights a preset names are replaced by small generated files pinned as that entry's
digest (``pin_weights``): ``check_config`` verifies presence and digest, it never loads them.
``init_from`` may be an earshot checkpoint, a CLAP folder or a registry name of a whole retriever
(LAION-CLAP, MS-CLAP), downloaded on first use.
"""

from pathlib import Path

import pytest

from earshot.config import load_yaml
from earshot.data.synth import generate_corpus, write_audiocaps_view, write_wavcaps_view
from earshot.errors import ConfigError, DataError, WeightsError
from earshot.train.checks import check_config
from earshot.train.run import load_config

# Retrieval presets (earshot train); the moment-head presets amr_*.yaml are `earshot moments train`
# configs, checked in tests/moments.
CONFIGS = sorted(p for p in (Path(__file__).resolve().parents[2] / "configs").glob("*.yaml")
                 if not p.name.startswith("amr_"))


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("presets")
    generate_corpus(root / "clotho", clips=10, seed=3, min_duration=1.0, max_duration=2.0)
    write_audiocaps_view(root / "clotho", root / "audiocaps", sample_rate=16000)
    write_wavcaps_view(root / "clotho", root / "wavcaps", sample_rate=16000)
    return root


@pytest.fixture(scope="module")
def start_checkpoint(tmp_path_factory):
    """A tiny earshot checkpoint standing in for an earlier stage's output."""
    from earshot.models import checkpoint
    from earshot.models.biencoder import create_model

    model = create_model({"audio": {"name": "small_cnn", "options": {"channels": [4]}},
                          "text": {"name": "bow", "options": {"dim": 8, "buckets": 64}}, "embed_dim": 4})
    return checkpoint.save(model, tmp_path_factory.mktemp("stage1") / "averaged")


def _fake_weights(cfg, pin_weights) -> list[str]:
    from earshot.weights import get_weights, weights_dir

    names = sorted({t.weights for t in (cfg.model.audio, cfg.model.text) if t.weights})
    for name in names:
        path = weights_dir() / get_weights(name).file_name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"generated stand-in for " + name.encode())
        pin_weights(name, path)
    return names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_preset_passes_check_config(path, synth_root, start_checkpoint, pin_weights):
    overrides = [f"data.root={synth_root}"]
    if (load_yaml(path).get("init_from") or "").startswith("runs/"):
        overrides.append(f"init_from={start_checkpoint}")  # a second stage starts from the first's output
    cfg = load_config(load_yaml(path), overrides)
    names = _fake_weights(cfg, pin_weights)
    check_config(cfg)
    if names and cfg.init_from is None:  # the stand-ins are what made it pass
        from earshot.weights import get_weights, weights_dir

        (weights_dir() / get_weights(names[0]).file_name).unlink()
        with pytest.raises(WeightsError, match=f"earshot weights download {names[0]}"):
            check_config(cfg)


def test_init_from_names_what_it_accepts(synth_root, tmp_path):
    cfg = load_config(load_yaml(CONFIGS[0].parent / "laion_clap_finetune_clotho.yaml"),
                      [f"data.root={synth_root}"])
    assert cfg.init_from == "laion_clap_pt_630k_audioset"
    check_config(cfg)  # a registry retriever: downloaded (and verified) when the run starts
    for bad, why in ((tmp_path / "nothing", "no such model"),
                     (tmp_path, "neither an earshot checkpoint"),
                     ("laion_clap_tokenizer", "not a whole model")):  # a name, but no retriever
        with pytest.raises(ConfigError, match=f"init_from: .*{why}"):
            check_config(load_config(load_yaml(CONFIGS[0].parent / "laion_clap_finetune_clotho.yaml"),
                                     [f"data.root={synth_root}", f"init_from={bad}"]))


def test_wavcaps_audio_ext_is_reachable_from_a_split(synth_root, tmp_path):
    import shutil

    # The baseline's own WavCaps copies are MP3: the same json with .mp3 audio beside it.
    src = synth_root / "wavcaps"
    (tmp_path / "json").mkdir()
    shutil.copy(src / "json_files" / "SoundBible" / "sb_final.json", tmp_path / "json" / "sb.json")
    (tmp_path / "audio").mkdir()
    for f in (src / "audio" / "SoundBible").glob("*.flac"):
        (tmp_path / "audio" / (f.stem + ".mp3")).write_bytes(b"")  # presence is what the check sees
    base = load_config(load_yaml(CONFIGS[0].parent / "dcase2025_baseline_wavcaps.yaml"),
                       [f"data.root={synth_root}", "model.audio.weights=null"])
    split = {"table": str(tmp_path / "json" / "sb.json"), "audio_dir": str(tmp_path / "audio"),
             "format": "wavcaps"}
    with pytest.raises(DataError, match=r"\.flac"):  # the reader's default suffix is not there
        check_config(load_config(load_yaml(CONFIGS[0].parent / "dcase2025_baseline_wavcaps.yaml"),
                                 [f"data.root={synth_root}", "model.audio.weights=null",
                                  f"data.extra_train=[{_flow(split)}]"]))
    cfg = load_config(load_yaml(CONFIGS[0].parent / "dcase2025_baseline_wavcaps.yaml"),
                      [f"data.root={synth_root}", "model.audio.weights=null",
                       f"data.extra_train=[{_flow({**split, 'audio_ext': '.mp3'})}]"])
    assert cfg.data.extra_train[0].audio_ext == ".mp3" and base.data.extra_train[1].audio_ext is None
    check_config(cfg)
    from earshot.train.data import load_split, resolve_split

    table = load_split(resolve_split(cfg.data.extra_train[0], cfg.data.root))
    assert {c.audio.suffix for c in table} == {".mp3"}
    with pytest.raises(ConfigError, match="audio_ext: only a wavcaps table"):
        load_config(load_yaml(CONFIGS[0].parent / "dcase2025_baseline.yaml"),
                    ["data.train.audio_ext=.mp3"])
    with pytest.raises(ConfigError, match=r"data\.extra_train\[0\].*audio_extt"):
        load_config(load_yaml(CONFIGS[0].parent / "dcase2025_baseline_wavcaps.yaml"),
                    [f"data.extra_train=[{_flow({**split, 'audio_extt': '.mp3'})}]"])


def _flow(d: dict) -> str:
    return "{" + ", ".join(f"{k}: '{v}'" for k, v in d.items()) + "}"


def test_an_unknown_split_key_names_itself():
    with pytest.raises(ConfigError, match=r"data\.train: unknown key\(s\) \['audio_extt'\]"):
        load_config(load_yaml(CONFIGS[0].parent / "dcase2025_baseline.yaml"), ["data.train.audio_extt=.mp3"])
    with pytest.raises(ConfigError, match=r"data\.val: unknown key\(s\) \['tabel'\]"):
        load_config(load_yaml(CONFIGS[0].parent / "dcase2025_baseline.yaml"), ["data.val.tabel=x.csv"])


@pytest.mark.parametrize("preset", sorted((Path(__file__).resolve().parents[2] / "configs").glob("amr_*.yaml")),
                         ids=lambda p: p.name)
def test_moment_presets_load_strictly_and_name_a_model_the_resolver_knows(preset):
    """The moment-head presets are `earshot moments train` configs (MomentTrainConfig, not the
    TrainConfig that check_config takes): each loads with every key known, and the retriever
    that computes its features means something to the one resolver (no download)."""
    from earshot.loading.resolve import resolve
    from earshot.train.moments import load_moment_config

    cfg = load_moment_config(preset)
    ref = resolve(cfg.features.retriever)
    assert ref.kind == "registry" and ref.entry.retriever is not None
    with pytest.raises(ConfigError, match="hidden_dimm"):
        load_moment_config(preset, ["model.hidden_dimm=8"])  # an unknown key is refused
