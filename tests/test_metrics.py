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


def test_orca_chunks_are_whole_loader_batches_of_at_least_eval_batch_size():
    from orca_ray.metrics import orca_chunks

    assert orca_chunks(2500, 16) == [slice(0, 1008), slice(1008, 2016), slice(2016, 2500)]
    assert orca_chunks(2500, 4) == [slice(0, 1000), slice(1000, 2000), slice(2000, 2500)]
    assert orca_chunks(100, 4) == [slice(0, 100)]  # Darcy's test set: one chunk
    with pytest.raises(ValueError, match="must be >= 1"):
        orca_chunks(0, 4)


def test_chunked_metric_is_the_mean_of_per_chunk_scores():
    """ORCA's evaluate(): per chunk 1 − accuracy, 1 − macro F1 per window (no vote), 1 − nanmean of per-label
    AUROC (labels with one class in the chunk skipped), mean relative L2; then the mean over chunks."""
    from orca_ray.metrics import chunked_metric, orca_chunks

    chunks = orca_chunks(2100, 32)  # 1024, 1024, 52
    y = rng.integers(0, 4, 2100)
    logits = rng.standard_normal((2100, 4)) + np.eye(4)[y]
    f1 = [1 - f1_score(y[c], logits[c].argmax(1), average="macro", zero_division=0) for c in chunks]
    assert chunked_metric("1-macro-f1", y, logits, chunks) == pytest.approx(np.mean(f1))
    err = [1 - accuracy_score(y[c], logits[c].argmax(1)) for c in chunks]
    assert chunked_metric("error", y, logits, chunks) == pytest.approx(np.mean(err))
    groups = np.arange(2100) // 7  # whole-split metric votes per recording; the chunked one does not
    assert chunked_metric("1-macro-f1", y, logits, chunks) != pytest.approx(
        compute_metric("1-macro-f1", y, logits, groups)
    )

    yl = (rng.random((2100, 3)) < 0.2).astype(float)
    yl[2048:, 1] = 0  # label 1 has no positive in the last chunk: skipped there only
    scores = rng.random((2100, 3)) + 0.3 * yl
    per_chunk = [
        1
        - np.mean(
            [roc_auc_score(yl[c, k], scores[c, k]) for k in range(3) if 0 < yl[c, k].sum() < len(yl[c])]
        )
        for c in chunks
    ]
    assert chunked_metric("1-auroc", yl, scores, chunks) == pytest.approx(np.mean(per_chunk))
