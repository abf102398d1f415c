"""Task metrics (lower is better for all of them), over a whole split or in ORCA's chunked form.

ORCA's `evaluate` (src/main.py) gathers loader batches until it holds at least `eval_batch_size` (1,000)
samples, scores that chunk, and averages the chunk scores. That is not the metric (AUROC and F1 are not
averages of per-chunk values), so the default here (`compute_metric`) scores all predictions of a split at
once; `chunked_metric` over `orca_chunks` is ORCA's form (protocol "orca").
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import f1_score, roc_auc_score


def zero_one_error(y_true: np.ndarray, logits: np.ndarray, groups: np.ndarray | None = None) -> float:
    """Fraction misclassified. With `groups`, one vote per group (majority of window predictions).

    Args:
        y_true: (N,) class indices.
        logits: (N, K) class scores.
        groups: optional group id per row (ECG recordings): one majority vote per group.
    """
    pred = np.asarray(logits).argmax(-1)
    y_true, pred = _vote(np.asarray(y_true), pred, groups)
    return float(np.mean(pred != y_true))


def one_minus_macro_f1(y_true: np.ndarray, logits: np.ndarray, groups: np.ndarray | None = None) -> float:
    """1 − macro-averaged F1 over the classes present in y_true or the predictions. With `groups`
    (ECG recordings), each group is classified by the majority vote of its windows, as NAS-Bench-360 does.

    Args:
        y_true: (N,) class indices.
        logits: (N, K) class scores.
        groups: optional group id per row (ECG recordings): one majority vote per group.
    """
    pred = np.asarray(logits).argmax(-1)
    y_true, pred = _vote(np.asarray(y_true), pred, groups)
    return float(1.0 - f1_score(y_true, pred, average="macro", zero_division=0))


def one_minus_mean_auroc(y_true: np.ndarray, scores: np.ndarray, groups: np.ndarray | None = None) -> float:
    """1 − mean over labels of the ROC AUC (multilabel, DeepSEA). A label whose targets are all 0 or all 1 in
    this split has no AUROC and is skipped; if every label is like that the metric is undefined (NaN).

    Args:
        y_true: (N, K) 0/1 targets.
        scores: (N, K) scores (probabilities or logits).
        groups: unused (one signature for every metric).
    """
    y_true = np.asarray(y_true)
    scores = np.asarray(scores, dtype=np.float64)
    aucs = [
        roc_auc_score(y_true[:, k], scores[:, k])
        for k in range(y_true.shape[1])
        if 0 < y_true[:, k].sum() < len(y_true)
    ]
    return float(1.0 - np.mean(aucs)) if aucs else float("nan")


def one_minus_roc_auc(y_true: np.ndarray, logits: np.ndarray, groups: np.ndarray | None = None) -> float:
    """1 − ROC AUC of the softmax of class logits (ORCA's tabular metric, `auc_metric`): two classes, the
    positive class's probability; more, the one-vs-one macro average. NaN when the split holds one class.

    Args:
        y_true: (N,) class indices.
        logits: (N, K) class scores.
        groups: unused (one signature for every metric).
    """
    y_true = np.asarray(y_true)
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    prob = np.exp(z)
    prob /= prob.sum(axis=1, keepdims=True)
    present = np.unique(y_true)
    if len(present) < 2:
        return float("nan")
    if prob.shape[1] == 2:
        return float(1.0 - roc_auc_score(y_true, prob[:, 1]))
    if len(present) < prob.shape[1]:
        # a split missing a class: one-vs-one over the classes it has, probabilities renormalised over them
        prob = prob[:, present] / prob[:, present].sum(axis=1, keepdims=True)
        y_true = np.searchsorted(present, y_true)
        if len(present) == 2:
            return float(1.0 - roc_auc_score(y_true, prob[:, 1]))
    return float(1.0 - roc_auc_score(y_true, prob, multi_class="ovo", average="macro"))


def relative_l2(y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray | None = None) -> float:
    """Mean over samples of ‖pred − true‖₂ / ‖true‖₂ (Darcy Flow, FNO's LpLoss with size_average).

    Args:
        y_true: (N, ...) targets, de-normalised.
        y_pred: (N, ...) predictions, de-normalised.
        groups: unused (one signature for every metric).
    """
    y_true = np.asarray(y_true, dtype=np.float64).reshape(len(y_true), -1)
    y_pred = np.asarray(y_pred, dtype=np.float64).reshape(len(y_pred), -1)
    num = np.linalg.norm(y_pred - y_true, axis=1)
    den = np.linalg.norm(y_true, axis=1)
    return float(np.mean(num / np.maximum(den, 1e-12)))


METRICS = {
    "error": zero_one_error,
    "1-macro-f1": one_minus_macro_f1,
    "1-auroc": one_minus_mean_auroc,
    "1-roc-auc": one_minus_roc_auc,
    "rel-l2": relative_l2,
}


def compute_metric(
    name: str, y_true: np.ndarray, outputs: np.ndarray, groups: np.ndarray | None = None
) -> float:
    """The metric `name` of a whole split (lower is better).

    Args:
        name: "error", "1-macro-f1", "1-auroc", "1-roc-auc" or "rel-l2" (a Task's `metric`).
        y_true: the split's targets.
        outputs: logits (classification), scores (multilabel) or predictions (regression, de-normalised).
        groups: optional group id per row (ECG recordings: one vote per recording).
    """
    if name not in METRICS:
        raise KeyError(f"unknown metric {name!r}; known: {sorted(METRICS)}")
    if len(y_true) != len(outputs):
        raise ValueError(f"metric {name}: {len(y_true)} targets but {len(outputs)} outputs")
    return METRICS[name](y_true, outputs, groups)


def orca_chunks(n: int, batch_size: int, eval_batch_size: int = 1000) -> list[slice]:
    """The chunks ORCA's `evaluate` scores: loader batches of `batch_size` are gathered until a chunk holds at
    least `eval_batch_size` samples (so a chunk is the smallest multiple of `batch_size` >= eval_batch_size),
    the rest forms the last chunk.

    Args:
        n: samples in the split.
        batch_size: the evaluation loader's batch size (ORCA: the training batch size).
        eval_batch_size: ORCA's `eval_batch_size` (1,000 in every config).
    """
    if n < 1 or batch_size < 1 or eval_batch_size < 1:
        raise ValueError(
            f"n, batch_size and eval_batch_size must be >= 1, got {n}, {batch_size}, {eval_batch_size}"
        )
    size = -(-eval_batch_size // batch_size) * batch_size
    return [slice(start, min(start + size, n)) for start in range(0, n, size)]


def chunked_metric(name: str, y_true: np.ndarray, outputs: np.ndarray, chunks: list[slice]) -> float:
    """ORCA's chunked score: the mean over `chunks` of the metric on each chunk alone (per window, no vote;
    a chunk's AUROC skips labels with one class in it, as ORCA's nanmean).

    Args:
        name: a metric of `METRICS`.
        y_true, outputs: as `compute_metric`, in the order ORCA's loader yields them.
        chunks: from `orca_chunks`.
    """
    if not chunks:
        raise ValueError(f"metric {name}: no chunks to score")
    return float(np.mean([compute_metric(name, y_true[c], outputs[c]) for c in chunks]))


def _vote(y_true: np.ndarray, pred: np.ndarray, groups: np.ndarray | None):
    if groups is None:
        return y_true, pred
    uniq, inv = np.unique(groups, return_inverse=True)
    n_cls = int(max(y_true.max(), pred.max())) + 1
    votes = np.zeros((len(uniq), n_cls), dtype=np.int64)
    np.add.at(votes, (inv, pred), 1)
    group_true = np.zeros(len(uniq), dtype=y_true.dtype)
    group_true[inv] = y_true  # every window of a recording carries the recording's label
    return group_true, votes.argmax(1)  # ties go to the lowest class index
