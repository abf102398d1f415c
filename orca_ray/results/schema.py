"""The results schema: one row per trial per phase per epoch, its Parquet layout and how values are coerced.

Layout (hive-partitioned by sweep, one part file per trial)::

    {root}/sweep={sweep}/{trial_id}.parquet

The part files do not contain the `sweep` column (it comes from the directory name; a file that repeats a
partition column breaks `pandas.read_parquet` on the directory). Missing and NaN floats are stored as Parquet
nulls (SQL aggregates skip them; pandas reads them as NaN). No Ray here: written by `results.sink`, read by
`results.read`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds

RESULT_SCHEMA = pa.schema(
    [
        ("sweep", pa.string()),
        ("trial_id", pa.string()),
        ("config_hash", pa.string()),
        ("task", pa.string()),
        ("body", pa.string()),
        ("proxy", pa.string()),
        ("embedder_epochs", pa.int32()),
        ("freeze", pa.string()),
        ("seed", pa.int32()),
        ("embedder", pa.string()),
        ("lora_rank", pa.int32()),
        ("lora_alpha", pa.float64()),
        ("lora_dropout", pa.float64()),
        ("trainable_params", pa.int64()),
        ("phase", pa.string()),
        ("epoch", pa.int32()),
        ("otdd", pa.float64()),
        ("train_loss", pa.float64()),
        ("val_score", pa.float64()),
        ("test_score", pa.float64()),
        ("metric", pa.string()),
        ("seconds", pa.float64()),
        ("node", pa.string()),
        ("node_id", pa.string()),
        ("lr", pa.float64()),
        ("pretraining_tokens", pa.float64()),
        ("body_family", pa.string()),
        ("pool", pa.string()),
        ("preset", pa.string()),
        ("classes", pa.string()),
        ("protocol", pa.string()),
        ("precision", pa.string()),
        ("config_json", pa.string()),
        ("reported_at", pa.timestamp("us", tz="UTC")),
        # the machine behind the row (machine.machine_fingerprint; null in files written before it existed)
        ("deterministic", pa.bool_()),
        ("cpu_model", pa.string()),
        ("cpu_capability", pa.string()),
        ("gpu_model", pa.string()),
        ("torch_version", pa.string()),
        ("cuda_version", pa.string()),
        ("mkl_version", pa.string()),
        ("threads", pa.int32()),
    ]
)
PARTITION_COLUMN = "sweep"
# what a part file holds: everything but the partition column
FILE_SCHEMA = pa.schema([f for f in RESULT_SCHEMA if f.name != PARTITION_COLUMN])
PARTITIONING = ds.partitioning(pa.schema([(PARTITION_COLUMN, pa.string())]), flavor="hive")

PHASES = ("align", "refine")
# constant per trial: taken from the result, else from trial.config
TRIAL_FIELDS = (
    "config_hash",
    "task",
    "body",
    "proxy",
    "embedder_epochs",
    "freeze",
    "seed",
    "embedder",
    "lora_rank",
    "lora_alpha",
    "lora_dropout",
    "trainable_params",
    "lr",
    "pretraining_tokens",
    "body_family",
    "pool",
    "preset",
    "classes",
    "protocol",
    "deterministic",
    "precision",
)
# where each row ran: taken from the result only (a resumed trial's later rows may name another machine)
MACHINE_FIELDS = (
    "cpu_model",
    "cpu_capability",
    "gpu_model",
    "torch_version",
    "cuda_version",
    "mkl_version",
    "threads",
)
ROW_FIELDS = ("phase", "epoch", "otdd", "train_loss", "val_score", "test_score", "metric", "seconds")

_SWEEP_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def _float(v: Any) -> float | None:
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def _int(v: Any) -> int | None:
    if v is None:
        return None
    if isinstance(v, float | np.floating):
        if math.isnan(v):
            return None
        if not float(v).is_integer():
            raise ValueError(f"expected an integer, got {v!r}")
    return int(v)


def _str(v: Any) -> str | None:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return str(v)


def _bool(v: Any) -> bool | None:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return bool(v)


_COERCE = {pa.string(): _str, pa.int32(): _int, pa.int64(): _int, pa.float64(): _float, pa.bool_(): _bool}


def _coerce(field: pa.Field, v: Any) -> Any:
    fn = _COERCE.get(field.type)
    return fn(v) if fn is not None else v


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def config_json(config: Mapping[str, Any]) -> str:
    """The trial config as JSON with sorted keys (what the `config_json` column holds).

    Args:
        config: the flat trial config (`config.flat_config` of a Tune config).
    """
    return json.dumps(dict(config), sort_keys=True, default=_json_default)


_EPOCH0 = datetime.min.replace(tzinfo=UTC)


def _when(row: dict) -> datetime:
    return row.get("reported_at") or _EPOCH0


def _check_sweep(sweep: str) -> str:
    if not _SWEEP_RE.match(sweep or ""):
        raise ValueError(
            f"sweep name {sweep!r} must match {_SWEEP_RE.pattern} (it names a hive partition directory; "
            "a leading '_' or '.' would make readers skip it)"
        )
    return sweep


def _file_name(trial_id: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.\-]", "_", str(trial_id)).lstrip("._") or "trial"
    return f"{name}.parquet"
