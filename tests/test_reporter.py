"""The sweeps' console (orca_ray.reporter): rows with the study's columns, the progress line and its ETA, and a
real Ray Tune sweep whose console shows them and nothing else (no config dicts, no checkpoint lines)."""

from __future__ import annotations

import glob
import math
import re
from pathlib import Path

import pytest
from ray.tune.experiment import Trial

from orca_ray.reporter import StudyReporter, estimate_remaining, format_duration


def test_estimate_remaining_from_finished_trials():
    assert estimate_remaining([], [5.0], 3) is None  # nothing finished: no estimate
    # mean 15 s: 2 pending × 15 + the running one's 10 s left, one at a time
    assert estimate_remaining([10.0, 20.0], [5.0], 2) == pytest.approx(40.0)
    # two running side by side; one is past the mean (counts as nothing left)
    assert estimate_remaining([10.0, 20.0], [5.0, 30.0], 2) == pytest.approx(20.0)
    assert estimate_remaining([12.0], [], 0) == 0.0


def test_format_duration():
    assert format_duration(0) == "0:00:00"
    assert format_duration(3725.4) == "1:02:05"
    assert format_duration(math.nan) == "?"
    assert format_duration(None) == "?"


def _trial(config: dict, status: str, result: dict | None = None) -> Trial:
    t = Trial("align_then_refine", config=config, stub=True)
    t.set_status(status)
    if result is not None:
        t.run_metadata.last_result = result
    return t


def test_rows_show_the_study_columns_not_the_config():
    cfg = {
        "task": "digits",
        "body": "minilm",
        "proxy": "auto",
        "embedder_epochs": 10,
        "freeze": "none",
        "seed": 1,
        "lr": 2e-4,
    }
    running = _trial(
        {"trial": cfg},
        Trial.RUNNING,
        {
            "phase": "refine",
            "epoch": 2,
            "otdd": math.nan,
            "val_score": 0.05,
            "test_score": 0.0612,
            "proxy": "wnut16",
        },
    )
    pending = _trial({"trial": {**cfg, "embedder_epochs": 30}}, Trial.PENDING)
    reporter = StudyReporter(name="demo", refine_epochs=5)
    # the align OTDD is remembered while the trial fine-tunes
    reporter.tracker.on_trial_result(0, [], running, {"phase": "align", "epoch": 10, "otdd": 41.25})
    row = reporter.trial_row(running)
    expected = ["RUNNING", "digits", "minilm", "wnut16", "10", "none", "1", "refine", "2/5", "41.25", "0.05"]
    assert row[1:] == [*expected, "0.0612"]
    assert reporter.trial_row(pending)[1:9] == ["PENDING", "digits", "minilm", "auto", "30", "none", "1", ""]

    line = reporter.progress_line([running, pending])
    assert "[demo] trials: 0 done, 1 running, 1 pending of 2" in line
    assert "ETA after the first trial finishes" in line

    # a path spec shows as its short name
    own = _trial({"trial": {**cfg, "task": "npz:/data/sets/my_series.npz"}}, Trial.PENDING)
    assert reporter.trial_row(own)[2].startswith("npz-my_series-")

    # Optuna sweeps hand Tune a flat config
    flat = _trial(cfg, Trial.PENDING)
    assert StudyReporter(nested=False).trial_row(flat)[2:8] == ["digits", "minilm", "auto", "10", "none", "1"]


def test_progress_line_counts_and_eta():
    cfg = {"trial": {"task": "t", "proxy": "none", "embedder_epochs": 0, "freeze": "none", "seed": 0}}
    trials = [_trial(cfg, s) for s in (Trial.TERMINATED, Trial.TERMINATED, Trial.RUNNING, Trial.PENDING)]
    reporter = StudyReporter()
    reporter.setup(start_time=1000.0, total_samples=4)  # as Tune calls it when the run starts
    reporter.tracker.finished = {trials[0].trial_id: 30.0, trials[1].trial_id: 50.0}
    reporter.tracker.started = {trials[2].trial_id: 1090.0}
    line = reporter.progress_line(trials, now=1100.0)
    # mean 40 s: one pending (40 s) + the running one's 30 s left, one running
    assert "2 done, 1 running, 1 pending of 4" in line
    assert "elapsed 0:01:40" in line
    assert "ETA ~0:01:10 (mean 40 s per finished trial)" in line

    # while it runs: running rows first, then finished ones, at most max_progress_rows; every trial at the end
    rows = StudyReporter(max_progress_rows=2).progress_text(trials, done=False, now=1100.0).splitlines()[3:]
    assert "RUNNING" in rows[0]
    assert "TERMINATED" in rows[1]
    assert rows[2] == "... 1 more trials not shown"
    assert StudyReporter().progress_text(trials, done=True).count("PENDING") == 1


@pytest.mark.slow
def test_sweep_console_reads_like_the_study(ray_local, tmp_path, capfd, tiny_sweep_space):
    """A real (tiny) sweep: where-to-look lines first, then progress lines and study rows; no config dicts and
    no checkpoint lines on the console; each trial's log holds its epoch lines."""
    from orca_ray.sweep import SweepSpec, run_sweep

    space = tiny_sweep_space
    spec = SweepSpec(name="console", space=space, storage=str(tmp_path / "store"), analysis=False)
    grid = run_sweep(spec)
    assert not any(r.error for r in grid)
    out = capfd.readouterr().out
    look = out.index("while it runs, look here")
    assert look < out.index("trials:")
    assert f"live Parquet:    {spec.results_root}" in out
    assert "one trial's log: tail -f" in out
    assert "2 done, 0 running, 0 pending of 2" in out
    assert "emb.ep" in out
    assert "OTDD" in out
    assert "synthetic-satellite" in out
    for noise in ("Checkpoint successfully created", "'device'", "{'trial'", "Current best trial"):
        assert noise not in out
    # the printed instruction finds each trial's log, which holds its epoch lines
    pattern = re.search(r"tail -f (\S+)", out).group(1).replace("TRIAL", "*")
    logs = sorted(glob.glob(pattern))
    assert len(logs) == 2
    assert all("refine epoch   2" in Path(p).read_text() for p in logs)


@pytest.mark.slow
def test_failed_trial_named_with_its_error_file(ray_local, tmp_path, capfd):
    """A real Tune run whose trial fails: the console names the trial, where it failed and its error file."""
    from ray import tune

    from orca_ray.reporter import use_classic_console

    def fails_in_refine(config):  # nested, so Ray ships it by value (the tests are not importable in workers)
        tune.report({"phase": "refine", "epoch": 1, "val_score": 0.5})
        raise RuntimeError("refine blew up")

    reporter = StudyReporter(name="fails", refine_epochs=3)
    use_classic_console()
    tuner = tune.Tuner(
        fails_in_refine,
        param_space={"trial": {"task": "digits", "seed": 7}},
        run_config=tune.RunConfig(
            storage_path=str(tmp_path), progress_reporter=reporter, callbacks=[reporter.tracker], verbose=1
        ),
    )
    grid = tuner.fit()
    assert grid[0].error is not None
    out = capfd.readouterr().out
    assert "[fails] trials: 0 done, 0 running, 0 pending, 1 failed of 1" in out
    line = next(x for x in out.splitlines() if "error file:" in x)
    assert "ERROR" in line
    assert "failures: 1" in line
    assert "in refine epoch 1" in line
    error_file = line.split("error file: ")[1].strip()
    assert "refine blew up" in Path(error_file).read_text()
