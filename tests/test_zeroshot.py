"""Zero-shot classification in the library: the model's own logit scale, top-k and accuracy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from earshot import zeroshot
from earshot.errors import DataError


def _biencoder(log_scale: float):
    from earshot.models.biencoder import create_model

    model = create_model({"audio": {"name": "small_cnn", "options": {"channels": [4]}},
                          "text": {"name": "bow", "options": {"dim": 8, "buckets": 64}}, "embed_dim": 4})
    with torch.no_grad():
        model.log_logit_scale.fill_(log_scale)
    return model


def test_classify_uses_the_models_own_logit_scale():
    # MS-CLAP 2023's learnt scale is ~333: its similarity uses it as is, no clamp at 100.
    model = _biencoder(math.log(333.0))
    assert model.logit_scale().item() == pytest.approx(100.0)  # the training clamp stays
    assert zeroshot.logit_scale_of(model) == pytest.approx(333.0, rel=1e-5)
    assert zeroshot.logit_scale_of(_biencoder(math.log(20.0))) == pytest.approx(20.0, rel=1e-5)
    # cosines 0.300 / 0.295 for two labels: softmax at 333 vs at the old clamp of 100
    audio, text = np.array([[1.0, 0.0]]), np.array([[0.300, 0.0], [0.295, 0.0]])
    at_333 = zeroshot.probabilities(audio, text, zeroshot.logit_scale_of(model))[0, 0]
    at_100 = zeroshot.probabilities(audio, text, 100.0)[0, 0]
    assert at_333 == pytest.approx(1 / (1 + math.exp(-333 * 0.005)), rel=1e-4)  # 0.8409
    assert at_333 - at_100 == pytest.approx(0.2184, abs=1e-3)  # 0.8409 - 0.6225

    class NoScale:  # an ensemble: CLIP's 100
        pass

    assert zeroshot.logit_scale_of(NoScale()) == zeroshot.FALLBACK_LOGIT_SCALE


def test_top_labels_and_accuracy_by_hand():
    probs = np.array([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3], [0.1, 0.1, 0.8]])
    labels = ["dog", "rain", "car"]
    assert zeroshot.top_labels(probs, labels, 2) == [[("rain", 0.5), ("car", 0.3)],
                                                     [("dog", 0.6), ("car", 0.3)],
                                                     [("car", 0.8), ("dog", 0.1)]]  # tie: label order
    assert len(zeroshot.top_labels(probs, labels, 10)[0]) == 3  # k capped at the label count
    assert zeroshot.accuracy(probs, labels, ["rain", "rain", "car"]) == (pytest.approx(2 / 3), 2)
    with pytest.raises(DataError, match="one true label per row"):
        zeroshot.accuracy(probs, labels, ["rain"])
