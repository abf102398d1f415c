"""The target task: data splits, shapes, loss and metric, plus the checks every loader runs.

A `Task` holds numpy arrays (possibly read-only memory maps, never copied needlessly) for train / val / test.
Loaders build one through `Task(...)`, whose `__post_init__` validates everything and raises `TaskDataError`
naming the file and the field, so a bad file fails at load time rather than three hours into a sweep.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
import torch

from ..augment import CropFlip

log = logging.getLogger(__name__)

Modality = Literal["1d", "2d"]
Kind = Literal["classification", "multilabel", "regression"]

# training losses (refine.TaskLoss); "focal" is ORCA's NinaPro FocalLoss(alpha 1, gamma 0)
# "weighted_cross_entropy" is ORCA's tabular loss: each class weighted 1 / its share of the training labels
LOSSES = ("cross_entropy", "weighted_cross_entropy", "focal", "bce", "rel_l2")
# how a task's data is split: "honest" = the benchmark's validation split, model selection never on test;
# "orca" = ORCA's own composition (valid_split=False: the validation data joins train, "val" is the test split)
PROTOCOLS = ("honest", "orca")
METRIC_FOR_KIND = {"classification": "error", "multilabel": "1-auroc", "regression": "rel-l2"}


class TaskDataError(ValueError):
    """Bad or missing task data. The message names the file (or source) and the field, and says what to do."""


@dataclass(frozen=True)
class UnitGaussianNormalizer:
    """Per-element (e.g. per-pixel) mean/std fitted on the training set, as in FNO/ORCA's Darcy pipeline."""

    mean: np.ndarray
    std: np.ndarray
    eps: float = 1e-5

    @classmethod
    def fit(cls, x: np.ndarray) -> UnitGaussianNormalizer:
        """Per-element mean and unbiased std over the first axis (as ORCA's torch.std).

        Args:
            x: (N, ...) training values.
        """
        x64 = np.asarray(x, dtype=np.float64)
        # unbiased std, as ORCA's torch.std
        return cls(mean=x64.mean(0).astype(np.float32), std=x64.std(0, ddof=1).astype(np.float32))

    def encode(self, x: np.ndarray) -> np.ndarray:
        """(x − mean) / (std + eps), float32.

        Args:
            x: values shaped like one fitted sample, batch-first.
        """
        return ((x - self.mean) / (self.std + self.eps)).astype(np.float32)

    def decode(self, x):
        """Inverse of `encode`; accepts numpy arrays or torch tensors (any device), batch-first.

        Args:
            x: encoded values.
        """
        if isinstance(x, torch.Tensor):
            mean = torch.as_tensor(self.mean, device=x.device, dtype=x.dtype)
            std = torch.as_tensor(self.std, device=x.device, dtype=x.dtype)
            return x * (std + self.eps) + mean
        return (x * (self.std + self.eps) + self.mean).astype(np.float32)


@dataclass(frozen=True)
class Split:
    """One split. x: (N, C, L) or (N, C, H, W) float32. y: int64 (N,) for classification, float32 (N, K) in
    {0, 1} for multilabel, float32 (N, *output_shape) for dense regression. groups: optional int64 (N,) naming
    the unit a metric aggregates over (ECG: the recording each window came from)."""

    x: np.ndarray
    y: np.ndarray
    groups: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, idx: np.ndarray) -> Split:
        """The rows `idx` (sorted, so memory-mapped reads stay sequential).

        Args:
            idx: row indices.
        """
        idx = np.sort(np.asarray(idx))  # sorted indices keep memory-mapped reads sequential
        return Split(self.x[idx], self.y[idx], None if self.groups is None else self.groups[idx])


