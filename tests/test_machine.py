"""The machine behind every row (fingerprint columns) and deterministic mode: node-independent numbers."""

import hashlib
import importlib.util
import json
from dataclasses import fields
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from orca_ray.config import _HASHED_WHEN_SET, _NOT_HASHED, TrialConfig
from orca_ray.machine import DETERMINISTIC_ENV, FINGERPRINT_FIELDS, machine_fingerprint, set_deterministic
from orca_ray.results import FILE_SCHEMA, RESULT_SCHEMA, read_results
from orca_ray.results.schema import MACHINE_FIELDS

REPO = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("det_bench", REPO / "benchmarks" / "deterministic.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_fingerprint_is_what_torch_dispatches_to_and_has_a_column_each():
    fp = machine_fingerprint("cpu")
    assert tuple(fp) == FINGERPRINT_FIELDS == MACHINE_FIELDS
    assert fp["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert fp["threads"] == torch.get_num_threads()
    assert fp["torch_version"] == torch.__version__
    assert fp["gpu_model"] is None  # a CPU trial names no GPU
    assert fp["cpu_model"]
    assert all(RESULT_SCHEMA.field(c) for c in (*FINGERPRINT_FIELDS, "deterministic"))


def test_parquet_from_before_the_fingerprint_reads_with_null_columns(tmp_path):
    old = pa.schema([f for f in FILE_SCHEMA if f.name not in (*MACHINE_FIELDS, "deterministic")])
    part = tmp_path / "sweep=old"
    part.mkdir()
    row = {"trial_id": "t", "task": "digits", "phase": "refine", "epoch": 1, "test_score": 0.1}
    pq.write_table(pa.Table.from_pylist([row], schema=old), part / "t.parquet")
    df = read_results(str(tmp_path))
    assert len(df) == 1
    assert df["test_score"].iloc[0] == 0.1
    assert df[[*MACHINE_FIELDS, "deterministic"]].isna().all().all()


def test_deterministic_enters_the_hash_only_when_on():
    cfg = TrialConfig(task="digits", body="minilm", embedder_epochs=3)
    # the hash as it was computed before the field existed: every earlier trial keeps its folder and caches
    keys = sorted(f.name for f in fields(cfg) if f.name not in _NOT_HASHED | set(_HASHED_WHEN_SET))
    before = json.dumps({k: getattr(cfg, k) for k in keys}, sort_keys=True, default=str)
    assert cfg.config_hash == hashlib.sha256(before.encode()).hexdigest()[:16]
    det = TrialConfig(task="digits", body="minilm", embedder_epochs=3, deterministic=True)
    assert det.config_hash != cfg.config_hash
    assert det.align_key != cfg.align_key  # other kernels: its snapshots are not the default mode's


def test_deterministic_mode_refuses_a_process_started_without_its_variables(monkeypatch):
    for k in DETERMINISTIC_ENV:
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(RuntimeError, match="ATEN_CPU_CAPABILITY=avx2"):
        set_deterministic(True)
    assert not torch.are_deterministic_algorithms_enabled()
    for k, v in DETERMINISTIC_ENV.items():
        monkeypatch.setenv(k, v)
    try:
        set_deterministic(True)
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        set_deterministic(False)


@pytest.mark.slow
def test_deterministic_trial_gives_an_avx2_nodes_numbers_on_this_machine():
    """The same small trial in fresh processes: deterministic mode on this machine and a plain run on an
    emulated AVX2-only node (all three dispatch levels capped from outside) report bit-identical values; the
    fingerprint says which ISA ran."""
    if "avx2" not in Path("/proc/cpuinfo").read_text():
        pytest.skip("needs an x86-64 CPU with AVX2")
    bench = _bench()
    trial = {
        "task": "synthetic-satellite",
        "body": "tiny-text",
        "proxy": "fake-text",
        "embedder_epochs": 2,
        "refine_epochs": 2,
        "batch_size": 32,
        "proxy_size": 200,
        "align_batch_per_class": 8,
        "max_train_samples": 256,
        "max_eval_samples": 128,
    }
    det = bench.run_trial(trial, {}, deterministic=True)
    node = bench.run_trial(trial, bench.AVX2_NODE, deterministic=False)
    assert det["fingerprint"]["cpu_capability"] == node["fingerprint"]["cpu_capability"] == "AVX2"
    assert len(det["rows"]) == 3 + 2
    assert bench.differing(det["rows"], node["rows"]) == []
