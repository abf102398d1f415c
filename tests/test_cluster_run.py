"""A sweep script run as on a cluster: against a running Ray (`ray start --head`, then `--address auto`),
with results on S3 (moto's server on loopback stands in for S3; pyarrow and Ray reach it through
AWS_ENDPOINT_URL, as they would reach any S3-compatible store)."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from orca_ray.baselines import baseline_kind
from orca_ray.results import read_results

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def s3_env():
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=_free_port())
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    ).create_bucket(Bucket="sweeps")
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield env
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    server.stop()


@pytest.fixture
def ray_head(s3_env, private_ray_head):
    """A separate Ray 'cluster' on this machine, as `ray up` would start on a head node."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    env, _ = private_ray_head(num_cpus=2, env=s3_env)
    return env


def test_sweep_script_on_a_running_cluster_with_s3_storage(ray_head, tmp_path):
    cmd = [
        sys.executable,
        str(REPO / "sweeps" / "embedder_epochs.py"),
        "--address",
        "auto",
        "--storage",
        "s3://sweeps/orca",
        "--name",
        "cluster-s3",
        "--tasks",
        "synthetic-satellite",
        "--seeds",
        "0",
        "--embedder-epochs",
        "0",
        "2",
        "--refine-epochs",
        "1",
        "--cache-dir",
        str(tmp_path / "cache"),
    ]
    done = subprocess.run(cmd, env=ray_head, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "s3://sweeps/orca/cluster-s3/parquet" in done.stdout
    rows = read_results("s3://sweeps/orca/cluster-s3/parquet")
    kind = rows["config_json"].map(baseline_kind)
    df, baselines = rows[kind.isna()], rows[kind.notna()]
    assert set(baselines["task"]) == {"synthetic-satellite"}  # the demo's baselines landed on S3 too
    keys = sorted(zip(df["embedder_epochs"], df["phase"], df["epoch"]))
    assert keys == [
        (0, "align", 0),
        (0, "refine", 1),
        (2, "align", 0),
        (2, "align", 1),
        (2, "align", 2),
        (2, "refine", 1),
    ]
    assert set(df["sweep"]) == {"cluster-s3"}
    assert df["test_score"].notna().sum() == 2
    assert not (tmp_path / "cluster-s3").exists()  # nothing of the sweep went to local disk