@dataclass(frozen=True)
class Task:
    """A target task. `input_shape` is one sample's (C, L) or (C, H, W). `num_outputs` is the number of
    classes (classification), labels (multilabel) or output channels (dense). `output_shape` is the spatial
    grid of a dense target ((H, W) or (L,)), None for point tasks. `source` says where the data came from
    (a path, a package, or a generator with its seed) and prefixes every error. `augment` is applied to
    every training batch (ORCA's CIFAR-100 crop/flip); `shuffle_eval` says the reference evaluates this task
    in a fresh random order every epoch (ORCA's DeepSEA test loader), which only chunked metrics notice.
    Under ORCA's composition (`orca_composition`) `val` is the very same Split object as `test`."""

    name: str
    modality: Modality
    kind: Kind
    input_shape: tuple[int, ...]
    num_outputs: int
    train: Split
    val: Split
    test: Split
    source: str
    output_shape: tuple[int, ...] | None = None
    metric: str = ""
    loss: str = ""
    pos_weight: float | None = None  # BCE positive-class weight (DeepSEA: 4)
    y_normalizer: UnitGaussianNormalizer | None = None  # dense regression targets are stored normalised
    class_names: tuple[str, ...] | None = None  # original label of each class index (e.g. "1".."24")
    notes: dict = field(default_factory=dict)
    files: tuple[str, ...] = ()  # local files the data was read from
    fingerprint: str = ""  # content hash of `files` (load_task sets it); keys embedder snapshots
    augment: CropFlip | None = None
    shuffle_eval: bool = False

    def __post_init__(self):
        if not self.metric:
            object.__setattr__(self, "metric", METRIC_FOR_KIND[self.kind])
        if not self.loss:
            loss = {"classification": "cross_entropy", "multilabel": "bce", "regression": "rel_l2"}[self.kind]
            object.__setattr__(self, "loss", loss)
        object.__setattr__(self, "input_shape", tuple(int(s) for s in self.input_shape))
        if self.output_shape is not None:
            object.__setattr__(self, "output_shape", tuple(int(s) for s in self.output_shape))
        self.validate()

    # ---- derived facts -------------------------------------------------------------------------------
    @property
    def dense(self) -> bool:
        """Whether the task predicts a grid (`output_shape`) rather than one output vector per sample."""
        return self.output_shape is not None

    def splits(self) -> dict[str, Split]:
        """{"train": ..., "val": ..., "test": ...}."""
        return {"train": self.train, "val": self.val, "test": self.test}

    def with_splits(self, **splits: Split) -> Task:
        """A copy with some splits replaced (validated again).

        Args:
            splits: train=, val=, test= replacements.
        """
        return replace(self, **splits)

    def describe(self) -> str:
        """One line: name, modality, kind, input shape, outputs, split sizes, source."""
        sizes = ", ".join(f"{k}={len(v)}" for k, v in self.splits().items())
        out = f"{self.num_outputs} {'classes' if self.kind == 'classification' else 'outputs'}"
        if self.dense:
            out += f" on grid {self.output_shape}"
        return f"{self.name} ({self.modality}, {self.kind}, x{self.input_shape}, {out}; {sizes}) from {self.source}"

    # ---- validation ----------------------------------------------------------------------------------
    def _fail(self, field_name: str, problem: str, fix: str = "") -> None:
        msg = f"{self.source}: task {self.name!r}, field {field_name}: {problem}"
        raise TaskDataError(msg + (f". Fix: {fix}" if fix else ""))

    def validate(self) -> None:
        """Check shapes, dtypes, finiteness and labels of every split; raises TaskDataError naming the field."""
        if self.modality not in ("1d", "2d"):
            self._fail("modality", f"must be '1d' or '2d', got {self.modality!r}")
        if self.kind not in METRIC_FOR_KIND:
            self._fail("kind", f"must be one of {list(METRIC_FOR_KIND)}, got {self.kind!r}")
        if self.loss not in LOSSES:
            self._fail("loss", f"must be one of {LOSSES}, got {self.loss!r}")
        want_rank = 2 if self.modality == "1d" else 3
        if len(self.input_shape) != want_rank:
            self._fail(
                "input_shape",
                f"a {self.modality} task needs (C, {'L' if want_rank == 2 else 'H, W'}), "
                f"got {self.input_shape}",
            )
        if self.num_outputs < 1 or (self.kind == "classification" and self.num_outputs < 2):
            self._fail("num_outputs", f"got {self.num_outputs}")
        if self.class_names is not None and len(self.class_names) != self.num_outputs:
            self._fail("class_names", f"{len(self.class_names)} names for {self.num_outputs} classes")
        if self.kind == "regression" and self.output_shape is None:
            self._fail("output_shape", "a regression task here is dense: give the output grid")
        for split_name, split in self.splits().items():
            self._validate_split(split_name, split)

    def _validate_split(self, name: str, split: Split) -> None:
        x, y = split.x, split.y
        if len(x) == 0:
            self._fail(f"{name}.x", "is empty", "check the file has samples for this split")
        if len(x) != len(y):
            self._fail(
                f"{name}.y", f"has {len(y)} rows but {name}.x has {len(x)}", "inputs and labels must pair up"
            )
        if tuple(x.shape[1:]) != self.input_shape:
            self._fail(
                f"{name}.x",
                f"sample shape {tuple(x.shape[1:])} != task input shape {self.input_shape} "
                f"(array shape {tuple(x.shape)}; expected (N, {', '.join(map(str, self.input_shape))}))",
            )
        if not np.issubdtype(x.dtype, np.floating):
            self._fail(f"{name}.x", f"dtype {x.dtype} is not floating point", "convert inputs to float32")
        _check_finite(self, f"{name}.x", x)
        if split.groups is not None and len(split.groups) != len(y):
            self._fail(f"{name}.groups", f"has {len(split.groups)} rows but {name}.y has {len(y)}")
        if self.kind == "classification":
            if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
                self._fail(
                    f"{name}.y",
                    f"classification labels must be integers of shape (N,), got {y.dtype} {tuple(y.shape)}",
                    "store class indices 0..K-1",
                )
            lo, hi = int(y.min()), int(y.max())
            if lo < 0 or hi >= self.num_outputs:
                self._fail(
                    f"{name}.y",
                    f"labels span [{lo}, {hi}] outside [0, {self.num_outputs - 1}]",
                    "map labels to 0..K-1 (e.g. Satellite stores 1..24)",
                )
            if name == "train":
                counts = np.bincount(y, minlength=self.num_outputs)
                empty = np.flatnonzero(counts == 0)
                if len(empty):
                    self._fail(
                        f"{name}.y",
                        f"class(es) {empty.tolist()[:10]} have no training sample",
                        "drop unused classes or lower num_outputs",
                    )
        elif self.kind == "multilabel":
            if y.shape[1:] != (self.num_outputs,):
                self._fail(
                    f"{name}.y", f"multilabel targets must be (N, {self.num_outputs}), got {tuple(y.shape)}"
                )
            if not np.isin(np.unique(y[: min(len(y), 100_000)]), (0, 1)).all():
                self._fail(f"{name}.y", "multilabel targets must be 0/1")
        else:
            want = (
                (self.num_outputs, *self.output_shape) if self.num_outputs > 1 else tuple(self.output_shape)
            )
            if tuple(y.shape[1:]) not in (want, tuple(self.output_shape)):
                self._fail(
                    f"{name}.y",
                    f"dense targets must be (N, {', '.join(map(str, want))}), got {tuple(y.shape)}",
                )
            _check_finite(self, f"{name}.y", y)


