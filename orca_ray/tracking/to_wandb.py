"""`--log-to wandb`: Tune's WandbLoggerCallback, one W&B run per trial, grouped by sweep.

Settings from W&B's own variables: project `$WANDB_PROJECT` (else `orca_ray`), group `$WANDB_RUN_GROUP` (else the
sweep name), mode `$WANDB_MODE`. Offline unless configured: without `WANDB_MODE` and `WANDB_API_KEY` the runs
are written offline into each trial's folder (`<storage>/<sweep>/<trial>/wandb/offline-run-*`), to upload
later with `wandb sync`; set `WANDB_MODE=online` (after `wandb login`) to log to the server directly.
"""

from __future__ import annotations

import os

import pyarrow.fs
from ray.air.integrations.wandb import WandbLoggerCallback, _WandbLoggingActor

from . import PHASE_METRICS, epoch_metrics, figure_files, trial_params, trial_tags

DEFAULT_PROJECT = "orca_ray"
TAGS_KEY = "_orca_ray_tags"  # a result key the logging process turns into the run's tags


def settings(spec) -> dict:
    """`wandb.init` arguments common to the trial runs and the sweep run.

    Args:
        spec: the sweep.
    """
    configured = os.environ.get("WANDB_MODE") or os.environ.get("WANDB_API_KEY")
    return {
        "project": os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT,
        "group": os.environ.get("WANDB_RUN_GROUP") or spec.name,
        "mode": os.environ.get("WANDB_MODE") or ("online" if configured else "offline"),
    }


class _EpochAxesActor(_WandbLoggingActor):
    """Tune's per-trial W&B logging process, declaring each series' x-axis before the first row: W&B's own
    step only grows, so align epochs (0..k) and refine epochs (1..N) are axes of their own
    (`align_epoch`, `refine_epoch`), as W&B's define_metric provides."""

    def _handle_result(self, result: dict):
        tags = result.pop(TAGS_KEY, None)
        if tags is not None:  # the reported values (the resolved proxy) replace the config's
            self._wandb.run.tags = tuple(tags)
        if not getattr(self, "_axes_defined", False):
            self._axes_defined = True
            for phase, names in PHASE_METRICS.items():
                self._wandb.define_metric(f"{phase}_epoch", hidden=True)
                for name in names:
                    self._wandb.define_metric(name, step_metric=f"{phase}_epoch")
        return super()._handle_result(result)


class WandbTracker(WandbLoggerCallback):
    """Tune's W&B callback with per-trial config and tags and the Parquet series.

    Tune's callback logs the nested grid config, the same tags for every run and every result value.
    Here: the flat params as the run config, tags `key=value` (W&B tags are labels), and per epoch only that
    phase's Parquet values with its epoch (`align_epoch` / `refine_epoch`, the x-axes `_EpochAxesActor`
    declares).

    Args:
        sweep: the sweep name.
        kwargs: `WandbLoggerCallback` / `wandb.init` arguments (project, group, mode, ...).
    """

    _logger_actor_cls = _EpochAxesActor

    def __init__(self, sweep: str, **kwargs):
        # Tune's report counter is not a W&B step here (the epoch axes are); W&B counts its own
        super().__init__(excludes=["training_iteration"], **kwargs)
        self.sweep = sweep
        self._tagged: set = set()

    def setup(self, *args, **kwargs):
        if self.kwargs.get("mode") == "offline":
            # Tune looks for an API key unless WANDB_MODE says offline; an offline run needs none
            os.environ.setdefault("WANDB_MODE", "offline")
        super().setup(*args, **kwargs)

    def _start_logging_actor(self, trial, exclude_results, **init):
        if isinstance(trial.storage.storage_filesystem, pyarrow.fs.LocalFileSystem):
            # straight into the trial's folder under --storage: Tune's last upload of its staging copy can
            # come before W&B's logging process has written the last epochs
            os.makedirs(trial.path, exist_ok=True)
            init["dir"] = trial.path
        init["config"] = trial_params(trial.config)
        init["tags"] = _tag_list(trial_tags(self.sweep, trial.config))
        super()._start_logging_actor(trial, exclude_results, **init)

    def log_trial_result(self, iteration: int, trial, result: dict):
        got = epoch_metrics(result)
        if got is None:
            return
        phase, step, metrics = got
        row = {**metrics, f"{phase}_epoch": step, "training_iteration": result.get("training_iteration")}
        if trial not in self._tagged:
            self._tagged.add(trial)
            row[TAGS_KEY] = _tag_list(trial_tags(self.sweep, trial.config, result))
        super().log_trial_result(iteration, trial, row)


def _tag_list(tags: dict) -> list[str]:
    return [f"{k}={v}" for k, v in tags.items()]


def callback(spec) -> WandbTracker:
    """The sweep's W&B callback.

    Args:
        spec: the sweep.
    """
    return WandbTracker(spec.name, **settings(spec))


def log_sweep(spec, out_dir: str) -> str:
    """A sweep run (`<sweep> (sweep)`, job type `sweep`) in the sweep's group: the figures as images and the
    analysis folder (figures, final_scores.md) as an artifact.

    Args:
        spec: the sweep.
        out_dir: the analysis folder.
    """
    import wandb

    s = settings(spec)
    pngs, table = figure_files(out_dir)
    run = wandb.init(
        **s,
        name=f"{spec.name} (sweep)",
        job_type="sweep",
        dir=spec.experiment_path,
        tags=[f"sweep={spec.name}"],
        reinit="create_new",
    )
    try:
        run.log({os.path.splitext(os.path.basename(p))[0]: wandb.Image(p) for p in pngs})
        artifact = wandb.Artifact(f"{spec.name}-analysis", type="analysis")
        for path in [*pngs, *([table] if table else [])]:
            artifact.add_file(path)
        run.log_artifact(artifact)
    finally:
        run.finish()
    return f"  W&B:             sweep run '{spec.name} (sweep)' ({s['mode']}) holds the figures"


def where(spec) -> str:
    """Where the runs go.

    Args:
        spec: the sweep.
    """
    s = settings(spec)
    if s["mode"] == "offline":
        runs = f"{spec.experiment_path}/*/wandb/offline-run-*"  # trials; the sweep run in <sweep>/wandb
        return f"  W&B (offline):   {runs}; upload with wandb sync {runs} {spec.experiment_path}/wandb/offline-run-*"
    return f"  W&B:             project {s['project']!r}, group {s['group']!r} ({s['mode']})"
