"""Experiment trackers (`--log-to`, orca_ray.tracking): a real tiny sweep logged to MLflow and TensorBoard (and
W&B offline and Aim when they are installed), read back with each tool's own reader and compared with the sweep's
Parquet; the preflight line for a tracker that cannot run."""

from __future__ import annotations

import glob
import importlib.util
import json
import math
import os

import pytest

from orca_ray.sweep.cli import main
from orca_ray.tracking import TRACKERS, Tracker, epoch_metrics, trial_params, trial_tags

HAS_WANDB = importlib.util.find_spec("wandb") is not None
HAS_AIM = importlib.util.find_spec("aim") is not None


def test_a_trials_params_tags_and_epochs():
    grid = {"trial": {"task": "digits", "body": "minilm", "proxy": "auto", "seed": 1, "lr": None}}
    assert trial_params(grid) == {"body": "minilm", "proxy": "auto", "seed": 1, "task": "digits"}
    # the reported (resolved) proxy wins over the config's
    tags = trial_tags("s", grid, {"proxy": "wnut16", "freeze": "body"})
    assert tags == {
        "sweep": "s",
        "task": "digits",
        "body": "minilm",
        "proxy": "wnut16",
        "freeze": "body",
        "seed": "1",
    }
    nan = float("nan")
    assert epoch_metrics({"phase": "align", "epoch": 0, "otdd": 3.5, "val_score": nan}) == (
        "align",
        0,
        {"otdd": 3.5},
    )
    refine = {
        "phase": "refine",
        "epoch": 2,
        "otdd": nan,
        "train_loss": 0.5,
        "val_score": nan,
        "test_score": 0.25,
    }
    assert epoch_metrics(refine) == ("refine", 2, {"train_loss": 0.5, "test_score": 0.25})
    assert epoch_metrics({"training_iteration": 1}) is None


def _sweep_argv(tmp_path, *log_to):
    return ["--storage", str(tmp_path / "store"), "--tasks", "digits", "--log-to", *log_to]


def _space(args):
    return {"task": args.tasks, "body": "minilm", "seed": args.seeds}


def test_missing_tracker_is_one_preflight_line(tmp_path, capsys, monkeypatch):
    """A tracker that is not installed: one line naming the extra, exit 2, nothing under --storage."""
    monkeypatch.setitem(TRACKERS, "aim", Tracker("aim", ("orca_ray_no_such_module",), "to_aim"))
    code = main(default_name="t", description="", space=_space, argv=_sweep_argv(tmp_path, "aim"))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err == [
        "error: --log-to aim: orca_ray_no_such_module not installed; pip install 'orca_ray[aim]' "
        "(or 'orca_ray[trackers]' for all)"
    ]
    assert not (tmp_path / "store").exists()


