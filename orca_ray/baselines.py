"""Baselines that give a sweep's scores their context, computed once per task and cached.

Two per task and seed, each scored like a trial (test score at the setting with the best validation score,
the same metric, the same splits):

- **linear model on the raw inputs** (scikit-learn): logistic regression (classification) or ridge
  regression (multilabel: one linear score per label, ranked for AUROC; dense regression) on the flattened,
  standardised inputs; the regularisation strength is chosen on the validation split. Seconds on the
  driver for the demo's tasks; at most `LINEAR_MAX_TRAIN` training rows.
- **gradient-boosted trees** (tables only: OpenML, csv/parquet, the bundled tables): scikit-learn's
  HistGradientBoostingClassifier on the same encoded features, its learning rate chosen on the validation
  split; fitted on the driver like the linear model, seconds.
- **the same body from random init**: the sweep's trial with `random:<body>`, no proxy, no embedder training
  and nothing frozen — the study's "does pretraining matter?" question in one row. It is an ordinary trial
  (it runs through Tune next to the others); `random_body_config` builds it.

Baseline rows live in the sweep's Parquet like trial rows (phase "refine"), so the figures and table need
nothing but Parquet; the Tune config (hence the `config_json` column) of a baseline carries
`"baseline": <kind>`, and `baseline_kind` reads it back. `BaselineCache` keeps each baseline's rows under the
cache directory keyed by its TrialConfig hash, so the next sweep on the same task copies them instead of
running them again.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .config import TrialConfig, flat_config
from .io import cache_root, write_file
from .metrics import compute_metric
from .results.schema import FILE_SCHEMA
from .tasks import Task

_STEP_REVISION = re.compile(r"@step\d+$")
BASELINE_KEY = "baseline"  # key in a baseline's Tune config / config_json
LINEAR = "linear model (raw inputs)"
RANDOM_BODY = "random-init body"
GBDT = "gradient-boosted trees"
KINDS = (LINEAR, GBDT, RANDOM_BODY)
LINEAR_BODY = "linear"  # the `body` column of a linear-baseline row: no transformer ran
GBDT_BODY = "gbdt"  # the `body` column of a gradient-boosted-trees row
_DRIVER_BODIES = {LINEAR: LINEAR_BODY, GBDT: GBDT_BODY}  # baselines fitted on the driver, not run as trials
_GBDT_LR_GRID = (0.05, 0.1, 0.2)
LINEAR_MAX_TRAIN = 20_000  # rows the linear model is fitted on at most (seeded subset beyond that)
_C_GRID = (0.01, 0.1, 1.0, 10.0)
_ALPHA_GRID = (0.1, 1.0, 10.0, 100.0)


def random_body_config(cfg: TrialConfig) -> TrialConfig:
    """The random-init-body baseline of a trial: same task, data, seed and fine-tuning, body
    `random:<body>` (a Pythia checkpoint's `@stepN` dropped: every step has the same random init), no proxy,
    0 embedder epochs, nothing frozen, ORCA's embedder, no LoRA (one baseline per task and seed whatever the
    trials' embedder kinds and ranks).

    Args:
        cfg: any trial of the sweep on that task and seed.
    """
    body = cfg.body if cfg.body.startswith("random:") else "random:" + _STEP_REVISION.sub("", cfg.body)
    return TrialConfig.from_dict(
        {
            **cfg.to_dict(),
            "body": body,
            "proxy": "none",
            "embedder_epochs": 0,
            "freeze": "none",
            "embedder": "orca",
            "lora_rank": 0,
        }
    )


def linear_config(cfg: TrialConfig, body: str = LINEAR_BODY) -> TrialConfig:
    """The TrialConfig that names a driver-fitted baseline (its hash keys the cache): the trial's task, data,
    seed and protocol; body "linear" (or "gbdt"); no proxy; fine-tuning fields cleared (they do not apply).

    Args:
        cfg: any trial of the sweep on that task and seed.
        body: the baseline's `body` column, LINEAR_BODY or GBDT_BODY.
    """
    keep = ("task", "seed", "preset", "val_fraction", "max_train_samples", "max_eval_samples", "data_root")
    # the protocol changes a table's encoding and splits; kept out for the other tasks so their hashes stay
    extra = {"protocol": cfg.protocol} if _is_table(cfg.task) else {}
    return TrialConfig.from_dict(
        {k: getattr(cfg, k) for k in keep} | extra | {"body": body, "proxy": "none", "embedder_epochs": 0}
    )


def _is_table(task: str) -> bool:
    from .tasks.tabular import is_tabular

    return is_tabular(task)


def baselines_for(configs: list[TrialConfig]) -> list[tuple[str, TrialConfig]]:
    """(kind, config) of every baseline a sweep's trials need: one linear (and, for tables, one
    gradient-boosted-trees) and one random-init-body baseline per (task, seed, data split, fine-tuning settings), in the trials' order, without duplicates.
    Trials whose body is already random init (`random:NAME`, the `mini-*` / `tiny-*` configs) get no
    random-body baseline: it would be the same model again.

    Args:
        configs: the sweep's trials.
    """
    from .bodies import pretraining_tokens

    out, seen = [], set()
    for c in configs:
        kinds = [(LINEAR, linear_config(c))]
        if _is_table(c.task):
            kinds.append((GBDT, linear_config(c, GBDT_BODY)))
        if pretraining_tokens(c.body) != 0:  # a random-init body (random:, mini-, tiny-) is its own baseline
            kinds.append((RANDOM_BODY, random_body_config(c)))
        for kind, b in kinds:
            if b.config_hash not in seen:
                seen.add(b.config_hash)
                out.append((kind, b))
    return out


def _flat(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float32).reshape(len(x), -1)


def fit_linear(task: Task, seed: int = 0) -> dict:
    """Fit the linear baseline on `task` and score it: the regularisation with the best validation score
    wins; returns {"val_score", "test_score", "train_loss" (NaN), "seconds", "model"}.

    Args:
        task: the task with its train / val / test splits (as a trial of this seed sees them).
        seed: seeds the subset of training rows (beyond `LINEAR_MAX_TRAIN`) and the solver.
    """
    import time

    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.preprocessing import StandardScaler

    t0 = time.perf_counter()
    x_tr, y_tr = _flat(task.train.x), np.asarray(task.train.y)
    if len(x_tr) > LINEAR_MAX_TRAIN:
        idx = np.sort(np.random.default_rng(seed).choice(len(x_tr), LINEAR_MAX_TRAIN, replace=False))
        x_tr, y_tr = x_tr[idx], y_tr[idx]
    scaler = StandardScaler().fit(x_tr)
    x_tr = scaler.transform(x_tr)
    x_va, x_te = scaler.transform(_flat(task.val.x)), scaler.transform(_flat(task.test.x))

    def make(reg):
        if task.kind == "classification":
            return LogisticRegression(
                C=reg, max_iter=500, random_state=seed
            ), f"LogisticRegression(C={reg:g})"
        return Ridge(alpha=reg), f"Ridge(alpha={reg:g})"

    def outputs(model, x):
        if task.kind == "classification":
            return (
                model.decision_function(x).reshape(len(x), -1)
                if task.num_outputs > 2
                else _two_class(model, x)
            )
        if task.kind == "multilabel":
            return model.predict(x)  # a linear score per label: AUROC only needs its ranking
        pred = model.predict(x).reshape((len(x), *task.val.y.shape[1:]))
        return task.y_normalizer.decode(pred) if task.y_normalizer is not None else pred

    def targets(split):
        y = np.asarray(split.y)
        return (
            task.y_normalizer.decode(y) if task.kind == "regression" and task.y_normalizer is not None else y
        )

    fit_y = y_tr.reshape(len(y_tr), -1).astype(np.float32) if task.kind != "classification" else y_tr
    candidates = (make(reg) for reg in (_C_GRID if task.kind == "classification" else _ALPHA_GRID))
    return _best_on_val(
        candidates,
        fit=lambda model: model.fit(x_tr, fit_y),
        val=lambda model: compute_metric(
            task.metric, targets(task.val), outputs(model, x_va), task.val.groups
        ),
        test=lambda model: compute_metric(
            task.metric, targets(task.test), outputs(model, x_te), task.test.groups
        ),
        t0=t0,
    )


def _best_on_val(candidates, fit, val, test, t0: float) -> dict:
    """Fit each (model, name) candidate, keep the best validation score (the first of ties; NaN never wins
    over a number) and score it on test: a baseline's result row."""
    import time

    best = None
    for model, name in candidates:
        fit(model)
        score = val(model)
        if best is None or (math.isfinite(score) and not score >= best[0]):
            best = (score, model, name)
    score, model, name = best
    return {
        "val_score": float(score),
        "test_score": float(test(model)),
        "train_loss": float("nan"),
        "seconds": time.perf_counter() - t0,
        "model": name,
    }


