"""Class labels in whatever convention a file uses, mapped to 0..K-1 with their original names kept.

    coding = LabelCoding.fit(y_train, where="/data/x.npz: field y_train")
    y_tr = coding.encode(y_train, where="/data/x.npz: field y_train")
    y_te = coding.encode(y_test, where="/data/x.npz: field y_test")   # an unseen label is a TaskDataError
    coding.names                                                       # ("1", "2", ...) or ("cat", "dog")

Integers of any range (1-based, -1/1, gaps), strings, booleans and integer-valued floats ("3.0", as CSV exports
write them) are class labels; floats with a fractional part are regression targets (`is_class_labels`).
Classes are ordered numerically when every label is a number, else as text, so index k always means the
k-th smallest original label.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import TaskDataError


def is_class_labels(y: np.ndarray) -> bool:
    """Whether a 1-D label array holds classes rather than regression targets.

    Args:
        y: labels of shape (N,): integers, booleans, strings, or floats.

    Returns:
        True for integers, booleans, strings and floats whose finite values are all whole numbers.
    """
    y = np.asarray(y)
    if y.ndim != 1:
        return False
    if y.dtype.kind in "iub" or y.dtype.kind in "USO":
        return True
    if y.dtype.kind == "f":
        return bool(np.isfinite(y).all() and np.array_equal(y, np.round(y)))
    return False


def _label_name(v) -> str:
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, float | np.floating) and float(v).is_integer():
        return str(int(v))
    if isinstance(v, np.generic):
        return str(v.item())
    return str(v)


def _as_names(y: np.ndarray, where: str) -> np.ndarray:
    """Labels as an array of canonical strings ("3" for 3, 3.0 and "3"; text stripped)."""
    y = np.asarray(y)
    if y.dtype.kind == "f":
        if not np.isfinite(y).all():
            bad = int(np.flatnonzero(~np.isfinite(y))[0])
            raise TaskDataError(
                f"{where}: label at row {bad} is {y[bad]}; every sample needs a label (drop unlabelled rows)"
            )
        if not np.array_equal(y, np.round(y)):
            raise TaskDataError(
                f"{where}: labels have fractional parts (e.g. {y[~np.equal(y, np.round(y))][0]}), so they "
                f"are regression targets, not classes"
            )
        return np.array([str(int(v)) for v in y.astype(np.int64)], dtype=object)
    if y.dtype.kind in "iub":
        return np.array([str(int(v)) for v in y], dtype=object)
    names = np.array([_label_name(v).strip() for v in y], dtype=object)
    empty = np.flatnonzero(names == "")
    if len(empty):
        raise TaskDataError(f"{where}: label at row {int(empty[0])} is empty; every sample needs a label")
    return names


def _sort_key(names: list[str]):
    try:
        numbers = {n: float(n) for n in names}
    except ValueError:
        return None
    return lambda n: (numbers[n], n)


@dataclass(frozen=True)
class LabelCoding:
    """The classes of a task: original label names in index order (index k ↔ `names[k]`).

    Args:
        names: the original labels as text, one per class, in the order of their indices.
    """

    names: tuple[str, ...]

    @classmethod
    def fit(cls, y_train: np.ndarray, *, where: str, declared: list[str] | None = None) -> LabelCoding:
        """The classes present in the training labels.

        Args:
            y_train: training labels (N,), any convention `is_class_labels` accepts.
            where: "file: field" prefix for errors.
            declared: the file's own class list (e.g. a .ts file's @classLabel), kept in its order; every
                training label must be in it.
        """
        names = _as_names(y_train, where)
        present = set(names.tolist())
        if declared is not None:
            declared = [_label_name(d).strip() for d in declared]
            unknown = sorted(present - set(declared))
            if unknown:
                raise TaskDataError(
                    f"{where}: label {unknown[0]!r} is not among the declared classes {declared}"
                )
            ordered = [d for d in declared if d in present]
        else:
            key = _sort_key(sorted(present))
            ordered = sorted(present, key=key) if key else sorted(present)
        if len(ordered) < 2:
            raise TaskDataError(
                f"{where}: only one class ({ordered[0]!r}) in the training labels; classification needs two or more"
            )
        return cls(tuple(ordered))

    @property
    def num_classes(self) -> int:
        """K, the number of classes."""
        return len(self.names)

    def encode(self, y: np.ndarray, *, where: str) -> np.ndarray:
        """Class indices (int64) of `y`; a label never seen in training raises TaskDataError naming it.

        Args:
            y: labels in the same convention as the training labels.
            where: "file: field" prefix for errors.
        """
        names = _as_names(y, where)
        index = {n: i for i, n in enumerate(self.names)}
        unseen = [n for n in dict.fromkeys(names.tolist()) if n not in index]
        if unseen:
            shown = ", ".join(self.names[:20]) + (", ..." if len(self.names) > 20 else "")
            raise TaskDataError(
                f"{where}: label {unseen[0]!r} never occurs in training (training classes: {shown}). Fix: "
                f"drop those samples or add training samples of that class"
            )
        return np.fromiter((index[n] for n in names), dtype=np.int64, count=len(names))
