"""The sweeps' console: Ray Tune's command-line reporter showing what the study is about.

    reporter = StudyReporter(nested=True)            # grid sweeps keep the TrialConfig under config["trial"]
    tune.RunConfig(progress_reporter=reporter, callbacks=[reporter.tracker, ...])

Every few seconds it prints one progress line and one row per running or finished trial (every trial at the
end), instead of Ray's default status tables with each trial's whole config::

    [embedder_epochs-demo] trials: 4 done, 2 running, 18 pending of 24 | elapsed 0:02:13 | ETA ~0:05:40 ...
    trial           status   task    body    proxy   emb.ep  freeze  seed  phase   epoch  OTDD   val     test
    1f0c9a2e-00004  RUNNING  digits  minilm  wnut16  10      none    0     refine  3/5    41.2   0.0523  0.0611

The OTDD column keeps the trial's last align OTDD while it fine-tunes (the embedder it refines); val and test
are the scores after the shown refine epoch (lower is better). The ETA comes from the trials finished in this
run: mean trial time × work left ÷ trials running at once. A trial that failed is listed under the table with
its error file.

`StudyReporter` implements Ray's public reporter interface (`setup`, `set_total_samples`, `should_report`,
`report`) and keeps its own start time and row limit; it reads trials only through their public attributes
(`config`, `status`, `last_result`, `error_file`, `num_failures`).

Ray 2.60 prints its new console (and ignores a passed reporter) unless `RAY_AIR_NEW_OUTPUT=0`;
`use_classic_console()` sets that before `Tuner.fit`. Checkpoint lines ("Checkpoint successfully created at
...") are logged inside the trial processes: with `ray.init(log_to_driver=False)` and
`RunConfig(log_to_file=True)` they stay in each trial's log files.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence

from ray.tune import Callback, CLIReporter
from ray.tune.experiment import Trial

from .tasks.specs import task_slug

# (config field, column header); "proxy" is shown as the trial resolved it ("auto" → e.g. "wnut16")
PARAMETER_COLUMNS = (
    ("task", "task"),
    ("body", "body"),
    ("proxy", "proxy"),
    ("embedder_epochs", "emb.ep"),
    ("freeze", "freeze"),
    ("seed", "seed"),
)
METRIC_COLUMNS = (
    ("phase", "phase"),
    ("epoch", "epoch"),
    ("otdd", "OTDD"),
    ("val_score", "val"),
    ("test_score", "test"),
)
STATUS_ORDER = (Trial.RUNNING, Trial.PAUSED, Trial.PENDING, Trial.ERROR, Trial.TERMINATED)


def use_classic_console() -> None:
    """Make Ray Tune use the reporter passed in `RunConfig(progress_reporter=...)` (Ray 2.60 ignores it
    while its new console, `RAY_AIR_NEW_OUTPUT=1`, is on). An explicit user setting is kept. Takes no
    arguments."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


