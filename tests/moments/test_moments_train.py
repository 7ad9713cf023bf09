"""The moment head's presets carry lighthouse's values; training on features learns."""

from pathlib import Path

import lightning as L
import pytest
import torch

from earshot.moments.dataset import MomentExample, collate, saliency_labels
from earshot.moments.head import FeatureSpec
from earshot.moments.metrics import score_moments
from earshot.moments.qddetr import QDDETRConfig
from earshot.train.moments import MomentOptimConfig, MomentTrainConfig, fit_moment_head, load_moment_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

# lighthouse configs/base.yml + model/qd_detr.yml + feature/clap.yml + dataset/*.yml (AMR)
LIGHTHOUSE = {
    "optim.lr": 1e-4, "optim.lr_drop": 400, "optim.wd": 1e-4, "n_epoch": 200, "bsz": 32,
    "optim.grad_clip": 0.1, "model.max_q_l": 32, "features.max_windows": 300, "max_windows": 5,
    "clip_length": 1.0, "model.enc_layers": 2, "model.dec_layers": 2, "model.dim_feedforward": 1024,
    "model.hidden_dim": 256, "model.input_dropout": 0.5, "model.dropout": 0.1, "model.nheads": 8,
    "model.num_queries": 10, "model.n_input_proj": 2, "loss.saliency_margin": 0.2,
    "loss.set_cost_span": 10, "loss.set_cost_giou": 1, "loss.set_cost_class": 4,
    "loss.span_loss_coef": 10, "loss.giou_loss_coef": 1, "loss.label_loss_coef": 4,
    "loss.eos_coef": 0.1, "loss.lw_saliency": 1, "model.aux_loss": True, "seed": 2023,
    "model.vid_dim": 2, "model.aud_dim": 768, "model.txt_dim": 768,
    "features.window_s": 1.0, "features.hop_s": 1.0, "features.retriever": "msclap_2023",
    "features.pad": "none",  # CLAPAudio feeds the 1 s windows unpadded
    "features.resampler": "sinc",  # CLAPAudio resamples with torchaudio's Resample
}


@pytest.mark.parametrize("preset", ["amr_clotho_moment.yaml", "amr_castella.yaml"])
def test_presets_carry_lighthouse_values(preset):
    cfg = load_moment_config(CONFIGS / preset)
    for key, value in LIGHTHOUSE.items():
        obj = cfg
        for part in key.split("."):
            obj = getattr(obj, part)
        assert obj == value, key


def test_saliency_labels_as_lighthouse():
    import random

    pos, neg, lab = saliency_labels((3.2, 7.9), ctx_l=12, clip_len=1.0, rng=random.Random(0))
    # gt_st = int(3.2) = 3, gt_ed = min(int(7.9), 12) - 1 = 6
    assert lab.tolist() == [0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0]
    assert all(3 <= p <= 6 for p in pos) and all(n < 3 or n > 6 for n in neg) and len(set(pos)) == 2


def _examples(n, seed, L=12):
    # L windows; feature 0 is 1 inside the moment (the text is noise): the head must find the
    # marked windows. Moments sit at random places, 3-6 s long.
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        ln = int(torch.randint(3, 7, (1,), generator=g))
        st = int(torch.randint(0, L - ln + 1, (1,), generator=g))
        a = 0.1 * torch.randn(L, 8, generator=g)
        a[st:st + ln, 0] += 1.0
        out.append(MomentExample(qid=f"{seed}_{i}", audio=a, text=torch.randn(2, 6, generator=g),
                                 windows=[(float(st), float(st + ln))], duration=float(L)))
    return out


EPOCHS = 10  # 60 steps of batch 8


def _loss(qddetr, test):
    import random

    from earshot.moments.qddetr import SetCriterion

    b = collate(test, rng=random.Random(0))
    with torch.no_grad():
        return float(SetCriterion()(qddetr.eval()(**b["inputs"], with_negatives=True), *b["targets"])[0])


