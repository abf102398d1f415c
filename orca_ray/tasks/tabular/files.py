"""Your own tables: ``csv:PATH`` and ``parquet:PATH`` (local, ``s3://``, ``gs://``), the label column named as
``csv:PATH#label=COL`` (default: a column called ``label``, else ``target``, else ``class``).

Files are untrusted: the size is checked before anything is read (`MAX_TABLE_BYTES`, and a Parquet footer's
rows × columns against `MAX_CELLS`), Parquet is read with pyarrow (no pickle: the pandas metadata only restores
dtypes), and every problem is one line naming the file, the column and the fix. Categorical columns are those
whose dtype is not numeric (text, booleans, pandas categoricals); a text column whose values are nearly all
numbers is taken as a numeric column with junk in it and refused, naming the first bad value.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..base import TaskDataError
from .preprocess import Table

MAX_TABLE_BYTES = int(os.environ.get("ORCA_RAY_MAX_TABLE_BYTES", 1 << 30))  # 1 GiB
MAX_CELLS = 200_000_000  # rows × columns a Parquet footer may declare
MAX_CATEGORIES = 1_000  # distinct values of one categorical column (each becomes a one-hot feature)
LABEL_NAMES = ("label", "target", "class")
# a text column is "numeric with junk" when at least this share of its non-missing values parse as numbers
JUNK_SHARE = 0.9


def _label_column(columns: list[str], label: str | None, where: str) -> str:
    if label is not None:
        if label not in columns:
            raise TaskDataError(
                f"{where}: no label column {label!r}; columns: {', '.join(map(str, columns[:30]))}. "
                f"Fix: #label=COL with one of them"
            )
        return label
    for name in LABEL_NAMES:
        if name in columns:
            return name
    raise TaskDataError(
        f"{where}: no column named label, target or class; columns: {', '.join(map(str, columns[:30]))}. "
        f"Fix: name the label column, e.g. {where}#label={columns[-1] if columns else 'COL'}"
    )


def _check_size(p: Path, spec: str) -> None:
    if not p.is_file():
        raise TaskDataError(f"{spec}: no such file {p}")
    size = p.stat().st_size
    if size == 0:
        raise TaskDataError(f"{spec}: the file is empty")
    if size > MAX_TABLE_BYTES:
        raise TaskDataError(
            f"{spec}: {size} bytes is over the {MAX_TABLE_BYTES}-byte limit for a table. Fix: subsample it, or "
            f"raise ORCA_RAY_MAX_TABLE_BYTES"
        )


def _no_duplicates(columns: list[str], spec: str) -> None:
    from collections import Counter

    dup = sorted(str(c) for c, n in Counter(columns).items() if n > 1)
    if dup:
        raise TaskDataError(f"{spec}: duplicate column name(s) {dup}. Fix: rename them")


def read_csv(path: str | Path, spec: str) -> pd.DataFrame:
    """A CSV file as a DataFrame (header row required), after the size and duplicate-name checks.

    Args:
        path: the local file.
        spec: the task spec, for errors.
    """
    p = Path(path)
    _check_size(p, spec)
    try:
        with open(p, newline="", encoding="utf-8") as f:
            header = next(csv.reader(f), None)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise TaskDataError(f"{spec}: not a readable UTF-8 CSV file ({e})") from None
    if not header or not any(h.strip() for h in header):
        raise TaskDataError(f"{spec}: the file has no header row")
    _no_duplicates(header, spec)
    try:
        frame = pd.read_csv(p, na_values=["?"], keep_default_na=True, low_memory=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError, OSError) as e:
        raise TaskDataError(f"{spec}: not a readable CSV file ({str(e).splitlines()[0]})") from None
    if frame.empty:
        raise TaskDataError(f"{spec}: the file has a header but no rows")
    return frame


def read_parquet(path: str | Path, spec: str) -> pd.DataFrame:
    """A Parquet file as a DataFrame, after the size, footer and duplicate-name checks.

    Args:
        path: the local file.
        spec: the task spec, for errors.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = Path(path)
    _check_size(p, spec)
    try:
        meta = pq.read_metadata(p)
    except (OSError, pa.ArrowException) as e:
        raise TaskDataError(f"{spec}: not a readable Parquet file ({str(e).splitlines()[0]})") from None
    if meta.num_rows * max(1, meta.num_columns) > MAX_CELLS:
        raise TaskDataError(
            f"{spec}: {meta.num_rows} rows × {meta.num_columns} columns is over the {MAX_CELLS}-cell limit. "
            f"Fix: subsample it"
        )
    names = meta.schema.to_arrow_schema().names
    _no_duplicates(names, spec)
    if meta.num_rows == 0:
        raise TaskDataError(f"{spec}: the file has no rows")
    try:
        return pq.read_table(p).to_pandas()
    except (OSError, pa.ArrowException, ValueError) as e:
        raise TaskDataError(f"{spec}: not a readable Parquet file ({str(e).splitlines()[0]})") from None


