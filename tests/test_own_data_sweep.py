"""Users' own data through the real sweep scripts: every bad input stops on the driver with one line, a
non-zero exit and nothing under --storage; real UCR series and an npz with 1-based labels and two samples per
class, given by absolute path, run through sweeps/embedder_epochs.py and land in Parquet."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "sweeps" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_script(name: str, argv: list[str], capsys) -> tuple[int, str]:
    """The script's main in this process: (exit code, stderr)."""
    from orca_ray.sweep import main

    m = script(name)
    kwargs = {k: getattr(m, k) for k in ("add_args",) if hasattr(m, k)}
    try:
        rc = main(default_name=name, description="", space=m.space, argv=argv, **kwargs)
    except SystemExit as e:  # argparse's own errors
        rc = e.code
    return rc, capsys.readouterr().err


def gunpoint_ucr(folder: Path) -> Path:
    """sktime's real GunPoint, written in the UCR 2018 archive layout (labels 1 and 2, tab-separated)."""
    from sktime.datasets import load_UCR_UEA_dataset

    folder.mkdir(parents=True, exist_ok=True)
    for split in ("TRAIN", "TEST"):
        x, y = load_UCR_UEA_dataset("GunPoint", split=split.lower(), return_X_y=True, return_type="numpy3D")
        with open(folder / f"GunPoint_{split}.tsv", "w") as f:
            for row, label in zip(x[:, 0], y):
                f.write("\t".join([label, *(repr(float(v)) for v in row)]) + "\n")
    return folder


def two_per_class_npz(path: Path, classes: int = 8, length: int = 32) -> Path:
    """1-based labels, two training samples per class (a stratified 0.2 carve is impossible)."""
    rng = np.random.default_rng(0)
    templates = rng.standard_normal((classes, 1, length))
    y_tr = np.repeat(np.arange(1, classes + 1), 2)
    y_te = np.arange(1, classes + 1)
    np.savez(
        path,
        x_train=(templates[y_tr - 1] + 0.3 * rng.standard_normal((len(y_tr), 1, length))).astype(np.float32),
        y_train=y_tr,
        x_test=(templates[y_te - 1] + 0.3 * rng.standard_normal((len(y_te), 1, length))).astype(np.float32),
        y_test=y_te,
    )
    return path


def bad_inputs(tmp: Path) -> dict[str, tuple[list[str], str]]:
    """name -> (flags, what the one error line must say)."""
    ucr = gunpoint_ucr(tmp / "ucr" / "GunPoint")
    no_test = tmp / "no_test"
    no_test.mkdir()
    (no_test / "GunPoint_TRAIN.tsv").write_bytes((ucr / "GunPoint_TRAIN.tsv").read_bytes())
    unseen = tmp / "unseen.npz"
    x = np.zeros((8, 1, 8), np.float32)
    np.savez(unseen, x_train=x, y_train=np.array([1, 2] * 4), x_test=x[:2], y_test=np.array([1, 9]))
    images = tmp / "images"
    for split in ("train", "test"):
        (images / split / "cat").mkdir(parents=True)
    from PIL import Image

    Image.new("L", (8, 8)).save(images / "test" / "cat" / "b.png")
    (images / "train" / "cat" / "a.png").write_bytes(b"not a png")
    return {
        "missing npz": (["--tasks", f"npz:{tmp}/absent.npz"], "absent.npz: no such file"),
        "unknown task": (["--tasks", "gunpiont"], "unknown task 'gunpiont'. Known tasks: acsf1"),
        "ucr without test file": (["--tasks", f"ucr:{no_test}"], "GunPoint_TEST.tsv: missing"),
        "unseen test label": (
            ["--tasks", f"npz:{unseen}"],
            "unseen.npz: field y_test: label '9' never occurs in training",
        ),
        "broken image": (["--tasks", f"imagefolder:{images}"], "a.png: not a readable image"),
        "negative seed": (["--seeds", "-1"], "--seeds: must be >= 0, got -1"),
        "negative embedder epochs": (["--embedder-epochs", "-2"], "--embedder-epochs: must be >= 0, got -2"),
        "zero refine epochs": (["--refine-epochs", "0"], "--refine-epochs: must be >= 1"),
        "val fraction": (["--val-fraction", "1"], "--val-fraction: must be in (0, 1)"),
        "name with slash": (["--name", "a/b"], "is not a sweep name"),
        "name with dots": (["--name", ".."], "is not a sweep name"),
        # the demo's bundled body: the paper preset's roberta-base is not cached here, a second problem
        "NAS-Bench-360 task without data": (["--tasks", "ecg"], "pass --data-root DIR"),
    }


def test_every_bad_input_is_one_line_nonzero_and_writes_nothing(tmp_path, capsys):
    storage = tmp_path / "storage"
    for name, (flags, expected) in bad_inputs(tmp_path).items():
        rc, err = run_script("embedder_epochs", [*flags, "--storage", str(storage)], capsys)
        lines = err.strip().splitlines()
        assert rc not in (0, None), name
        assert len(lines) == 1, (name, err)
        assert "error:" in lines[0], (name, err)
        assert expected in lines[0], (name, err)
        assert not storage.exists(), name


