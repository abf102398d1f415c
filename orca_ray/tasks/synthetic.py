"""Seeded synthetic stand-ins with each NAS-Bench-360 task's sample shape, label type, loss and metric.

They exist for fast tests and smoke runs of the paper preset's code paths; every one carries a learnable
signal (class templates, planted motifs, a smooth solution operator) so training can be seen to work.
`n_train` / `n_eval` (options) set the sizes; the seed fixes everything.

    synthetic-cifar100   3×32×32, 100 classes          synthetic-satellite  1×46, 24 classes
    synthetic-ninapro    1×16×52, 18 classes           synthetic-deepsea    4×1000 one-hot, 36 labels
    synthetic-darcy      3×85×85 → 85×85 regression    synthetic-ecg        1×1000 windows of recordings, 4
"""

from __future__ import annotations

import numpy as np

from . import register_task
from .base import Split, Task, UnitGaussianNormalizer, carve_validation


def _smooth(a: np.ndarray, axes: tuple[int, ...], width: int = 5) -> np.ndarray:
    from scipy.ndimage import uniform_filter

    size = [1] * a.ndim
    for ax in axes:
        size[ax] = width
    return uniform_filter(a, size=size, mode="wrap")


def _templates(rng, num_classes: int, shape: tuple[int, ...]) -> np.ndarray:
    t = _smooth(rng.standard_normal((num_classes, *shape)), axes=tuple(range(2, 1 + len(shape))))
    return t / t.reshape(num_classes, -1).std(1).reshape(-1, *[1] * len(shape))


def _classification(
    name, modality, shape, num_classes, *, seed, val_fraction, n_train, n_eval, noise=1.0
) -> Task:
    rng = np.random.default_rng(seed)
    templates = _templates(rng, num_classes, shape)

    def draw(n):
        y = np.concatenate([np.arange(num_classes), rng.integers(0, num_classes, max(0, n - num_classes))])[
            :n
        ]
        x = templates[y] + noise * rng.standard_normal((n, *shape))
        return Split(x.astype(np.float32), y.astype(np.int64))

    train, val = carve_validation(draw(n_train), val_fraction, seed)
    return Task(
        name=name,
        modality=modality,
        kind="classification",
        input_shape=shape,
        num_outputs=num_classes,
        train=train,
        val=val,
        test=draw(n_eval),
        source=f"synthetic generator (seed={seed})",
    )


def _register_classification(name, modality, shape, num_classes, n_train):
    @register_task(
        name, modality=modality, description=f"synthetic, {'x'.join(map(str, shape))}, {num_classes} classes"
    )
    def factory(
        data_root=None,
        seed: int = 0,
        val_fraction: float = 0.1,
        n_train: int = n_train,
        n_eval: int = 128,
        noise: float = 1.0,
    ) -> Task:
        return _classification(
            name,
            modality,
            shape,
            num_classes,
            seed=seed,
            val_fraction=val_fraction,
            n_train=n_train,
            n_eval=n_eval,
            noise=noise,
        )

    return factory


_register_classification("synthetic-cifar100", "2d", (3, 32, 32), 100, n_train=600)
_register_classification("synthetic-ninapro", "2d", (1, 16, 52), 18, n_train=256)
_register_classification("synthetic-satellite", "1d", (1, 46), 24, n_train=256)


@register_task(
    "synthetic-deepsea", modality="1d", description="synthetic, 4x1000 one-hot DNA, 36 labels (motifs)"
)
def synthetic_deepsea(
    data_root=None,
    seed: int = 0,
    val_fraction: float = 0.1,
    n_train: int = 256,
    n_eval: int = 128,
    num_labels: int = 36,
    motif_len: int = 8,
) -> Task:
    """A seeded stand-in for DeepSEA: 4x1000 one-hot sequences, 36 labels, BCE with pos_weight 4, 1-AUROC.

    Args:
        data_root: unused (generated).
        seed: seed of the data and the validation split.
        val_fraction: fraction of train held out for validation.
        n_train: training samples (validation is carved from them).
        n_eval: test samples.
        num_labels: labels (each plants its own motif).
        motif_len: motif length in bases.
    """
    rng = np.random.default_rng(seed)
    motifs = rng.integers(0, 4, (num_labels, motif_len))

    def draw(n):
        bases = rng.integers(0, 4, (n, 1000))
        y = (rng.random((n, num_labels)) < 0.15).astype(np.float32)
        for i, k in zip(*np.nonzero(y)):  # each positive label plants its motif somewhere
            start = rng.integers(0, 1000 - motif_len)
            bases[i, start : start + motif_len] = motifs[k]
        x = np.eye(4, dtype=np.float32)[bases].transpose(
            0, 2, 1
        )  # (N, 4, 1000) as DeepSEA after transposition
        return Split(np.ascontiguousarray(x), y)

    train, val = carve_validation(draw(n_train), val_fraction, seed, stratify=False)
    return Task(
        name="synthetic-deepsea",
        modality="1d",
        kind="multilabel",
        input_shape=(4, 1000),
        num_outputs=num_labels,
        train=train,
        val=val,
        test=draw(n_eval),
        pos_weight=4.0,
        source=f"synthetic generator (seed={seed})",
    )