def fit_gbdt(task: Task, seed: int = 0) -> dict:
    """Fit scikit-learn's HistGradientBoostingClassifier on a table's encoded features, the learning rate with
    the best validation score winning; returns what `fit_linear` returns.

    Args:
        task: a tabular classification task (train / val / test as a trial of this seed sees them).
        seed: seeds the trees.
    """
    import time

    from sklearn.ensemble import HistGradientBoostingClassifier

    t0 = time.perf_counter()
    x_tr, y_tr = _flat(task.train.x), np.asarray(task.train.y)
    candidates = (
        (
            HistGradientBoostingClassifier(learning_rate=lr, early_stopping=False, random_state=seed),
            f"HistGradientBoostingClassifier(learning_rate={lr:g})",
        )
        for lr in _GBDT_LR_GRID
    )
    return _best_on_val(
        candidates,
        fit=lambda model: model.fit(x_tr, y_tr),
        val=lambda model: compute_metric(
            task.metric, task.val.y, _log_proba(model, task.val.x, task.num_outputs)
        ),
        test=lambda model: compute_metric(
            task.metric, task.test.y, _log_proba(model, task.test.x, task.num_outputs)
        ),
        t0=t0,
    )


def _log_proba(model, x, num_classes: int) -> np.ndarray:
    # log-probabilities as logits: their softmax is the model's probabilities (the metrics take logits)
    out = np.full((len(x), num_classes), -30.0)
    out[:, model.classes_] = np.log(np.clip(model.predict_proba(_flat(x)), 1e-13, None))
    return out


