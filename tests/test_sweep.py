"""Real local Ray Tune sweeps through run_sweep and the real trainable, read back from Parquet.

Tiny synthetic task and tiny body so each trial takes seconds; the trainable, the embedder snapshots, the
proxy features, the checkpoints and the Parquet sink are the production ones.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import ray
from ray import tune

from orca_ray.config import TrialConfig
from orca_ray.results import read_results
from orca_ray.sweep import SweepSpec, expand_grid
from orca_ray.sweep.runner import run_sweep

REFINE_EPOCHS = 2


def space(tmp_path, **over):
    base = {
        "task": "synthetic-satellite",
        "body": "tiny-text",
        "proxy": "auto",
        "embedder_epochs": [0, 2],
        "seed": [0, 1],
        "refine_epochs": REFINE_EPOCHS,
        "batch_size": 32,
        "proxy_size": 400,
        "align_batch_per_class": 8,
        "cache_dir": str(tmp_path / "cache"),
    }
    return {**base, **over}


def expected_rows(configs: list[TrialConfig]) -> set[tuple]:
    rows = set()
    for c in configs:
        rows |= {(c.config_hash, "align", k) for k in range(c.embedder_epochs + 1)}
        rows |= {(c.config_hash, "refine", k) for k in range(1, REFINE_EPOCHS + 1)}
    return rows


def row_keys(df: pd.DataFrame) -> list[tuple]:
    return list(zip(df["config_hash"], df["phase"], df["epoch"]))


def tune_results(experiment: Path) -> dict[str, list[tuple]]:
    """(phase, epoch) of every result Tune itself logged, per trial directory (result.json lines)."""
    out = {}
    for f in experiment.glob("*/result.json"):
        lines = [json.loads(x) for x in f.read_text().splitlines() if x.strip()]
        out[f.parent.name] = [(r["phase"], r["epoch"]) for r in lines]
    return out


@pytest.mark.slow
def test_sweep_writes_every_row_once(ray_local, tmp_path):
    spec = SweepSpec(name="grid", space=space(tmp_path), storage=str(tmp_path / "store"), analysis=True)
    configs = expand_grid(spec.space)
    grid = run_sweep(spec)
    assert not grid.errors
    assert len(grid) == 4
    df = read_results(spec.results_root)
    assert sorted(row_keys(df)) == sorted(expected_rows(configs))  # every row, exactly once
    assert set(df["sweep"]) == {"grid"}
    assert set(df["body"]) == {"tiny-text"}
    assert set(df["proxy"]) == {"wnut16"}
    refine = df[df.phase == "refine"]
    assert refine[["train_loss", "val_score", "test_score"]].notna().all().all()
    assert set(df["node_id"]) == {ray.get_runtime_context().get_node_id()}  # where each row ran (one node)
    assert df[["cpu_model", "cpu_capability", "torch_version", "threads"]].notna().all().all()  # on what
    assert df[df.phase == "align"]["otdd"].notna().all()
    # trials of one seed share the aligned trajectory: the 0-epoch trial's OTDD is the 2-epoch trial's row 0
    align0 = df[(df.phase == "align") & (df.epoch == 0)].groupby("seed")["otdd"].nunique()
    assert (align0 == 1).all()
    assert (
        df[df.phase == "align"]
        .sort_values("epoch")
        .groupby("config_hash")["otdd"]
        .apply(lambda s: s.iloc[-1] <= s.iloc[0])
    ).all()
    # trial directories are named from the config hash, not at random
    dirs = {p.name for p in Path(spec.experiment_path).iterdir() if p.is_dir()}
    assert all(sum(d.startswith(c.short_name() + "-") for d in dirs) == 1 for c in configs), dirs
    # and the figures were drawn from the Parquet files
    assert any(Path(spec.experiment_path, "figures").glob("*.png"))


class KillTrialOnce(tune.Callback):
    """Kills one trial's actor (as if its process or node died) once its first refine epoch is checkpointed."""

    def __init__(self, marker: str):
        self.marker = marker

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        last = trial.last_result or {}
        if last.get("phase") == "refine" and last.get("epoch") == 1 and not os.path.exists(self.marker):
            Path(self.marker).write_text(trial.trial_id)
            ray.kill(trial.temporary_state.ray_actor, no_restart=True)


class InterruptAfter(tune.Callback):
    """Sends SIGINT to the driver (Ctrl+C) once, at the first refine result after n results: between the
    result (its Parquet row written) and the save that records its checkpoint, where a stop is hardest."""

    def __init__(self, n: int, marker: str):
        self.n, self.marker, self.seen = n, marker, 0

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.seen += 1
        if self.seen >= self.n and result.get("phase") == "refine" and not os.path.exists(self.marker):
            Path(self.marker).write_text("stopped")
            signal.raise_signal(signal.SIGINT)


