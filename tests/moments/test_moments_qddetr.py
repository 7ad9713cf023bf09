"""QD-DETR: lighthouse's parameter layout loads strictly, outputs, losses and the predictor's
post-processing equal lighthouse's own code (goldens made outside the repo, see qddetr_ref.py)."""

import json
from pathlib import Path

import pytest
import torch
from qddetr_ref import SMALL, inputs, random_state, targets

from earshot.moments.qddetr import (QDDETR, QDDETRConfig, SetCriterion, convert_lighthouse_qddetr_state_dict,
                                    generalized_temporal_iou, hungarian_match, LossConfig, predict_spans,
                                    span_cxw_to_xx)

GOLDEN = json.loads((Path(__file__).parent / "golden" / "qddetr.json").read_text())
# float32 through ~10 attention/FFN layers of width 256 on random weights: rounding differences
# between kernels stay near 1e-6 relative; 1e-4 is the bar (and 50x that rounding).
TOL = 1e-4


@pytest.fixture(scope="module")
def model():
    m = QDDETR(QDDETRConfig(**SMALL))
    shapes = {k: tuple(v) for k, v in GOLDEN["shapes"].items()}
    assert {k: tuple(v.shape) for k, v in m.state_dict().items()} == shapes  # same layout, same sizes
    m.load_state_dict(convert_lighthouse_qddetr_state_dict(random_state(shapes)), strict=True)
    return m.eval()


def test_outputs_equal_lighthouse(model):
    with torch.no_grad():
        out = model(**inputs(), with_negatives=True)
    for key in ("pred_logits", "pred_spans", "saliency_scores", "saliency_scores_neg"):
        torch.testing.assert_close(out[key], torch.tensor(GOLDEN[key]), atol=TOL, rtol=TOL)
    torch.testing.assert_close(out["aux_outputs"][0]["pred_spans"], torch.tensor(GOLDEN["aux_pred_spans"]),
                               atol=TOL, rtol=TOL)


def test_losses_equal_lighthouse(model):
    with torch.no_grad():
        out = model(**inputs(), with_negatives=True)
    crit = SetCriterion(LossConfig(), dec_layers=2)
    total, parts = crit(out, *targets())
    for k, v in parts.items():
        assert float(v) == pytest.approx(GOLDEN["losses"][k], rel=1e-4, abs=1e-5), k
    assert crit.weight_dict == GOLDEN["weight_dict"]
    expected = sum(GOLDEN["losses"][k] * w for k, w in GOLDEN["weight_dict"].items())
    assert float(total) == pytest.approx(expected, rel=1e-4)


def test_predictor_post_processing_equals_lighthouse(model):
    x = {k: v[:1] for k, v in inputs().items()}
    with torch.no_grad():
        out = model(**x)
    got = predict_spans(out, duration=37 * 1.0)
    assert len(got) == 10
    for g, e in zip(got, GOLDEN["predictor_windows"]):
        assert g == pytest.approx(e, abs=2e-4)  # values rounded to 4 decimals on both sides
    torch.testing.assert_close(out["saliency_scores"][0], torch.tensor(GOLDEN["predictor_saliency"]),
                               atol=TOL, rtol=TOL)


def test_hungarian_matching_by_hand():
    # two targets, three queries; query 2 sits on target 0, query 0 on target 1
    logits = torch.zeros(1, 3, 2)
    spans = torch.tensor([[[0.8, 0.2], [0.5, 0.9], [0.2, 0.1]]])
    tgt = [torch.tensor([[0.2, 0.1], [0.8, 0.2]])]
    (q, t), = hungarian_match(logits, spans, tgt, LossConfig())
    assert dict(zip(q.tolist(), t.tolist())) == {2: 0, 0: 1}
    # gIoU of disjoint [0, 1] and [2, 3]: IoU 0, enclosing 3, union 2 -> -1/3
    g = generalized_temporal_iou(torch.tensor([[0.0, 1.0]]), torch.tensor([[2.0, 3.0]]))
    assert float(g) == pytest.approx(-1 / 3)
    assert span_cxw_to_xx(torch.tensor([0.5, 0.2])).tolist() == pytest.approx([0.4, 0.6])


def test_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    m = QDDETR(QDDETRConfig(**SMALL)).train()
    out = m(**inputs())
    total, _ = SetCriterion()(out, *targets())
    total.backward()
    unused = {"txt_position_embed.position_embeddings.weight", "txt_position_embed.LayerNorm.weight",
              "txt_position_embed.LayerNorm.bias"}  # in lighthouse's layout, unused by QD-DETR
    missing = [n for n, p in m.named_parameters() if p.grad is None and n not in unused]
    assert not missing, missing