def _two_class(model, x) -> np.ndarray:
    # binary logistic regression has one decision value; as two logits its argmax is the predicted class
    d = model.decision_function(x)
    return np.stack([np.zeros_like(d), d], axis=1)


def linear_rows(cfg: TrialConfig, task: Task, fitted: dict, kind: str = LINEAR) -> list[dict]:
    """The Parquet row of a driver-fitted baseline (one "refine" row at epoch 1; no align rows).

    Args:
        cfg: the baseline's config (`linear_config`).
        task: the task it was fitted on.
        fitted: what `fit_linear` (or `fit_gbdt`) returned.
        kind: LINEAR or GBDT.
    """
    config = {**cfg.to_dict(), BASELINE_KEY: kind, "model": fitted["model"]}
    return [
        {
            "trial_id": baseline_trial_id(cfg),
            "config_hash": cfg.config_hash,
            "task": cfg.task,
            "body": _DRIVER_BODIES[kind],
            "proxy": "none",
            "embedder_epochs": 0,
            "freeze": "none",
            "seed": cfg.seed,
            "phase": "refine",
            "epoch": 1,
            "val_score": fitted["val_score"],
            "test_score": fitted["test_score"],
            "metric": task.metric,
            "seconds": fitted["seconds"],
            "preset": cfg.preset,
            "classes": json.dumps(list(task.class_names)) if task.class_names else None,
            "config_json": json.dumps(config, sort_keys=True, default=str),
        }
    ]


