"""--precision (autocast, fp16's gradient scaler), data on the device, and the measured-throughput estimate."""

import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from orca_ray.align import class_weighted_otdd
from orca_ray.bodies import load_body
from orca_ray.config import TrialConfig
from orca_ray.device_data import TrainFeed
from orca_ray.model import build_model
from orca_ray.otdd import ProxyDistance
from orca_ray.precision import Precision
from orca_ray.refine import RefineHParams, Refiner, batches
from orca_ray.tasks import load_task

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small():
    """A 64-series synthetic Satellite task and the tiny random text body."""
    return load_task("synthetic-satellite", seed=0, n_train=64, max_eval_samples=32), load_body("tiny-text")


def _refiner(small, precision="fp32", **kw):
    task, body = small
    model = build_model(task, copy.deepcopy(body), aligned=True, target_seq_len=64, seed=0)  # body trains
    hp = RefineHParams("adamw", 1e-3, epochs=2, batch_size=16, clip=kw.pop("clip", None))
    return Refiner(model, task, hp, seed=0, device="cpu", precision=Precision(precision), **kw)


def _dtypes_seen(refiner):
    """The output dtype of the body's first Linear during one training epoch."""
    seen = []
    layer = next(m for m in refiner.model.body.modules() if isinstance(m, torch.nn.Linear))
    handle = layer.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    refiner.run_epoch()
    handle.remove()
    return set(seen)


def test_bf16_autocasts_refine_and_fp32_does_not(small):
    assert _dtypes_seen(_refiner(small, "fp32")) == {torch.float32}
    bf16 = _refiner(small, "bf16")
    assert _dtypes_seen(bf16) == {torch.bfloat16}
    assert bf16.scaler is None
    assert all(p.dtype == torch.float32 for p in bf16.model.parameters())  # master weights stay fp32


def test_fp16_scaler_skips_a_step_whose_gradients_hold_inf(small):
    r = _refiner(small, "fp16", clip=1.0)
    assert isinstance(r.scaler, torch.amp.GradScaler)
    # a modest starting scale, so that only the poisoned gradient overflows (65536 would overflow fp16 here too)
    r.scaler = torch.amp.GradScaler("cpu", init_scale=16.0)
    param = next(p for p in r.model.predictor.parameters())
    poison = {"left": 1}

    def hook(grad):  # the first micro-batch's gradient overflows
        if poison["left"]:
            poison["left"] -= 1
            return torch.full_like(grad, float("inf"))
        return grad

    param.register_hook(hook)
    before, scale = param.detach().clone(), r.scaler.get_scale()
    records = []
    x, y, _ = next(batches(r.task.train, 16))
    r.train_batches([(x, y)], on_micro_batch=records.append)
    assert not records[0].stepped
    assert torch.equal(param.detach(), before)  # the step was skipped
    assert r.scaler.get_scale() == scale / 2
    r.train_batches([(x, y)], on_micro_batch=records.append)
    assert records[1].stepped
    assert not torch.equal(param.detach(), before)
    assert "scaler" in r.state_dict()


def test_resident_batches_match_host_batches_and_fp32_numbers(small):
    task, _ = small
    order = np.random.default_rng(3).permutation(len(task.train))
    resident = TrainFeed.for_split(task.train, torch.device("cpu"), "resident")
    assert resident.resident is not None
    for (xr, yr), (xh, yh, _) in zip(
        resident.batches(16, order), batches(task.train, 16, order), strict=True
    ):
        assert torch.equal(xr, torch.from_numpy(xh))
        assert torch.equal(yr, torch.from_numpy(yh))
    assert TrainFeed.for_split(task.train, torch.device("cpu"), "auto").resident is None  # CPU: host path
    runs = {}
    for mode in ("resident", "host"):
        r = _refiner(small, data_on_device=mode)
        runs[mode] = ([r.run_epoch() for _ in range(2)], r.model.state_dict())
    (res_epochs, res_state), (host_epochs, host_state) = runs["resident"], runs["host"]
    for a, b in zip(res_epochs, host_epochs, strict=True):
        assert (a.train_loss, a.val_score, a.test_score) == (b.train_loss, b.val_score, b.test_score)
    assert all(torch.equal(res_state[k], host_state[k]) for k in res_state)


def test_align_autocasts_the_embedder_only(small):
    task, body = small
    model = build_model(task, body, aligned=True, target_seq_len=64, seed=0)
    g = torch.Generator().manual_seed(0)
    distance = ProxyDistance(
        torch.randn(60, body.embed_dim, generator=g), torch.randint(0, 3, (60,), generator=g)
    )
    x = torch.from_numpy(task.train.x[:24])
    labels = torch.from_numpy(task.train.y[:24])
    weights = torch.full((task.num_outputs,), 1.0 / task.num_outputs)
    seen = []
    conv = next(m for m in model.embedder.modules() if isinstance(m, torch.nn.Conv1d))
    conv.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    loss = class_weighted_otdd(model.embedder, distance, x, labels, weights, Precision("bf16"))
    assert seen == [torch.bfloat16]
    assert loss.dtype == torch.float32
    loss.backward()
    assert all(p.grad is not None for p in model.embedder.parameters() if p.requires_grad)