def _lighthouse_ckpt(path):
    import argparse

    opt = argparse.Namespace(t_feat_dim=SMALL["txt_dim"], v_feat_dim=2, a_feat_dim=SMALL["aud_dim"],
                             hidden_dim=256, nheads=8, enc_layers=2, dec_layers=2,
                             dim_feedforward=SMALL["dim_feedforward"], dropout=0.1, input_dropout=0.5,
                             num_queries=10, n_input_proj=2, max_q_l=32, aux_loss=True,
                             span_loss_type="l1", clip_length=1, max_a_l=300, model_name="qd_detr")
    sd = random_state({k: tuple(v) for k, v in GOLDEN["shapes"].items()})
    torch.save({"opt": opt, "model": sd, "epoch": 3}, path)  # lighthouse's save_checkpoint layout
    return path


def test_lighthouse_checkpoint_opens_with_parity(tmp_path):
    from earshot.moments.head import load_lighthouse_checkpoint, load_moment_head

    head = load_lighthouse_checkpoint(_lighthouse_ckpt(tmp_path / "clap_qd_detr_clotho-moment.ckpt"))
    assert head.spec.retriever == "msclap_2023" and head.spec.hop_s == 1.0
    # trained on CLAPAudio's unpadded 1 s windows (test_moments_clap_windows.py)
    assert head.window.pad == "none" and head.window.output == "tower" and head.window.resampler == "sinc"
    x = inputs()
    got = head.predict_features(x["src_aud"][0], [x["src_txt"][0]])[0]
    for g, e in zip(got, GOLDEN["predictor_windows"]):
        assert g == pytest.approx(e, abs=2e-4)
    head.save(tmp_path / "head")
    again = load_moment_head(tmp_path / "head")
    assert again.spec == head.spec  # the padding survives save/load
    assert again.predict_features(x["src_aud"][0], [x["src_txt"][0]])[0] == got


def test_bad_checkpoints_are_named(tmp_path):
    from earshot.errors import WeightsError
    from earshot.moments.head import load_lighthouse_checkpoint

    torch.save({"state_dict": {}}, tmp_path / "x.ckpt")
    with pytest.raises(WeightsError, match="x.ckpt: expected lighthouse's layout"):
        load_lighthouse_checkpoint(tmp_path / "x.ckpt")
    ck = _lighthouse_ckpt(tmp_path / "y.ckpt")
    data = torch.load(ck, weights_only=False)
    data["model"].pop("class_embed.bias")
    torch.save(data, ck)
    with pytest.raises(WeightsError, match=r"(?s)y.ckpt: does not fit QD-DETR.*class_embed.bias"):
        load_lighthouse_checkpoint(ck)


def test_registry_entry_has_the_published_url():
    from earshot.weights import get_weights

    e = get_weights("lighthouse_qd_detr_clotho_moment")
    assert e.urls == ("https://zenodo.org/records/13961029/files/clap_qd_detr_clotho-moment.ckpt",)
    assert e.checksum is None and e.file_name == "clap_qd_detr_clotho-moment.ckpt"


def test_long_recordings_are_read_in_chunks(model):
    from earshot.moments.head import FeatureSpec, MomentHead

    head = MomentHead(model, FeatureSpec(retriever="none", max_windows=16))
    x = inputs()
    feats = x["src_aud"][0]  # 37 windows -> chunks at 0, 8, 16, 21
    wins = head.predict_features(feats, [x["src_txt"][0]], top=10)[0]
    assert 1 <= len(wins) <= 10 and all(0 <= a < b <= 37 for a, b, _ in wins)
    assert [w[2] for w in wins] == sorted((w[2] for w in wins), reverse=True)
    # a recording that fits one chunk gives exactly the single-pass prediction
    whole = MomentHead(model, FeatureSpec(retriever="none", max_windows=300))
    first = predict_spans(model(src_txt=x["src_txt"][:1], src_txt_mask=torch.ones(1, 5),
                                src_vid=inputs()["src_vid"][:1], src_vid_mask=torch.ones(1, 37),
                                src_aud=x["src_aud"][:1]), duration=37.0)
    got = whole.predict_features(feats, [x["src_txt"][0]])[0]
    assert len(got) == len(first)
    for g, e in zip(got, first):
        assert g == pytest.approx(e, abs=1e-4)