@pytest.mark.skipif(importlib.util.find_spec("mlflow") is None, reason="mlflow not installed")
def test_local_store_needs_a_local_storage(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    argv = ["--storage", "s3://bucket/sweeps", "--tasks", "digits", "--log-to", "mlflow"]
    assert main(default_name="t", description="", space=_space, argv=argv) == 2
    err = capsys.readouterr().err
    assert "--log-to mlflow: its default store is a local folder under --storage" in err
    assert "set MLFLOW_TRACKING_URI" in err


def _parquet_series(rows):
    """{metric: [(epoch, value), ...]} of one trial's Parquet rows, null values left out (as trackers do)."""
    series = {}
    for phase, names in (("align", ["otdd"]), ("refine", ["train_loss", "val_score", "test_score"])):
        part = rows[rows["phase"] == phase].sort_values("epoch")
        for name in names:
            got = [(int(e), float(v)) for e, v in zip(part["epoch"], part[name]) if not math.isnan(v)]
            if got:
                series[name] = got
    return series


def _close(a, b):
    return len(a) == len(b) and all(
        s == t and math.isclose(u, v, rel_tol=1e-6) for (s, u), (t, v) in zip(a, b)
    )


@pytest.mark.slow
def test_sweep_logged_to_trackers_equals_parquet(ray_local, tmp_path, tiny_sweep_space, monkeypatch):
    """One real sweep with --log-to mlflow tensorboard (wandb offline when installed): MLflow's client and
    TensorBoard's event reader give back, per trial, the params, tags and per-epoch values of the Parquet rows;
    the figures and final_scores.md land on a sweep-level run."""
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from orca_ray.results import read_results
    from orca_ray.sweep import SweepSpec, run_sweep
    from orca_ray.tables import TABLE
    from orca_ray.tracking.to_mlflow import SWEEP_RUN_TAG, tracking_uri

    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "WANDB_API_KEY", "WANDB_RUN_GROUP"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    log_to = ("mlflow", "tensorboard", *(["wandb"] if HAS_WANDB else []), *(["aim"] if HAS_AIM else []))
    spec = SweepSpec(name="tracked", space=tiny_sweep_space, storage=str(tmp_path / "store"), log_to=log_to)
    grid = run_sweep(spec)
    assert not any(r.error for r in grid)
    df = read_results(spec.results_root, sweep="tracked")
    trials = dict(list(df.groupby("trial_id")))
    assert len(trials) == 2

    def expected_params(rows):
        return {k: v for k, v in json.loads(rows["config_json"].iloc[0]).items() if v is not None}

    def expected_tags(rows):
        r = rows.iloc[0]
        return {"sweep": "tracked", **{k: str(r[k]) for k in ("task", "body", "proxy", "freeze", "seed")}}

    # MLflow: the sweep's own SQLite store under its storage
    assert tracking_uri(spec) == f"sqlite:///{tmp_path}/store/tracked/mlflow/mlflow.db"
    client = MlflowClient(tracking_uri(spec))
    exp = client.get_experiment_by_name("tracked")
    runs = client.search_runs([exp.experiment_id])
    by_trial = {r.data.tags["trial_id"]: r for r in runs if "trial_id" in r.data.tags}
    assert sorted(by_trial) == sorted(trials)
    for tid, rows in trials.items():
        run = by_trial[tid]
        assert run.info.status == "FINISHED"
        assert run.data.params == {k: str(v) for k, v in expected_params(rows).items()}
        assert {k: run.data.tags[k] for k in expected_tags(rows)} == expected_tags(rows)
        for name, want in _parquet_series(rows).items():
            got = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, name)]
            assert _close(sorted(got), want), (tid, name, got, want)
        assert set(run.data.metrics) == set(_parquet_series(rows))
    sweep_run = next(r for r in runs if r.data.tags.get(SWEEP_RUN_TAG) == "true")
    artifacts = {a.path for a in client.list_artifacts(sweep_run.info.run_id)}
    assert TABLE in artifacts
    assert any(a.endswith(".png") for a in artifacts)

    # TensorBoard: one event file per trial folder under the storage, read with TensorBoard's own reader
    seen = set()
    for tid, rows in trials.items():
        (trial_dir,) = [
            d for d in glob.glob(f"{spec.experiment_path}/*-{tid.rsplit('_', 1)[-1]}") if os.path.isdir(d)
        ]
        acc = EventAccumulator(trial_dir)
        acc.Reload()
        want = _parquet_series(rows)
        assert set(acc.Tags()["scalars"]) == set(want)  # the Parquet columns, nothing of Tune's own
        for name, series in want.items():
            assert _close([(e.step, e.value) for e in acc.Scalars(name)], series), (tid, name)
        seen.add(tid)
    assert seen == set(trials)
    figs = EventAccumulator(os.path.join(spec.experiment_path, "figures"))
    figs.Reload()
    assert figs.Tags()["images"]
    assert "final_scores/text_summary" in figs.Tags()["tensors"]

    if HAS_WANDB:  # W&B offline: each trial's run log, read through W&B's own record format
        for tid, rows in trials.items():
            (log,) = glob.glob(
                f"{spec.experiment_path}/*-{tid.rsplit('_', 1)[-1]}/wandb/offline-run-*/*.wandb"
            )
            run, history = _wandb_offline_run(log)
            own = {"_wandb", "trial_log_path"}  # W&B's and Tune's keys beside the trial's params
            assert {k: v for k, v in run["config"].items() if k not in own} == expected_params(rows)
            assert expected_tags(rows) == dict(t.split("=", 1) for t in run["tags"])
            for name, want in _parquet_series(rows).items():
                axis = "align_epoch" if name == "otdd" else "refine_epoch"
                got = [(h[axis], h[name]) for h in history if name in h]
                assert _close(got, want), (tid, name, got, want)

    if HAS_AIM:  # Aim: the sweep's repo under its storage, read with Aim's own SDK
        import subprocess
        import sys

        from aim import Repo

        from orca_ray.tracking.to_aim import repo as aim_repo

        # runs are read through Aim's index, which `aim up` builds as it starts: build it the same way here
        aim = os.path.join(os.path.dirname(sys.executable), "aim")
        subprocess.run(
            [aim, "storage", "--repo", aim_repo(spec), "reindex", "--yes"], check=True, timeout=120
        )
        aim_runs = {r.get("trial_id"): r for r in Repo(aim_repo(spec)).iter_runs()}
        aim_runs.pop(None, None)  # the sweep-level run (figures, table)
        assert sorted(aim_runs) == sorted(trials)
        for tid, rows in trials.items():
            run = aim_runs[tid]
            assert run.experiment == "tracked"
            assert run["hparams"] == {
                k: v if isinstance(v, bool | int | float | str) else str(v)
                for k, v in expected_params(rows).items()
            }
            assert set(run.props.tags) >= {f"{k}={v}" for k, v in expected_tags(rows).items()}
            mine = {m.name: m for m in run.metrics() if m.name in _parquet_series(rows)}
            assert set(mine) == set(_parquet_series(rows))
            for name, want in _parquet_series(rows).items():
                got = sorted((step, value[0]) for step, value in mine[name].data.items())
                assert _close(got, want), (tid, name, got, want)
                assert mine[name].context.to_dict() == {"phase": "align" if name == "otdd" else "refine"}


def _wandb_offline_run(path: str) -> tuple[dict, list[dict]]:
    """The run (config, tags) and history rows of a W&B offline run file: W&B's `Record` protobufs in
    LevelDB-style log blocks (32 KiB blocks; each chunk a 7-byte header: checksum, length, kind)."""
    import struct

    from wandb.proto import wandb_internal_pb2

    with open(path, "rb") as f:
        data = f.read()
    assert data[:4] == b":W&B"
    pos, buf, run, history = 7, b"", {}, []
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        _, size, kind = struct.unpack("<IHB", data[pos : pos + 7])
        buf, pos = buf + data[pos + 7 : pos + 7 + size], pos + 7 + size
        if kind in (1, 4):  # a full record, or the last chunk of one
            rec = wandb_internal_pb2.Record()
            rec.ParseFromString(buf)
            buf = b""
            if rec.WhichOneof("record_type") == "run":
                # the run record; later ones (tags set while running, W&B's own keys) update it
                run.setdefault("config", {}).update(
                    {u.key: json.loads(u.value_json) for u in rec.run.config.update}
                )
                run["tags"] = list(rec.run.tags)
            elif rec.WhichOneof("record_type") == "history":
                history.append(
                    {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item}
                )
    return run, history
