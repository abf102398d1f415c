"""Results in Parquet: one row per trial per phase per epoch, written by a Ray Tune callback.

Layout (hive-partitioned by sweep, one part file per trial)::

    {root}/sweep={sweep}/{trial_id}.parquet

The part files do not contain the `sweep` column (it comes from the directory name; a file that repeats a
partition column breaks `pandas.read_parquet` on the directory). Readers::

    read_results("s3://bucket/results")                                   # this module
    pyarrow.dataset.dataset(root, partitioning="hive")
    pandas.read_parquet(root)
    duckdb: SELECT * FROM read_parquet('root/**/*.parquet', hive_partitioning = true)

(DuckDB guesses partition value types: a sweep named "2024" comes back as an integer there unless
`hive_types = {'sweep': VARCHAR}` is given; `read_results` always reads it as a string.)

Every write replaces a trial's whole part file (a few hundred rows at most) and is never visible half-done:
on a local (or HDFS-like) filesystem the file is written under a temporary name in the same directory and
renamed into place; on an object store (S3, GCS, Azure) the final key is written directly, because a
single-object upload only becomes visible when it is complete. Temporary names start with "." and do not
end in ".parquet", so pyarrow.dataset (ignores "."/"_" prefixes), pandas and DuckDB's `*.parquet` globs
(which do NOT ignore "_"/"." prefixes) all skip them.

Missing and NaN floats are stored as Parquet nulls (SQL aggregates skip them; pandas reads them as NaN).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from ray.tune import Callback

logger = logging.getLogger(__name__)

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
        ("phase", pa.string()),
        ("epoch", pa.int32()),
        ("otdd", pa.float64()),
        ("train_loss", pa.float64()),
        ("val_score", pa.float64()),
        ("test_score", pa.float64()),
        ("metric", pa.string()),
        ("seconds", pa.float64()),
        ("node", pa.string()),
        ("lr", pa.float64()),
        ("pretraining_tokens", pa.float64()),
        ("preset", pa.string()),
        ("config_json", pa.string()),
        ("reported_at", pa.timestamp("us", tz="UTC")),
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
    "lr",
    "pretraining_tokens",
    "preset",
)
ROW_FIELDS = ("phase", "epoch", "otdd", "train_loss", "val_score", "test_score", "metric", "seconds")

_SWEEP_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_OBJECT_STORES = ("s3", "gcs", "gs", "abfs", "az")


# ---------------------------------------------------------------------------------------------------------
# filesystem helpers


def _resolve(root: str, filesystem: pafs.FileSystem | None) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for a local path or a URI; with an explicit filesystem, a URI's scheme
    is stripped (`s3://bucket/prefix` → `bucket/prefix`)."""
    root = str(root)
    if filesystem is not None:
        if "://" in root:
            root = root.split("://", 1)[1]
        return filesystem, root.rstrip("/")
    if "://" in root:
        fs, path = pafs.FileSystem.from_uri(root)
        return fs, path.rstrip("/")
    return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(root))


def _is_object_store(fs: pafs.FileSystem) -> bool:
    name = fs.type_name.lower()
    return any(s in name for s in _OBJECT_STORES) and name not in ("local", "subtree", "hdfs")


def _exists(fs: pafs.FileSystem, path: str) -> bool:
    return fs.get_file_info(path).type == pafs.FileType.File


def _write_atomic(fs: pafs.FileSystem, path: str, data: bytes) -> None:
    """Make `path` hold `data`, never visible half-written under its final name."""
    directory, name = path.rsplit("/", 1)
    if _is_object_store(fs):
        # a single-object upload (or a completed multipart upload) appears atomically
        with fs.open_output_stream(path) as out:
            out.write(data)
        return
    fs.create_dir(directory, recursive=True)
    tmp = f"{directory}/.{name}.{uuid.uuid4().hex[:8]}.tmp"
    if fs.type_name == "local":
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return
    try:
        with fs.open_output_stream(tmp) as out:
            out.write(data)
        fs.move(tmp, path)
    finally:
        if _exists(fs, tmp):
            fs.delete_file(tmp)


# ---------------------------------------------------------------------------------------------------------
# value coercion


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


_COERCE = {pa.string(): _str, pa.int32(): _int, pa.float64(): _float}


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
    """The full trial config as JSON with sorted keys (what the `config_json` column holds)."""
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


# ---------------------------------------------------------------------------------------------------------
# the sink