def _untrained(cfg, test):
    from earshot.moments.head import MomentHead
    from earshot.moments.qddetr import QDDETR

    torch.manual_seed(cfg.seed)
    head = MomentHead(QDDETR(cfg.model).eval(), cfg.features)
    preds = {e.qid: head.predict_features(e.audio, [e.text])[0] for e in test}
    r1 = score_moments({e.qid: [list(w) for w in e.windows] for e in test}, preds)["R1@0.5"]
    return r1, _loss(head.qddetr, test)


@pytest.mark.slow
def test_head_learns_marked_moments():
    cfg = MomentTrainConfig(model=QDDETRConfig(txt_dim=6, aud_dim=8, dim_feedforward=64),
                            features=FeatureSpec(retriever="none"), optim=MomentOptimConfig(lr=1e-3),
                            n_epoch=EPOCHS, bsz=8, accelerator="cpu", seed=0)
    train, test = _examples(48, 1), _examples(24, 2)
    head = fit_moment_head(cfg, train)
    preds = {e.qid: head.predict_features(e.audio, [e.text])[0] for e in test}
    scores = score_moments({e.qid: [list(w) for w in e.windows] for e in test}, preds)
    # 60 steps are few for a DETR: the held-out loss must fall clearly and R1@0.5 rise above the
    # untrained head's (its initial anchors, which miss every 3-6 s moment in 12 s)
    before_r1, before_loss = _untrained(cfg, test)
    after_loss = _loss(head.qddetr, test)
    assert after_loss < 0.7 * before_loss, (before_loss, after_loss)
    assert scores["R1@0.5"] > before_r1, (before_r1, scores)


def test_collate_pads_and_normalises_spans():
    ex = _examples(2, 3)
    b = collate(ex, clip_len=1.0, max_windows=5)
    assert b["inputs"]["src_aud"].shape == (2, 12, 8)
    assert b["inputs"]["src_vid_mask"][1].sum() == 12 and b["inputs"]["src_vid_mask"][0].sum() == 12
    st, en = ex[0].windows[0]
    # (center, width) normalised by L * clip_length = 12 s
    assert b["targets"][0][0][0].tolist() == pytest.approx([(st + en) / 24, (en - st) / 12])


class Losses(L.Callback):
    """Each step's training loss (of the global batch under DDP)."""

    def __init__(self):
        self.losses = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        loss = outputs["loss"].detach()
        if trainer.world_size > 1:  # the global batch's loss: the ranks' equal-sized halves averaged
            torch.distributed.all_reduce(loss)
            loss = loss / trainer.world_size
        self.losses.append(float(loss))


def ddp_config(devices: int, precision: str = "32-true") -> MomentTrainConfig:
    """2 steps of global batch 8 (bsz is per device): no dropout and no saliency term (its
    random positives and in-batch negative texts differ by rank), so N processes and one
    process compute the same gradients up to float32 summation order."""
    from earshot.moments.qddetr import LossConfig

    return MomentTrainConfig(
        model=QDDETRConfig(txt_dim=6, aud_dim=8, dim_feedforward=64,
                           dropout=0.0, input_dropout=0.0),
        loss=LossConfig(lw_saliency=0.0), features=FeatureSpec(retriever="none"),
        optim=MomentOptimConfig(lr=1e-3), n_epoch=1, bsz=8 // devices, accelerator="cpu",
        devices=devices, precision=precision, seed=0)