def _is_categorical(col: pd.Series) -> bool:
    return not (pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col))


def _is_text(col: pd.Series) -> bool:
    return pd.api.types.is_string_dtype(col) or col.dtype == object


def _junk(col: pd.Series) -> str | None:
    """The first non-number in a text column whose values are otherwise (≥ JUNK_SHARE) numbers."""
    values = col.dropna()
    if values.empty or isinstance(col.dtype, pd.CategoricalDtype):
        return None
    parsed = pd.to_numeric(values, errors="coerce")
    bad = parsed.isna()
    if bad.sum() > 0 and (1 - bad.mean()) >= JUNK_SHARE:
        return str(values[bad].iloc[0])
    return None


def frame_table(frame: pd.DataFrame, *, label: str | None, spec: str, openml_id: int | None = None) -> Table:
    """Split a DataFrame into features and label, categoricals by dtype; refuse junk in numeric columns.

    Args:
        frame: the whole table.
        label: the label column's name, or None for label / target / class.
        spec: the task spec, for errors.
        openml_id: the OpenML id for ORCA's per-dataset extras.
    """
    columns = [str(c) for c in frame.columns]
    frame.columns = columns
    _no_duplicates(columns, spec)
    col = _label_column(columns, label, spec)
    x = frame.drop(columns=[col])
    if x.shape[1] == 0:
        raise TaskDataError(f"{spec}: no feature columns besides the label {col!r}")
    for c in x.columns:
        if _is_text(x[c]) and (bad := _junk(x[c])) is not None:
            row = int(np.flatnonzero((x[c].astype(str) == bad).to_numpy())[0])
            raise TaskDataError(
                f"{spec}: column {c!r} is numeric but row {row} holds {bad[:40]!r}. Fix: clean it, or leave the "
                f"cell empty for a missing value"
            )
    categorical = tuple(_is_categorical(x[c]) for c in x.columns)
    check_categories(x, categorical, spec)
    return Table(x=x, y=frame[col], categorical=categorical, source=spec, openml_id=openml_id)


def check_categories(x: pd.DataFrame, categorical: tuple[bool, ...], spec: str) -> None:
    """Refuse a categorical column with more than `MAX_CATEGORIES` distinct values: one-hot encoding it would
    allocate rows × values floats (an id or free-text column, most likely).

    Args:
        x: the feature columns.
        categorical: one flag per column.
        spec: the task spec, for errors.
    """
    for c, is_cat in zip(x.columns, categorical, strict=True):
        if is_cat and (n := x[c].nunique(dropna=True)) > MAX_CATEGORIES:
            raise TaskDataError(
                f"{spec}: categorical column {c!r} has {n} distinct values, over {MAX_CATEGORIES}; one-hot encoding "
                f"it would not fit. Fix: drop it (an id or free text?) or bin it"
            )


def read_table(path: str | Path, *, fmt: str, label: str | None, spec: str) -> Table:
    """A csv or parquet file as a `Table`.

    Args:
        path: the local file.
        fmt: "csv" or "parquet".
        label: the label column, or None for the default names.
        spec: the task spec, for errors.
    """
    frame = read_csv(path, spec) if fmt == "csv" else read_parquet(path, spec)
    return frame_table(frame, label=label, spec=spec)
