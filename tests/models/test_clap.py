"""LAION-CLAP through transformers' Clap* modules: parity with ClapModel + ClapFeatureExtractor on
tiny random models saved with save_pretrained, the LAION .pt converter, deterministic long clips,
and load_model round trips."""

from __future__ import annotations

import hashlib
import re
import shutil

import clap_tiny
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from earshot import weights as W
from earshot.errors import WeightsError
from earshot.models import checkpoint
from earshot.models.audio.clap import (ClapAudioTower, convert_laion_clap_state_dict,
                                 fusion_crop_starts)
from earshot.audio.framing import window_starts
from earshot.loading.resolve import resolve
from earshot.loading.retriever import load_model, load_retriever

# The same weights reached by another route (a converter, a saved file, a tower's `weights:`):
# one machine gives the same bits, but a BLAS may block a product differently with buffer
# alignment, so outputs are compared to 1e-6 (fp32 rounding of these tiny towers' ~1e-7 x depth);
# a wrong, missing or transposed weight moves them by 1e-2 or more.
SAME_WEIGHTS = dict(atol=1e-6, rtol=0)

SR = clap_tiny.TINY_FRONTEND["sample_rate"]
WINDOW = int(SR * clap_tiny.TINY_FRONTEND["max_length_s"])


def _randomise(model: torch.nn.Module) -> None:
    # Non-trivial BatchNorm statistics and scales, so a wrong key or a skipped norm shows.
    g = torch.Generator().manual_seed(1)
    for name, buf in model.named_buffers():
        if name.endswith("running_mean"):
            buf.copy_(torch.randn(buf.shape, generator=g) * 0.1)
        elif name.endswith("running_var"):
            buf.copy_(torch.rand(buf.shape, generator=g) + 0.5)
    with torch.no_grad():
        model.logit_scale_a.fill_(2.5)


def _hf_folder(root, fusion: bool):
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel

    folder = root / ("fused" if fusion else "unfused")
    tok = clap_tiny.tiny_tokenizer(folder)
    cfg = ClapConfig(audio_config=clap_tiny.audio_config(fusion),
                     text_config=clap_tiny.text_config(len(tok)), projection_dim=8)
    torch.manual_seed(0)
    model = ClapModel(cfg).eval()
    _randomise(model)
    model.save_pretrained(str(folder))
    fe = ClapFeatureExtractor(feature_size=16, sampling_rate=SR, hop_length=160, max_length_s=2,
                              fft_window_size=512, frequency_min=50, frequency_max=8000,
                              truncation="fusion" if fusion else "rand_trunc")
    fe.save_pretrained(str(folder))
    return folder, model, fe, tok


@pytest.fixture(scope="module", params=[False, True], ids=["unfused", "fused"])
def hf(request, tmp_path_factory):
    return _hf_folder(tmp_path_factory.mktemp("clap"), request.param)


def _clips():
    rng = np.random.default_rng(0)
    t = np.arange(WINDOW) / SR
    return [(0.3 * np.sin(2 * np.pi * 440 * t[: int(1.3 * SR)]) + 0.05 * rng.standard_normal(int(1.3 * SR))).astype(np.float32),
            (0.1 * rng.standard_normal(WINDOW)).astype(np.float32),
            (0.2 * np.sin(2 * np.pi * 1500 * t[: int(0.4 * SR)])).astype(np.float32)]


TEXTS = ["a dog barks loudly", "rain falls on a tin roof in the morning", "birds"]