class ParquetSink(Callback):
    """A Ray Tune callback writing every contract row of every trial to `{root}/sweep={sweep}/{trial}.parquet`.

    Rows of a trial are kept in memory keyed by (phase, epoch) — a re-reported epoch (a retried trial)
    replaces the earlier row — and the trial's part file is rewritten after every result. The first time
    this sink sees a trial (e.g. after `Tuner.restore`), the trial's existing part file is merged in, so a
    resumed trial keeps its earlier rows. A trial's rows are dropped from memory once it has completed or
    errored and its file is written (the file is the record; a later resume reloads it).

    Results without a `phase` (not from a contract trainable) are ignored.
    """

    def __init__(self, root: str, sweep: str, filesystem: pafs.FileSystem | None = None):
        self.root = str(root)
        self.sweep = _check_sweep(sweep)
        self._explicit_fs = filesystem
        self._fs, self._root_path = _resolve(self.root, filesystem)
        self.partition_path = f"{self._root_path}/{PARTITION_COLUMN}={self.sweep}"
        # trial_id -> {"rows": {(phase, epoch): {column: value}}}
        self._trials: dict[str, dict[str, Any]] = {}
        self._dirty: set[str] = set()
        self._synced: set[str] = set()  # trials whose part file has been merged in by this instance
        self._warned_no_phase = False

    # -- paths -------------------------------------------------------------------------------------------
    def part_path(self, trial_id: str) -> str:
        return f"{self.partition_path}/{_file_name(trial_id)}"

    # -- state -------------------------------------------------------------------------------------------
    def _load_part(self, trial_id: str) -> dict[tuple[str, int], dict[str, Any]]:
        path = self.part_path(trial_id)
        if not _exists(self._fs, path):
            return {}
        table = pq.read_table(path, filesystem=self._fs)
        rows = {}
        for r in table.to_pylist():
            r.pop(PARTITION_COLUMN, None)
            rows[(r["phase"], r["epoch"])] = r
        return rows

    def _sync(self, trial_id: str) -> dict[str, Any]:
        """The trial's state, with its existing part file merged in the first time (latest report wins)."""
        state = self._trials.setdefault(trial_id, {"rows": {}})
        if trial_id not in self._synced:
            self._synced.add(trial_id)
            for key, row in self._load_part(trial_id).items():
                mine = state["rows"].get(key)
                if mine is None or _when(mine) < _when(row):
                    state["rows"][key] = row
        return state

    # -- Callback hooks ----------------------------------------------------------------------------------
    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info):
        if result.get("phase") is None:
            if not self._warned_no_phase:
                logger.warning("ParquetSink: ignoring results without a 'phase' (trial %s)", trial.trial_id)
                self._warned_no_phase = True
            return
        trial_id = str(trial.trial_id)
        state = self._sync(trial_id)
        config = dict(getattr(trial, "config", None) or {})
        meta = {
            "trial_id": trial_id,
            "node": result.get("hostname") or result.get("node_ip"),
            "config_json": config_json(config),
        }
        for name in TRIAL_FIELDS:
            meta[name] = result[name] if result.get(name) is not None else config.get(name)
        row = {name: result.get(name) for name in ROW_FIELDS}
        if row["phase"] not in PHASES:
            logger.warning("ParquetSink: unknown phase %r from trial %s", row["phase"], trial_id)
        row.update(meta)
        row["reported_at"] = datetime.now(UTC)
        row = {f.name: _coerce(f, row.get(f.name)) for f in FILE_SCHEMA}
        state["rows"][(row["phase"], row["epoch"])] = row
        self._dirty.add(trial_id)
        self._flush(trial_id)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info):
        self._finish(str(trial.trial_id))

    def on_trial_error(self, iteration: int, trials: list, trial, **info):
        self._finish(str(trial.trial_id))

    def on_experiment_end(self, trials: list, **info):
        failed = [t for t in sorted(self._dirty) if not self._flush(t)]
        if failed:
            raise RuntimeError(f"ParquetSink could not write the results of trials {failed} to {self.root}")

    def get_state(self) -> dict | None:
        if not self._trials:
            return None
        return {"sweep": self.sweep, "trials": self._trials, "dirty": sorted(self._dirty)}

    def set_state(self, state: dict):
        if state.get("sweep") != self.sweep:
            logger.warning(
                "ParquetSink: not restoring state of sweep %r into sweep %r", state.get("sweep"), self.sweep
            )
            return
        self._trials = dict(state.get("trials", {}))
        self._dirty = set(state.get("dirty", ()))
        self._synced = set()

    # -- writing -----------------------------------------------------------------------------------------
    def table(self, trial_id: str) -> pa.Table:
        rows = sorted(
            self._trials[trial_id]["rows"].values(),
            key=lambda r: (
                PHASES.index(r["phase"]) if r["phase"] in PHASES else 99,
                r["phase"],
                r["epoch"] or 0,
            ),
        )
        return pa.Table.from_pylist(rows, schema=FILE_SCHEMA)

    def _flush(self, trial_id: str) -> bool:
        if trial_id not in self._dirty:
            return True
        if trial_id not in self._trials:
            self._dirty.discard(trial_id)
            return True
        sink = pa.BufferOutputStream()
        pq.write_table(self.table(trial_id), sink, compression="zstd")
        data = sink.getvalue().to_pybytes()
        err = None
        for _ in range(2):
            try:
                _write_atomic(self._fs, self.part_path(trial_id), data)
            except OSError as e:  # e.g. a transient object-store error: retry once, then next event
                err = e
                continue
            self._dirty.discard(trial_id)
            return True
        logger.warning("ParquetSink: writing %s failed (%s); will retry", self.part_path(trial_id), err)
        return False

    def _finish(self, trial_id: str) -> None:
        if self._flush(trial_id):
            self._trials.pop(trial_id, None)
            self._synced.discard(trial_id)

    def __getstate__(self):
        # filesystems do not all pickle (Tune pickles callback state via get_state, not the object, but be safe)
        d = self.__dict__.copy()
        d["_fs"] = None
        return d

    def __setstate__(self, d):
        self.__dict__.update(d)
        self._fs, self._root_path = _resolve(self.root, self._explicit_fs)


