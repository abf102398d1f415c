"""ParquetSink: the Ray Tune callback that writes every trial's rows to Parquet (see `results.schema`).

Every write replaces a trial's whole part file (a few hundred rows at most) and is never visible half-done
(`io.write_bytes`: a temporary name renamed into place on local disk, one PUT on an object store).
Temporary names start with "." and do not end in ".parquet", so pyarrow.dataset (ignores "."/"_" prefixes),
pandas and DuckDB's `*.parquet` globs (which do NOT ignore "_"/"." prefixes) all skip them.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from ray.tune import Callback

from .. import io
from ..config import flat_config
from .schema import (
    FILE_SCHEMA,
    MACHINE_FIELDS,
    PARTITION_COLUMN,
    PHASES,
    ROW_FIELDS,
    TRIAL_FIELDS,
    _check_sweep,
    _coerce,
    _file_name,
    _when,
    config_json,
)

logger = logging.getLogger(__name__)


class ParquetSink(Callback):
    """A Ray Tune callback writing every contract row of every trial to `{root}/sweep={sweep}/{trial}.parquet`.

    Rows of a trial are kept in memory keyed by (phase, epoch) — a re-reported epoch (a retried trial)
    replaces the earlier row — and the trial's part file is rewritten after every result. The first time
    this sink sees a trial (e.g. after `Tuner.restore`), the trial's existing part file is merged in, so a
    resumed trial keeps its earlier rows. A trial's rows are dropped from memory once it has completed or
    errored and its file is written (the file is the record; a later resume reloads it). `node` is the value
    the trial reported (else Tune's hostname), `node_id` the Ray node id it reported; `config_json` the flat
    trial config.

    Results without a `phase` (not from a contract trainable) are ignored.

    Args:
        root: the Parquet root: a local path, s3:// or gs:// URI.
        sweep: the sweep name (the hive partition value; letters, digits, `_.-`, not starting with `_` or `.`).
        filesystem: a pyarrow filesystem to write `root` with (default: from the URI).
    """

    def __init__(self, root: str, sweep: str, filesystem: pafs.FileSystem | None = None):
        self.root = str(root)
        self.sweep = _check_sweep(sweep)
        self._explicit_fs = filesystem
        self._fs, self._root_path = io.resolve(self.root, filesystem)
        self.partition_path = f"{self._root_path}/{PARTITION_COLUMN}={self.sweep}"
        # trial_id -> {"rows": {(phase, epoch): {column: value}}}
        self._trials: dict[str, dict[str, Any]] = {}
        self._dirty: set[str] = set()
        self._synced: set[str] = set()  # trials whose part file has been merged in by this instance
        self._warned_no_phase = False

    # -- paths -------------------------------------------------------------------------------------------
    def part_path(self, trial_id: str) -> str:
        """The path (inside the sink's filesystem) of one trial's part file.

        Args:
            trial_id: Tune's trial id.
        """
        return f"{self.partition_path}/{_file_name(trial_id)}"

    # -- state -------------------------------------------------------------------------------------------
    def _load_part(self, trial_id: str) -> dict[tuple[str, int], dict[str, Any]]:
        path = self.part_path(trial_id)
        if not io.is_file(self._fs, path):
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
        config = flat_config(getattr(trial, "config", None) or {})
        meta = {
            "trial_id": trial_id,
            "node": result.get("node") or result.get("hostname") or result.get("node_ip"),
            "node_id": result.get("node_id"),
            "config_json": config_json(config),
        }
        for name in TRIAL_FIELDS:
            meta[name] = result[name] if result.get(name) is not None else config.get(name)
        meta.update({name: result.get(name) for name in MACHINE_FIELDS})
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

    # -- rows from outside Tune ---------------------------------------------------------------------------
    def write_rows(self, trial_id: str, rows: list[dict]) -> None:
        """Write a part file for rows that did not come through Tune (a baseline fitted on the driver or
        copied from the cache): same layout, same atomic write, replacing the file of `trial_id`.

        Args:
            trial_id: names the part file; every row gets it as its `trial_id`.
            rows: rows with the part-file columns (missing ones are null; `reported_at` defaults to now).
        """
        now = datetime.now(UTC)
        state = {"rows": {}}
        for r in rows:
            row = {f.name: _coerce(f, r.get(f.name)) for f in FILE_SCHEMA}
            row["trial_id"], row["reported_at"] = trial_id, r.get("reported_at") or now
            state["rows"][(row["phase"], row["epoch"])] = row
        self._trials[trial_id] = state
        self._synced.add(trial_id)
        self._dirty.add(trial_id)
        if not self._flush(trial_id):
            raise OSError(f"could not write {self.part_path(trial_id)}")
        self._finish(trial_id)

    def read_rows(self, trial_id: str) -> list[dict]:
        """The rows of `trial_id`'s part file (empty when it has none yet).

        Args:
            trial_id: Tune's trial id (or a baseline's id).
        """
        return list(self._load_part(trial_id).values())

    # -- writing -----------------------------------------------------------------------------------------
    def table(self, trial_id: str) -> pa.Table:
        """One trial's rows as an Arrow table in file order (align epochs, then refine epochs).

        Args:
            trial_id: Tune's trial id.
        """
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
                io.write_bytes(self._fs, self.part_path(trial_id), data)
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
        self._fs, self._root_path = io.resolve(self.root, self._explicit_fs)
