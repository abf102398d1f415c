"""`--log-to mlflow`: Tune's MLflowLoggerCallback, one MLflow run per trial, in an experiment named after the sweep.

Store: `$MLFLOW_TRACKING_URI` when set (a server, a database, a folder), else an SQLite database under the
sweep's storage, `<storage>/<sweep>/mlflow/mlflow.db`, with artifacts beside it in `artifacts/` (SQLite is the
default store of MLflow ≥ 3.7; its file store is legacy). Experiment: `$MLFLOW_EXPERIMENT_NAME`, else the
sweep name. Only the driver writes (Tune's callbacks run there), so a local database works on a cluster too.
"""

from __future__ import annotations

import os

from mlflow.tracking import MlflowClient
from ray.air.integrations.mlflow import MLflowLoggerCallback

from . import epoch_metrics, figure_files, store_dir, trial_params, trial_tags

SWEEP_RUN_TAG = "orca_ray.sweep_run"  # marks the sweep-level run (figures, final_scores.md)


def tracking_uri(spec) -> str:
    """`$MLFLOW_TRACKING_URI`, else the sweep's own SQLite store.

    Args:
        spec: the sweep.
    """
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{store_dir(spec, 'mlflow')}/mlflow.db"


def experiment_name(spec) -> str:
    """`$MLFLOW_EXPERIMENT_NAME`, else the sweep name.

    Args:
        spec: the sweep.
    """
    return os.environ.get("MLFLOW_EXPERIMENT_NAME") or spec.name


def _experiment_id(client: MlflowClient, name: str, artifacts: str | None) -> str:
    """The experiment's id, creating it (artifacts under the sweep's storage, not MLflow's `./mlruns` of
    whatever folder the driver runs in) when it does not exist."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    return client.create_experiment(name, artifact_location=artifacts)


class MLflowTracker(MLflowLoggerCallback):
    """Tune's MLflow callback with the trial's own run identity and the Parquet series.

    Tune's callback logs the nested grid config (`trial/task`), gives every run the same tags, and logs every
    numeric result value stepped by Tune's report counter (align and refine epochs on one axis, NaN where a
    phase measures nothing). Here: flat params, per-trial tags, `otdd` / `train_loss` / `val_score` /
    `test_score` stepped by their epoch. A trial resumed by `Tuner.restore` (a new callback) continues the
    run tagged with its trial id instead of opening a second one.

    Args:
        sweep: the sweep name (a tag of every run).
        tracking_uri: the MLflow store.
        experiment_name: the MLflow experiment.
        artifact_location: where a newly created experiment keeps artifacts (None: the server's default).
    """

    def __init__(self, sweep: str, tracking_uri: str, experiment_name: str, artifact_location: str | None):
        super().__init__(tracking_uri, experiment_name=experiment_name, tags={"sweep": sweep})
        self.sweep = sweep
        self.artifact_location = artifact_location

    def setup(self, *args, **kwargs):
        _experiment_id(MlflowClient(self.tracking_uri), self.experiment_name, self.artifact_location)
        super().setup(*args, **kwargs)
        self._tagged: set = set()

    def _client(self) -> MlflowClient:
        return MlflowClient(self.tracking_uri)

    def _existing_run(self, trial) -> str | None:
        runs = self._client().search_runs(
            [self.mlflow_util.experiment_id],
            filter_string=f"tags.trial_id = '{trial.trial_id}' and tags.sweep = '{self.sweep}'",
            max_results=1,
        )
        return runs[0].info.run_id if runs else None

    def log_trial_start(self, trial):
        if trial in self._trial_runs:
            return
        run_id = self._existing_run(trial)
        if run_id is None:
            tags = {**self.tags, **trial_tags(self.sweep, trial.config), "trial_id": str(trial.trial_id)}
            run_id = self.mlflow_util.start_run(tags=tags, run_name=str(trial)).info.run_id
        else:
            self._client().update_run(run_id, status="RUNNING")
        self._trial_runs[trial] = run_id
        self.mlflow_util.log_params(run_id=run_id, params_to_log=trial_params(trial.config))

    def log_trial_result(self, iteration: int, trial, result: dict):
        got = epoch_metrics(result)
        if got is None:
            return
        if trial not in self._trial_runs:
            self.log_trial_start(trial)
        run_id = self._trial_runs[trial]
        if trial not in self._tagged:  # the reported values (the resolved proxy) replace the config's
            self._tagged.add(trial)
            for k, v in trial_tags(self.sweep, trial.config, result).items():
                self._client().set_tag(run_id, k, v)
        _, step, metrics = got
        self.mlflow_util.log_metrics(run_id=run_id, metrics_to_log=metrics, step=step)


def callback(spec) -> MLflowTracker:
    """The sweep's MLflow callback.

    Args:
        spec: the sweep.
    """
    own_store = not os.environ.get("MLFLOW_TRACKING_URI")
    if own_store:
        os.makedirs(store_dir(spec, "mlflow"), exist_ok=True)
    return MLflowTracker(
        spec.name,
        tracking_uri(spec),
        experiment_name(spec),
        os.path.join(store_dir(spec, "mlflow"), "artifacts") if own_store else None,
    )


def log_sweep(spec, out_dir: str) -> str:
    """Attach the figures and final_scores.md to the sweep's run (`<sweep> (sweep)`, tagged
    `orca_ray.sweep_run`), reusing it when the sweep is resumed.

    Args:
        spec: the sweep.
        out_dir: the analysis folder.
    """
    client = MlflowClient(tracking_uri(spec))
    own = not os.environ.get("MLFLOW_TRACKING_URI")
    exp = _experiment_id(
        client, experiment_name(spec), os.path.join(store_dir(spec, "mlflow"), "artifacts") if own else None
    )
    found = client.search_runs(
        [exp], filter_string=f"tags.`{SWEEP_RUN_TAG}` = 'true' and tags.sweep = '{spec.name}'", max_results=1
    )
    if found:
        run_id = found[0].info.run_id
    else:
        tags = {SWEEP_RUN_TAG: "true", "sweep": spec.name}
        run_id = client.create_run(exp, run_name=f"{spec.name} (sweep)", tags=tags).info.run_id
    pngs, table = figure_files(out_dir)
    for path in [*pngs, *([table] if table else [])]:
        client.log_artifact(run_id, path)
    client.set_terminated(run_id)
    return f"  MLflow:          sweep run {spec.name!r} holds the figures ({where_command(spec)})"


def where_command(spec) -> str:
    """The command that opens the store.

    Args:
        spec: the sweep.
    """
    uri = tracking_uri(spec)
    return f"mlflow ui --backend-store-uri {uri}" if uri.startswith(("sqlite:", "file:", "/")) else uri


def where(spec) -> str:
    """Where the runs go and how to open them.

    Args:
        spec: the sweep.
    """
    return f"  MLflow:          experiment {experiment_name(spec)!r}: {where_command(spec)}"