def _check_finite(task: Task, field_name: str, a: np.ndarray, chunk_bytes: int = 32 << 20) -> None:
    # scanned in ~32 MB blocks so a memory-mapped array is never copied whole into RAM
    if not np.issubdtype(a.dtype, np.floating):
        return
    chunk = max(1, chunk_bytes // max(1, a[:1].nbytes))
    for start in range(0, len(a), chunk):
        block = np.asarray(a[start : start + chunk])
        if not np.isfinite(block).all():
            bad = start + int(np.flatnonzero(~np.isfinite(block.reshape(len(block), -1)).all(1))[0])
            task._fail(field_name, f"contains NaN or inf (first at row {bad})", "clean or impute the data")


def carve_validation(
    train: Split, fraction: float, seed: int, stratify: bool = True, *, source: str = ""
) -> tuple[Split, Split]:
    """Split a seeded validation set off the training split (never select on test).

    Classification is stratified per class. When classes are too small for that (e.g. two samples per class
    at fraction 0.2 leaves no class a validation sample), a seeded unstratified carve of round(fraction · N)
    samples is taken instead and one line says so; either way every class keeps a training sample. When
    `groups` is set (ECG recordings) whole groups move, so no recording straddles train and val.

    Args:
        train: the training split to carve from.
        fraction: share of the samples (or groups) that go to validation, in (0, 1).
        seed: seeds the choice.
        stratify: carve per class (classification labels only).
        source: the data's file or name, for the messages.

    Returns:
        (train, val).
    """
    if not 0 < fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    n = len(train)
    where = f"{source}: " if source else ""
    if train.groups is not None:
        units = np.unique(train.groups)
        if len(units) < 2:
            raise TaskDataError(
                f"{where}field train.groups: one group only, so no validation group can be carved. "
                f"Fix: give a validation split"
            )
        n_val = min(len(units) - 1, max(1, round(fraction * len(units))))
        is_val = np.isin(train.groups, rng.choice(units, size=n_val, replace=False))
        return train.subset(np.flatnonzero(~is_val)), train.subset(np.flatnonzero(is_val))
    want = max(1, round(fraction * n))
    is_class = train.y.ndim == 1 and np.issubdtype(train.y.dtype, np.integer)
    is_val = np.zeros(n, dtype=bool)
    if stratify and is_class:
        for c in np.unique(train.y):
            idx = np.flatnonzero(train.y == c)
            k = min(len(idx) - 1, round(fraction * len(idx)))
            if k > 0:
                is_val[rng.choice(idx, size=k, replace=False)] = True
        got = int(is_val.sum())
        if got * 2 < want:  # stratifying would leave (nearly) no validation samples
            counts = np.bincount(train.y)
            small = int((counts[counts > 0] * fraction < 0.5).sum())
            is_val = _carve_keeping_classes(train.y, want, rng)
            log.warning(
                "%sa stratified validation carve gives %d of the %d samples wanted (%d of %d classes are too "
                "small for fraction %g); using a seeded unstratified carve of %d samples instead",
                where,
                got,
                want,
                small,
                int((counts > 0).sum()),
                fraction,
                int(is_val.sum()),
            )
    elif n >= 2:
        is_val[rng.choice(n, size=min(n - 1, want), replace=False)] = True
    if not is_val.any():
        why = (
            "every class has a single training sample, so any validation sample would leave a class untrained"
            if stratify and is_class
            else f"{n} training sample(s) are too few"
        )
        raise TaskDataError(
            f"{where}cannot carve a validation split from {n} training samples: {why}. Fix: give a validation "
            f"split (npz: x_val/y_val; imagefolder: a val/ folder) or add training samples"
        )
    return train.subset(np.flatnonzero(~is_val)), train.subset(np.flatnonzero(is_val))


def _carve_keeping_classes(y: np.ndarray, want: int, rng: np.random.Generator) -> np.ndarray:
    """`want` samples drawn uniformly (seeded) for validation, skipping any that would take a class's last
    training sample."""
    left = np.bincount(y).astype(np.int64)
    is_val = np.zeros(len(y), dtype=bool)
    taken = 0
    for i in rng.permutation(len(y)):
        if taken == want:
            break
        if left[y[i]] > 1:
            left[y[i]] -= 1
            is_val[i] = True
            taken += 1
    return is_val


def orca_composition(task: Task) -> Task:
    """ORCA's splits (its loaders with valid_split=False): the validation data joins train and the split
    called "val" is the test split itself (ORCA picks its best epoch on test). For loaders without their own
    ORCA-specific composition (bundled, synthetic, npz tasks).

    Args:
        task: a task with the honest composition.
    """
    tr, va = task.train, task.val
    groups = None
    if tr.groups is not None and va.groups is not None:
        groups = np.concatenate([tr.groups, va.groups])
    train = Split(np.concatenate([tr.x, va.x]), np.concatenate([tr.y, va.y]), groups)
    notes = {**task.notes, "val_split": "none: validation data joins train, val = test (ORCA)"}
    return replace(task, train=train, val=task.test, notes=notes)


def limit_samples(split: Split, max_samples: int | None, seed: int, stratify: bool = False) -> Split:
    """A seeded random subset (for demos and smoke runs); the split itself when it is small enough.
    With `stratify`, every class present keeps at least one sample.

    Args:
        split: the split to subsample.
        max_samples: the most samples to keep; None keeps all.
        seed: seed of the draw.
        stratify: keep at least one sample of every class present.
    """
    if max_samples is None or len(split) <= max_samples:
        return split
    rng = np.random.default_rng(seed)
    if not stratify:
        return split.subset(rng.choice(len(split), size=max_samples, replace=False))
    first_of_class = np.unique(split.y, return_index=True)[1]
    rest = np.setdiff1d(np.arange(len(split)), first_of_class)
    extra = rng.choice(rest, size=max(0, max_samples - len(first_of_class)), replace=False)
    return split.subset(np.concatenate([first_of_class, extra]))
