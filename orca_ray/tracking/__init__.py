"""Experiment trackers (`--log-to mlflow wandb tensorboard aim`): every trial of a sweep a run in the tracker,
through Ray Tune's own logger callbacks, configured so that the tracker shows what Parquet holds.

    problems = check_trackers(["mlflow"], storage="./results")  # preflight (no Ray): missing extras, ...
    callbacks = tracker_callbacks(spec)                          # Tune callbacks for spec.log_to
    log_sweep_outputs(spec, figures_dir)                         # figures + final_scores.md on a sweep run

What each trial's run holds, whichever tracker: its config as params (the flat TrialConfig fields that are
set, the names of `config_json`), per epoch the Parquet values under their column names with the epoch as the
step (`otdd` per align epoch 0..k; `train_loss`, `val_score`, `test_score` per refine epoch 1..N), and tags
sweep, task, body, proxy, freeze, seed (the Parquet values: `proxy` resolved, e.g. `auto` → `wnut16`).

This module is the door (the registry, the checks, the shared reading of a trial); each tracker lives in its
own module (`to_mlflow`, `to_wandb`, `to_tensorboard`, `to_aim`), which imports Ray and the tracker.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..config import flat_config
from ..io import is_uri


@dataclass(frozen=True)
class Tracker:
    """One tracker `--log-to` accepts.

    Args:
        name: the `--log-to` value and the pip extra (`orca_ray[NAME]`).
        modules: what must import for it to run (the writer, and the reader its README command uses).
        impl: the module that builds its Tune callback (`callback(spec)`), logs a sweep's outputs
            (`log_sweep(spec, out_dir)`) and says where its files are (`where(spec)`).
        local_store: its default store is a folder under the sweep's storage, so an `s3://`/`gs://` storage
            needs the tracker's own location set (`store_env`) instead.
        store_env: the environment variable that points the tracker elsewhere (None: it has none).
    """

    name: str
    modules: tuple[str, ...]
    impl: str
    local_store: bool = False
    store_env: str | None = None


TRACKERS: dict[str, Tracker] = {
    t.name: t
    for t in (
        Tracker("mlflow", ("mlflow",), "to_mlflow", local_store=True, store_env="MLFLOW_TRACKING_URI"),
        Tracker("wandb", ("wandb",), "to_wandb"),
        # Tune writes with tensorboardX (a ray[tune] dependency); `tensorboard` reads and serves the files
        Tracker("tensorboard", ("tensorboardX", "tensorboard"), "to_tensorboard"),
        Tracker("aim", ("aim",), "to_aim", local_store=True, store_env="ORCA_RAY_AIM_REPO"),
    )
}
# what a phase measures (the other metric columns of its rows are null in Parquet): the per-epoch series
PHASE_METRICS = {"align": ("otdd",), "refine": ("train_loss", "val_score", "test_score")}
TAG_FIELDS = ("task", "body", "proxy", "freeze", "seed")
# the folder under the sweep's experiment folder where a tracker's local store goes
STORE_SUBDIR = {"mlflow": "mlflow", "aim": "aim"}


def check_trackers(names: Iterable[str], storage: str) -> list[str]:
    """Preflight for `--log-to`: one line per tracker that cannot run, naming the fix. Imports nothing.

    Args:
        names: the `--log-to` values.
        storage: the sweep's `--storage` (a local default store cannot live under an s3:// or gs:// URI).
    """
    problems = []
    for name in dict.fromkeys(names):
        t = TRACKERS.get(name)
        if t is None:
            problems.append(f"--log-to {name}: unknown tracker; choose from {', '.join(TRACKERS)}")
            continue
        missing = [m for m in t.modules if importlib.util.find_spec(m) is None]
        if missing:
            problems.append(
                f"--log-to {name}: {' and '.join(missing)} not installed; "
                f"pip install 'orca_ray[{name}]' (or 'orca_ray[trackers]' for all)"
            )
        elif t.local_store and is_uri(storage) and not os.environ.get(t.store_env or ""):
            problems.append(
                f"--log-to {name}: its default store is a local folder under --storage, which is {storage}; "
                f"set {t.store_env} to a {name} server or a local path"
            )
    return problems


def _impl(name: str):
    return importlib.import_module(f"{__name__}.{TRACKERS[name].impl}")


def tracker_callbacks(spec) -> list:
    """The Tune callbacks of the sweep's trackers (`spec.log_to`), in that order.

    Args:
        spec: the sweep (`sweep.plan.SweepSpec`).
    """
    return [_impl(name).callback(spec) for name in dict.fromkeys(spec.log_to)]


def log_sweep_outputs(spec, out_dir: str) -> list[str]:
    """Attach the sweep's figures and final_scores.md to a sweep-level run in each tracker.

    Args:
        spec: the sweep.
        out_dir: the folder analysis wrote (PNGs and final_scores.md).

    Returns:
        One line per tracker saying where the sweep run is.
    """
    return [_impl(name).log_sweep(spec, out_dir) for name in dict.fromkeys(spec.log_to)]


def where_lines(spec) -> list[str]:
    """One line per tracker: where its files go and the command that opens them.

    Args:
        spec: the sweep.
    """
    return [_impl(name).where(spec) for name in dict.fromkeys(spec.log_to)]


def store_dir(spec, name: str) -> str:
    """The absolute local folder of a tracker's default store: `<storage>/<sweep>/<mlflow|aim>`.

    Args:
        spec: the sweep (local storage).
        name: the tracker.
    """
    return os.path.abspath(os.path.join(os.path.expanduser(spec.experiment_path), STORE_SUBDIR[name]))


# ---- what a trial logs, the same for every tracker ------------------------------------------------------------
def trial_params(config: Mapping[str, Any]) -> dict[str, Any]:
    """A trial's params: the flat trial config (TrialConfig fields, a baseline's marker), unset ones left out.

    Args:
        config: the Tune trial config (nested under "trial" for grid sweeps).
    """
    return {k: v for k, v in sorted(flat_config(config).items()) if v is not None}


def trial_tags(sweep: str, config: Mapping[str, Any], result: Mapping[str, Any] | None = None) -> dict:
    """A trial's tags: the sweep and the Parquet identity columns, as strings.

    Args:
        sweep: the sweep name.
        config: the Tune trial config.
        result: a result the trial reported: its values win (the resolved proxy), else the config's.
    """
    flat, result = flat_config(config), result or {}
    tags = {"sweep": sweep}
    for k in TAG_FIELDS:
        v = result.get(k) if result.get(k) is not None else flat.get(k)
        if v is not None:
            tags[k] = str(v)
    return tags


def epoch_metrics(result: Mapping[str, Any]) -> tuple[str, int, dict[str, float]] | None:
    """The Parquet values of one reported epoch: (phase, epoch, {column: value}), or None when the result is
    not a trial epoch. Values Parquet stores as null (NaN, unmeasured) are left out.

    Args:
        result: a Tune result (one `tune.report` of `trainable.align_then_refine`).
    """
    phase = result.get("phase")
    if phase not in PHASE_METRICS or result.get("epoch") is None:
        return None
    values = {}
    for k in PHASE_METRICS[phase]:
        v = result.get(k)
        if v is not None and math.isfinite(float(v)):
            values[k] = float(v)
    return phase, int(result["epoch"]), values


def figure_files(out_dir: str) -> tuple[list[str], str | None]:
    """The sweep's outputs analysis wrote: its PNGs (sorted) and final_scores.md (None when absent).

    Args:
        out_dir: the analysis folder.
    """
    from ..tables import TABLE

    names = sorted(os.listdir(out_dir)) if os.path.isdir(out_dir) else []
    pngs = [os.path.join(out_dir, n) for n in names if n.endswith(".png")]
    table = os.path.join(out_dir, TABLE)
    return pngs, table if os.path.exists(table) else None