@pytest.mark.slow
def test_killed_trial_and_stopped_driver_lose_nothing(ray_local, tmp_path):
    spec = SweepSpec(
        name="resume",
        space=space(tmp_path),
        storage=str(tmp_path / "store"),
        max_failures=2,
        max_concurrent=2,
        analysis=False,
        extra_callbacks=[
            KillTrialOnce(str(tmp_path / "killed")),
            InterruptAfter(9, str(tmp_path / "stopped")),
        ],
    )
    configs = expand_grid(spec.space)
    run_sweep(spec)  # returns when SIGINT stops the driver mid-sweep
    assert (tmp_path / "stopped").exists()
    assert (tmp_path / "killed").exists()
    partial = read_results(spec.results_root)
    assert 0 < len(partial) < len(expected_rows(configs))

    grid = run_sweep(spec)  # the same command again: Tuner.restore
    assert not grid.errors
    assert len(grid) == 4
    df = read_results(spec.results_root)
    assert sorted(row_keys(df)) == sorted(expected_rows(configs))
    # rows written before the stop are all still there; refine rows were kept as they were (not reported
    # again); an align row reported again is a restore from the shared snapshots (seconds 0, the same OTDD)
    # of a trial whose checkpoint Tune had not recorded yet, never a retraining
    both = partial.merge(df, on=["trial_id", "phase", "epoch"], suffixes=("_before", "_after"))
    assert len(both) == len(partial)
    again = both[both["reported_at_before"] != both["reported_at_after"]]
    assert (again["phase"] == "align").all(), again[["trial_id", "phase", "epoch"]]
    assert (again["seconds_after"] == 0).all()
    assert (again["otdd_after"] == again["otdd_before"]).all()
    # the killed trial resumed from its refine-epoch-1 checkpoint and every trial continued from checkpoints:
    # in Tune's own logs no refine epoch was ever run twice
    logs = tune_results(Path(spec.experiment_path))
    assert len(logs) == 4
    for trial_dir, results in logs.items():
        refine_epochs = [e for phase, e in results if phase == "refine"]
        assert sorted(refine_epochs) == list(range(1, REFINE_EPOCHS + 1)), (trial_dir, results)
    # the search metric survived the resumes: each trial's last best_val_score is its minimum val score
    for result in grid:
        rows = df[(df.trial_id == result.metrics["trial_id"]) & (df.phase == "refine")]
        assert result.metrics["best_val_score"] == rows["val_score"].min()

    # same numbers: the same grid run straight through, one trial at a time (fresh storage and caches),
    # reports every value of the killed, stopped and resumed two-at-a-time sweep to the last bit
    straight = SweepSpec(
        name="straight",
        space=space(tmp_path, cache_dir=str(tmp_path / "cache2")),
        storage=str(tmp_path / "store2"),
        max_concurrent=1,
        analysis=False,
    )
    assert not run_sweep(straight).errors
    assert_same_values(df, read_results(straight.results_root))


# what may differ between two runs of one sweep: names, timing, where and when it ran, the config's paths
NOT_VALUES = {"sweep", "trial_id", "seconds", "node", "node_id", "reported_at", "config_json"}


def assert_same_values(a: pd.DataFrame, b: pd.DataFrame) -> None:
    """Every value column of two runs of one grid, row by row (config hash, phase, epoch), bit for bit."""
    key = ["config_hash", "phase", "epoch"]
    a, b = (x.sort_values(key).reset_index(drop=True) for x in (a, b))
    assert list(zip(*(a[k] for k in key))) == list(zip(*(b[k] for k in key)))
    columns = [c for c in a.columns if c not in NOT_VALUES]
    assert {"otdd", "train_loss", "val_score", "test_score", "cpu_capability"} <= set(columns)
    pd.testing.assert_frame_equal(a[columns], b[columns], check_exact=True)


