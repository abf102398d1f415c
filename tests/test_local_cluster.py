"""A cluster on one machine: cluster/local-test/run.sh end to end (Ray's fake multi-node autoscaler, logical
GPUs shared by two trials, a worker killed mid-trial, scale-down), plus the driver-side rules it relies on:
no address means a new local Ray (never someone's `ray start` cluster), a trial given a GPU never trains on
CPU unless the GPUs are declared logical, and a local --storage path is refused when trials run elsewhere."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from orca_ray.config import TrialConfig
from orca_ray.sweep.plan import SweepSpec
from orca_ray.sweep.runner import check_storage_reachable
from orca_ray.trainable import LOGICAL_GPUS_ENV, require_cuda_for_gpus

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.cluster
def test_local_cluster_run_sh_passes():
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["PYTHON"] = sys.executable
    done = subprocess.run(
        ["bash", str(REPO / "cluster" / "local-test" / "run.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    assert last.startswith("local cluster test: PASSED"), last
    assert "trials per GPU 2" in last, last
    assert "lost 0, duplicated 0" in last, last


@pytest.mark.slow
def test_no_address_starts_a_local_ray_even_when_a_cluster_runs_here(private_ray_head, tmp_path):
    """A bare `ray.init()` would join the `ray start` cluster below (found through $RAY_TMPDIR); the sweep's
    `connect(None)` must start a Ray of its own instead."""
    env, port = private_ray_head(num_cpus=1)
    probe = (
        "import ray, ray._private.services as s\n"
        "from orca_ray.sweep.runner import connect\n"
        "print('BARE_INIT_JOINS', s.canonicalize_bootstrap_address(None))\n"
        "print('LOCAL', connect(None).local)\n"
        "print('JOINED', ray.get_runtime_context().gcs_address)\n"
        "ray.shutdown()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    out = dict(
        line.split(" ", 1) for line in done.stdout.splitlines() if line.startswith(("BARE", "LOCAL", "JOIN"))
    )
    assert out["BARE_INIT_JOINS"].endswith(f":{port}")  # the premise: a bare ray.init() would join it
    assert out["LOCAL"] == "True"
    assert not out["JOINED"].endswith(f":{port}")  # a new local Ray instead


def _cfg(**over) -> TrialConfig:
    return TrialConfig.from_dict({"task": "basicmotions", "body": "minilm", **over})


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_trial_given_a_gpu_never_trains_on_cpu_silently(monkeypatch):
    monkeypatch.delenv(LOGICAL_GPUS_ENV, raising=False)
    with pytest.raises(RuntimeError, match=f"no CUDA device.*{LOGICAL_GPUS_ENV}=1"):
        require_cuda_for_gpus(_cfg(), ["0"])
    require_cuda_for_gpus(_cfg(), [])  # a CPU trial
    require_cuda_for_gpus(_cfg(device="cpu"), ["0"])  # CPU asked for explicitly
    monkeypatch.setenv(LOGICAL_GPUS_ENV, "1")
    require_cuda_for_gpus(_cfg(), ["0"])  # logical GPUs declared: train on CPU


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_ray_hands_a_half_logical_gpu_to_the_guard(monkeypatch):
    """What the trainable sees inside Ray: a trial holding half of a logical GPU gets its id, so the guard
    refuses to train on CPU, unless the opt-out reaches the trial's environment."""
    import ray

    monkeypatch.delenv(LOGICAL_GPUS_ENV, raising=False)
    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
    try:

        @ray.remote(num_cpus=1, num_gpus=0.5)
        def guarded(cfg: TrialConfig) -> list:
            require_cuda_for_gpus(cfg, ray.get_gpu_ids())
            return ray.get_gpu_ids()

        with pytest.raises(ray.exceptions.RayTaskError, match=f"was given GPU.*{LOGICAL_GPUS_ENV}=1"):
            ray.get(guarded.remote(_cfg()))
        opted_out = guarded.options(runtime_env={"env_vars": {LOGICAL_GPUS_ENV: "1"}})
        assert ray.get(opted_out.remote(_cfg())) == [0]
    finally:
        ray.shutdown()


def _node(node_id: str, **resources) -> dict:
    return {"NodeID": node_id, "Alive": True, "Resources": resources}