def test_embeddings_equal_transformers(hf):
    folder, ref, fe, tok = hf
    model = load_retriever(folder)
    clips = _clips()
    for clip in clips:  # one at a time: the extractor pads each to the window (repeat-pad)
        feats = fe([clip], sampling_rate=SR, return_tensors="pt")
        with torch.no_grad():
            # is_longer=False: a clip within the window is never "longer" (the extractor marks
            # one random clip of an all-short fused batch; earshot does not).
            want = ref.get_audio_features(input_features=feats["input_features"],
                                          is_longer=torch.zeros(1, 1, dtype=torch.bool)).pooler_output
        got = model.embed_audio([clip])
        torch.testing.assert_close(got, F.normalize(want, dim=-1), atol=1e-5, rtol=0)
    batch = tok(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        want = ref.get_text_features(input_ids=batch["input_ids"],
                                     attention_mask=batch["attention_mask"]).pooler_output
    torch.testing.assert_close(model.embed_text(TEXTS), F.normalize(want, dim=-1), atol=1e-5, rtol=0)
    assert model.logit_scale().item() == pytest.approx(np.exp(2.5), rel=1e-6)


def _to_laion(sd: dict[str, torch.Tensor], fe_cfg) -> dict[str, torch.Tensor]:
    """ClapModel keys -> LAION-AI/CLAP's (module.-prefixed, as its DDP checkpoints), plus the
    keys LAION's checkpoints carry that transformers does not (to exercise what is dropped)."""
    from earshot.audio.frontend import FrontendConfig, torchlibrosa_buffers

    block = re.compile(r"^audio_model\.audio_encoder\.layers\.(\d+)\.blocks\.(\d+)\.(.+)$")
    parts = {"layernorm_before.": "norm1.", "layernorm_after.": "norm2.",
             "attention.output.dense.": "attn.proj.", "intermediate.dense.": "mlp.fc1.",
             "output.dense.": "mlp.fc2.",
             "attention.self.relative_position_bias_table": "attn.relative_position_bias_table",
             "attention.self.relative_position_index": "attn.relative_position_index"}
    out: dict[str, torch.Tensor] = {}
    qkv: dict[str, list] = {}
    for k, v in sd.items():
        if m := re.match(r"^(audio|text)_projection\.linear([12])\.(.+)$", k):
            out[f"{m[1]}_projection.{0 if m[2] == '1' else 2}.{m[3]}"] = v
        elif m := block.match(k):
            pre = f"audio_branch.layers.{m[1]}.blocks.{m[2]}."
            if qm := re.match(r"attention\.self\.(query|key|value)\.(weight|bias)", m[3]):
                qkv.setdefault(pre + "attn.qkv." + qm[2], [None] * 3)[
                    ("query", "key", "value").index(qm[1])] = v
                continue
            for new, old in parts.items():
                if m[3].startswith(new):
                    out[pre + old + m[3][len(new):]] = v
                    break
            else:
                raise AssertionError(k)
        elif k.startswith("audio_model.audio_encoder."):
            rest = k[len("audio_model.audio_encoder."):]
            out["audio_branch." + ("bn0." + rest[len("batch_norm."):] if rest.startswith("batch_norm.") else rest)] = v
        elif k.startswith("text_model."):
            if not k.endswith("token_type_ids"):  # LAION's (older) RoBERTa has no such buffer
                out["text_branch." + k[len("text_model."):]] = v
        else:
            out[k] = v
    out.update({k: torch.cat(v) for k, v in qkv.items()})
    out["audio_branch.layers.0.blocks.1.attn_mask"] = torch.zeros(4, 16, 16)
    out["audio_branch.tscam_conv.weight"] = torch.zeros(527, 16, 2, 3)
    out["audio_branch.head.weight"] = torch.zeros(527, 16)
    out["text_transform.sequential.0.weight"] = torch.zeros(8, 8)
    out["audio_transform.sequential.3.bias"] = torch.zeros(8)
    lib = torchlibrosa_buffers(FrontendConfig(sample_rate=fe_cfg.filter_rate, n_fft=fe_cfg.n_fft,
                                              win_length=fe_cfg.n_fft, hop_length=fe_cfg.hop_length,
                                              n_mels=fe_cfg.n_mels, fmin=fe_cfg.fmin, fmax=fe_cfg.fmax))
    out.update({"audio_branch." + k: v for k, v in lib.items()})
    return {"module." + k: v for k, v in out.items()}


def test_laion_pt_layout_converts_and_matches_hf_load(hf, tmp_path):
    folder, ref, fe, tok = hf
    from earshot.models.audio.clap import ClapFrontendConfig, biencoder_state_dict

    sd = {k: v.clone() for k, v in ref.state_dict().items()}
    fe_cfg = ClapFrontendConfig(**clap_tiny.frontend(ref.config.audio_config.enable_fusion))
    laion = _to_laion(sd, fe_cfg)
    converted = convert_laion_clap_state_dict(laion, fe_cfg)
    assert set(converted) == set(sd)
    for k in sd:
        assert torch.equal(converted[k], sd[k]), k
    # Strict load into earshot's bi-encoder, then the same embeddings as the HF-folder load.
    from_hf = load_retriever(folder)
    from_pt = load_retriever(folder)
    for p in from_pt.parameters():
        p.data.zero_()
    from_pt.load_state_dict(biencoder_state_dict(converted), strict=True)
    clip = _clips()[:1]
    torch.testing.assert_close(from_pt.embed_audio(clip), from_hf.embed_audio(clip), **SAME_WEIGHTS)
    torch.testing.assert_close(from_pt.embed_text(TEXTS), from_hf.embed_text(TEXTS), **SAME_WEIGHTS)

    # The same file as a tower's `weights:` (what a training config names), LAION's .pt layout,
    # and the folder itself with weights_format clap_hf.
    from earshot.models.biencoder import create_model

    torch.save({"state_dict": laion, "epoch": 3}, tmp_path / "laion.pt")
    cfg = checkpoint.describe(from_hf)["config"]
    for side in ("audio", "text"):
        cfg[side]["weights"], cfg[side]["weights_format"] = str(tmp_path / "laion.pt"), "laion_clap"
    by_tower = create_model(cfg).eval()
    torch.testing.assert_close(by_tower.embed_audio(clip), from_hf.embed_audio(clip), **SAME_WEIGHTS)
    torch.testing.assert_close(by_tower.embed_text(TEXTS), from_hf.embed_text(TEXTS), **SAME_WEIGHTS)
    for side in ("audio", "text"):
        cfg[side]["weights"], cfg[side]["weights_format"] = str(folder), "clap_hf"
    torch.testing.assert_close(create_model(cfg).eval().embed_text(TEXTS), from_hf.embed_text(TEXTS),
                               **SAME_WEIGHTS)

    bad = dict(laion)
    bad["module.audio_branch.logmel_extractor.melW"] = bad["module.audio_branch.logmel_extractor.melW"] * 1.1
    with pytest.raises(WeightsError, match="does not match the front end"):
        convert_laion_clap_state_dict(bad, fe_cfg)
    with pytest.raises(WeightsError, match="unexpected key"):
        convert_laion_clap_state_dict({**laion, "module.something_else": torch.zeros(1)}, fe_cfg)


def test_long_clips_are_deterministic_windows_or_fusion(hf):
    folder, ref, fe, tok = hf
    model = load_retriever(folder)
    tower: ClapAudioTower = model.audio_encoder
    rng = np.random.default_rng(3)
    long = (0.1 * rng.standard_normal(int(5.3 * SR))).astype(np.float32)
    a, b = model.embed_audio([long]), model.embed_audio([long])
    assert torch.equal(a, b)  # no random crop
    wave = torch.from_numpy(long)[None]
    with torch.no_grad():
        if not tower.frontend_cfg.fusion:
            # Mean of the unit embeddings of 2 s windows at hop 1 s (last one aligned to the end).
            starts = window_starts(wave.shape[1], WINDOW, int(tower.frontend_cfg.window_hop_s * SR), pad_last=False)
            assert starts[-1] == wave.shape[1] - WINDOW
            wins = [F.normalize(tower(wave[:, s : s + WINDOW]), dim=-1) for s in starts]
            torch.testing.assert_close(a, F.normalize(torch.stack(wins).mean(0), dim=-1),
                                       atol=1e-6, rtol=0)
        else:
            # The fusion input transformers' model reads, with the crops at the middle of each
            # third: squeezed whole clip + front/middle/back crops, is_longer=True.
            feats, longer = tower.features(wave)
            assert longer.all() and feats.shape[1] == 4
            mel = tower.logmel(wave)
            chunk = WINDOW // 160 + 1
            s = fusion_crop_starts(mel.shape[1], chunk)
            assert s[0] < s[1] < s[2] and s[2] + chunk <= mel.shape[1]
            torch.testing.assert_close(feats[:, 2], mel[:, s[1] : s[1] + chunk])
            want = ref.get_audio_features(input_features=feats, is_longer=longer).pooler_output
            torch.testing.assert_close(a, F.normalize(want, dim=-1), atol=1e-5, rtol=0)


def test_load_model_round_trips(hf, tmp_path, monkeypatch):
    """HF folder, earshot checkpoint and registry name all give the same unit-norm arrays."""
    from earshot import weights as registry
    from earshot.weights.clap import clap_retriever
    from earshot.weights.entry import Checksum, Tower, WeightsEntry

    folder, ref, fe, tok = hf
    fusion = bool(ref.config.audio_config.enable_fusion)
    clips = _clips()
    base = load_model(str(folder))
    a = base.embed_audio(clips, sample_rate=SR)
    t = base.embed_text(TEXTS)
    assert a.dtype == np.float32 and a.shape == (3, 8)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(t, axis=1), 1.0, atol=1e-6)

    # Resampled input: the same clip at 32 kHz gives (nearly) the same embedding.
    from earshot.audio.io import resample
    a32 = base.embed_audio([resample(clips[1], SR, 32000)], sample_rate=32000)
    assert float(a32[0] @ a[1]) > 0.99

    # Files, with ~ expanded.
    import soundfile as sf
    monkeypatch.setenv("HOME", str(tmp_path))
    for i, c in enumerate(clips):
        sf.write(tmp_path / f"c{i}.wav", c, SR, subtype="FLOAT")
    files = base.embed_audio_files([f"~/c{i}.wav" for i in range(3)], batch_size=2)
    np.testing.assert_allclose(files, a, atol=1e-5)

    # earshot checkpoint of the same model.
    ck = checkpoint.save(base.retriever, tmp_path / "ck")
    again = load_model(ck)
    np.testing.assert_allclose(again.embed_audio(clips, SR), a, atol=1e-6)
    np.testing.assert_allclose(again.embed_text(TEXTS), t, atol=1e-6)

    # A registry name whose verified file is already in the cache (no network).
    monkeypatch.setenv("EARSHOT_CACHE", str(tmp_path / "cache"))
    wdir = registry.weights_dir()
    wdir.mkdir(parents=True)
    weights = folder / "model.safetensors"
    (wdir / "tiny.safetensors").write_bytes(weights.read_bytes())
    spec = clap_retriever({}, fusion, "clap_hf")
    cfg = dict(spec.config)
    cfg["audio"] = {**cfg["audio"], "options": {"config": clap_tiny.audio_config(fusion),
                                                "frontend": clap_tiny.frontend(fusion)}}
    cfg["text"] = {**cfg["text"], "options": {"config": clap_tiny.text_config(len(tok)),
                                              "tokenizer": str(folder)}}
    cfg["embed_dim"] = 8
    entry = WeightsEntry(
        name="tiny_clap_test", file_name="tiny.safetensors", urls=("https://invalid.example/x",),
        checksum=Checksum("sha256", hashlib.sha256(weights.read_bytes()).hexdigest(), "test"),
        size_bytes=None, towers=(Tower("audio", "clap_htsat", "clap_hf", 8),
                                 Tower("text", "clap_roberta", "clap_hf", 8)),
        file_format="safetensors", source="test", licence="test",
        retriever=type(spec)(config=cfg, prompt=spec.prompt, companions=()))
    monkeypatch.setitem(registry.WEIGHTS._items, entry.name, entry)
    by_name = load_model("tiny_clap_test", progress=False)
    np.testing.assert_allclose(by_name.embed_audio(clips, SR), a, atol=1e-6)
    np.testing.assert_allclose(by_name.embed_text(TEXTS), t, atol=1e-6)
    assert resolve("tiny_clap_test").identity() == "sha256:" + entry.checksum.digest[:16]
    stored = checkpoint.read_config(checkpoint.save(by_name.retriever, tmp_path / "ck2"))
    assert stored["config"]["audio"]["weights"] == "tiny_clap_test"