def test_unknown_proxy_and_body_name_the_choices(tmp_path, capsys):
    rc, err = run_script(
        "proxy_datasets", ["--proxies", "imagenet", "--storage", str(tmp_path / "s")], capsys
    )
    assert rc == 2
    assert "unknown proxy 'imagenet'" in err
    assert "wnut16" in err
    assert len(err.splitlines()) == 1
    rc, err = run_script(
        "pretraining_scale", ["--bodies", "no-such/model-xyz", "--storage", str(tmp_path / "s")], capsys
    )
    assert rc == 2, err
    assert "no-such/model-xyz" in err, err
    assert len(err.splitlines()) == 1, err
    assert not (tmp_path / "s").exists()


@pytest.mark.slow
def test_bad_input_through_the_real_script_exits_without_traceback(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "sweeps" / "embedder_epochs.py"),
            "--tasks",
            f"npz:{tmp_path}/absent.npz",
            "--storage",
            str(tmp_path / "s"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        f"error: {tmp_path}/absent.npz: no such file. Give 'npz:/path/file.npz' holding x_train, y_train, "
        f"x_test, y_test"
    ]
    assert not (tmp_path / "s").exists()


@pytest.mark.slow
def test_real_ucr_series_and_one_based_npz_by_absolute_path_land_in_parquet(tmp_path):
    from orca_ray.results import read_results

    ucr = gunpoint_ucr(tmp_path / "UCR" / "GunPoint")
    (tmp_path / "my data").mkdir()
    npz = two_per_class_npz(tmp_path / "my data" / "two_per_class.npz")
    storage, cache = tmp_path / "results", tmp_path / "cache"
    argv = [
        sys.executable,
        str(REPO / "sweeps" / "embedder_epochs.py"),
        "--tasks",
        f"ucr:{ucr}",
        f"npz:{npz}",
        "--embedder-epochs",
        "0",
        "1",
        "--seeds",
        "0",
        "--refine-epochs",
        "1",
        "--val-fraction",
        "0.2",
        "--storage",
        str(storage),
        "--cache-dir",
        str(cache),
        "--name",
        "own-data",
        "--no-analysis",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO), "ORCA_RAY_CACHE": str(cache)}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # the preflight said what it found, including the carve that could not be stratified
    assert "checked ucr:GunPoint" in done.stdout
    assert "classes 0..7 = 1, 2, 3" in done.stdout
    assert "unstratified" in done.stdout
    df = read_results(storage / "own-data" / "parquet")
    assert set(df["task"]) == {f"ucr:{ucr}", f"npz:{npz}"}  # the full spec, slashes and all
    from orca_ray.baselines import baseline_kind

    kind = df["config_json"].map(baseline_kind)
    study, baselines = df[kind.isna()], df[kind.notna()]
    refine = study[study["phase"] == "refine"]
    assert len(refine) == 4
    assert refine["test_score"].between(0, 1).all()
    assert sorted(study[study["phase"] == "align"].groupby("task").size()) == [1 + 2, 1 + 2]
    assert set(baselines["task"]) == set(study["task"])  # the demo's baselines ran on the user's data too
    # the original labels travel with the results and are listed in final_scores.md
    import json

    from orca_ray.analysis import run as analyse

    assert set(df.loc[df["task"] == f"npz:{npz}", "classes"].map(json.loads).map(tuple)) == {
        tuple(str(i) for i in range(1, 9))
    }
    analyse(str(storage / "own-data" / "parquet"), str(tmp_path / "figures"))
    table = (tmp_path / "figures" / "final_scores.md").read_text()
    assert "## Classes" in table
    assert "0 = 1, 1 = 2" in table
    trial_dirs = [
        p.name for p in (storage / "own-data").iterdir() if p.is_dir() and p.name.startswith(("ucr-", "npz-"))
    ]
    assert len(trial_dirs) >= 4
    assert all("/" not in d for d in trial_dirs)


def test_preflight_loads_each_task_as_its_trials_do_protocol_included():
    from orca_ray.config import TrialConfig
    from orca_ray.preflight import preflight

    configs = [TrialConfig(task="digits", body="minilm", protocol=p) for p in ("honest", "orca")]
    honest, orca = preflight(configs, out=lambda line: None)
    assert "val = test (ORCA)" not in honest
    assert "val = test (ORCA)" in orca


def test_preflight_loads_each_task_once_and_the_sweep_reuses_it(monkeypatch):
    """Preflight loads a task to check it; the sweep's preloading takes that object instead of loading it
    again, and loads only what preflight did not (other seeds' validation splits)."""
    from orca_ray import trainable
    from orca_ray.preflight import preflight
    from orca_ray.sweep.plan import SweepSpec, expand_grid
    from orca_ray.sweep.runner import _preload

    space = {"task": "italypowerdemand", "body": "tiny-text", "seed": [0, 1], "proxy": "none"}
    configs = expand_grid(space)
    loads = []
    real = trainable.load_trial_task
    monkeypatch.setattr(trainable, "load_trial_task", lambda c: loads.append(c.seed) or real(c))
    loaded: dict = {}
    preflight(configs, out=lambda line: None, loaded=loaded)
    assert loads == [0]
    assert list(loaded) == [trainable.task_key(configs[0])]
    tasks = _preload(SweepSpec(name="x", space=space, preload_tasks=True), loaded)
    assert loads == [0, 1]  # seed 1 loaded by the sweep, seed 0 not a second time
    assert tasks[trainable.task_key(configs[0])] is loaded[trainable.task_key(configs[0])]
