"""Payload pickles planted where the project reads pickles: every NAS-Bench-360 pickled format, the CIFAR-10
proxy, a staged root whose files no longer match their manifest, and a sweep's restore state. Each is refused
with one clear line, and the payload (which would create a canary file) never runs."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_nb360 import write_cifar, write_ecg, write_satellite

from orca_ray.tasks import TaskDataError, load_task
from orca_ray.tasks.nb360 import staging

ALLOWED = "only numpy arrays and plain containers are allowed"


class Payload:
    """`touch <canary>` through os.system (pickled as posix.system) when a plain unpickler loads it."""

    def __init__(self, canary: Path):
        self.canary = str(canary)

    def __reduce__(self):
        return os.system, (f"touch {self.canary}",)


def plant_cifar100(root: Path, canary: Path) -> Path:
    write_cifar(root, per_class=1, n_test=10)
    path = root / "cifar-100-python" / "train"
    data = np.zeros((100, 3072), np.uint8)
    labels = [*list(range(99)), Payload(canary)]
    path.write_bytes(pickle.dumps({"data": data, "fine_labels": labels}, protocol=2))
    return path


def plant_satellite(root: Path, canary: Path) -> Path:
    write_satellite(root / "satellite")
    path = root / "satellite" / "satellite_train.npy"
    np.save(path, {"data": np.ones((24, 46)), "label": Payload(canary)}, allow_pickle=True)
    return path


def plant_ecg(root: Path, canary: Path) -> Path:
    write_ecg(root / "ecg", n_rec=12)
    path = root / "ecg" / "challenge2017.pkl"
    data = np.empty(12, dtype=object)
    data[:] = [np.arange(1500, dtype=np.int16)] * 11 + [Payload(canary)]
    path.write_bytes(pickle.dumps({"data": data, "label": np.array(["N", "A", "O", "~"] * 3)}))
    return path


PLANTS = {"cifar100": plant_cifar100, "satellite": plant_satellite, "ecg": plant_ecg}


def data_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "orca_ray.data", *args], capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize("task", PLANTS)
def test_payload_in_a_dataset_pickle_is_refused_by_check_and_load_task(task, tmp_path, monkeypatch):
    monkeypatch.setenv("ORCA_RAY_CACHE", str(tmp_path / "node-cache"))
    canary = tmp_path / "canary"
    root = tmp_path / "nb360"
    path = PLANTS[task](root, canary)
    refusal = f"refusing to unpickle {path}: it references posix.system; {ALLOWED}"

    # --no-hash: no checksum can stop it first (the fake CIFAR-100 files differ from torchvision's md5s),
    # so the loader reaches the pickle
    for flags in ([], ["--no-hash"]):
        run = data_cli("check", str(root), "--tasks", task, *flags)
        assert run.returncode == 1, run.stdout + run.stderr
        assert "Traceback" not in run.stdout + run.stderr
        if flags or task != "cifar100":
            assert f"LOAD {task}: TaskDataError: {refusal}" in run.stdout, run.stdout
        else:  # a checksum mismatch: check does not load the task at all
            assert "CHECKSUM" in run.stdout, run.stdout
            assert "LOAD" not in run.stdout, run.stdout

    with pytest.raises(TaskDataError) as e:
        load_task(task, data_root=root)
    assert str(e.value) == refusal
    assert not canary.exists()


def test_payload_in_a_cifar10_proxy_batch_is_refused(tmp_path):
    from orca_ray.bodies import load_body
    from orca_ray.proxies import ProxyDataError, proxy_features

    canary = tmp_path / "canary"
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for i in range(1, 6):
        labels = [Payload(canary)] if i == 3 else list(range(10))
        batch = {"data": np.zeros((10, 3072), np.uint8), "labels": labels}
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(ProxyDataError) as e:
        proxy_features(
            "cifar10", "tiny-swin", load_body("tiny-swin"), size=20, data_root=tmp_path, cache_dir=tmp_path
        )
    assert str(e.value) == (
        f"refusing to unpickle {folder / 'data_batch_3'}: it references posix.system; {ALLOWED}"
    )
    assert not canary.exists()


def test_a_staged_file_that_differs_from_its_manifest_is_never_loaded(tmp_path, monkeypatch):
    """A node's copy altered after staging: check reports the checksum and does not even open it; load_task
    refuses before reading it."""
    monkeypatch.setenv("ORCA_RAY_CACHE", str(tmp_path / "node-cache"))
    canary = tmp_path / "canary"
    src, dest = tmp_path / "src", tmp_path / "staged"
    write_satellite(src / "satellite")
    staging.stage(src, str(dest), ["satellite"], log=lambda _: None)
    assert load_task("satellite", data_root=dest).train.x.shape[1:] == (1, 46)  # the staged copy loads

    altered = dest / "satellite" / "satellite_test.npy"
    np.save(altered, {"data": np.ones((24, 46)), "label": Payload(canary)}, allow_pickle=True)
    run = data_cli("check", str(dest), "--tasks", "satellite")
    assert run.returncode == 1
    assert f"CHECKSUM {altered}: size/sha256 differ from MANIFEST.json" in run.stdout, run.stdout
    assert "unpickle" not in run.stdout, run.stdout
    assert "loaded" not in run.stdout, run.stdout
    with pytest.raises(TaskDataError, match=r"^CHECKSUM .*satellite_test\.npy: .*refusing to load it"):
        load_task("satellite", data_root=dest)

    (dest / "satellite" / "extra.npy").write_bytes(b"")  # files the manifest does not list are not read
    np.save(altered, np.zeros(3))
    with pytest.raises(TaskDataError, match="refusing to load it"):
        load_task("satellite", data_root=dest)
    assert not canary.exists()


# ---- a sweep's restore state ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_planted_restore_state_is_never_what_tune_reads(ray_local, tmp_path, monkeypatch, tiny_sweep_space):
    """Tune unpickles tuner.pkl, the experiment/searcher state and trials' error.pkl on resume. The resume reads
    the head's private verified copy: files planted in the storage -- before the resume, or between any check
    and Tune's own read (the check-then-use race) -- never run; without the head's copy it refuses, one line."""
    import ray.cloudpickle as cloudpickle
    from ray import tune

    from orca_ray import untrusted
    from orca_ray.sweep import SweepSpec
    from orca_ray.sweep.cli import main
    from orca_ray.sweep.runner import run_sweep
    from orca_ray.trainable import align_then_refine
    from orca_ray.untrusted import UntrustedStateError

    monkeypatch.setenv(untrusted.LEDGER_ENV, str(tmp_path / "head-state"))
    # one small trial (the shared tiny space: capped train/eval sets and a small fake-text proxy)
    grid = {**tiny_sweep_space, "embedder_epochs": 0, "refine_epochs": 1}
    spec = SweepSpec(name="guarded", space=grid, storage=str(tmp_path / "store"), analysis=False)
    assert len(run_sweep(spec)) == 1
    exp = Path(spec.experiment_path)
    (trial,) = [p for p in exp.iterdir() if p.is_dir() and (p / "params.json").exists()]
    canary = tmp_path / "canary"
    payload = pickle.dumps(Payload(canary))
    state = sorted(exp.glob("experiment_state-*.json"))[-1]
    plants = {
        exp / "tuner.pkl": payload,
        state: state.read_text()
        .replace(
            '"trial_data"',
            '"x": {"_type": "CLOUDPICKLE_FALLBACK", "value": '
            f'"{cloudpickle.dumps(Payload(canary)).hex()}"}}, "trial_data"',
            1,
        )
        .encode(),
        exp / "basic-variant-state-9999-12-31_23-59-59.json": cloudpickle.dumps(Payload(canary)),
        exp / "experiment_state-9999-12-31_23-59-59.json": payload,
        trial / "error.pkl": cloudpickle.dumps(Payload(canary)),
    }
    for path, planted in plants.items():
        path.write_bytes(planted)
    real_restore = tune.Tuner.restore

    def race(path, *args, **kwargs):  # the storage's tuner.pkl replaced after every check, before Tune reads
        (exp / "tuner.pkl").write_bytes(payload)
        return real_restore(path, *args, **kwargs)

    monkeypatch.setattr(tune.Tuner, "restore", race)
    assert len(run_sweep(spec)) == 1  # the head's own state: resumes (nothing left to run)
    assert not canary.exists()
    monkeypatch.setattr(tune.Tuner, "restore", real_restore)

    # no copy of the head's (a lost head): refused, one line from the CLI, until --trust-storage
    untrusted.ledger_path(spec.experiment_path).unlink()
    with pytest.raises(UntrustedStateError, match="has no record of writing its driver state"):
        run_sweep(spec)
    argv = ["--storage", spec.storage, "--name", spec.name, "--no-analysis"]
    with pytest.raises(SystemExit) as cli:
        main(default_name="guarded", description="", space=lambda a: grid, argv=argv)
    assert str(cli.value).startswith(f"error: refusing to restore {exp}: this head has no record")
    assert not canary.exists()
    # without the head's copy, Tune's own restore runs the payload: the copy is what stops it
    (exp / "tuner.pkl").write_bytes(payload)
    with pytest.raises(Exception):  # noqa: B017, PT011 - the canary below is what counts
        real_restore(str(exp), align_then_refine)
    assert canary.exists()