def test_ensemble_manifest_of_clap_members(hf, tmp_path):
    folder, ref, fe, tok = hf
    base = load_model(folder)
    ck = checkpoint.save(base.retriever, tmp_path / "member")
    manifest = tmp_path / "ens.json"
    manifest.write_text('{"members": [{"path": "%s", "weight": 1.0}], "rule": "mean"}' % ck)
    ens = load_model(manifest)
    np.testing.assert_allclose(ens.embed_text(TEXTS), base.embed_text(TEXTS), atol=1e-6)
    np.testing.assert_allclose(ens.embed_audio(_clips(), SR), base.embed_audio(_clips(), SR), atol=1e-5)
    # A member may be the CLAP folder itself (or a registry name): same model twice, mean rule.
    manifest.write_text('{"members": [{"path": "%s"}, {"path": "%s"}], "rule": "mean"}' % (ck, folder))
    twice = load_model(manifest)
    t = twice.embed_text(TEXTS)
    assert t.shape == (3, 16)
    np.testing.assert_allclose(t[:, :8], t[:, 8:], atol=1e-6)


@pytest.mark.slow
def test_fine_tuning_starts_from_a_clap_folder_and_trains_both_towers(tmp_path):
    """init_from a Hugging Face CLAP folder, both towers trained with InfoNCE, warm-up + cosine,
    top-k averaging: the run finishes, the loss falls, the averaged model loads by path."""
    import csv

    import soundfile as sf

    from earshot.train.run import load_config, train

    folder, ref, fe, tok = _hf_folder(tmp_path, fusion=False)
    audio_dir = tmp_path / "audio"
    audio_dir.mkdir()
    t = np.arange(int(1.5 * SR)) / SR
    rows = []
    for i, (name, hz) in enumerate([("low", 220), ("middle", 660), ("high", 1980), ("very high", 4000)]):
        sf.write(audio_dir / f"{i}.wav", (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32), SR)
        rows.append([f"{i}.wav"] + [f"a {name} tone", f"{name} pitched sound", f"the {name} note",
                                    f"one {name} beep", f"a steady {name} tone"])
    with open(tmp_path / "train.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file_name"] + [f"caption_{i}" for i in range(1, 6)])
        w.writerows(rows)
    model = {"audio": {"name": "clap_htsat", "train": "all",
                       "options": {"config": clap_tiny.audio_config(), "frontend": clap_tiny.frontend()}},
             "text": {"name": "clap_roberta", "train": "all",
                      "options": {"config": clap_tiny.text_config(len(tok)), "tokenizer": str(folder)}},
             "embed_dim": 8, "audio_head": {"kind": "identity"}, "text_head": {"kind": "identity"}}
    split = {"table": str(tmp_path / "train.csv"), "audio_dir": str(audio_dir)}
    cfg = load_config({"model": model, "data": {"train": split, "val": split, "clip_seconds": 1.0},
                       "loss": {"name": "infonce"}, "cache": {"enabled": False},
                       "optim": {"lr": 3e-3, "scheduler": "cosine", "warmup_steps": 2},
                       "epochs": 4, "batch_size": 8, "top_k": 2, "init_from": str(folder),
                       "out_dir": str(tmp_path / "run")}, [])
    paths = train(cfg, progress=False)
    with open(tmp_path / "run" / "logs" / "metrics.csv") as f:
        losses = [float(r["train/loss_epoch"]) for r in csv.DictReader(f) if r.get("train/loss_epoch")]
    assert len(losses) == 4 and losses[-1] < losses[0]
    tuned = load_model(paths["averaged"])
    start = load_model(folder)
    assert not np.allclose(tuned.embed_text(TEXTS), start.embed_text(TEXTS))
    assert not np.allclose(tuned.embed_audio(_clips(), SR), start.embed_audio(_clips(), SR))