def test_precision_enters_the_hashes_only_when_not_fp32():
    base = TrialConfig(task="digits", body="minilm", embedder_epochs=3)
    explicit = TrialConfig(task="digits", body="minilm", embedder_epochs=3, precision="fp32", tf32=False)
    assert (explicit.config_hash, explicit.align_key) == (base.config_hash, base.align_key)
    for other in ({"precision": "bf16"}, {"precision": "fp16"}, {"tf32": True}):
        cfg = TrialConfig(**{**base.to_dict(), **other})
        assert cfg.config_hash != base.config_hash
        assert cfg.align_key != base.align_key
    assert TrialConfig(**{**base.to_dict(), "tf32": True}).numerics.label() == "fp32+tf32"
    with pytest.raises(ValueError, match="precision must be one of"):
        TrialConfig(task="digits", body="minilm", precision="fp8")


def test_old_parquet_without_a_precision_column_reads_as_fp32(tmp_path):
    from orca_ray.results import FILE_SCHEMA, read_results

    old = pa.schema([f for f in FILE_SCHEMA if f.name != "precision"])
    row = {f.name: None for f in old} | {"trial_id": "t0", "task": "digits", "phase": "refine", "epoch": 1}
    part = tmp_path / "sweep=old"
    part.mkdir()
    pq.write_table(pa.Table.from_pylist([row], schema=old), part / "t0.parquet")
    df = read_results(str(tmp_path))
    assert df["precision"].tolist() == ["fp32"]


def _throughput(path, sps=100.0, align_s=2.0, device_type="cuda"):
    entry = {"body": "roberta-base", "task": "satellite", "precision": "bf16"}
    entry |= {"refine_samples_per_s": sps, "align_step_s": align_s}
    record = {"format": 1, "device": "NVIDIA H100 80GB HBM3", "device_type": device_type}
    record |= {"measured_at": "2026-12-06T00:00:00+00:00", "commit": "abc", "entries": [entry]}
    path.write_text(json.dumps(record))
    return path


def test_dry_run_estimate_uses_measured_throughput_when_on_record(tmp_path, capsys):
    from orca_ray.recipes import recipe_for
    from orca_ray.sweep.cli import main
    from orca_ray.sweep.plan import EVAL_SHARE, estimate
    from orca_ray.throughput import load_throughput

    record = load_throughput(_throughput(tmp_path / "tp.json"))
    cfg = TrialConfig(
        task="satellite", body="roberta-base", embedder_epochs=10, precision="bf16", preset="paper"
    )
    e = estimate(cfg, record)
    assert e["gpu_source"] == "measured"
    n_train = recipe_for("satellite").train_size
    assert e["gpu_hours"] == pytest.approx((n_train * 60 * (1 + EVAL_SHARE) / 100.0 + 10 * 2.0) / 3600)
    assert estimate(TrialConfig(**{**cfg.to_dict(), "precision": "fp32"}), record)["gpu_source"] == "assumed"
    assert load_throughput(_throughput(tmp_path / "cpu.json", device_type="cpu")).entries == ()

    def space(args):
        return {"task": args.tasks, "body": "roberta-base", "embedder_epochs": 0, "seed": args.seeds}

    argv = ["--preset", "paper", "--tasks", "satellite", "--seeds", "0", "--dry-run", "--precision", "bf16"]
    assert main(default_name="t", description="", space=space, argv=[*argv, "--throughput", record.path]) == 0
    out = capsys.readouterr().out
    assert "1 trial(s) from measured throughput on NVIDIA H100" in out
    bad = _throughput(tmp_path / "bad.json", sps=-1)
    assert main(default_name="t", description="", space=space, argv=[*argv, "--throughput", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "bad.json" in err[0]
    assert "refine_samples_per_s" in err[0]


def _benchmark(tmp_path, *args):
    out = tmp_path / "tp.json"
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "gpu.py"),
        "--device",
        "cpu",
        "--quick",
        "--out",
        str(out),
    ]
    proc = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout, json.loads(out.read_text())


def _check_rows(rows, workloads):
    assert {(r["workload"], r["precision"]) for r in rows} == {
        (w, p) for w in workloads for p in ("fp32", "bf16")
    }
    for r in rows:
        assert r["refine_samples_per_s"] > 0
        assert r["align_step_s"] > 0
        assert 0 < r["mfu"] < 1
        assert r["flops_per_sample"] > 0


def test_gpu_benchmark_runs_quick_on_cpu_and_prints_its_table(tmp_path):
    """The 1D workload, fp32 and bf16, one process (the sharing processes run in the slow test)."""
    from orca_ray.throughput import load_throughput

    stdout, record = _benchmark(tmp_path, "--workloads", "satellite-1d", "--share")
    _check_rows(record["entries"], ["satellite-1d"])
    assert "MFU" in stdout
    assert "bf16" in stdout
    assert load_throughput(tmp_path / "tp.json").entries == ()  # a CPU quick run is no GPU estimate


@pytest.mark.slow
def test_gpu_benchmark_2d_workload_and_sharing_on_cpu(tmp_path):
    stdout, record = _benchmark(tmp_path, "--workloads", "cifar100-2d", "--share", "2")
    _check_rows(record["entries"], ["cifar100-2d"])
    assert all(set(r["shared_samples_per_s"]) == {"2"} for r in record["entries"])
    assert "cifar100-2d" in stdout