def baseline_trial_id(cfg: TrialConfig) -> str:
    """The `trial_id` (and Parquet part name) of a baseline outside Tune."""
    return f"baseline-{cfg.config_hash}"


def baseline_kind(config_json: str | None) -> str | None:
    """The baseline kind recorded in a row's `config_json` (None for an ordinary trial).

    Args:
        config_json: the row's `config_json` value.
    """
    if not config_json:
        return None
    try:
        config = json.loads(config_json)
    except (TypeError, ValueError):
        return None
    kind = config.get(BASELINE_KEY) or (config.get("trial") or {}).get(BASELINE_KEY)
    return kind if kind in KINDS else None


class BaselineCache:
    """Rows of finished baselines under `<cache_dir>/baselines/<config_hash>.parquet` (data only: Parquet,
    nothing that runs code when read). Written atomically; any sweep on the same task, seed, split and
    fine-tuning settings reuses them.

    Args:
        cache_dir: the cache directory (`--cache-dir`, `$ORCA_RAY_CACHE`; None: the default).
    """

    def __init__(self, cache_dir: str | Path | None = None):
        self.root = cache_root(cache_dir) / "baselines"

    def path(self, cfg: TrialConfig) -> Path:
        return self.root / f"{cfg.config_hash}.parquet"

    def get(self, cfg: TrialConfig) -> list[dict] | None:
        """The cached rows of this baseline, or None."""
        p = self.path(cfg)
        return pq.read_table(p).to_pylist() if p.exists() else None

    def put(self, cfg: TrialConfig, rows: list[dict]) -> None:
        """Store a finished baseline's rows (part-file columns)."""
        table = pa.Table.from_pylist(
            [{f.name: r.get(f.name) for f in FILE_SCHEMA} for r in rows], FILE_SCHEMA
        )
        write_file(self.path(cfg), lambda tmp: pq.write_table(table, tmp))


def prepare_baselines(configs: list[TrialConfig], sink, tasks: dict, cache: BaselineCache) -> list[dict]:
    """Before a sweep runs: write every baseline the cache or the driver can provide into the sweep's
    Parquet, and return the random-init-body baselines still to run as Tune trial configs (TrialConfig
    fields plus `"baseline": RANDOM_BODY`).

    Linear (and tables' gradient-boosted-trees) baselines are fitted here (seconds) unless cached; cached random-body baselines are copied.

    Args:
        configs: the sweep's trials.
        sink: the sweep's `ParquetSink` (writes the part files).
        tasks: preloaded tasks by `trainable.task_key` (a missing one is loaded here).
        cache: where finished baselines are kept.
    """
    from .trainable import load_trial_task, task_key

    to_run = []
    for kind, cfg in baselines_for(configs):
        rows = cache.get(cfg)
        if rows is None and kind in _DRIVER_BODIES:
            key = task_key(cfg)
            if key not in tasks:
                tasks[key] = load_trial_task(cfg)
            fit = fit_linear if kind == LINEAR else fit_gbdt
            rows = linear_rows(cfg, tasks[key], fit(tasks[key], seed=cfg.seed), kind)
            cache.put(cfg, rows)
        if rows is None:
            to_run.append({**cfg.to_dict(), BASELINE_KEY: kind})
        else:
            sink.write_rows(baseline_trial_id(cfg), rows)
    return to_run


def cache_finished_baselines(results, sink, cache: BaselineCache) -> int:
    """After a sweep: keep the rows of every random-init-body baseline trial that finished, so the next
    sweep on the same task copies them. Returns how many were stored.

    Args:
        results: Tune's ResultGrid of the sweep.
        sink: the sweep's `ParquetSink` (reads the part files).
        cache: where finished baselines are kept.
    """
    stored = 0
    for r in results:
        if r.error is not None or not r.config or baseline_kind(json.dumps(flat_config(r.config))) is None:
            continue
        rows = sink.read_rows(str(r.metrics.get("trial_id")))
        if any(row["phase"] == "refine" for row in rows):
            cache.put(TrialConfig.from_tune(r.config), rows)
            stored += 1
    return stored