def format_duration(seconds: float) -> str:
    """`H:MM:SS` (no fraction); "?" for a missing or non-finite value.

    Args:
        seconds: a duration in seconds.
    """
    if seconds is None or not math.isfinite(seconds):
        return "?"
    s = round(max(0.0, seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def estimate_remaining(
    finished_seconds: Sequence[float], running_elapsed: Sequence[float], pending: int
) -> float | None:
    """Seconds until the sweep ends, from the trials finished so far: each pending trial takes the mean
    finished time, each running one the rest of it (at least nothing), and the trials running now keep
    running side by side. None before any trial has finished.

    Args:
        finished_seconds: run time of every trial finished in this run.
        running_elapsed: time each running trial has run so far.
        pending: trials not started yet.
    """
    if not finished_seconds:
        return None
    mean = sum(finished_seconds) / len(finished_seconds)
    work = pending * mean + sum(max(0.0, mean - e) for e in running_elapsed)
    return work / max(1, len(running_elapsed))


class OTDDTracker(Callback):
    """A Tune callback remembering each trial's last align OTDD and when each trial started and finished,
    for `StudyReporter` (a reporter only sees the latest result of a trial)."""

    def __init__(self):
        self.otdd: dict[str, float] = {}
        self.started: dict[str, float] = {}
        self.finished: dict[str, float] = {}  # trial id -> run time in this run

    def on_trial_start(self, iteration: int, trials: list, trial: Trial, **info) -> None:
        """Note when the trial started.

        Args:
            iteration: Tune's loop counter.
            trials: every trial of the run.
            trial: the trial that started.
            **info: further keyword arguments from Tune.
        """
        self.started[trial.trial_id] = time.time()

    def on_trial_result(self, iteration: int, trials: list, trial: Trial, result: dict, **info) -> None:
        """Keep the result's OTDD (align epochs report it; refine epochs do not).

        Args:
            iteration: Tune's loop counter.
            trials: every trial of the run.
            trial: the trial that reported.
            result: the reported metrics.
            **info: further keyword arguments from Tune.
        """
        self.started.setdefault(trial.trial_id, time.time())
        v = result.get("otdd")
        if isinstance(v, int | float) and math.isfinite(v):
            self.otdd[trial.trial_id] = float(v)

    def on_trial_complete(self, iteration: int, trials: list, trial: Trial, **info) -> None:
        """Note how long the trial ran (for the ETA).

        Args:
            iteration: Tune's loop counter.
            trials: every trial of the run.
            trial: the trial that finished.
            **info: further keyword arguments from Tune.
        """
        start = self.started.get(trial.trial_id)
        if start is not None:
            self.finished[trial.trial_id] = time.time() - start


class StudyReporter(CLIReporter):
    """Ray Tune's `CLIReporter` with the study's columns (task, body, proxy, embedder epochs, freeze, seed,
    phase, epoch, OTDD, val, test), a progress line with done / running / pending counts, elapsed time and an
    ETA, and the errored trials with their error files. Rows: running and finished trials while the sweep
    runs, every trial at the end. Register `reporter.tracker` as a Tune callback too.

    Only Ray's public reporter interface is used: Tune calls `setup`, `should_report` and `report`; the
    start time, sample count and row limit are kept here rather than read back from Ray's reporter.

    Args:
        nested: the TrialConfig sits under `config["trial"]` (grid sweeps); False for flat configs (Optuna).
        name: the sweep's name, shown at the start of the progress line.
        refine_epochs: fine-tuning epochs per trial, shown as "epoch k/N" (None: just k).
        max_report_frequency: seconds between two reports.
        max_progress_rows: at most this many trial rows (running ones first); the rest are counted.
    """

    def __init__(
        self,
        *,
        nested: bool = True,
        name: str = "",
        refine_epochs: int | None = None,
        max_report_frequency: int = 15,
        max_progress_rows: int = 20,
    ):
        prefix = "trial/" if nested else ""
        super().__init__(
            parameter_columns={prefix + k: v for k, v in PARAMETER_COLUMNS},
            metric_columns=dict(METRIC_COLUMNS),
            max_report_frequency=max_report_frequency,
            max_progress_rows=max_progress_rows,
            print_intermediate_tables=True,
        )
        self.nested = nested
        self.name = name
        self.refine_epochs = refine_epochs
        self.max_rows = max_progress_rows
        self.start_time: float | None = None  # set by `setup` when Tune starts the run
        self.total_samples: int | None = None
        self.tracker = OTDDTracker()

    # -- Ray's reporter interface -------------------------------------------------------------------------
    def setup(
        self,
        start_time: float | None = None,
        total_samples: int | None = None,
        metric: str | None = None,
        mode: str | None = None,
        **kwargs,
    ) -> None:
        """Called by Tune before the run starts: remembers when it started and how many trials it expects.

        Args:
            start_time: when the Tune run started (seconds since the epoch; None: now).
            total_samples: trials the search will create (None: count the trials seen).
            metric: the metric Tune optimises (passed on to `CLIReporter`).
            mode: "min" or "max" (passed on to `CLIReporter`).
            **kwargs: further arguments of Ray's `ProgressReporter.setup`.
        """
        super().setup(start_time=start_time, total_samples=total_samples, metric=metric, mode=mode, **kwargs)
        self.start_time = time.time() if start_time is None else start_time
        self.total_samples = total_samples

    def set_total_samples(self, total_samples: int | None) -> None:
        """Called by Tune when the number of trials is known or changes.

        Args:
            total_samples: trials the search will create.
        """
        super().set_total_samples(total_samples)
        self.total_samples = total_samples

    def report(self, trials: list[Trial], done: bool, *sys_info: str) -> None:
        """Print the progress line, the trial rows and the errored trials (Tune calls this whenever
        `should_report` says so).

        Args:
            trials: every trial of the run.
            done: the run is over (every trial is shown, not only running and finished ones).
            *sys_info: Ray's resource lines (not shown: the dashboard has them).
        """
        print(self.progress_text(trials, done), flush=True)

    # -- what the console shows ---------------------------------------------------------------------------
    def _config(self, trial: Trial) -> dict:
        config = trial.config or {}
        return config.get("trial", config) if self.nested else config

    def trial_row(self, trial: Trial) -> list[str]:
        """The cells of one trial's row (trial, status, the parameter and metric columns).

        Args:
            trial: a Tune trial (its config and `last_result` are read).
        """
        cfg, res = self._config(trial), trial.last_result or {}
        cells = [_short_name(trial), trial.status]
        for key, _ in PARAMETER_COLUMNS:
            value = res.get(key) if key == "proxy" and res.get(key) else cfg.get(key)
            if key == "task" and value:
                value = task_slug(value)  # a path spec (npz:/data/x.npz) as its short name
            cells.append(_cell(value))
        phase = res.get("phase")
        epoch = res.get("epoch")
        if phase == "refine" and epoch is not None and self.refine_epochs:
            epoch = f"{epoch}/{self.refine_epochs}"
        elif phase == "align" and epoch is not None:
            epoch = f"{epoch}/{cfg.get('embedder_epochs', '?')}"
        otdd = self.tracker.otdd.get(trial.trial_id, res.get("otdd"))
        cells += [
            _cell(phase),
            _cell(epoch),
            _cell(otdd, 4),
            _cell(res.get("val_score")),
            _cell(res.get("test_score")),
        ]
        return cells

    def progress_line(self, trials: Sequence[Trial], now: float | None = None) -> str:
        """Done / running / pending / errored counts, elapsed time and the ETA from finished trials.

        Args:
            trials: every trial of the run.
            now: the time to measure elapsed time and the ETA at (None: now).
        """
        now = time.time() if now is None else now
        by = {s: [t for t in trials if t.status == s] for s in STATUS_ORDER}
        total = max(len(trials), self.total_samples or 0)
        parts = [
            f"{len(by[Trial.TERMINATED])} done",
            f"{len(by[Trial.RUNNING])} running",
            f"{len(by[Trial.PENDING]) + len(by[Trial.PAUSED])} pending",
        ]
        if by[Trial.ERROR]:
            parts.append(f"{len(by[Trial.ERROR])} failed")
        finished = list(self.tracker.finished.values())
        running = [now - self.tracker.started.get(t.trial_id, now) for t in by[Trial.RUNNING]]
        eta = estimate_remaining(finished, running, len(by[Trial.PENDING]) + len(by[Trial.PAUSED]))
        eta_str = (
            f"ETA ~{format_duration(eta)} (mean {sum(finished) / len(finished):.0f} s per finished trial)"
            if eta is not None
            else "ETA after the first trial finishes"
        )
        head = f"[{self.name}] " if self.name else ""
        elapsed = format_duration(now - (self.start_time if self.start_time is not None else now))
        return f"{head}trials: {', '.join(parts)} of {total} | elapsed {elapsed} | {eta_str}"

    def error_lines(self, trials: Sequence[Trial]) -> list[str]:
        """One line per trial that failed at least once: its name, status, failure count, where it was
        (phase and epoch of its last result) and its error file. Empty when nothing failed.

        Args:
            trials: every trial of the run.
        """
        failed = [t for t in trials if t.status == Trial.ERROR or t.num_failures]
        if not failed:
            return []
        lines = [f"errored trials: {len(failed)}"]
        for t in failed:
            res = t.last_result or {}
            where = f" in {res['phase']} epoch {res.get('epoch', '?')}" if res.get("phase") else ""
            retried = " (finished after a retry)" if t.status == Trial.TERMINATED else ""
            lines.append(
                f"  {_short_name(t)}  {t.status}{retried}  failures: {t.num_failures}{where}  error file: "
                f"{t.error_file or '(none written)'}"
            )
        return lines

    def progress_text(self, trials: Sequence[Trial], done: bool, now: float | None = None) -> str:
        """What one report prints: the progress line, a table of trial rows (running, errored and finished
        trials while the run goes on, at most `max_progress_rows` of them; every trial at the end) and the
        errored trials.

        Args:
            trials: every trial of the run.
            done: the run is over.
            now: the time to measure elapsed time and the ETA at (None: now).
        """
        ordered = sorted(trials, key=lambda t: (STATUS_ORDER.index(t.status), str(t)))
        if not done:  # while it runs: running, errored and finished trials (pending ones are counted above)
            ordered = [t for t in ordered if t.status not in (Trial.PENDING, Trial.PAUSED)]
        shown = ordered if done else ordered[: self.max_rows]
        header = ["trial", "status"] + [h for _, h in PARAMETER_COLUMNS] + [h for _, h in METRIC_COLUMNS]
        lines = ["", self.progress_line(trials, now)]
        if shown:
            lines += _table(header, [self.trial_row(t) for t in shown])
        if len(shown) < len(ordered):
            lines.append(f"... {len(ordered) - len(shown)} more trials not shown")
        lines += self.error_lines(trials)
        return "\n".join(lines) + "\n"


def _short_name(trial: Trial) -> str:
    # trial names end in <config hash>-<index> (sweep.runner); the table's other columns say the rest
    return "-".join(str(trial).split("-")[-2:])


def _cell(value, digits: int = 4) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if not math.isfinite(value):
            return ""
        return f"{value:.{digits}g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"
    return str(value)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return [fmt.format(*header), *(fmt.format(*r) for r in rows)]