def test_local_storage_is_refused_when_trials_run_on_other_nodes():
    spec = SweepSpec(name="s", space={"task": "digits", "body": "minilm"}, storage="/data/results")
    head_only = [_node("head", CPU=0.0, GPU=0.0)]  # an autoscaling head: workers come later
    two = [_node("head", CPU=4.0), _node("worker", CPU=8.0, GPU=1.0)]
    for nodes in (head_only, two):
        with pytest.raises(
            SystemExit, match=r"--storage /data/results is a path on this machine.*--storage-shared"
        ):
            check_storage_reachable(spec, nodes, "head")
    check_storage_reachable(spec, [_node("head", CPU=4.0)], "head")  # one node that runs the trials
    gone = {**_node("worker", CPU=8.0, GPU=1.0), "Alive": False}  # GCS lists dead nodes too
    check_storage_reachable(spec, [_node("head", CPU=4.0), gone], "head")
    shared = SweepSpec(name="s", space=spec.space, storage="/nfs/results", storage_shared=True)
    s3 = SweepSpec(name="s", space=spec.space, storage="s3://bucket/results")
    for ok in (shared, s3):
        check_storage_reachable(ok, two, "head")


def test_check_py_verify_keeps_baselines_apart_from_the_trials_they_resemble(tmp_path, capsys):
    """run.sh's sweep scores baselines too: a linear baseline (written on the driver, no node_id) and a
    random-init-body trial share task, seed and embedder epochs 0 with the sweep's 0-epoch trial. verify
    counts each row once and prints the killed trial's path even when baseline rows have no node_id."""
    import importlib.util
    import json
    from datetime import UTC, datetime, timedelta

    import pyarrow as pa
    import pyarrow.parquet as pq

    from orca_ray.results.schema import FILE_SCHEMA

    spec = importlib.util.spec_from_file_location("lt_check", REPO / "cluster" / "local-test" / "check.py")
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    rows = []

    def add(trial, kind, refine_epochs, node):
        cfg = json.dumps({"baseline": kind} if kind else {"task": "basicmotions"})
        keys = ([] if kind else [("align", 0)]) + [("refine", k) for k in refine_epochs]
        for i, (phase, epoch) in enumerate(keys):
            rows.append(
                {
                    "trial_id": trial,
                    "task": "basicmotions",
                    "seed": 0,
                    "embedder_epochs": 0,
                    "phase": phase,
                    "epoch": epoch,
                    "node": node and "host",
                    "node_id": node,
                    "config_json": cfg,
                    "reported_at": t0 + timedelta(seconds=i),
                }
            )

    add("t0", None, [1, 2], "fff00001")  # the sweep's 0-epoch trial: align 0, refine 1..2
    add("lin", "linear model (raw inputs)", [1], None)  # fitted on the driver
    add("rnd", "random-init body", [1, 2], "fff00002")
    root = tmp_path / "parquet" / "sweep=s"
    root.mkdir(parents=True)
    for trial in ("t0", "lin", "rnd"):
        mine = [r for r in rows if r["trial_id"] == trial]
        pq.write_table(pa.Table.from_pylist(mine, schema=FILE_SCHEMA), root / f"{trial}.parquet")
    killed = {
        "node": "fff00003",
        "at": (t0 + timedelta(seconds=1.5)).isoformat(),
        "trials": [["basicmotions", 0, 0, "trial"]],
        "checkpointed_rows": {},
    }
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"killed": killed, "launched": ["a"], "peak_workers_before_kill": 1}))
    rc = check.main(
        [
            "verify",
            "--run-id",
            "x",
            "--state",
            str(state),
            "--results",
            str(tmp_path / "parquet"),
            "--tasks",
            "basicmotions",
            "--seeds",
            "0",
            "--embedder-epochs",
            "0",
            "--refine-epochs",
            "2",
            "--gpus-per-trial",
            "1",
            "--storage-refused",
            "yes",
        ]
    )
    out = capsys.readouterr().out
    assert "rows 6/6, lost 0, duplicated 0" in out, out
    assert "killed node's trial ('basicmotions', 0, 0, 'trial'): a0@…00001 r1@…00001 r2@…00001" in out, out
    assert "rows without node" not in out, out
    assert rc == 1  # the synthetic state has no GPU bundles or scale-down: those checks fail, as they should
    assert check.short(None) == "driver"