# ---------------------------------------------------------------------------------------------------------
# reading


def _empty_frame() -> pd.DataFrame:
    return RESULT_SCHEMA.empty_table().to_pandas()


def read_results(
    root: str, sweep: str | None = None, filesystem: pafs.FileSystem | None = None
) -> pd.DataFrame:
    """All rows under `root` (every sweep, or one), one DataFrame sorted by sweep, trial, phase, epoch."""
    fs, path = _resolve(root, filesystem)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        return _empty_frame()
    try:
        dataset = ds.dataset(
            path,
            filesystem=fs,
            format="parquet",
            partitioning=PARTITIONING,
            schema=RESULT_SCHEMA,
            exclude_invalid_files=False,
        )
    except FileNotFoundError:
        return _empty_frame()
    flt = ds.field(PARTITION_COLUMN) == sweep if sweep is not None else None
    table = dataset.to_table(filter=flt)
    df = table.to_pandas()
    phase_order = {p: i for i, p in enumerate(PHASES)}
    df = df.assign(_phase_order=df["phase"].map(phase_order).fillna(len(PHASES)))
    df = df.sort_values(["sweep", "trial_id", "_phase_order", "phase", "epoch"], kind="stable")
    return df.drop(columns="_phase_order").reset_index(drop=True)


FINAL_COLUMNS = ("sweep", "trial_id", *TRIAL_FIELDS, "metric", "node")


def final_scores(df: pd.DataFrame) -> pd.DataFrame:
    """One row per trial: the refine epoch with the best (lowest) val_score — ties go to the earliest epoch;
    the test score never takes part in the choice — as `best_epoch`, `final_val`, `final_test`; plus
    `final_otdd`, the OTDD of the align row at epoch == embedder_epochs (else the last align row with an
    OTDD). Trials without a scored refine epoch get NaN scores."""
    out_cols = [*FINAL_COLUMNS, "best_epoch", "final_val", "final_test", "final_otdd", "n_refine_epochs"]
    if df.empty:
        return pd.DataFrame(columns=out_cols)
    records = []
    for (sweep, trial_id), g in df.groupby(["sweep", "trial_id"], sort=True, observed=True, dropna=False):
        rec = {"sweep": sweep, "trial_id": trial_id}
        for c in FINAL_COLUMNS[2:]:
            vals = g[c].dropna() if c in g else pd.Series(dtype=object)
            rec[c] = vals.iloc[0] if len(vals) else np.nan
        refine = g[(g["phase"] == "refine")]
        rec["n_refine_epochs"] = int(refine["epoch"].nunique())
        scored = refine[refine["val_score"].notna()].sort_values(["val_score", "epoch"], kind="stable")
        if len(scored):
            best = scored.iloc[0]
            rec.update(
                best_epoch=int(best["epoch"]), final_val=best["val_score"], final_test=best["test_score"]
            )
            if isinstance(rec["metric"], float) and best["metric"] is not None:
                rec["metric"] = best["metric"]
        else:
            rec.update(best_epoch=np.nan, final_val=np.nan, final_test=np.nan)
        align = g[(g["phase"] == "align") & g["otdd"].notna()].sort_values("epoch")
        rec["final_otdd"] = np.nan
        if len(align):
            at = (
                align[align["epoch"] == rec["embedder_epochs"]]
                if pd.notna(rec["embedder_epochs"])
                else align[:0]
            )
            rec["final_otdd"] = (at if len(at) else align).iloc[-1]["otdd"]
        records.append(rec)
    out = pd.DataFrame.from_records(records, columns=out_cols)
    for c in ("final_val", "final_test", "final_otdd", "lr", "pretraining_tokens"):
        out[c] = out[c].astype("float64")
    out["best_epoch"] = out["best_epoch"].astype("Int32")
    for c in ("embedder_epochs", "seed"):
        out[c] = out[c].astype("Int32")
    return out