@register_task(
    "synthetic-darcy", modality="2d", description="synthetic, 3x85x85 coefficient+grid -> 85x85 solution"
)
def synthetic_darcy(
    data_root=None,
    seed: int = 0,
    val_fraction: float = 0.1,
    n_train: int = 64,
    n_eval: int = 16,
    size: int = 85,
) -> Task:
    """A seeded stand-in for Darcy Flow: 3x85x85 inputs (field, grid, grid) → 85x85 field, relative L2.

    Args:
        data_root: unused (generated).
        seed: seed of the data and the validation split.
        val_fraction: fraction of train held out for validation.
        n_train: training samples (validation is carved from them).
        n_eval: test samples.
    """
    rng = np.random.default_rng(seed)
    grid = np.linspace(0, 1, size, dtype=np.float32)
    gx, gy = np.meshgrid(grid, grid)  # 'xy' indexing, channel order as the real Darcy loader (and ORCA)

    def draw(n):
        # piecewise-constant coefficient (thresholded smooth field, as Darcy's) and a smooth response to it
        field = _smooth(rng.standard_normal((n, size, size)), axes=(1, 2), width=15)
        coeff = np.where(field > 0, 12.0, 3.0).astype(np.float32)
        sol = _smooth(1.0 / coeff, axes=(1, 2), width=9) * (gx * (1 - gx) * gy * (1 - gy))[None]
        return coeff, sol.astype(np.float32)

    c_tr, s_tr = draw(n_train)
    c_te, s_te = draw(n_eval)
    x_norm = UnitGaussianNormalizer.fit(c_tr)
    y_norm = UnitGaussianNormalizer.fit(s_tr)

    def split(c, s):
        x = np.stack([x_norm.encode(c), np.broadcast_to(gx, c.shape), np.broadcast_to(gy, c.shape)], axis=1)
        return Split(x.astype(np.float32), y_norm.encode(s))

    train, val = carve_validation(split(c_tr, s_tr), val_fraction, seed, stratify=False)
    return Task(
        name="synthetic-darcy",
        modality="2d",
        kind="regression",
        input_shape=(3, size, size),
        num_outputs=1,
        output_shape=(size, size),
        train=train,
        val=val,
        test=split(c_te, s_te),
        y_normalizer=y_norm,
        source=f"synthetic generator (seed={seed})",
    )


@register_task(
    "synthetic-ecg", modality="1d", description="synthetic, 1x1000 windows of recordings, 4 classes, vote"
)
def synthetic_ecg(
    data_root=None,
    seed: int = 0,
    val_fraction: float = 0.1,
    n_recordings: int = 48,
    n_eval_recordings: int = 16,
    windows_per_recording: int = 4,
) -> Task:
    """A seeded stand-in for ECG: 1x1000 windows cut from recordings, 4 classes, 1-macro-F1 voted per recording.

    Args:
        data_root: unused (generated).
        seed: seed of the data and the validation split.
        val_fraction: fraction of train held out for validation.
        n_recordings: training recordings (validation recordings are carved from them).
        n_eval_recordings: test recordings.
        windows_per_recording: windows cut from each recording.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(1000 + 500 * (windows_per_recording - 1)) / 300.0
    rates = np.array([1.0, 1.6, 0.7, 0.0])  # beat frequency per class; class 3 ("noisy") has no rhythm

    def draw(n_rec, first_id):
        xs, ys, gs = [], [], []
        for r in range(n_rec):
            c = r % 4
            signal = np.sin(
                2 * np.pi * rates[c] * t + rng.uniform(0, 6.28)
            ) ** 15 + 0.3 * rng.standard_normal(len(t))
            signal = (signal - signal.mean()) / (
                signal.std() + 1e-8
            )  # per-recording z-score, as NAS-Bench-360
            for w in range(windows_per_recording):
                xs.append(signal[500 * w : 500 * w + 1000])
                ys.append(c)
                gs.append(first_id + r)
        return Split(np.asarray(xs, np.float32)[:, None], np.asarray(ys, np.int64), np.asarray(gs, np.int64))

    train, val = carve_validation(draw(n_recordings, 0), val_fraction, seed)  # whole recordings move
    return Task(
        name="synthetic-ecg",
        modality="1d",
        kind="classification",
        input_shape=(1, 1000),
        num_outputs=4,
        train=train,
        val=val,
        test=draw(n_eval_recordings, n_recordings),
        metric="1-macro-f1",
        source=f"synthetic generator (seed={seed})",
        class_names=("N", "A", "O", "~"),
    )