def test_the_one_resolver_knows_moment_heads_by_content_folder_and_name(tmp_path):
    """`earshot moments predict MODEL` asks resolve: lighthouse's file under any name (its content:
    opt + QD-DETR's state dict), a saved head folder, and the registry name once the file is in
    the cache all open as the same head; a DCASE-style Lightning .ckpt is not taken for one."""
    import shutil

    from earshot.errors import WeightsError
    from earshot.loading.resolve import resolve
    from earshot.moments.predict import open_moment_model
    from earshot.weights.cache import weights_dir
    from earshot import weights as registry

    ck = _lighthouse_ckpt(tmp_path / "renamed.bin")
    ref = resolve(ck)
    assert (ref.kind, ref.fmt) == ("moment_head", "lighthouse_qddetr")
    x = inputs()
    want = open_moment_model(ck).predict_features(x["src_aud"][0], [x["src_txt"][0]])[0]
    open_moment_model(ck).save(tmp_path / "head")
    assert resolve(tmp_path / "head").kind == "moment_head"
    assert open_moment_model(tmp_path / "head").predict_features(x["src_aud"][0], [x["src_txt"][0]])[0] == want
    name = "lighthouse_qd_detr_clotho_moment"
    with pytest.raises(WeightsError, match="not downloaded; run `earshot weights download"):
        open_moment_model(name)
    weights_dir().mkdir(parents=True, exist_ok=True)
    shutil.copy(ck, weights_dir() / registry.get_weights(name).file_name)
    named = resolve(name)
    assert named.kind == "moment_head" and named.entry is not None
    assert named.identity() == resolve(ck).identity()  # the same bytes, the same id
    assert open_moment_model(name).predict_features(x["src_aud"][0], [x["src_txt"][0]])[0] == want
    torch.save({"state_dict": {"x": torch.zeros(1)}, "epoch": 1}, tmp_path / "other.ckpt")
    with pytest.raises(WeightsError):
        resolve(tmp_path / "other.ckpt")


def test_expected_iou_ranking_is_each_spans_weighted_mean_iou_with_the_predictions(tmp_path):
    # hand-worked: A = [0, 10], B = [0, 5], C = [20, 30] s with p_fg 0.5, 0.3, 0.4 (sum 1.2);
    # IoU(A, B) = 0.5, C overlaps neither: A (0.5 + 0.3 * 0.5) / 1.2 = 0.541667,
    # B (0.5 * 0.5 + 0.3) / 1.2 = 0.458333, C 0.4 / 1.2 = 0.333333. By p_fg alone: A, C, B
    import math

    from earshot.errors import ConfigError
    from earshot.moments.head import FeatureSpec, MomentHead, load_moment_head
    from earshot.moments.sliding import expected_iou

    xx = torch.tensor([[0.0, 10.0], [0.0, 5.0], [20.0, 30.0], [30.0, 30.0]])  # D: empty, p_fg 0
    p = torch.tensor([0.5, 0.3, 0.4, 0.0])
    assert expected_iou(xx, p).tolist() == pytest.approx([0.65 / 1.2, 0.55 / 1.2, 0.4 / 1.2, 0.0], abs=1e-6)
    logit = [math.log(q / (1 - q)) if 0 < q < 1 else -30.0 for q in p.tolist()]
    out = {"pred_logits": torch.tensor([[[z, 0.0] for z in logit]]),
           "pred_spans": torch.tensor([[[(a + b) / 60, (b - a) / 30] for a, b in xx.tolist()]])}
    assert [r[:2] for r in predict_spans(out, duration=30.0)[:3]] == \
        [pytest.approx(s, abs=1e-3) for s in ([0, 10], [20, 30], [0, 5])]
    got = predict_spans(out, duration=30.0, ranking="expected_iou")
    assert [r[:2] for r in got[:3]] == [pytest.approx(s, abs=1e-3) for s in ([0, 10], [0, 5], [20, 30])]
    assert [r[2] for r in got] == pytest.approx([0.541667, 0.458333, 0.333333, 0.0], abs=2e-4)
    with pytest.raises(ConfigError, match="ranking"):
        QDDETRConfig(ranking="nms")
    with pytest.raises(ConfigError, match="ranking"):
        predict_spans(out, duration=30.0, ranking="iou")
    # a head ranks by its config's ranking, which its folder keeps
    torch.manual_seed(0)
    model = QDDETR(QDDETRConfig(**{**SMALL, "ranking": "expected_iou"})).eval()
    head = load_moment_head(MomentHead(model, FeatureSpec(retriever="none")).save(tmp_path / "head"))
    assert head.qddetr.cfg.ranking == "expected_iou"
    x = {k: v[:1] for k, v in inputs().items()}
    L = x["src_vid"].shape[1]
    rows = head.predict_features(x["src_aud"][0], [x["src_txt"][0]])[0]
    with torch.no_grad():
        raw = model(**{**x, "src_txt": torch.nn.functional.normalize(x["src_txt"], dim=-1, eps=1e-5)})
    want = predict_spans(raw, duration=L * 1.0, ranking="expected_iou")
    assert rows == [pytest.approx(w, abs=2e-4) for w in want]
    assert rows != [pytest.approx(w, abs=2e-4) for w in predict_spans(raw, duration=L * 1.0)]
