"""`--log-to tensorboard`: Tune's TBXLoggerCallback, one event file per trial in the trial's folder
(`<storage>/<sweep>/<trial>/events.out.tfevents.*`), the sweep's figures in `<storage>/<sweep>/figures/`.

`tensorboard --logdir <storage>/<sweep>` shows each trial as a run (and the figures as the run `figures`).
Tune adds its plain TBXLoggerCallback to every sweep by itself; this one takes its place when asked for.
"""

from __future__ import annotations

import os

import numpy as np
from ray.tune.logger import TBXLoggerCallback

from . import epoch_metrics, figure_files, trial_params, trial_tags


class TensorBoardTracker(TBXLoggerCallback):
    """Tune's TensorBoard callback writing the Parquet series: scalars `otdd` (step: align epoch) and
    `train_loss`, `val_score`, `test_score` (step: refine epoch), and at the trial's end the flat params and
    tags as TensorBoard hparams.

    Tune's callback writes every numeric result value as `ray/tune/<key>` stepped by its report counter
    (align and refine epochs on one axis) and its hparams are the nested grid config.

    Args:
        sweep: the sweep name (in every trial's hparams).
    """

    def __init__(self, sweep: str):
        super().__init__()
        self.sweep = sweep
        self._tags: dict = {}

    def log_trial_result(self, iteration: int, trial, result: dict):
        got = epoch_metrics(result)
        if got is None:
            return
        if trial not in self._trial_writer:
            self.log_trial_start(trial)
        self._tags[trial] = trial_tags(self.sweep, trial.config, result)
        _, step, metrics = got
        writer = self._trial_writer[trial]
        for name, value in metrics.items():
            writer.add_scalar(name, value, global_step=step)
        self._trial_result[trial].update(metrics)  # the last values: the hparams' metrics at the end
        writer.flush()

    def log_trial_end(self, trial, failed: bool = False):
        if trial in self._trial_writer and self._trial_result.get(trial):
            self._try_log_hparams(trial, dict(self._trial_result[trial]))
            self._trial_result[trial] = {}  # Tune's own hparams (nested config) are not written after these
        self._tags.pop(trial, None)
        super().log_trial_end(trial, failed)

    def _try_log_hparams(self, trial, result: dict):
        from tensorboardX.summary import hparams

        values = {**trial_params(trial.config), **self._tags.get(trial, trial_tags(self.sweep, trial.config))}
        # TensorBoard's hparams take numbers, strings and booleans; anything else is shown as its text
        params = {k: v if isinstance(v, bool | int | float | str) else str(v) for k, v in values.items()}
        writer = self._trial_writer[trial].file_writer
        for summary in hparams(hparam_dict=params, metric_dict=result):
            writer.add_summary(summary)


def callback(spec) -> TensorBoardTracker:
    """The sweep's TensorBoard callback.

    Args:
        spec: the sweep.
    """
    return TensorBoardTracker(spec.name)


def log_sweep(spec, out_dir: str) -> str:
    """Write the figures (images) and final_scores.md (text) as events in the figures folder itself.

    Args:
        spec: the sweep.
        out_dir: the analysis folder.
    """
    import matplotlib.image
    from tensorboardX import SummaryWriter

    pngs, table = figure_files(out_dir)
    with SummaryWriter(out_dir) as writer:
        for path in pngs:
            img = matplotlib.image.imread(path)[..., :3]  # RGBA → RGB, floats in [0, 1]
            name = os.path.splitext(os.path.basename(path))[0]
            writer.add_image(name, np.ascontiguousarray(img), global_step=0, dataformats="HWC")
        if table:
            with open(table) as f:
                writer.add_text("final_scores", f.read(), global_step=0)
    return f"  TensorBoard:     figures and final_scores.md in the run 'figures' ({where_command(spec)})"


def where_command(spec) -> str:
    """The command that opens the sweep's event files.

    Args:
        spec: the sweep.
    """
    return f"tensorboard --logdir {spec.experiment_path}"


def where(spec) -> str:
    """Where the event files go and how to open them.

    Args:
        spec: the sweep.
    """
    return f"  TensorBoard:     one run per trial folder: {where_command(spec)}"