def test_dry_run_starts_no_ray():
    script = Path(__file__).resolve().parents[1] / "sweeps" / "embedder_epochs.py"
    probe = (
        "import runpy, sys, ray\n"
        f"sys.argv = [{str(script)!r}, '--dry-run', '--seeds', '0', '1', '2']\n"
        "try:\n"
        f"    runpy.run_path({str(script)!r}, run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0, e.code\n"
        "print('ray initialized:', ray.is_initialized())\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "18 trials" in done.stdout
    assert "GPU-hours" in done.stdout
    assert "italypowerdemand-pooled" in done.stdout
    assert "6 random-init-body trials more" in done.stdout  # the baselines, one per task and seed
    assert "ray initialized: False" in done.stdout


@pytest.mark.slow
def test_optuna_search_with_asha_over_the_real_trainable(ray_local, tmp_path):
    """Optuna proposes lr / embedder epochs / freeze masks; ASHA may stop trials early; all rows land."""
    base = space(tmp_path)
    del base["embedder_epochs"], base["seed"]
    search_space = {
        **base,
        "seed": 0,
        "lr": tune.loguniform(1e-4, 1e-2),
        "embedder_epochs": tune.choice([0, 1]),
        "freeze": tune.choice(["none", "body"]),
    }
    spec = SweepSpec(
        name="optuna",
        space=search_space,
        storage=str(tmp_path / "store"),
        search="optuna",
        num_samples=3,
        max_concurrent=2,
        asha=True,
        analysis=False,
    )
    grid = run_sweep(spec)
    assert not grid.errors
    assert len(grid) == 3
    df = read_results(spec.results_root)
    assert df["trial_id"].nunique() == 3
    assert df["lr"].nunique() == 3
    best = grid.get_best_result(metric="best_val_score", mode="min")
    assert best.metrics["best_val_score"] == df[df.phase == "refine"]["val_score"].min()
    for _, rows in df.groupby("trial_id"):
        refine = rows[rows.phase == "refine"]["epoch"].tolist()
        assert refine == list(range(1, len(refine) + 1))
        assert len(refine) >= 1  # ASHA may stop after epoch 1


@pytest.mark.slow
def test_grid_with_asha_and_best_val_score_is_the_trials_minimum(ray_local, tmp_path):
    spec = SweepSpec(
        name="asha",
        space=space(tmp_path, embedder_epochs=0, seed=[0, 1]),
        storage=str(tmp_path / "store"),
        asha=True,
        analysis=False,
    )
    grid = run_sweep(spec)
    assert not grid.errors
    assert len(grid) == 2
    df = read_results(spec.results_root)
    for result in grid:
        rows = df[(df.trial_id == result.metrics["trial_id"]) & (df.phase == "refine")]
        assert result.metrics["best_val_score"] == rows["val_score"].min()


def test_cli_takes_a_scripts_default_tasks_per_preset(capsys):
    """A script can default to its own tasks for one preset (pretraining_scale: the 1D paper tasks);
    --tasks still wins, and other presets keep theirs."""
    from orca_ray.sweep.cli import main

    def space(args):
        return {"task": args.tasks, "body": "roberta-base", "seed": args.seeds}

    def plan(*argv):
        main(
            default_name="scale",
            description="",
            space=space,
            argv=[*argv, "--dry-run"],
            default_tasks={"paper": ["satellite", "ecg"]},
        )
        return capsys.readouterr().out

    out = plan("--preset", "paper")
    assert "6 trials" in out
    assert "satellite" in out
    assert "ecg" in out
    assert "cifar100" not in out
    out = plan("--preset", "paper", "--tasks", "deepsea")
    assert "3 trials" in out
    assert "satellite" not in out
    out = plan("--preset", "demo")
    assert "6 trials" in out
    assert "digits" in out
    assert "italypowerdemand-pooled" in out


def test_protocol_flag_is_a_grid_axis_and_seed_paper_batch_sizes():
    """`--protocol honest orca` runs both protocols in one sweep; `--batch-sizes seed-paper` gives Satellite
    64 and ECG 32 (one micro-batch per step) and leaves the other tasks at ORCA's."""
    from orca_ray.sweep.cli import main

    def space(args):
        return {"task": args.tasks, "body": "roberta-base", "embedder_epochs": 0, "seed": args.seeds}

    argv = ["--preset", "paper", "--tasks", "satellite", "deepsea", "--seeds", "0", "--data-root", "/x"]
    argv += ["--dry-run", "--protocol", "honest", "orca", "--batch-sizes", "seed-paper"]
    assert main(default_name="t", description="", space=space, argv=argv) == 0
    from orca_ray.recipes import seed_paper_batch_sizes
    from orca_ray.sweep.plan import expand_grid

    grids = seed_paper_batch_sizes({"task": ["satellite", "deepsea", "ecg"], "protocol": ["honest", "orca"]})
    configs = expand_grid([{**g, "body": "roberta-base"} for g in grids])
    got = {(c.task, c.protocol): (c.batch_size, c.accum) for c in configs}
    assert got[("satellite", "orca")] == (64, 1)
    assert got[("ecg", "honest")] == (32, 1)
    assert got[("deepsea", "orca")] == (None, None)
    assert len(got) == 6
