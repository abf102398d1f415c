"""Your own arrays as a task: `load_task("npz:/path/data.npz")`.

The file holds x_train, y_train, x_test, y_test (and optionally x_val, y_val; else val is carved from train).
x: (N, C, L) → 1D, (N, C, H, W) → 2D (channels-last (N, H, W, C) with C ∈ {1, 3, 4} is transposed), (N, L) → 1D
with one channel. y: class labels (N,) or (N, 1), or one-hot rows (N, K), in any convention
(integers of any range, strings, integer-valued floats; see tasks.labels) → classification, remapped to
0..K-1 with the original labels kept as `class_names`; 0/1 floats (N, K) → multilabel; floats shaped like a
grid (N, L) / (N, H, W) → dense regression (normalised per element with training statistics; the metric is
computed after de-normalising).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..untrusted import UntrustedDataError, npz_shape, read_npz
from . import register_task
from .base import Split, Task, TaskDataError, UnitGaussianNormalizer, carve_validation
from .labels import LabelCoding, is_class_labels

REQUIRED = ("x_train", "y_train", "x_test", "y_test")


@register_task(
    "npz", modality="any", description="your arrays: npz:/path/file.npz with x_train/y_train/x_test/y_test"
)
def load_npz_task(
    path: str, data_root=None, seed: int = 0, val_fraction: float = 0.1, kind: str | None = None
) -> Task:
    """A task from your own arrays in one .npz: x_train, y_train, x_test, y_test (x_val, y_val optional).

    x is (N, C, L) for sequences or (N, C, H, W) for images; the kind (classification, multilabel, regression) is
    inferred from y unless given. Loaded with `allow_pickle=False`.

    Args:
        path: the .npz file.
        data_root: unused (one factory signature).
        seed: seed of the validation split when the file has none.
        val_fraction: fraction of train held out for validation when the file has no x_val/y_val.
        kind: "classification", "multilabel" or "regression" to override the inference.
    """
    p = _existing(path)
    try:  # headers checked (plain dtypes, declared sizes, one name each) before any array is read
        arrays = read_npz(p)
    except UntrustedDataError as e:
        raise TaskDataError(str(e)) from None
    missing = [k for k in REQUIRED if k not in arrays]
    if missing:
        raise TaskDataError(
            f"{p}: missing field(s) {missing}; found {sorted(arrays)}. "
            f"The file needs {', '.join(REQUIRED)} (x_val/y_val optional)"
        )
    if ("x_val" in arrays) != ("y_val" in arrays):
        raise TaskDataError(f"{p}: give both x_val and y_val, or neither")

    def x_of(key):
        x = arrays[key]
        if x.dtype.kind not in "biuf":
            raise TaskDataError(
                f"{p}: field {key}: dtype {x.dtype}; inputs must be real numbers. Fix: store them as floats"
                + (" (e.g. magnitude and phase as two channels)" if x.dtype.kind == "c" else "")
            )
        if len(x) == 0:
            raise TaskDataError(f"{p}: field {key} has no samples (shape {x.shape}); every split needs some")
        if x.ndim == 2:
            x = x[:, None, :]
        if x.ndim not in (3, 4):
            raise TaskDataError(
                f"{p}: field {key}: expected (N, C, L), (N, C, H, W) or (N, L), got {x.shape}"
            )
        if x.ndim == 4 and x.shape[3] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
            x = x.transpose(0, 3, 1, 2)  # channels-last images (N, H, W, C), as PIL and TensorFlow store them
        if 0 in x.shape:
            raise TaskDataError(
                f"{p}: field {key} has an empty axis (shape {x.shape}); every sample needs values"
            )
        return x.astype(np.float32, copy=False)

    splits = {s: (x_of(f"x_{s}"), arrays[f"y_{s}"]) for s in ("train", "val", "test") if f"x_{s}" in arrays}
    for s, (x, y) in splits.items():
        if len(x) != len(y):
            raise TaskDataError(
                f"{p}: field y_{s} has {len(y)} rows but x_{s} has {len(x)}; they must pair up"
            )
    ys = {s: y for s, (_, y) in splits.items()}
    if all(y.ndim == 2 and y.shape[1] == 1 for y in ys.values()):  # a column of labels (N, 1)
        splits = {s: (x, y[:, 0]) for s, (x, y) in splits.items()}
    elif kind is None and _one_hot(ys["train"]) and all(_one_hot(y) for y in ys.values()):
        splits = {s: (x, y.argmax(1)) for s, (x, y) in splits.items()}  # one-hot rows: class indices
    x_tr, y_tr = splits["train"]
    kind = kind or _infer_kind(y_tr, x_tr)
    modality = "1d" if x_tr.ndim == 3 else "2d"
    normalizer, output_shape, class_names = None, None, None
    if kind == "classification":
        for s, (_, y) in splits.items():
            if y.ndim != 1:
                raise TaskDataError(
                    f"{p}: field y_{s}: classification labels must have shape (N,), got {tuple(y.shape)}"
                )
        coding = LabelCoding.fit(y_tr, where=f"{p}: field y_train")
        splits = {s: (x, coding.encode(y, where=f"{p}: field y_{s}")) for s, (x, y) in splits.items()}
        num_outputs, class_names = coding.num_classes, coding.names
    elif kind == "multilabel":
        num_outputs = y_tr.shape[1]
        splits = {s: (x, y.astype(np.float32)) for s, (x, y) in splits.items()}
    elif kind == "regression":
        if y_tr.ndim == 1:  # one real-valued target per sample: a one-point output
            splits = {s: (x, y.reshape(-1, 1)) for s, (x, y) in splits.items()}
            y_tr = splits["train"][1]
        output_shape, num_outputs = y_tr.shape[1:], 1
        normalizer = UnitGaussianNormalizer.fit(y_tr)
        splits = {s: (x, normalizer.encode(y.astype(np.float32))) for s, (x, y) in splits.items()}
    else:
        raise TaskDataError(f"{p}: unknown kind {kind!r}; use classification, multilabel or regression")
    train = Split(*splits["train"])
    if "val" in splits:
        val = Split(*splits["val"])
    else:
        train, val = carve_validation(
            train, val_fraction, seed, stratify=kind == "classification", source=str(p)
        )
    return Task(
        name=f"npz:{p.name}",
        modality=modality,
        kind=kind,
        input_shape=x_tr.shape[1:],
        num_outputs=num_outputs,
        train=train,
        val=val,
        test=Split(*splits["test"]),
        source=str(p),
        output_shape=output_shape,
        y_normalizer=normalizer,
        class_names=class_names,
        files=(str(p),),
    )


def npz_modality(path: str | Path) -> str:
    """ "1d" or "2d" from the shape of x_train in an .npz file's header (the array is not read).

    Args:
        path: the .npz file.
    """
    p = _existing(path)
    try:
        shape = npz_shape(p, "x_train")
    except UntrustedDataError as e:
        raise TaskDataError(str(e)) from None
    return "2d" if len(shape) == 4 else "1d"


def _one_hot(y: np.ndarray) -> bool:
    """Rows of 0/1 with exactly one 1 each (Keras-style class labels), as opposed to multilabel targets."""
    if y.ndim != 2 or y.shape[1] < 2 or len(y) == 0:
        return False
    head = np.asarray(y[:100_000])
    return bool(np.isin(head, (0, 1)).all() and (head.sum(1) == 1).all())


def _existing(path: str | Path) -> Path:
    p = Path(path).expanduser()
    if not p.is_file():
        raise TaskDataError(f"{p}: no such file. Give 'npz:/path/file.npz' holding {', '.join(REQUIRED)}")
    return p


def _infer_kind(y: np.ndarray, x: np.ndarray) -> str:
    if is_class_labels(y):
        return "classification"
    if y.ndim == 2 and y.shape[1:] != x.shape[2:] and np.isin(y[:1000], (0, 1)).all():
        return "multilabel"
    return "regression"
