"""A table (features + a label column) → a `Task`, by one of two protocols.

**orca** — what ORCA's ``load_openml_dataset`` / ``prepare_data`` / ``load_openml`` compute (src/data_loaders.py,
commit 19b8c1c), recorded in our own words:

- ``"?"`` counts as missing; rows with a missing label are dropped; labels are the label column's category codes.
- Numeric-only tables: every column with a missing value is dropped, a StandardScaler is fitted on *all* rows
  (before the split), and each row becomes (F, 1): **F channels of length 1**, i.e. one token.
- Tables with categorical columns: each categorical column is one-hot encoded on its own (a missing value is a
  category of its own, "NaN") and zero-padded to the widest one-hot; numeric columns keep their missing values
  as 0, then are scaled over all rows and sit at position 0 of a zero vector of that width. Row shape
  (max_cat, F): channels = the widest one-hot, length = features. Columns with missing values are *not*
  dropped on this path.
- One ``StratifiedShuffleSplit(test_size=0.1)`` with no seed (not reproducible; here it takes the trial's seed),
  no validation split (``valid_split: False``: ORCA selects its epoch on the test set, so val = test here).
- Datasets 12, 54, 1068, 1494 (numeric-only) are normalised again per element with the training split's mean
  and unbiased std (+1e-5); dataset 1464 keeps channels 0, 1 and 3.

**honest** (default) — the same table, with nothing fitted on rows a trial is scored on: a fixed stratified
test split (seed 0, `test_fraction`), a seeded validation split carved from train, numeric columns imputed with
the training median and scaled with training statistics, categorical columns one-hot encoded with the training
categories (+ a missing category; unseen values are all-zero rows). Layout: **one channel, one position per
feature** (N, 1, F'): the embedder's stride then groups neighbouring features into at most `target_seq_len`
tokens (the axis zero-padded to a multiple of 8 so a prime count still splits), so the body attends across features. ORCA's numeric layout gives the body a single token (attention
has nothing to attend over) and its categorical layout pads every numeric feature to the widest one-hot.

Both: the loss is cross-entropy weighted 1/frequency per class, the metric 1 − ROC AUC (`metrics`).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..base import Split, Task, TaskDataError, UnitGaussianNormalizer, carve_validation

MISSING = "NaN"  # ORCA's name for the missing category of a categorical column
ORCA_TEST_FRACTION = 0.1
ORCA_RENORMALISED = (12, 54, 1068, 1494)  # numeric-only datasets ORCA normalises again on the dev split
ORCA_CHANNEL_SUBSETS = {1464: (0, 1, 3)}
# honest layout: the feature axis is zero-padded to a multiple of this, so the embedder's stride (the smallest
# divisor of the length that fits `target_seq_len`) has divisors to choose from: a prime count (wine's 13)
# would otherwise collapse into one token whenever it exceeds `target_seq_len`
PAD_MULTIPLE = 8


@dataclass(frozen=True)
class Table:
    """A classification table as read: feature columns, the label column, which features are categorical.

    Args:
        x: the feature columns.
        y: the label column (any dtype; categorical dtype keeps its declared category order).
        categorical: one flag per column of `x`.
        source: where it came from (prefixes every error).
        openml_id: the OpenML dataset id, for ORCA's per-dataset extras (None for other tables).
    """

    x: pd.DataFrame
    y: pd.Series
    categorical: tuple[bool, ...]
    source: str
    openml_id: int | None = None


def _missing_as_nan(frame: pd.DataFrame | pd.Series):
    # ORCA replaces "?" (OpenML's old missing marker) with NaN before anything else
    return frame.replace("?", np.nan)


def label_codes(y: pd.Series, where: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """Class indices 0..K-1 of a label column and the class names: a categorical column's declared order
    (ORCA's ``cat.codes``), else the sorted distinct values. Classes no row has are left out.

    Args:
        y: the label column, rows with a missing label already dropped.
        where: the table's source, for errors.
    """
    if isinstance(y.dtype, pd.CategoricalDtype):
        cat = y.cat.remove_unused_categories()
    else:
        if pd.api.types.is_float_dtype(y) and not np.all(np.mod(y.to_numpy(), 1) == 0):
            raise TaskDataError(
                f"{where}: the label column {y.name!r} holds non-integer numbers (a regression target); these "
                f"recipes classify. Fix: name a class column with #label=COL"
            )
        values = y.astype("int64") if pd.api.types.is_float_dtype(y) else y
        if not pd.api.types.is_numeric_dtype(values):
            values = values.astype(str)  # mixed text and numbers sort as text
        cat = pd.Categorical(values)
        cat = pd.Series(cat, index=y.index)
    names = tuple(str(c) for c in cat.cat.categories)
    counts = np.bincount(cat.cat.codes.to_numpy(), minlength=len(names))
    if len(names) < 2:
        raise TaskDataError(
            f"{where}: the label column {y.name!r} has one class only ({names[0] if names else 'none'}); "
            f"classification needs two or more"
        )
    if counts.min() < 2:
        lone = names[int(np.argmin(counts))]
        raise TaskDataError(
            f"{where}: class {lone!r} of the label column {y.name!r} has a single row; a stratified split needs "
            f"two or more per class. Fix: drop or merge that class"
        )
    return cat.cat.codes.to_numpy().astype(np.int64), names


def _labelled(table: Table) -> tuple[pd.DataFrame, pd.Series]:
    y = _missing_as_nan(table.y)
    keep = y.notna().to_numpy()
    return _missing_as_nan(table.x)[keep], y[keep]


# ---- ORCA's form -------------------------------------------------------------------------------------------
def orca_features(x: pd.DataFrame, categorical: tuple[bool, ...]) -> np.ndarray:
    """ORCA's stored feature array of a labelled table (rows with a missing label already dropped), fitted on
    all rows: (N, F, 1) for numeric-only tables, (N, F, max_cat) with categorical columns (categoricals first,
    then numerics), which its loader turns into (N, max_cat, F) (module docstring).

    Args:
        x: the feature columns, "?" already NaN.
        categorical: one flag per column.
    """
    cat_cols = [c for c, is_cat in zip(x.columns, categorical, strict=True) if is_cat]
    num_cols = [c for c, is_cat in zip(x.columns, categorical, strict=True) if not is_cat]
    if not cat_cols:
        kept = x[num_cols].dropna(axis=1)  # any column with a missing value goes
        if kept.shape[1] == 0:
            raise TaskDataError("every numeric column has a missing value; ORCA's protocol drops them all")
        return _scale_all(kept.to_numpy(np.float64))[:, :, None].astype(np.float32)
    blocks = [_one_hot(x[c].astype(object).where(x[c].notna(), MISSING).astype(str)) for c in cat_cols]
    width = max(b.shape[1] for b in blocks)
    if num_cols:
        scaled = _scale_all(x[num_cols].astype(np.float64).fillna(0.0).to_numpy())
        blocks += [scaled[:, [j]] for j in range(scaled.shape[1])]
    padded = [np.pad(b, ((0, 0), (0, width - b.shape[1]))) for b in blocks]
    return np.stack(padded, axis=1).astype(np.float32)  # (N, F, width)


def _scale_all(a: np.ndarray) -> np.ndarray:
    from sklearn.preprocessing import StandardScaler

    return StandardScaler().fit_transform(a)


def _one_hot(col: pd.Series, categories: list[str] | None = None) -> np.ndarray:
    # sorted distinct values, as scikit-learn's OneHotEncoder(categories="auto"); unseen values → all zeros
    cats = sorted(col.unique()) if categories is None else categories
    return (col.to_numpy()[:, None] == np.asarray(cats, dtype=object)[None, :]).astype(np.float32)


def orca_task(table: Table, *, name: str, seed: int) -> Task:
    """The table as ORCA trains on it (module docstring), split with a `seed`-ed StratifiedShuffleSplit.

    Args:
        table: the table.
        name: the task name.
        seed: seeds the test split (ORCA's has no seed).
    """
    from sklearn.model_selection import StratifiedShuffleSplit

    x, y = _labelled(table)
    codes, names = label_codes(y, table.source)
    feats = orca_features(x, table.categorical)
    sss = StratifiedShuffleSplit(n_splits=1, test_size=ORCA_TEST_FRACTION, random_state=seed)
    with _too_few(table.source, len(codes), ORCA_TEST_FRACTION, len(names)):
        dev, test = next(sss.split(feats, codes))
    x_dev, x_test = feats[dev], feats[test]
    notes = {"val_split": "none: val = test (ORCA)"}
    if feats.shape[-1] == 1 and table.openml_id in ORCA_RENORMALISED:
        norm = UnitGaussianNormalizer.fit(x_dev)
        x_dev, x_test = norm.encode(x_dev), norm.encode(x_test)
        notes["orca_extra"] = "per-element normaliser fitted on the dev split (ORCA)"
    if feats.shape[-1] == 1 and table.openml_id in ORCA_CHANNEL_SUBSETS:
        keep = list(ORCA_CHANNEL_SUBSETS[table.openml_id])
        x_dev, x_test = x_dev[:, keep], x_test[:, keep]
        notes["orca_extra"] = f"channels {keep} only (ORCA)"
    if feats.shape[-1] != 1:
        x_dev, x_test = x_dev.transpose(0, 2, 1), x_test.transpose(0, 2, 1)  # ORCA's permute(0, 2, 1)
    test_split = Split(np.ascontiguousarray(x_test), codes[test])
    return _task(
        table, name, Split(np.ascontiguousarray(x_dev), codes[dev]), test_split, test_split, names, notes
    )


# ---- the honest form ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Encoder:
    """Feature encoding fitted on training rows only: median-imputed, standardised numerics and one-hot
    categoricals (training categories + "NaN").

    Args:
        numeric: numeric column names kept (not all-missing in train).
        median, mean, std: their training statistics.
        categories: categorical column name → its training categories.
    """

    numeric: tuple[str, ...]
    median: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    categories: dict

    @classmethod
    def fit(cls, x: pd.DataFrame, categorical: tuple[bool, ...]) -> Encoder:
        """Fit on the training rows.

        Args:
            x: training feature columns, "?" already NaN.
            categorical: one flag per column.
        """
        num = [c for c, k in zip(x.columns, categorical, strict=True) if not k and x[c].notna().any()]
        a = x[num].astype(np.float64)
        median = a.median().to_numpy()
        filled = a.fillna(pd.Series(median, index=num)).to_numpy()
        std = filled.std(0) if len(num) else np.zeros(0)
        cats = {
            c: sorted(_cat_strings(x[c]).unique()) for c, k in zip(x.columns, categorical, strict=True) if k
        }
        return cls(
            tuple(num), median, filled.mean(0) if len(num) else np.zeros(0), np.where(std > 0, std, 1.0), cats
        )

    def transform(self, x: pd.DataFrame) -> np.ndarray:
        """(N, 1, F') float32: scaled numerics, then each categorical's one-hot block, zero-padded to a multiple
        of `PAD_MULTIPLE`.

        Args:
            x: feature columns, "?" already NaN.
        """
        parts = []
        if self.numeric:
            a = x[list(self.numeric)].astype(np.float64).to_numpy()
            a = np.where(np.isnan(a), self.median, a)
            parts.append((a - self.mean) / self.std)
        parts += [_one_hot(_cat_strings(x[c]), cats) for c, cats in self.categories.items()]
        if not parts:
            raise TaskDataError("no feature column is left (every numeric column is missing in train)")
        flat = np.concatenate(parts, axis=1)
        pad = -flat.shape[1] % PAD_MULTIPLE  # zero features up to a multiple of 8 (see PAD_MULTIPLE)
        return np.pad(flat, ((0, 0), (0, pad))).astype(np.float32)[:, None, :]


def _cat_strings(col: pd.Series) -> pd.Series:
    return col.astype(object).where(col.notna(), MISSING).astype(str)


def honest_task(
    table: Table, *, name: str, seed: int, val_fraction: float, test_fraction: float = 0.2
) -> Task:
    """The table with nothing fitted on validation or test rows (module docstring).

    Args:
        table: the table.
        name: the task name.
        seed: seeds the validation split (the test split is fixed, seed 0, so every trial scores the same rows).
        val_fraction: share of the training rows held out for validation.
        test_fraction: share of all rows held out for test.
    """
    from sklearn.model_selection import train_test_split

    x, y = _labelled(table)
    codes, names = label_codes(y, table.source)
    rows = np.arange(len(codes))
    with _too_few(table.source, len(codes), test_fraction, len(names)):
        tr, te = train_test_split(rows, test_size=test_fraction, stratify=codes, random_state=0)
    tr, te = np.sort(tr), np.sort(te)
    train, val = carve_validation(
        Split(tr[:, None].astype(np.float32), codes[tr]), val_fraction, seed, source=table.source
    )
    tr_rows, va_rows = train.x[:, 0].astype(np.int64), val.x[:, 0].astype(np.int64)
    enc = Encoder.fit(x.iloc[tr_rows], table.categorical)

    def split(idx):
        return Split(enc.transform(x.iloc[idx]), codes[idx])

    notes = {"protocol": "honest: encoders fitted on train only, one position per feature"}
    return _task(table, name, split(tr_rows), split(va_rows), split(te), names, notes)


@contextmanager
def _too_few(source: str, n: int, fraction: float, k: int):
    """scikit-learn's refusal of a stratified split as one line naming the table."""
    try:
        yield
    except ValueError as e:
        raise TaskDataError(
            f"{source}: {n} labelled rows are too few for a stratified {fraction:g} test split over {k} classes "
            f"({str(e).splitlines()[0]}). Fix: add rows"
        ) from None


def _task(table: Table, name: str, train: Split, val: Split, test: Split, names, notes) -> Task:
    return Task(
        name=name,
        modality="1d",
        kind="classification",
        input_shape=train.x.shape[1:],
        num_outputs=len(names),
        train=train,
        val=val,
        test=test,
        source=table.source,
        metric="1-roc-auc",
        loss="weighted_cross_entropy",
        class_names=names,
        notes=notes,
    )


def table_task(
    table: Table, *, name: str, protocol: str, seed: int, val_fraction: float, test_fraction: float = 0.2
) -> Task:
    """`orca_task` or `honest_task` by protocol.

    Args:
        table: the table.
        name: the task name.
        protocol: "honest" or "orca".
        seed: the trial's seed.
        val_fraction: validation share (honest).
        test_fraction: test share (honest; ORCA's is 0.1).
    """
    if protocol == "orca":
        return orca_task(table, name=name, seed=seed)
    return honest_task(table, name=name, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction)