def test_cli_index_search_evaluate_classify_accept_a_clap_folder(tmp_path):
    """The commands that take a model take a CLAP folder (registry names go the same way)."""
    import csv
    import json

    import soundfile as sf
    from typer.testing import CliRunner

    from earshot.app import cli

    cli._register()
    folder, ref, fe, tok = _hf_folder(tmp_path, fusion=False)
    sounds = tmp_path / "s"
    sounds.mkdir()
    t = np.arange(int(3 * SR)) / SR  # longer than the 2 s window: windows in the index
    for name, hz in (("low", 220), ("high", 2500)):
        sf.write(sounds / f"{name}.wav", (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32), SR)
    runner = CliRunner()
    ix = tmp_path / "ix"
    r = runner.invoke(cli.app, ["index", str(sounds), "--model", str(folder), "--out", str(ix),
                                "--workers", "0"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli.app, ["search", str(ix), "--audio", str(sounds / "high.wav"), "-k", "1", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["results"][0]["path"] == "high.wav"

    with open(tmp_path / "eval.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file_name"] + [f"caption_{i}" for i in range(1, 6)])
        w.writerow(["low.wav"] + [f"a low tone {i}" for i in range(5)])
        w.writerow(["high.wav"] + [f"a high tone {i}" for i in range(5)])
    r = runner.invoke(cli.app, ["evaluate", str(folder), "--data", str(tmp_path / "eval.csv"),
                                "--audio-dir", str(sounds), "--json"])
    assert r.exit_code == 0, r.output
    assert 0.0 <= json.loads(r.stdout[r.stdout.index("{"):])["t2a/R@1"] <= 1.0

    r = runner.invoke(cli.app, ["classify", str(sounds / "low.wav"), "--labels", "low tone,high tone",
                                "--model", str(folder), "--json"])
    assert r.exit_code == 0, r.output
    top = json.loads(r.stdout[r.stdout.index("{"):])["results"][0]["top"]
    assert len(top) == 2 and sum(p for _, p in top) == pytest.approx(1.0, abs=1e-5)


RETRIEVERS = [n for n in W.list_weights() if W.get_weights(n).retriever is not None]


@pytest.mark.parametrize("name", RETRIEVERS)
def test_every_registered_retriever_spec_builds_a_valid_config(name):
    """Each whole-model entry names registered towers with options their factories accept, a
    converter its towers use, and companions that are registered (checked without weights)."""
    import inspect

    from earshot.config import from_dict
    from earshot.models.base import AUDIO_ENCODERS, TEXT_ENCODERS, list_audio_encoders
    from earshot.models.biencoder import BiEncoderConfig

    entry = W.get_weights(name)
    cfg = from_dict(BiEncoderConfig, dict(entry.retriever.config), name)
    list_audio_encoders()  # imports the encoder modules
    for tower, reg in ((cfg.audio, AUDIO_ENCODERS), (cfg.text, TEXT_ENCODERS)):
        params = inspect.signature(reg.get(tower.name)).parameters
        assert set(tower.options) <= set(params), (tower.name, tower.options)
    if entry.retriever.state_format is None:  # the towers' converter reads the file
        assert {t.architecture for t in entry.towers} == {cfg.audio.name, cfg.text.name}
    else:  # a reader of the whole file (the DCASE 2025 baseline's Lightning checkpoint)
        from earshot.models.converters import model_formats

        assert entry.retriever.state_format in model_formats()
    assert all(c in W.WEIGHTS for c in entry.retriever.companions)
    assert "{}" in entry.retriever.prompt


def test_registry_name_downloads_once_with_its_tokenizer(hf, tmp_path, monkeypatch):
    """load_model(name): the weights (verified) and the companion tokenizer.json (no published
    digest) come from the entry's URLs once; a second load touches no network."""
    import http.server
    import threading

    from earshot.weights.clap import clap_retriever
    from earshot.weights.entry import Checksum, Tower, WeightsEntry

    folder, ref, fe, tok = hf
    fusion = bool(ref.config.audio_config.enable_fusion)
    served = {"/w.safetensors": (folder / "model.safetensors").read_bytes(),
              "/tokenizer.json": (folder / "tokenizer.json").read_bytes()}
    asked: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            asked.append(self.path)
            body = served[self.path]
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        monkeypatch.setenv("EARSHOT_CACHE", str(tmp_path / "cache"))
        spec = clap_retriever({}, fusion, "clap_hf")
        cfg = dict(spec.config)
        cfg["audio"] = {**cfg["audio"], "options": {"config": clap_tiny.audio_config(fusion),
                                                    "frontend": clap_tiny.frontend(fusion)}}
        cfg["text"] = {**cfg["text"], "options": {"config": clap_tiny.text_config(len(tok)),
                                                  "tokenizer": "tiny_tok_test"}}
        cfg["embed_dim"] = 8
        towers = (Tower("audio", "clap_htsat", "clap_hf", 8), Tower("text", "clap_roberta", "clap_hf", 8))
        weights = WeightsEntry(
            name="tiny_remote_test", file_name="tiny-remote.safetensors", urls=(base + "/w.safetensors",),
            checksum=Checksum("sha256", hashlib.sha256(served["/w.safetensors"]).hexdigest(), "test"),
            size_bytes=None, towers=towers, file_format="safetensors", source="test", licence="test",
            retriever=type(spec)(config=cfg, prompt=spec.prompt, companions=("tiny_tok_test",)))
        tokenizer = WeightsEntry(
            name="tiny_tok_test", file_name="tiny-tokenizer.json", urls=(base + "/tokenizer.json",),
            checksum=None, size_bytes=None, towers=(), file_format="json", source="test",
            licence="test")
        monkeypatch.setitem(W.WEIGHTS._items, weights.name, weights)
        monkeypatch.setitem(W.WEIGHTS._items, tokenizer.name, tokenizer)
        first = load_model("tiny_remote_test", progress=False)
        assert sorted(asked) == ["/tokenizer.json", "/w.safetensors"]
        second = load_model("tiny_remote_test", progress=False)
        assert len(asked) == 2  # cached and verified: no second download
        want = load_model(folder)
        np.testing.assert_allclose(first.embed_text(TEXTS), want.embed_text(TEXTS), atol=1e-6)
        np.testing.assert_allclose(second.embed_audio(_clips(), SR), want.embed_audio(_clips(), SR), atol=1e-6)
    finally:
        server.shutdown()


# --- LAION's files as LAION's trainer writes them; the hub cache (issue 18, section 3) ---------


def _laion_entry(folder, fusion, file, tok_folder, name="tiny_laion_test", digest=None):
    from earshot.weights.clap import clap_retriever
    from earshot.weights.entry import Checksum, Tower, WeightsEntry

    spec = clap_retriever({}, fusion, "laion_clap")
    cfg = dict(spec.config)
    cfg["audio"] = {**cfg["audio"], "options": {"config": clap_tiny.audio_config(fusion),
                                                "frontend": clap_tiny.frontend(fusion)}}
    cfg["text"] = {**cfg["text"], "options": {"config": clap_tiny.text_config(len(tok_folder)),
                                              "tokenizer": str(folder)}}
    cfg["embed_dim"] = 8
    return WeightsEntry(
        name=name, file_name=f"{name}.pt", urls=("https://invalid.example/x",),
        checksum=Checksum("sha256", digest or hashlib.sha256(file.read_bytes()).hexdigest(), "test"),
        size_bytes=None, towers=(Tower("audio", "clap_htsat", "laion_clap", 8),
                                 Tower("text", "clap_roberta", "laion_clap", 8)),
        file_format="torch_pickle", source="test", licence="test",
        retriever=type(spec)(config=cfg, prompt=spec.prompt, companions=()))


def test_laion_trainer_file_opens_by_content_with_weights_only(hf, tmp_path, monkeypatch):
    """LAION-AI/CLAP's training/main.py saves {"epoch", "name", "state_dict", "optimizer"}; the
    optimizer's lr is a numpy.float64, which weights_only=True refuses unless numpy's scalar and
    dtype globals are allowed (and nothing else). Renamed, the file is still recognised by its
    keys and picked out of the registry by its digest."""
    folder, ref, fe, tok = hf
    from earshot.models.audio.clap import ClapFrontendConfig, read_laion_checkpoint

    fusion = ref.config.audio_config.enable_fusion
    laion = _to_laion({k: v.clone() for k, v in ref.state_dict().items()},
                      ClapFrontendConfig(**clap_tiny.frontend(fusion)))
    file = tmp_path / "renamed.bin"  # not the published file name: content decides
    torch.save({"epoch": 45, "name": "2022_12_27-laion", "state_dict": laion,
                "optimizer": {"state": {}, "param_groups": [{"lr": np.float64(1e-4), "betas": (0.9, 0.99),
                                                             "params": [0, 1]}]}}, file)
    with pytest.raises(Exception, match="numpy"):  # what a plain weights_only load says
        torch.load(file, weights_only=True)
    assert set(read_laion_checkpoint(file)) == set(laion)
    entry = _laion_entry(folder, fusion, file, tok)
    monkeypatch.setitem(W.WEIGHTS._items, entry.name, entry)
    r = resolve(file)
    assert (r.kind, r.fmt, r.entry.name) == ("published_file", "laion_clap", "tiny_laion_test")
    assert r.identity() == "sha256:" + entry.checksum.digest[:16]
    from_file, from_hf = load_model(file), load_model(folder)
    # Same weights through two converters: only the HTSAT q/k/v split differs in memory layout.
    np.testing.assert_allclose(from_file.embed_text(TEXTS), from_hf.embed_text(TEXTS), atol=1e-6)
    np.testing.assert_allclose(from_file.embed_audio(_clips()[:1], SR), from_hf.embed_audio(_clips()[:1], SR),
                               atol=1e-6)


def _trainer_file(path, laion):
    # LAION-AI/CLAP's training/main.py layout (see the test above).
    torch.save({"epoch": 3, "name": "my-finetune", "state_dict": laion,
                "optimizer": {"state": {}, "param_groups": [{"lr": np.float64(1e-5), "params": [0]}]}}, path)
    return path


def test_a_users_laion_trainer_file_opens_by_its_architecture(hf, tmp_path, monkeypatch):
    """A LAION-CLAP file no published digest names (a user's fine-tune), with several entries of
    the format registered: the architecture is read from its keys and tensor shapes (fused or
    not, HTSAT widths and depths, the text tower), so it opens as the entry built that way; a
    file built otherwise is an error saying how it is built."""
    folder, ref, fe, tok = hf
    from earshot.models.audio.clap import ClapFrontendConfig, laion_architecture

    fusion = ref.config.audio_config.enable_fusion
    laion = _to_laion({k: v.clone() for k, v in ref.state_dict().items()},
                      ClapFrontendConfig(**clap_tiny.frontend(fusion)))
    file = _trainer_file(tmp_path / "epoch_3.pt", laion)
    # Two tiny variants registered with the digests of their "published" files, which this
    # file is not: only the architecture can tell which one it is.
    for name, fused in (("tiny_laion_unfused", False), ("tiny_laion_fused", True)):
        entry = _laion_entry(folder, fused, file, tok, name=name, digest="0" * 63 + str(int(fused)))
        monkeypatch.setitem(W.WEIGHTS._items, name, entry)
    arch = laion_architecture(torch.load(file, weights_only=False))
    assert (arch["enable_fusion"], arch["depths"], arch["num_attention_heads"]) == (fusion, [2, 1], [1, 2])
    assert (arch["patch_embeds_hidden_size"], arch["text_hidden_size"], arch["text_layers"]) == (8, 16, 1)
    r = resolve(file)
    assert (r.kind, r.fmt, r.entry.name) == ("published_file", "laion_clap",
                                             "tiny_laion_fused" if fusion else "tiny_laion_unfused")
    assert r.identity() == "sha256:" + hashlib.sha256(file.read_bytes()).hexdigest()[:16]  # its own
    from_file, from_hf = load_model(file), load_model(folder)
    np.testing.assert_allclose(from_file.embed_text(TEXTS), from_hf.embed_text(TEXTS), **SAME_WEIGHTS)
    np.testing.assert_allclose(from_file.embed_audio(_clips()[:1], SR), from_hf.embed_audio(_clips()[:1], SR),
                               **SAME_WEIGHTS)
    # One Swin block fewer in the first stage: no registered entry is built that way.
    shallow = {k: v for k, v in laion.items() if not k.startswith("module.audio_branch.layers.0.blocks.1.")}
    with pytest.raises(WeightsError, match=r"built as .*depths=\[1, 1\].* none of the registered "
                                           r"laion_clap models .*tiny_laion_fused"):
        resolve(_trainer_file(tmp_path / "shallow.pt", shallow))


def test_laion_converter_names_what_it_ignores(hf):
    """Only the exact keys LAION's files carry off the embedding path are ignored; a stray key
    under the same prefixes, or a missing logit scale, is an error."""
    folder, ref, fe, tok = hf
    from earshot.models.audio.clap import ClapFrontendConfig

    fe_cfg = ClapFrontendConfig(**clap_tiny.frontend(ref.config.audio_config.enable_fusion))
    laion = _to_laion({k: v.clone() for k, v in ref.state_dict().items()}, fe_cfg)
    convert_laion_clap_state_dict(laion, fe_cfg)  # the real extras: accepted
    for stray in ("module.text_transform.sequential.1.weight", "module.audio_branch.head.extra",
                  "module.audio_branch.tscam_conv.weight_orig"):
        with pytest.raises(WeightsError, match="unexpected key"):
            convert_laion_clap_state_dict({**laion, stray: torch.zeros(1)}, fe_cfg)
    without = {k: v for k, v in laion.items() if k != "module.logit_scale_t"}
    with pytest.raises(WeightsError, match=r"missing \['logit_scale_t'\]"):
        convert_laion_clap_state_dict(without, fe_cfg)


def _hub_snapshot(cache, repo, rev, folder):
    """The layout huggingface_hub reads: models--org--name/{refs/main, snapshots/<rev>/...}."""
    root = cache / ("models--" + repo.replace("/", "--"))
    shutil.copytree(folder, root / "snapshots" / rev)
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / "main").write_text(rev)
    return root / "snapshots" / rev


def test_hub_ids_open_from_the_users_cache(hf, tmp_path, monkeypatch):
    folder, ref, fe, tok = hf
    if ref.config.audio_config.enable_fusion:
        pytest.skip("the hub route does not depend on fusion; once is enough")
    from earshot.loading.hub import hub_folder

    cache = tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # the user's HF_HOME, read when called
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    old = _hub_snapshot(cache, "org/tiny-clap", "a" * 40, folder)
    new = _hub_snapshot(cache, "org/tiny-clap", "b" * 40, folder)  # refs/main now points here
    assert hub_folder("org/tiny-clap") == new
    assert hub_folder("org/tiny-clap", "a" * 40) == old  # revision pinning
    want = load_model(folder).embed_text(TEXTS)
    for name in ("org/tiny-clap", "hf-hub:org/tiny-clap", f"hf-hub:org/tiny-clap@{'a' * 40}"):
        np.testing.assert_allclose(load_model(name).embed_text(TEXTS), want, atol=1e-6)
    assert resolve("org/tiny-clap").identity() == resolve(folder).identity()
    with pytest.raises(WeightsError, match="no such model .*not in the Hugging Face cache"):
        load_model("org/not-cached")
