"""`--log-to aim`: Tune's AimLoggerCallback, one Aim run per trial in an Aim repository under the sweep's storage
(`<storage>/<sweep>/aim`, or `$ORCA_RAY_AIM_REPO`: a folder or an `aim://` server), experiment = the sweep name.

Open it with `aim up --repo <storage>/<sweep>/aim`. (Aim's releases pin filelock < 4 and older SQLAlchemy,
NumPy and protobuf than this project's lock, so `orca_ray[aim]` installs only beside an older stack.)
"""

from __future__ import annotations

import os

from ray.tune.logger.aim import AimLoggerCallback

from . import epoch_metrics, figure_files, store_dir, trial_params, trial_tags


def repo(spec) -> str:
    """`$ORCA_RAY_AIM_REPO`, else `<storage>/<sweep>/aim`.

    Args:
        spec: the sweep.
    """
    return os.environ.get("ORCA_RAY_AIM_REPO") or store_dir(spec, "aim")


class AimTracker(AimLoggerCallback):
    """Tune's Aim callback with the Parquet series: `otdd`, `train_loss`, `val_score`, `test_score` tracked with
    the epoch as the step and the phase as the context; flat params as `hparams`; tags `key=value`.

    Tune's callback tracks every numeric result value as `ray/tune/<key>` stepped by its report counter and
    stores the nested grid config.

    Args:
        sweep: the sweep name (the Aim experiment).
        repo: the Aim repository.
    """

    def __init__(self, sweep: str, repo: str):
        super().__init__(repo=repo, experiment_name=sweep)
        self.sweep = sweep
        self._tagged: set = set()

    def _log_trial_hparams(self, trial):
        self._trial_to_run[trial]["hparams"] = {
            k: v if isinstance(v, bool | int | float | str) else str(v)
            for k, v in trial_params(trial.config).items()
        }

    def log_trial_start(self, trial):
        super().log_trial_start(trial)
        if not trial.evaluated_params:  # Tune stores hparams only for searched configs
            self._log_trial_hparams(trial)

    def log_trial_result(self, iteration: int, trial, result: dict):
        got = epoch_metrics(result)
        if got is None:
            return
        run = self._trial_to_run[trial]
        if trial not in self._tagged:
            self._tagged.add(trial)
            for k, v in trial_tags(self.sweep, trial.config, result).items():
                run.add_tag(f"{k}={v}")
        phase, step, metrics = got
        for name, value in metrics.items():
            run.track(value, name=name, step=step, context={"phase": phase})


def callback(spec) -> AimTracker:
    """The sweep's Aim callback.

    Args:
        spec: the sweep.
    """
    where_to = repo(spec)
    if "://" not in where_to:
        os.makedirs(where_to, exist_ok=True)
    return AimTracker(spec.name, where_to)


def log_sweep(spec, out_dir: str) -> str:
    """A sweep run in the sweep's experiment: the figures as images, final_scores.md as text.

    Args:
        spec: the sweep.
        out_dir: the analysis folder.
    """
    from aim import Image, Run, Text
    from PIL import Image as PILImage

    pngs, table = figure_files(out_dir)
    run = Run(repo=repo(spec), experiment=spec.name)
    run.name = f"{spec.name} (sweep)"
    run.add_tag(f"sweep={spec.name}")
    for path in pngs:
        run.track(Image(PILImage.open(path)), name=os.path.splitext(os.path.basename(path))[0], step=0)
    if table:
        with open(table) as f:
            run.track(Text(f.read()), name="final_scores", step=0)
    run.close()
    return (
        f"  Aim:             sweep run '{spec.name} (sweep)' holds the figures (aim up --repo {repo(spec)})"
    )


def where(spec) -> str:
    """Where the runs go and how to open them.

    Args:
        spec: the sweep.
    """
    return f"  Aim:             experiment {spec.name!r}: aim up --repo {repo(spec)}"
