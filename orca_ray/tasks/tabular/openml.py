"""OpenML datasets as tasks: ``openml:<ID>``, staged once to Parquet, read by trials from the staged copy only.

    python -m orca_ray.data stage openml:31 [--data-root DIR]   # → DIR/openml/31/{data.parquet,meta.json}

Staging uses scikit-learn's ``fetch_openml`` (already a dependency; its ``data_home`` cache makes a second stage
and the tests offline; nominal attributes arrive as pandas categoricals, i.e. ORCA's ``categorical_indicator``,
and the default target attribute is OpenML's). The ``openml`` package would add a dependency for the same table.
The staged folder holds the table as Parquet (features and label, read without pickle) and ``meta.json`` (label
column, categorical flags, the Parquet file's size and sha256). Loading checks size and sha256 against
``meta.json`` and refuses a file that differs, like NAS-Bench-360's MANIFEST. Without ``--data-root`` the data
root is the cache folder (``$ORCA_RAY_CACHE``, default ``~/.cache/orca_ray``).
"""

from __future__ import annotations

import json
from pathlib import Path

from ... import io
from ..base import TaskDataError
from .files import check_categories, frame_table, read_parquet
from .preprocess import Table

DATA_FILE = "data.parquet"
META_FILE = "meta.json"
META_FORMAT = "orca_ray openml v1"
MAX_META_BYTES = 1 << 20


def parse_id(spec: str) -> int:
    """The dataset id of ``openml:<ID>``.

    Args:
        spec: the task spec.
    """
    _, _, rest = spec.partition(":")
    if not rest.isdigit() or int(rest) < 1:
        raise KeyError(
            f"task {spec!r}: an OpenML task is openml:<ID> with a positive integer id, e.g. openml:31"
        )
    return int(rest)


def staged_dir(did: int, data_root: str | Path | None) -> Path:
    """Where dataset `did` is staged: ``<data_root or cache>/openml/<did>``.

    Args:
        did: the OpenML dataset id.
        data_root: the data root (None: the cache folder).
    """
    return (Path(data_root).expanduser() if data_root else io.cache_root()) / "openml" / str(did)


def stage_command(did: int, data_root: str | Path | None) -> str:
    """The command that stages dataset `did` (for error messages).

    Args:
        did: the OpenML dataset id.
        data_root: the data root, or None.
    """
    return f"python -m orca_ray.data stage openml:{did}" + (f" --data-root {data_root}" if data_root else "")


def stage(did: int, data_root: str | Path | None = None, *, data_home: str | Path | None = None) -> Path:
    """Fetch OpenML dataset `did` with scikit-learn and write it to the staged folder (atomically).

    Args:
        did: the OpenML dataset id.
        data_root: the data root (None: the cache folder).
        data_home: scikit-learn's OpenML cache (None: its default, ``~/scikit_learn_data``).

    Returns:
        The staged folder.
    """
    import warnings

    import pyarrow as pa
    import pyarrow.parquet as pq
    from sklearn.datasets import fetch_openml

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            bunch = fetch_openml(data_id=did, as_frame=True, parser="auto", data_home=data_home)
    except (OSError, ValueError) as e:  # no network, unknown id, a cache that fails its md5
        raise TaskDataError(f"openml:{did}: cannot fetch it ({str(e).splitlines()[0]})") from None
    frame = bunch.frame
    targets = list(bunch.target_names or [])
    if len(targets) != 1:
        raise TaskDataError(f"openml:{did}: OpenML names {len(targets)} default targets; a task needs one")
    label = targets[0]
    features = [c for c in frame.columns if c != label]
    categorical = [not _numeric(frame[c]) for c in features]
    out = staged_dir(did, data_root)
    out.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(frame[[*features, label]], preserve_index=False)
    io.write_file(out / DATA_FILE, lambda tmp: pq.write_table(table, tmp))
    meta = {
        "format": META_FORMAT,
        "id": did,
        "name": bunch.details.get("name") if bunch.details else None,
        "label": label,
        "features": features,
        "categorical": categorical,
        "rows": len(frame),
        "size": (out / DATA_FILE).stat().st_size,
        "sha256": io.file_sha256(out / DATA_FILE),
        "source": f"https://www.openml.org/d/{did} via sklearn.datasets.fetch_openml",
    }
    io.write_file(out / META_FILE, lambda tmp: tmp.write_text(json.dumps(meta, indent=1)))
    return out


def _numeric(col) -> bool:
    import pandas as pd

    return pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)


def read_meta(did: int, data_root: str | Path | None) -> dict:
    """The staged ``meta.json`` of dataset `did`; one-line errors for a missing, huge or malformed one.

    Args:
        did: the OpenML dataset id.
        data_root: the data root (None: the cache folder).
    """
    folder = staged_dir(did, data_root)
    p = folder / META_FILE
    if not p.is_file() or not (folder / DATA_FILE).is_file():
        raise TaskDataError(
            f"openml:{did} is not staged under {folder}. Fix: {stage_command(did, data_root)}"
        )
    if p.stat().st_size > MAX_META_BYTES:
        raise TaskDataError(f"{p}: {p.stat().st_size} bytes is too large for a meta file; stage it again")
    try:
        meta = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise TaskDataError(f"{p}: unreadable ({e}). Fix: {stage_command(did, data_root)}") from None
    want = {"label": str, "features": list, "categorical": list, "size": int, "sha256": str}
    if (
        not isinstance(meta, dict)
        or meta.get("format") != META_FORMAT
        or any(not isinstance(meta.get(k), t) for k, t in want.items())
    ):
        raise TaskDataError(f"{p}: not an orca_ray OpenML meta file. Fix: {stage_command(did, data_root)}")
    return meta


def load_table(did: int, data_root: str | Path | None) -> tuple[Table, Path]:
    """The staged table of dataset `did`, verified against its ``meta.json`` (size, then sha256).

    Args:
        did: the OpenML dataset id.
        data_root: the data root (None: the cache folder).
    """
    meta = read_meta(did, data_root)
    p = staged_dir(did, data_root) / DATA_FILE
    fix = f"stage it again: {stage_command(did, data_root)}"
    size = p.stat().st_size
    if size != meta["size"]:
        raise TaskDataError(
            f"CHECKSUM {p}: {size} bytes, {META_FILE} says {meta['size']}; refusing it. Fix: {fix}"
        )
    sha = io.file_sha256(p)
    if sha != meta["sha256"]:
        raise TaskDataError(
            f"CHECKSUM {p}: sha256 {sha[:16]}… differs from {META_FILE} ({meta['sha256'][:16]}…); refusing it. "
            f"Fix: {fix}"
        )
    spec = f"openml:{did}"
    frame = read_parquet(p, spec)
    if list(frame.columns) != [*meta["features"], meta["label"]] or len(meta["categorical"]) != len(
        meta["features"]
    ):
        raise TaskDataError(f"{p}: columns differ from {META_FILE}. Fix: {fix}")
    table = frame_table(frame, label=meta["label"], spec=spec, openml_id=did)
    # the flags OpenML declared (nominal attributes), not the dtypes as read back
    categorical = tuple(bool(c) for c in meta["categorical"])
    check_categories(table.x, categorical, spec)
    return Table(table.x, table.y, categorical, spec, did), p
