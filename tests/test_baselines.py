"""Baselines (orca_ray.baselines): which they are, the linear model against scikit-learn, their Parquet rows
through the reader and the analysis, the cache, and a real sweep that runs and then reuses them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from orca_ray import tables
from orca_ray.baselines import (
    BASELINE_KEY,
    LINEAR,
    RANDOM_BODY,
    BaselineCache,
    baseline_kind,
    baseline_trial_id,
    baselines_for,
    fit_linear,
    linear_config,
    linear_rows,
    prepare_baselines,
    random_body_config,
)
from orca_ray.config import TrialConfig
from orca_ray.results import final_scores, read_results
from orca_ray.results.sink import ParquetSink
from orca_ray.tasks import load_task
from orca_ray.trainable import task_key


def _cfg(**kw) -> TrialConfig:
    base = {"task": "digits", "body": "minilm", "proxy": "auto", "embedder_epochs": 10, "freeze": "body"}
    return TrialConfig.from_dict({**base, "seed": 1, "val_fraction": 0.25, "refine_epochs": 3, **kw})


def test_which_baselines_a_sweep_gets():
    cfg = _cfg()
    rb = random_body_config(cfg)
    assert (rb.body, rb.proxy, rb.embedder_epochs, rb.freeze) == ("random:minilm", "none", 0, "none")
    assert (rb.task, rb.seed, rb.refine_epochs, rb.val_fraction) == (
        "digits",
        1,
        3,
        0.25,
    )  # same data, same tuning
    lin = linear_config(cfg)
    assert (lin.body, lin.seed, lin.val_fraction, lin.refine_epochs) == ("linear", 1, 0.25, None)
    assert task_key(lin) == task_key(cfg)  # fitted on the very splits the trial sees

    configs = [_cfg(embedder_epochs=e, seed=s) for e in (0, 10, 30) for s in (0, 1)]
    plan = baselines_for(configs)
    assert [k for k, _ in plan] == [LINEAR, RANDOM_BODY] * 2  # one pair per seed, not per embedder setting
    assert {c.seed for _, c in plan} == {0, 1}
    # a trial whose body is already random init is its own random-body baseline: only the linear one is added
    random_trials = [_cfg(body=b, seed=s) for b, s in (("random:minilm", 0), ("mini-gpt2", 1))]
    assert [k for k, _ in baselines_for(random_trials)] == [LINEAR, LINEAR]
    assert [k for k, _ in baselines_for([*random_trials, *configs])] == [
        LINEAR,
        LINEAR,
        RANDOM_BODY,
        RANDOM_BODY,
    ]


def test_linear_baseline_is_scikit_learns_logistic_regression_selected_on_val():
    task = load_task("digits", seed=0, val_fraction=0.25)
    got = fit_linear(task, seed=0)
    flat = {k: v.x.reshape(len(v.x), -1) for k, v in task.splits().items()}
    scaler = StandardScaler().fit(flat["train"])
    errors = {}
    for c in (0.01, 0.1, 1.0, 10.0):
        model = LogisticRegression(C=c, max_iter=500, random_state=0).fit(
            scaler.transform(flat["train"]), task.train.y
        )
        errors[c] = tuple(
            1 - model.score(scaler.transform(flat[k]), getattr(task, k).y) for k in ("val", "test")
        )
    best = min(errors, key=lambda c: errors[c][0])  # the first of equal val errors, as fit_linear
    assert got["model"] == f"LogisticRegression(C={best:g})"
    assert got["val_score"] == pytest.approx(errors[best][0])
    assert got["test_score"] == pytest.approx(errors[best][1])
    assert got["test_score"] < 0.1  # a real model on digits (chance: 0.9)


def test_linear_baseline_for_multilabel_scores_auroc():
    task = load_task("synthetic-deepsea", seed=0, max_train_samples=200, max_eval_samples=100)
    got = fit_linear(task)
    assert got["model"].startswith("Ridge(")
    assert 0.0 <= got["test_score"] <= 1.0


def test_baseline_rows_reach_the_table_and_figures(tmp_path):
    cfg = linear_config(_cfg(seed=0))
    task = load_task("digits", seed=0, val_fraction=0.25)
    fitted = {"val_score": 0.03, "test_score": 0.04, "train_loss": math.nan, "seconds": 0.5, "model": "m"}
    sink = ParquetSink(str(tmp_path / "res"), sweep="s")
    sink.write_rows(baseline_trial_id(cfg), linear_rows(cfg, task, fitted))
    df = read_results(str(tmp_path / "res"))
    assert baseline_kind(df["config_json"].iloc[0]) == LINEAR
    trials, baselines = tables.split_baselines(df, final_scores(df))
    assert trials.empty
    assert list(baselines["baseline"]) == [LINEAR]
    assert baselines["final_test"].iloc[0] == pytest.approx(0.04)
    table = tables.final_scores_table(trials, baselines)
    assert (
        "| digits | **baseline: linear model (raw inputs)** | – | – | – | error | 1 | 0.04 ± – | – |" in table
    )
    assert baseline_kind('{"task": "x"}') is None
    assert baseline_kind(None) is None


def test_prepare_baselines_fits_caches_and_reuses(tmp_path):
    configs = [_cfg(seed=0, embedder_epochs=e, cache_dir=str(tmp_path / "cache")) for e in (0, 10)]
    cache = BaselineCache(tmp_path / "cache")
    sink = ParquetSink(str(tmp_path / "res"), sweep="first")
    to_run = prepare_baselines(configs, sink, {}, cache)
    # the linear model is fitted and cached now; the random-init body is one more trial to run
    assert len(to_run) == 1
    assert to_run[0][BASELINE_KEY] == RANDOM_BODY
    assert to_run[0]["body"] == "random:minilm"
    lin, rb = linear_config(configs[0]), random_body_config(configs[0])
    assert cache.get(lin)[0]["test_score"] < 0.1
    assert cache.get(rb) is None

    # a cached baseline is copied, never recomputed: plant rows and see them come back
    planted = [{**cache.get(lin)[0], "test_score": 0.123}]
    cache.put(lin, planted)
    cache.put(
        rb, [{**planted[0], "body": "random:minilm", "test_score": 0.5, "config_json": '{"baseline": "x"}'}]
    )
    sink2 = ParquetSink(str(tmp_path / "res"), sweep="second")
    assert prepare_baselines(configs, sink2, {}, cache) == []
    df = read_results(str(tmp_path / "res"), sweep="second")
    assert sorted(df["test_score"]) == [0.123, 0.5]
    assert set(df["trial_id"]) == {baseline_trial_id(lin), baseline_trial_id(rb)}


@pytest.mark.slow
def test_sweep_runs_baselines_once_and_reuses_them(ray_local, tmp_path, tiny_sweep_space, own_tiny_body):
    """A real sweep with baselines: the random-init body runs as a trial, both baselines land in Parquet and
    the table; a second sweep on the same task takes them from the cache without running that trial."""
    from orca_ray.sweep import SweepSpec, run_sweep

    space = {**tiny_sweep_space, "body": own_tiny_body}
    first = SweepSpec(name="first", space=space, storage=str(tmp_path / "store"), baselines=True)
    grid = run_sweep(first)
    assert len(grid) == 3  # 2 trials + the random-init body
    assert not any(r.error for r in grid)
    df = read_results(first.results_root, sweep="first")
    trials, baselines = tables.split_baselines(df, final_scores(df))
    assert len(trials) == 2
    assert sorted(baselines["baseline"]) == sorted([LINEAR, RANDOM_BODY])
    assert set(baselines["body"]) == {"linear", f"random:{own_tiny_body}"}
    assert np.isfinite(baselines["final_test"]).all()
    table = (tmp_path / "store" / "first" / "figures" / tables.TABLE).read_text()
    assert table.count("**baseline:") == 2
    # benchmarks/readme_numbers.py prints the README's numbers from this real sweep's Parquet
    readme = _readme_numbers()
    nums = readme.task_numbers(df, space["task"])
    by_epochs = dict(zip(trials["embedder_epochs"], trials["final_test"]))
    assert [float(v.iloc[0]) for v in nums["scores"].values()] == [by_epochs[0], by_epochs[2]]
    align = df[(df.phase == "align") & (df.embedder_epochs == 2)].set_index("epoch")["otdd"]
    assert list(nums["otdd_start"]) == [align[0]]
    assert list(nums["otdd_end"]) == [align[2]]
    text = readme.render(df)
    assert f"| 2 embedder epochs | {by_epochs[2]:.3f} (one seed) | 1 |" in text
    assert f"cpu_capability={torch.backends.cpu.get_cpu_capability()}" in text
    assert "deterministic=False" in text
    assert "deterministic=unknown" in text  # the linear baseline, fitted on the driver: no trial process

    second = SweepSpec(
        name="second",
        space={**space, "embedder_epochs": [1]},
        storage=str(tmp_path / "store"),
        baselines=True,
    )
    assert len(run_sweep(second)) == 1  # the random-init body came from the cache
    df2 = read_results(second.results_root, sweep="second")
    _, baselines2 = tables.split_baselines(df2, final_scores(df2))
    assert sorted(baselines2["final_test"]) == sorted(baselines["final_test"])


def _readme_numbers():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "readme_numbers.py"
    spec = importlib.util.spec_from_file_location("readme_numbers", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