def _run_head(tmp_path, devices, precision="32-true"):
    import json
    import os
    import subprocess
    import sys

    import earshot

    out = tmp_path / f"d{devices}_{precision}"
    out.mkdir()
    src = str(Path(earshot.__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1")
    for var in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "NODE_RANK"):
        env.pop(var, None)
    proc = subprocess.run([sys.executable, str(Path(__file__).with_name("ddp_head.py")), str(out),
                           str(devices), precision], env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return torch.load(out / "weights.pt"), json.loads((out / "losses.json").read_text())


@pytest.mark.slow
def test_two_process_ddp_head_equals_one_process_and_bf16_runs(tmp_path):
    one_w, one_loss = _run_head(tmp_path, 1)
    two_w, two_loss = _run_head(tmp_path, 2)
    # 16 queries / global batch 8 = 2 steps. The ranks see the halves of the one process's
    # batches (GlobalBatchSampler) and DDP averages their gradients: only float32 summation order
    # differs (~1e-7 relative, carried by 2 AdamW steps). 1e-5 is far above that and far below
    # a real difference: a rank training on its own half batch moves losses ~1e-1 and weights
    # by ~lr = 1e-3 per step.
    assert len(one_loss) == len(two_loss) == 2
    assert max(abs(a - b) for a, b in zip(one_loss, two_loss)) <= 1e-5, (one_loss, two_loss)
    assert max(float((one_w[k] - two_w[k]).abs().max()) for k in one_w) <= 1e-5
    # bf16-mixed (CPU autocast): the step runs, the losses are finite and near fp32's (bf16 keeps
    # 8 bits of mantissa: ~0.4 % per product; 5 % of the loss is a generous bound)
    cb = Losses()
    fit_moment_head(ddp_config(1, "bf16-mixed"), _examples(16, 5), callbacks=[cb])  # in process
    bf_loss = cb.losses
    assert len(bf_loss) == 2 and all(torch.isfinite(torch.tensor(bf_loss)))
    assert abs(bf_loss[0] - one_loss[0]) <= 0.05 * abs(one_loss[0]), (bf_loss, one_loss)


def test_similarity_channel_reaches_the_head():
    from earshot.moments.head import MomentHead, frame_inputs
    from earshot.moments.qddetr import QDDETR

    ex = _examples(2, 4)
    for e in ex:
        e.sim = torch.linspace(-1, 1, e.audio.shape[0])
    b = collate(ex)
    vid = b["inputs"]["src_vid"]
    assert vid.shape == (2, 12, 3)  # tef (2) + similarity
    assert vid[0, :, 2].tolist() == pytest.approx(torch.linspace(-1, 1, 12).tolist())
    assert frame_inputs(4)[:, :2].tolist() == [[0.0, 0.25], [0.25, 0.5], [0.5, 0.75], [0.75, 1.0]]
    torch.manual_seed(0)
    head = MomentHead(QDDETR(QDDETRConfig(txt_dim=6, aud_dim=8, vid_dim=3, dim_feedforward=64)).eval(),
                      FeatureSpec(retriever="none", similarity=True))
    a = head.predict_features(ex[0].audio, [ex[0].text], sims=[ex[0].sim])[0]
    flipped = head.predict_features(ex[0].audio, [ex[0].text], sims=[-ex[0].sim])[0]
    assert a != flipped  # the channel changes the prediction
    with pytest.raises(Exception, match="needs window similarities"):
        head.predict_features(ex[0].audio, [ex[0].text])


def test_cpu_training_runs_on_the_heads_thread_count_and_restores_it(monkeypatch: pytest.MonkeyPatch):
    # the head's small kernels run several times slower on two threads of a shared machine than on
    # one (earshot.threads), so a CPU fit uses the "heads" count (here forced to 3) and restores it
    seen = []

    class Spy(L.Callback):
        def on_train_batch_start(self, *args):
            seen.append(torch.get_num_threads())

    cfg = MomentTrainConfig(model=QDDETRConfig(txt_dim=6, aud_dim=8, dim_feedforward=64),
                            features=FeatureSpec(retriever="none"), n_epoch=1, bsz=4, accelerator="cpu", seed=0)
    before = torch.get_num_threads()
    monkeypatch.setenv("EARSHOT_THREADS", "3" if before != 3 else "2")
    fit_moment_head(cfg, _examples(8, 1), callbacks=[Spy()])
    assert seen and set(seen) == {3 if before != 3 else 2}
    assert torch.get_num_threads() == before


def test_the_training_default_features_are_lighthouses_unpadded_sinc_windows():
    """A config that names no features trains on what lighthouse's AMR feeds QD-DETR (MS-CLAP
    2023, 1 s windows at 1 s hop, unpadded, torchaudio's sinc resampling), as its presets do."""
    from earshot.train.moments import MomentTrainConfig

    f = MomentTrainConfig().features
    assert (f.retriever, f.window_s, f.hop_s, f.pad, f.resampler) == ("msclap_2023", 1.0, 1.0, "none", "sinc")


def test_similarity_anchors_start_the_decoder_at_the_sliding_windows_proposals(tmp_path):
    # a two-stage head: each input's reference spans are its similarity curve's proposals, so before
    # any training its spans are exactly the sliding window's (the offsets start at zero)
    from earshot.moments.qddetr import QDDETR, span_cxw_to_xx
    from earshot.moments.sliding import moments_from_curve

    ex = _examples(2, 5)
    curves = [torch.zeros(12), torch.zeros(12)]
    curves[0][2:6] = 1.0  # one run: windows 2-5 -> [2, 6] s of 12
    curves[1][1:3], curves[1][8:11] = 0.6, 1.0  # two runs
    for e, c in zip(ex, curves):
        e.sim = c
    b = collate(ex)
    torch.manual_seed(0)
    model = QDDETR(QDDETRConfig(txt_dim=6, aud_dim=8, vid_dim=3, dim_feedforward=64, anchors="similarity")).eval()
    with torch.no_grad():
        spans = span_cxw_to_xx(model(**b["inputs"])["pred_spans"]) * 12  # (B, Q, 2) seconds
    for i, c in enumerate(curves):
        want = [(a, e) for a, e, _ in moments_from_curve(c.numpy(), 1.0, 1.0, 12, top=10)]
        assert len(want) >= 1 and (i == 0 or len(want) >= 2)
        got = spans[i, : len(want)].tolist()
        assert got == [pytest.approx(list(w), abs=1e-3) for w in want]
    assert spans[0, 0].tolist() == pytest.approx([2.0, 6.0], abs=1e-3)  # hand-worked: windows 2-5
    assert spans[1, :2].tolist() == [pytest.approx([8.0, 11.0], abs=1e-3), pytest.approx([1.0, 3.0], abs=1e-3)]
    # and ranks them as the sliding window does: the proposals' scores lift their foreground logits
    from earshot.moments.head import MomentHead

    head = MomentHead(model, FeatureSpec(retriever="none", similarity=True))
    ranked = head.predict_features(ex[1].audio, [ex[1].text], sims=[ex[1].sim])[0]
    assert [r[:2] for r in ranked[:2]] == [pytest.approx([8.0, 11.0], abs=1e-3), pytest.approx([1.0, 3.0], abs=1e-3)]
    assert ranked[0][2] > ranked[1][2] > ranked[-1][2]
    from earshot.moments.head import load_moment_head

    with torch.no_grad():
        model.prior_scale.fill_(2.5)  # a trained weight survives the round trip
    again = load_moment_head(head.save(tmp_path / "head"))
    assert again.qddetr.cfg.anchors == "similarity" and again.qddetr.prior_scale.item() == 2.5
    assert again.predict_features(ex[1].audio, [ex[1].text], sims=[ex[1].sim])[0] == \
        head.predict_features(ex[1].audio, [ex[1].text], sims=[ex[1].sim])[0]


def test_an_untrained_two_stage_head_ranks_every_proposal_as_the_sliding_window():
    # its classifier starts at zero, so the proposals' own scores order all ten predictions
    # (a randomly initialised classifier, as lighthouse's, reorders proposals of close scores)
    from earshot.moments.head import MomentHead
    from earshot.moments.qddetr import QDDETR
    from earshot.moments.sliding import moments_from_curve

    g = torch.Generator().manual_seed(3)
    for seed in range(4):
        ex = _examples(1, 7 + seed)[0]
        ex.sim = torch.rand(40, generator=g) + torch.linspace(0, 0.3, 40)
        ex.audio = torch.randn(40, ex.audio.shape[1], generator=g)
        torch.manual_seed(seed)
        model = QDDETR(QDDETRConfig(txt_dim=6, aud_dim=8, vid_dim=3, dim_feedforward=64, anchors="similarity"))
        head = MomentHead(model.eval(), FeatureSpec(retriever="none", similarity=True))
        ranked = head.predict_features(ex.audio, [ex.text], sims=[ex.sim])[0]
        want = moments_from_curve(ex.sim.numpy(), 1.0, 1.0, 40, top=10)
        assert len(want) == 10
        assert [r[:2] for r in ranked] == [pytest.approx([a, b], abs=1e-3) for a, b, _ in want]


def test_anchor_scales_add_each_proposal_widened_about_its_centre():
    # multi-scale anchors: the first num_queries / len(scales) proposals at scale 1, then the same
    # proposals widened by each further factor, clipped to the input; hand-worked on 12 s curves
    from earshot.config import from_dict
    from earshot.moments.head import MomentHead
    from earshot.moments.qddetr import QDDETR, span_cxw_to_xx
    from earshot.moments.sliding import moments_from_curve

    ex = _examples(2, 5)
    curves = [torch.zeros(12), torch.zeros(12)]
    curves[0][2:6] = 1.0  # windows 2-5 -> [2, 6] s
    curves[1][1:3], curves[1][8:11] = 0.6, 1.0  # [8, 11] and [1, 3]
    for e, c in zip(ex, curves):
        e.sim = c
    b = collate(ex)
    cfg = from_dict(QDDETRConfig, {"txt_dim": 6, "aud_dim": 8, "vid_dim": 3, "dim_feedforward": 64,
                                   "anchors": "similarity", "anchor_scales": [1, 2]})  # as YAML gives it
    assert cfg.anchor_scales == (1.0, 2.0)
    torch.manual_seed(0)
    model = QDDETR(cfg).eval()
    with torch.no_grad():
        spans = span_cxw_to_xx(model(**b["inputs"])["pred_spans"]) * 12
    counts = []
    for i, c in enumerate(curves):
        found = [(a, e) for a, e, _ in moments_from_curve(c.numpy(), 1.0, 1.0, 12, top=5)]
        counts.append(len(found))
        assert spans[i, : len(found)].tolist() == [pytest.approx(list(w), abs=1e-3) for w in found]
        widened = [[max((a + e) / 2 - (e - a), 0.0), min((a + e) / 2 + (e - a), 12.0)] for a, e in found]
        got = spans[i, len(found): 2 * len(found)].tolist()
        assert got == [pytest.approx(w, abs=1e-3) for w in widened]
    assert spans[0, 0].tolist() == pytest.approx([2.0, 6.0], abs=1e-3)
    assert spans[0, counts[0]].tolist() == pytest.approx([0.0, 8.0], abs=1e-3)  # centre 4, width 8
    assert spans[1, counts[1]].tolist() == pytest.approx([6.5, 12.0], abs=1e-3)  # centre 9.5, width 6, clipped
    # untrained, a proposal's copies tie on its score: the scale-1 copy ranks first
    head = MomentHead(model, FeatureSpec(retriever="none", similarity=True))
    ranked = head.predict_features(ex[1].audio, [ex[1].text], sims=[ex[1].sim])[0]
    assert ranked[0][:2] == pytest.approx([8.0, 11.0], abs=1e-3)
    from earshot.errors import ConfigError

    for bad in ((), (1.0, 0.0)):
        with pytest.raises(ConfigError, match="anchor_scales"):
            QDDETRConfig(anchor_scales=bad)
    with pytest.raises(ConfigError, match="anchor_scales"):
        QDDETRConfig(num_queries=2, anchor_scales=(1.0, 2.0, 3.0))


def test_similarity_anchors_need_the_similarity_column():
    from earshot.errors import ConfigError

    with pytest.raises(ConfigError, match="vid_dim must be >= 3"):
        QDDETRConfig(anchors="similarity")
    with pytest.raises(ConfigError, match="'learned' or 'similarity'"):
        QDDETRConfig(anchors="sliding")


def test_epoch_lines_print_the_epochs_own_validation_map():
    # the demo's "head: epoch 1/2 ... val mAP/avg X" lines: X is that epoch's score, not "-"
    import io

    from earshot.train.progress import EpochLines

    cfg = MomentTrainConfig(model=QDDETRConfig(txt_dim=6, aud_dim=8, dim_feedforward=64),
                            features=FeatureSpec(retriever="none"), n_epoch=2, bsz=8, accelerator="cpu", seed=0)
    out = io.StringIO()
    head = fit_moment_head(cfg, _examples(16, 1), _examples(8, 2),
                           callbacks=[EpochLines(out, metric="val/mAP/avg", label="val mAP/avg")])
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    for line, (_, scores) in zip(lines, head.validation):
        assert f"val mAP/avg {scores['mAP/avg']:.4f}" in line, (line, scores)


def test_iou_labels_target_each_querys_best_iou_and_leave_the_spans_alone():
    # loss.label_target "iou": every query's foreground target is its span's best IoU with the
    # item's windows (hand-worked), soft cross-entropy over the 2 logits, no gradient into spans
    import math

    from earshot.errors import ConfigError
    from earshot.moments.qddetr import LossConfig, SetCriterion

    spans = torch.tensor([[[0.3, 0.2], [0.7, 0.2], [0.55, 0.1]]], requires_grad=True)  # [.2,.4] [.6,.8] [.5,.6]
    logits = torch.tensor([[[1.0, 0.0], [0.0, 0.0], [0.0, 2.0]]], requires_grad=True)
    windows = [torch.tensor([[0.375, 0.25], [0.6, 0.2]])]  # [.25,.5] and [.5,.7]
    # best IoU: q0 .15/.30 = 0.5 with [.25,.5]; q1 .1/.3 = 1/3 with [.5,.7]; q2 .1/.2 = 0.5 with [.5,.7]
    fit = [0.5, 1 / 3, 0.5]
    lp = torch.log_softmax(logits.detach()[0], -1)
    want = sum(-(t * lp[k, 0] + (1 - t) * lp[k, 1]) for k, t in enumerate(fit)) / 3
    crit = SetCriterion(LossConfig(label_target="iou"), aux_loss=False)
    got = crit._labels({"pred_logits": logits, "pred_spans": spans}, windows, None)["loss_label"]
    assert got.item() == pytest.approx(float(want), abs=1e-6)
    matched = SetCriterion(aux_loss=False)._labels({"pred_logits": logits, "pred_spans": spans}, windows,
                                                   [(torch.tensor([0, 2]), torch.tensor([0, 1]))])
    assert matched["loss_label"].item() != pytest.approx(float(want))  # lighthouse's labels differ
    got.backward()
    assert spans.grad is None and logits.grad is not None
    # the optimum: p_fg = the target, whatever the logit scale
    z = torch.tensor([[[math.log(0.5 / 0.5), 0.0], [math.log((1 / 3) / (2 / 3)), 0.0], [0.0, 0.0]]], requires_grad=True)
    crit._labels({"pred_logits": z, "pred_spans": spans.detach()}, windows, None)["loss_label"].backward()
    assert z.grad[0, :2].abs().max() < 1e-6 and z.grad[0, 2].abs().max() < 1e-6
    with pytest.raises(ConfigError, match="label_target"):
        LossConfig(label_target="soft")


def test_ema_decay_returns_and_validates_the_moving_average_of_each_steps_weights():
    # ema_decay d: E_1 = W_1, E_t = d E_(t-1) + (1 - d) W_t after every optimiser step; without
    # validation the head is E_T, with it the scored and kept weights are the average's
    from earshot.errors import ConfigError

    class Steps(L.Callback):
        def __init__(self):
            self.w = []

        def on_train_batch_end(self, trainer, module, *args):
            self.w.append({k: v.detach().clone() for k, v in module.qddetr.state_dict().items()})

    def fit(decay, val=None):
        cfg = MomentTrainConfig(model=QDDETRConfig(txt_dim=6, aud_dim=8, dim_feedforward=64),
                                features=FeatureSpec(retriever="none"), optim=MomentOptimConfig(lr=1e-2),
                                n_epoch=1, bsz=4, accelerator="cpu", seed=0, ema_decay=decay)
        steps = Steps()
        return fit_moment_head(cfg, _examples(12, 1), val, callbacks=[steps]), steps.w

    head, w = fit(0.5)
    assert len(w) == 3
    want = {k: 0.25 * w[0][k] + 0.25 * w[1][k] + 0.5 * w[2][k] for k in w[0] if w[0][k].is_floating_point()}
    got = head.qddetr.state_dict()
    assert max(float((got[k] - v).abs().max()) for k, v in want.items()) < 1e-6
    moved = max(float((w[2][k] - v).abs().max()) for k, v in want.items())
    assert moved > 1e-3  # the average is not the last step's weights
    raw, _ = fit(0.0)
    assert max(float((raw.qddetr.state_dict()[k] - w[2][k]).abs().max()) for k in want) < 1e-6
    val = _examples(4, 2)
    kept, _ = fit(0.5, val)  # one epoch: the kept weights are that epoch's average, as scored
    assert max(float((kept.qddetr.state_dict()[k] - v).abs().max()) for k, v in want.items()) < 1e-6
    preds = {e.qid: kept.predict_features(e.audio, [e.text])[0] for e in val}
    assert kept.validation[0][1] == score_moments({e.qid: [list(x) for x in e.windows] for e in val}, preds)
    with pytest.raises(ConfigError, match="ema_decay"):
        MomentTrainConfig(ema_decay=1.0)


def test_validation_loss_is_the_scored_weights_loss_when_averaging():
    # with ema_decay > 0 validation scores the average: its logged val/loss must be the
    # average's loss on the batch too, not the raw weights'
    import random

    from earshot.moments.qddetr import SetCriterion
    from earshot.train.moments import MomentHeadModule

    cfg = MomentTrainConfig(model=QDDETRConfig(txt_dim=6, aud_dim=8, dim_feedforward=64),
                            features=FeatureSpec(retriever="none"), accelerator="cpu", ema_decay=0.5)
    module = MomentHeadModule(cfg).eval()
    with torch.no_grad():  # the average and the raw weights now differ
        for p in module.ema.module.parameters():
            p.add_(0.05 * torch.randn_like(p))
    batch = collate(_examples(4, 2), cfg.clip_length, cfg.max_windows, random.Random(0))
    logged = {}
    module.log = lambda name, value, **kw: logged.__setitem__(name, float(value))
    module.validation_step(batch, 0)
    crit = SetCriterion(cfg.loss, dec_layers=cfg.model.dec_layers, aux_loss=cfg.model.aux_loss)
    with torch.no_grad():
        want = {name: float(crit(net(**batch["inputs"], with_negatives=True), *batch["targets"])[0])
                for name, net in (("ema", module.ema.module), ("raw", module.qddetr))}
    assert abs(want["ema"] - want["raw"]) > 1e-3
    assert logged["val/loss"] == pytest.approx(want["ema"], abs=1e-6)
