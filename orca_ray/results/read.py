"""Reading results back: every row under a Parquet root (local, s3://, gs://) and one final score per trial.
No Ray here.

    read_results("s3://bucket/results")                                   # this module
    pyarrow.dataset.dataset(root, partitioning="hive")
    pandas.read_parquet(root)
    duckdb: SELECT * FROM read_parquet('root/**/*.parquet', hive_partitioning = true)

(DuckDB guesses partition value types: a sweep named "2024" comes back as an integer there unless
`hive_types = {'sweep': VARCHAR}` is given; `read_results` always reads it as a string.)
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from .. import io
from .schema import PARTITION_COLUMN, PARTITIONING, PHASES, RESULT_SCHEMA, TRIAL_FIELDS

OLD_PRECISION = "fp32"


def _empty_frame() -> pd.DataFrame:
    return RESULT_SCHEMA.empty_table().to_pandas()


def read_results(
    root: str, sweep: str | None = None, filesystem: pafs.FileSystem | None = None
) -> pd.DataFrame:
    """All rows under `root` (every sweep, or one), one DataFrame sorted by sweep, trial, phase, epoch, with the
    columns of `RESULT_SCHEMA`; empty (same columns) when nothing is there.

    Args:
        root: the Parquet root: a local path, s3:// or gs:// URI.
        sweep: only this sweep's partition; None reads every sweep.
        filesystem: a pyarrow filesystem to read `root` with (e.g. an S3 endpoint of your own).
    """
    fs, path = io.resolve(root, filesystem)
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
    # rows written before the precision column existed all ran in float32
    df["precision"] = df["precision"].fillna(OLD_PRECISION)
    phase_order = {p: i for i, p in enumerate(PHASES)}
    df = df.assign(_phase_order=df["phase"].map(phase_order).fillna(len(PHASES)))
    df = df.sort_values(["sweep", "trial_id", "_phase_order", "phase", "epoch"], kind="stable")
    return df.drop(columns="_phase_order").reset_index(drop=True)


FINAL_COLUMNS = ("sweep", "trial_id", *TRIAL_FIELDS, "metric", "node")


def final_scores(df: pd.DataFrame) -> pd.DataFrame:
    """One row per trial: the refine epoch with the best (lowest) val_score — ties go to the earliest epoch;
    the test score never takes part in the choice — as `best_epoch`, `final_val`, `final_test`; plus
    `final_otdd`, the OTDD of the align row at epoch == embedder_epochs (else the last align row with an
    OTDD). Trials without a scored refine epoch get NaN scores.

    Args:
        df: rows as `read_results` returns them.
    """
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
    for c in (
        "final_val",
        "final_test",
        "final_otdd",
        "lr",
        "pretraining_tokens",
        "lora_alpha",
        "lora_dropout",
    ):
        out[c] = out[c].astype("float64")
    out["best_epoch"] = out["best_epoch"].astype("Int32")
    for c in ("embedder_epochs", "seed", "lora_rank"):
        out[c] = out[c].astype("Int32")
    out["trainable_params"] = out["trainable_params"].astype("Int64")
    return out
