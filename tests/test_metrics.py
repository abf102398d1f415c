import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

from orca_ray.metrics import (
    compute_metric,
    one_minus_macro_f1,
    one_minus_mean_auroc,
    relative_l2,
    zero_one_error,
)

rng = np.random.default_rng(0)


def test_zero_one_error_matches_sklearn():
    y = rng.integers(0, 5, 300)
    logits = rng.standard_normal((300, 5))
    assert zero_one_error(y, logits) == pytest.approx(1 - accuracy_score(y, logits.argmax(1)))


def test_macro_f1_matches_sklearn_and_votes_per_group():
    y = rng.integers(0, 4, 200)
    logits = rng.standard_normal((200, 4))
    assert one_minus_macro_f1(y, logits) == pytest.approx(1 - f1_score(y, logits.argmax(1), average="macro"))
    # three windows per recording: the recording's prediction is the majority of its windows
    groups = np.repeat(np.arange(4), 3)
    y_win = np.repeat([0, 1, 2, 3], 3)
    pred = np.array([0, 0, 1, 1, 1, 2, 2, 2, 2, 3, 0, 0])  # votes: 0, 1, 2, 0
    logits = np.eye(4)[pred]
    want = 1 - f1_score([0, 1, 2, 3], [0, 1, 2, 0], average="macro", zero_division=0)
    assert one_minus_macro_f1(y_win, logits, groups) == pytest.approx(want)
    assert zero_one_error(y_win, logits, groups) == pytest.approx(0.25)


def test_auroc_skips_single_class_labels():
    y = (rng.random((150, 6)) < 0.3).astype(float)
    y[:, 2] = 0  # no positive: AUROC undefined, skipped
    scores = rng.random((150, 6)) + 0.5 * y
    want = 1 - np.mean([roc_auc_score(y[:, k], scores[:, k]) for k in range(6) if k != 2])
    assert one_minus_mean_auroc(y, scores) == pytest.approx(want)
    assert np.isnan(one_minus_mean_auroc(np.zeros((5, 2)), np.ones((5, 2))))


def test_relative_l2_is_mean_of_per_sample_ratios():
    y = rng.standard_normal((10, 8, 8))
    pred = y + 0.1 * rng.standard_normal((10, 8, 8))
    want = np.mean([np.linalg.norm(pred[i] - y[i]) / np.linalg.norm(y[i]) for i in range(10)])
    assert relative_l2(y, pred) == pytest.approx(want)
    assert relative_l2(y, y) == 0


def test_compute_metric_rejects_unknown_and_mismatched():
    with pytest.raises(KeyError, match="unknown metric"):
        compute_metric("accuracy", np.zeros(3), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="3 targets but 2 outputs"):
        compute_metric("error", np.zeros(3, int), np.zeros((2, 2)))
