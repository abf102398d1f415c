"""ParquetSink / read_results / final_scores, against real Ray Tune runs (one Ray start for the module).

Runs: one sweep written by two sinks at once (local + S3 through moto on loopback), a trial that crashes once
mid-refine and resumes from its checkpoint, and a driver stop (SIGINT, as Ctrl+C) followed by Tuner.restore.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import re
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

ray = pytest.importorskip("ray")
from ray import tune  # noqa: E402
from ray.tune import Checkpoint  # noqa: E402

from orca_ray.results import FILE_SCHEMA, RESULT_SCHEMA, final_scores, read_results  # noqa: E402
from orca_ray.results.sink import ParquetSink  # noqa: E402

# the trainables below are defined in this (non-importable on workers) test module: ship them by value
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

SWEEP = "unit-sweep"
EMB_EPOCHS = 2
REFINE_EPOCHS = 3
STEPS = [("align", e) for e in range(EMB_EPOCHS + 1)] + [("refine", e) for e in range(1, REFINE_EPOCHS + 1)]


# ---------------------------------------------------------------------------------------------------------
# the contract row, deterministic so the test knows every expected value


def _config_hash(config: dict) -> str:
    keys = {k: v for k, v in config.items() if k not in ("marker", "sleep")}
    return hashlib.sha1(json.dumps(keys, sort_keys=True).encode()).hexdigest()[:12]


def contract_row(config: dict, phase: str, epoch: int, attempt: int = 0) -> dict:
    s = config["seed"]
    align = phase == "align"
    # refine val is best at epoch 2 (tie with nothing), test is best at epoch 3: selection must use val
    val = {1: 0.5, 2: 0.3, 3: 0.4}
    test = {1: 0.6, 2: 0.45, 3: 0.2}
    return {
        "phase": phase,
        "epoch": epoch,
        "otdd": 10.0 - epoch + s if align else float("nan"),
        "train_loss": float("nan") if align else 1.0 / epoch + s,
        "val_score": float("nan") if align else val[epoch] + 0.01 * s,
        "test_score": float("nan") if align else test[epoch] + 0.01 * s,
        "metric": "error",
        "seconds": float(attempt),  # which attempt reported it (last wins)
        "config_hash": _config_hash(config),
        "task": config["task"],
        "body": config["body"],
        "proxy": config["proxy"],
        "embedder_epochs": EMB_EPOCHS,
        "freeze": config["freeze"],
        "seed": s,
        "lr": config["lr"],
        "pretraining_tokens": float("nan") if config["body"] == "random-bert" else 1e9,
        "preset": "unit",
        "classes": '["neg", "pos"]',  # the data's own label per class index (JSON)
        "protocol": config.get("protocol", "honest"),
        "precision": "fp32",
    }


def contract_trainable(config):
    for phase, epoch in STEPS:
        tune.report(contract_row(config, phase, epoch))


def resumable_trainable(config):
    """Checkpoints after every row; crashes once right after reporting refine epoch 2 *without* a
    checkpoint for it, so the retry resumes at refine epoch 2 and reports it again."""
    marker = Path(config["marker"]) if config.get("marker") else None
    attempt = 1 if marker is not None and marker.exists() else 0
    start = 0
    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            start = json.loads(Path(d, "state.json").read_text())["next"]
    for i in range(start, len(STEPS)):
        phase, epoch = STEPS[i]
        time.sleep(config.get("sleep", 0.0))
        row = contract_row(config, phase, epoch, attempt)
        if marker is not None and (phase, epoch) == ("refine", 2) and not marker.exists():
            tune.report(row)
            marker.write_text("crashed")
            raise RuntimeError("injected failure mid-refine")
        with tempfile.TemporaryDirectory() as d:
            Path(d, "state.json").write_text(json.dumps({"next": i + 1}))
            tune.report(row, checkpoint=Checkpoint.from_directory(d))


def expected_frame(configs: list[dict], sweep: str, attempts=None) -> pd.DataFrame:
    rows = []
    for c in configs:
        for phase, epoch in STEPS:
            a = attempts(c, phase, epoch) if attempts else 0
            # columns the contract trainable does not report (fingerprint, later axes) land null
            rows.append({**dict.fromkeys(CHECK_COLS), "sweep": sweep, **contract_row(c, phase, epoch, a)})
    return pd.DataFrame(rows)


CHECK_COLS = [
    f.name
    for f in RESULT_SCHEMA
    if f.name not in ("trial_id", "node", "node_id", "config_json", "reported_at")
]


def assert_rows_equal(df: pd.DataFrame, expected: pd.DataFrame):
    """Same multiset of rows over the contract columns (NaN == NaN), each (trial, phase, epoch) once."""
    assert not df.duplicated(["sweep", "trial_id", "phase", "epoch"]).any()
    key = ["config_hash", "phase", "epoch"]
    got = df[CHECK_COLS].astype(object).sort_values(key).reset_index(drop=True)
    exp = expected[CHECK_COLS].astype(object).sort_values(key).reset_index(drop=True)
    assert len(got) == len(exp), (len(got), len(exp))
    for col in CHECK_COLS:
        for g, e in zip(got[col], exp[col]):
            if e is None or (isinstance(e, float) and math.isnan(e)):
                assert g is None or pd.isna(g), (col, g)  # None, NaN, or pandas' NA (DuckDB's nullable ints)
            else:
                assert g == e, (col, g, e)


# ---------------------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def s3():
    pytest.importorskip("moto")
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    fs = pafs.S3FileSystem(
        access_key="testing",
        secret_key="testing",
        region="us-east-1",
        scheme="http",
        endpoint_override=f"{host}:{port}",
        allow_bucket_creation=True,
    )
    fs.create_dir("results-bucket")
    yield fs
    server.stop()


GRID = [
    {"task": "satellite", "body": "roberta", "proxy": "text", "freeze": "none", "seed": 0, "lr": 3e-5},
    {"task": "satellite", "body": "roberta", "proxy": "noise", "freeze": "none", "seed": 1, "lr": 3e-5},
    {
        "task": "darcy",
        "body": "random-bert",
        "proxy": "text",
        "freeze": "embedder+body",
        "seed": 2,
        "lr": 1e-3,
    },
]


def space(configs: list[dict]) -> dict:
    """A grid over the (distinct) seeds whose other fields follow the seed: flat trial configs."""
    by_seed = {c["seed"]: c for c in configs}
    out = {"seed": tune.grid_search(list(by_seed))}
    for k in configs[0]:
        if k != "seed":
            out[k] = tune.sample_from(lambda config, k=k: by_seed[config["seed"]][k])
    return out


@pytest.fixture(scope="module")
def sweep_run(ray_local, s3, tmp_path_factory):
    """One real Tune run of 3 trials writing through a local sink and an S3 sink at once."""
    base = tmp_path_factory.mktemp("sweep")
    local = ParquetSink(str(base / "results"), SWEEP)
    remote = ParquetSink("s3://results-bucket/orca", SWEEP, filesystem=s3)
    t0 = time.perf_counter()
    tuner = tune.Tuner(
        tune.with_resources(contract_trainable, {"cpu": 1}),
        param_space=space(GRID),
        tune_config=tune.TuneConfig(reuse_actors=True),
        run_config=tune.RunConfig(
            storage_path=str(base / "ray"), name="exp", callbacks=[local, remote], verbose=0
        ),
    )
    grid = tuner.fit()
    print(f"sweep run: {time.perf_counter() - t0:.1f} s")
    assert not grid.errors
    return SimpleNamespace(root=base / "results", grid=grid, s3=s3)


# ---------------------------------------------------------------------------------------------------------
# (a) a real run, read back three ways


@pytest.mark.slow
def test_layout_and_pyarrow_dataset(sweep_run):
    part_dir = sweep_run.root / f"sweep={SWEEP}"
    files = sorted(p.name for p in part_dir.iterdir())
    trial_ids = sorted(r.metrics["trial_id"] for r in sweep_run.grid)
    assert files == [f"{t}.parquet" for t in trial_ids]  # one part file per trial, no temp files left
    # the partition column is not repeated inside the files
    assert pq.read_schema(part_dir / files[0]).names == FILE_SCHEMA.names

    dataset = ds.dataset(sweep_run.root, format="parquet", partitioning="hive")
    table = dataset.to_table()
    assert table.num_rows == len(GRID) * len(STEPS)
    for f in FILE_SCHEMA:
        assert table.schema.field(f.name).type == f.type, f.name
    assert_rows_equal(table.to_pandas(), expected_frame(GRID, SWEEP))


@pytest.mark.slow
def test_read_results(sweep_run):
    df = read_results(str(sweep_run.root))
    assert list(df.columns) == RESULT_SCHEMA.names
    assert_rows_equal(df, expected_frame(GRID, SWEEP))
    # sorted by sweep, trial, phase (align first), epoch
    order = df[["trial_id", "phase", "epoch"]].to_records(index=False).tolist()
    assert order == sorted(order, key=lambda r: (r[0], ["align", "refine"].index(r[1]), r[2]))
    assert str(df["epoch"].dtype) == "int32"
    assert str(df["seed"].dtype) == "int32"
    assert str(df["embedder_epochs"].dtype) == "int32"
    assert df["otdd"].dtype == np.float64
    assert df["val_score"].dtype == np.float64
    assert str(df["reported_at"].dtype) == "datetime64[us, UTC]"
    assert df["node"].notna().all()
    for cj, seed in zip(df["config_json"], df["seed"]):
        assert cj == json.dumps(GRID[seed], sort_keys=True)  # the flat trial config, sorted keys
    assert read_results(str(sweep_run.root), sweep="other").empty
    assert len(read_results(str(sweep_run.root), sweep=SWEEP)) == len(df)
    assert read_results(str(sweep_run.root / "nothing-here")).columns.tolist() == RESULT_SCHEMA.names


@pytest.mark.slow
def test_pandas_read_parquet(sweep_run):
    df = pd.read_parquet(sweep_run.root)
    assert set(df["sweep"].astype(str)) == {SWEEP}
    df["sweep"] = df["sweep"].astype(str)
    assert_rows_equal(df, expected_frame(GRID, SWEEP))
    assert str(df["epoch"].dtype) == "int32"


@pytest.mark.slow
def test_duckdb(sweep_run):
    duckdb = pytest.importorskip("duckdb")
    glob = f"{sweep_run.root}/**/*.parquet"
    rel = duckdb.sql(f"SELECT * FROM read_parquet('{glob}', hive_partitioning = true)")
    types = dict(zip(rel.columns, map(str, rel.types)))
    assert types["epoch"] == "INTEGER"
    assert types["otdd"] == "DOUBLE"
    assert types["sweep"] == "VARCHAR"
    assert types["reported_at"].startswith("TIMESTAMP WITH TIME ZONE")
    df = rel.df()
    assert_rows_equal(df, expected_frame(GRID, SWEEP))
    dup = duckdb.sql(
        f"SELECT trial_id, phase, epoch, count(*) AS n FROM read_parquet('{glob}', hive_partitioning = true) "
        "GROUP BY ALL HAVING n > 1"
    ).fetchall()
    assert dup == []


@pytest.mark.slow
def test_final_scores_picks_best_val(sweep_run):
    fs = final_scores(read_results(str(sweep_run.root)))
    assert len(fs) == len(GRID)
    assert (fs["best_epoch"] == 2).all()  # val best at 2, test best at 3
    for _, r in fs.iterrows():
        assert r["final_val"] == pytest.approx(0.3 + 0.01 * r["seed"])
        assert r["final_test"] == pytest.approx(0.45 + 0.01 * r["seed"])
        assert r["final_otdd"] == pytest.approx(10.0 - EMB_EPOCHS + r["seed"])


# ---------------------------------------------------------------------------------------------------------
# (d) the same run, written to S3 (moto) by the second sink


@pytest.mark.slow
def test_s3_sink(sweep_run):
    s3 = sweep_run.s3
    infos = s3.get_file_info(pafs.FileSelector(f"results-bucket/orca/sweep={SWEEP}"))
    assert sorted(i.base_name for i in infos) == sorted(
        f"{r.metrics['trial_id']}.parquet" for r in sweep_run.grid
    )
    df = read_results("s3://results-bucket/orca", filesystem=s3)
    assert_rows_equal(df, expected_frame(GRID, SWEEP))
    local = read_results(str(sweep_run.root))
    pd.testing.assert_frame_equal(
        df.drop(columns="reported_at"), local.drop(columns="reported_at"), check_dtype=True
    )


# ---------------------------------------------------------------------------------------------------------
# (c) atomicity: temp files are never read; a failed rename leaves the old file intact


@pytest.mark.slow
def test_temp_files_are_ignored(sweep_run, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(sweep_run.root, root)
    part_dir = root / f"sweep={SWEEP}"
    some = sorted(part_dir.iterdir())[0]
    # a half-written file under the sink's temp naming scheme, and a complete one
    (part_dir / f".{some.name}.deadbeef.tmp").write_bytes(some.read_bytes()[:100])
    shutil.copy(some, part_dir / f".{some.name}.cafef00d.tmp")
    expected = expected_frame(GRID, SWEEP)

    assert_rows_equal(read_results(str(root)), expected)
    assert_rows_equal(
        ds.dataset(root, format="parquet", partitioning="hive").to_table().to_pandas(), expected
    )
    df = pd.read_parquet(root)
    df["sweep"] = df["sweep"].astype(str)
    assert_rows_equal(df, expected)
    duckdb = pytest.importorskip("duckdb")
    dd = duckdb.sql(f"SELECT * FROM read_parquet('{root}/**/*.parquet', hive_partitioning = true)").df()
    assert_rows_equal(dd, expected)


def test_failed_rename_keeps_old_file(tmp_path, monkeypatch):
    sink = ParquetSink(str(tmp_path), "s")
    trial = SimpleNamespace(trial_id="t_00000", config={"seed": 0})
    cfg = {**GRID[0]}
    sink.on_trial_result(0, [], trial, {**contract_row(cfg, "align", 0), "hostname": "h"})
    path = Path(sink.part_path("t_00000"))
    before = path.read_bytes()

    def boom(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", boom)
    sink.on_trial_result(0, [], trial, {**contract_row(cfg, "align", 1), "hostname": "h"})
    assert path.read_bytes() == before  # the old complete file, untouched
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # temp cleaned up
    monkeypatch.undo()
    sink.on_experiment_end([])  # the pending write goes through now
    assert len(pq.read_table(path)) == 2


# ---------------------------------------------------------------------------------------------------------
# upsert / reload / state, without Ray


def _trial(tid="abc_00000"):
    return SimpleNamespace(trial_id=tid, config={**GRID[0]})


def test_upsert_last_wins_and_reload(tmp_path):
    sink = ParquetSink(str(tmp_path), "s")
    t = _trial()
    for phase, epoch in STEPS[:4]:
        sink.on_trial_result(0, [], t, contract_row(GRID[0], phase, epoch))
    sink.on_trial_result(0, [], t, contract_row(GRID[0], "refine", 1, attempt=7))  # re-reported epoch
    sink.on_trial_result(0, [], t, {"training_iteration": 9})  # not a contract row: ignored
    df = read_results(str(tmp_path))
    assert len(df) == 4
    assert df.loc[df["phase"] == "refine", "seconds"].tolist() == [7.0]

    # a fresh sink (a restored driver) that sees the trial again keeps the rows already on disk
    fresh = ParquetSink(str(tmp_path), "s")
    fresh.on_trial_result(0, [], t, contract_row(GRID[0], "refine", 2))
    df = read_results(str(tmp_path))
    assert [(p, e) for p, e in zip(df["phase"], df["epoch"])] == STEPS[:5]
    assert df["config_json"].iloc[0] == json.dumps(GRID[0], sort_keys=True)


def test_sink_keeps_the_reported_node(tmp_path):
    sink = ParquetSink(str(tmp_path), "s")
    row = {**contract_row(GRID[0], "align", 0), "node": "gpu-worker-7", "hostname": "head"}
    sink.on_trial_result(0, [], _trial(), row)
    assert read_results(str(tmp_path))["node"].tolist() == ["gpu-worker-7"]


def test_config_json_is_one_flat_trial_config_for_grid_and_optuna_trials(tmp_path):
    """Grid trials nest the TrialConfig under "trial" in Tune, Optuna trials are flat: the column holds the
    same flat TrialConfig dict for both."""
    from orca_ray.config import TrialConfig
    from orca_ray.sweep.plan import SweepSpec
    from orca_ray.sweep.runner import tune_space

    common = {"task": "osuleaf", "body": "minilm", "embedder_epochs": 2, "seed": 0}
    grid = tune_space(SweepSpec(name="g", space={**common, "lr": [3e-4]}))
    optuna = tune_space(
        SweepSpec(name="o", space={**common, "lr": tune.loguniform(1e-5, 1e-3)}, search="optuna")
    )
    trials = {
        "grid_00000": {"trial": grid["trial"]["grid_search"][0]},
        "optuna_00000": {k: (v.sample() if hasattr(v, "sample") else v) for k, v in optuna.items()},
    }
    sink = ParquetSink(str(tmp_path), "s")
    for trial_id, config in trials.items():
        sink.on_trial_result(
            0, [], SimpleNamespace(trial_id=trial_id, config=config), contract_row(GRID[0], "align", 0)
        )
    stored = [json.loads(j) for j in read_results(str(tmp_path)).sort_values("trial_id")["config_json"]]
    assert [set(d) for d in stored] == [set(TrialConfig.__dataclass_fields__)] * 2
    assert [TrialConfig.from_dict(d).embedder_epochs for d in stored] == [2, 2]


def test_state_roundtrip(tmp_path):
    sink = ParquetSink(str(tmp_path), "s")
    assert sink.get_state() is None
    t = _trial()
    for phase, epoch in STEPS[:3]:
        sink.on_trial_result(0, [], t, contract_row(GRID[0], phase, epoch))
    state = pickle.loads(pickle.dumps(sink.get_state()))  # Tune pickles callback state
    # the part file has moved on since the state was checkpointed
    sink.on_trial_result(0, [], t, contract_row(GRID[0], "refine", 1))
    restored = pickle.loads(pickle.dumps(ParquetSink(str(tmp_path), "s")))
    restored.set_state(state)
    restored.on_trial_result(0, [], t, contract_row(GRID[0], "refine", 2))
    df = read_results(str(tmp_path))
    assert [(p, e) for p, e in zip(df["phase"], df["epoch"])] == STEPS[:5]
    restored.on_trial_complete(0, [], t)
    assert restored.get_state() is None  # completed trials leave memory once written


def test_bad_sweep_name(tmp_path):
    for bad in ("", "_hidden", ".dot", "a/b", "x=y"):
        with pytest.raises(ValueError, match=f"^sweep name {re.escape(repr(bad))} must match"):
            ParquetSink(str(tmp_path), bad)


# ---------------------------------------------------------------------------------------------------------
# (b) resume: a retried trial, and a stopped-then-restored driver


@pytest.mark.slow
def test_trial_retry_after_failure(ray_local, tmp_path):
    marker = tmp_path / "crashed"
    configs = [{**GRID[0], "marker": str(marker)}]
    sink = ParquetSink(str(tmp_path / "results"), "retry")
    t0 = time.perf_counter()
    grid = tune.Tuner(
        tune.with_resources(resumable_trainable, {"cpu": 1}),
        param_space=configs[0],
        run_config=tune.RunConfig(
            storage_path=str(tmp_path / "ray"),
            name="retry",
            callbacks=[sink],
            failure_config=tune.FailureConfig(max_failures=1),
            verbose=0,
        ),
    ).fit()
    print(f"retry run: {time.perf_counter() - t0:.1f} s")
    assert marker.exists()
    assert not grid.errors
    df = read_results(str(tmp_path / "results"))
    # refine 2 was reported by both attempts: exactly once, the retry's; refine 3 only by the retry
    assert_rows_equal(df, expected_frame(configs, "retry", lambda c, p, e: int((p, e) >= ("refine", 2))))


class InterruptOnce(tune.Callback):
    """Sends SIGINT (as Ctrl+C on the driver) after `n` results, once (a marker file survives pickling)."""

    def __init__(self, n: int, marker: str):
        self.n, self.marker, self.seen = n, marker, 0

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.seen += 1
        if self.seen >= self.n and not os.path.exists(self.marker):
            Path(self.marker).write_text("interrupted")
            signal.raise_signal(signal.SIGINT)


@pytest.mark.slow
def test_driver_stop_and_restore(ray_local, tmp_path):
    configs = [{**g, "sleep": 0.15} for g in GRID[:2]]
    root = tmp_path / "results"
    first = ParquetSink(str(root), "restore")
    t0 = time.perf_counter()
    tuner = tune.Tuner(
        tune.with_resources(resumable_trainable, {"cpu": 1}),
        param_space=space(configs),
        run_config=tune.RunConfig(
            storage_path=str(tmp_path / "ray"),
            name="exp",
            callbacks=[first, InterruptOnce(4, str(tmp_path / "interrupted"))],
            verbose=0,
        ),
    )
    tuner.fit()
    partial = read_results(str(root))
    assert (tmp_path / "interrupted").exists()
    assert 0 < len(partial) < len(configs) * len(STEPS)  # stopped mid-way, some rows written

    restored = tune.Tuner.restore(str(tmp_path / "ray" / "exp"), resumable_trainable, resume_unfinished=True)
    # Ray rebuilds the callbacks from the Tuner's pickle: a new sink object, state restored via set_state
    sink = restored._local_tuner.get_run_config().callbacks[0]
    assert isinstance(sink, ParquetSink)
    assert sink is not first
    grid = restored.fit()
    print(f"stop + restore: {time.perf_counter() - t0:.1f} s")
    assert not grid.errors
    df = read_results(str(root))
    assert_rows_equal(df, expected_frame(configs, "restore"))
    assert set(partial["trial_id"]) <= set(df["trial_id"])
    assert df["trial_id"].nunique() == len(configs)
    # the resumed trials continued from their checkpoints: every row of the first run is still there, and
    # none was reported again (same reported_at) except possibly each trial's last one before the stop,
    # whose checkpoint Tune may not have persisted when the driver stopped
    key = ["trial_id", "phase", "epoch"]
    both = partial.merge(df, on=key, suffixes=("_before", "_after"))
    assert len(both) == len(partial)
    step = {s: i for i, s in enumerate(STEPS)}
    both["step"] = [step[(p, e)] for p, e in zip(both["phase"], both["epoch"])]
    last = both.groupby("trial_id")["step"].transform("max")
    earlier = both[both["step"] < last]
    assert len(earlier) > 0
    assert (earlier["reported_at_before"] == earlier["reported_at_after"]).all()
