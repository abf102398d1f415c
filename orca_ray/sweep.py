"""run_sweep(spec): every study script's one way to build and run (or resume) a Ray Tune sweep.

    spec = SweepSpec(name="embedder_epochs-demo", space={"task": ["osuleaf"], "embedder_epochs": [0, 2, 4],
                     "seed": [0, 1], "body": "minilm"}, storage="./results")
    run_sweep(spec)

A list in `space` is a grid axis (tune.grid_search); a Tune/Optuna distribution makes it a search dimension
(search="optuna"); anything else is a constant. An interrupted sweep of the same name under the same storage is
resumed with Tuner.restore: finished trials are not run again, unfinished ones continue from their last
checkpoint, and the Parquet sink keeps every row exactly once.

`main(...)` is the shared command line of the sweeps/ scripts (see `build_parser`).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .config import TrialConfig

DEMO_STORAGE = "./results"
RESULTS_SUBDIR = "parquet"
FIGURES_SUBDIR = "figures"
# environment a trial needs on every node (set on the driver → passed through the runtime env)
PASS_THROUGH_ENV = ("HF_HUB_OFFLINE", "HF_HOME", "HF_ENDPOINT", "ORCA_RAY_CACHE", "TRANSFORMERS_OFFLINE")


@dataclass
class SweepSpec:
    name: str
    space: dict | list[dict]
    storage: str = DEMO_STORAGE
    results: str | None = None  # Parquet root; default <storage>/<name>/parquet
    search: str = "grid"  # grid | optuna
    num_samples: int = 1  # optuna: trials to sample; grid: repeats of the grid
    max_concurrent: int | None = None
    asha: bool = False
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_failures: int = 2
    preload_tasks: bool = False  # load tasks on the driver, share them through the object store
    metric: str = "best_val_score"
    mode: str = "min"
    seed: int = 0  # the search algorithm's own seed
    analysis: bool = True  # draw the figures when the sweep ends
    extra_callbacks: list = field(default_factory=list)

    def __post_init__(self):
        if self.search not in ("grid", "optuna"):
            raise ValueError(f"search must be 'grid' or 'optuna', got {self.search!r}")
        for grid in self.space if isinstance(self.space, list) else [self.space]:
            if "task" not in grid or "body" not in grid:
                raise ValueError("every sweep grid needs at least 'task' and 'body'")

    @property
    def experiment_path(self) -> str:
        return _join(self.storage, self.name)

    @property
    def results_root(self) -> str:
        return self.results or _join(self.experiment_path, RESULTS_SUBDIR)


def _join(base: str, *parts: str) -> str:
    if "://" in base:
        return "/".join([base.rstrip("/"), *parts])
    return str(Path(base).expanduser().resolve().joinpath(*parts))


# ---- the trial matrix (no Ray needed) ------------------------------------------------------------------
def expand_grid(space: dict | list[dict]) -> list[TrialConfig]:
    """All TrialConfigs of a grid space: lists are axes; a list of such dicts is the union of their grids
    (e.g. one grid per task when the body or proxies depend on the task). Validates every cell up front."""
    if isinstance(space, list):
        return [c for s in space for c in expand_grid(s)]
    axes = {k: v for k, v in space.items() if isinstance(v, list | tuple)}
    const = {k: v for k, v in space.items() if k not in axes}
    for k, v in const.items():
        if hasattr(v, "sample"):
            raise ValueError(f"space[{k!r}] is a distribution; grid sweeps take lists (use search='optuna')")
    keys = list(axes)
    return [
        TrialConfig.from_dict({**const, **dict(zip(keys, combo))})
        for combo in itertools.product(*(axes[k] for k in keys))
    ]


def body_for(task: str, preset: str) -> str:
    """The preset's body for a task: paper — RoBERTa-base for 1D, Swin-base for 2D (as ORCA); demo — the
    bundled MiniLM for both (2D inputs become patch tokens with learned positions)."""
    from .tasks import task_info

    if preset == "demo":
        return "minilm"
    return "swin-base" if task_info(task).modality == "2d" else "roberta-base"


# Rough cost model for --dry-run: forward GFLOPs per sample and training-set sizes. Training ≈ 3× forward.
BODY_GFLOPS_PER_TOKEN = {"minilm": 2 * 21.3e6 / 1e9, "roberta": 2 * 85e6 / 1e9, "tiny": 2 * 0.03e6 / 1e9}
SWIN_GFLOPS_PER_IMAGE = {"swin-base": 15.4, "swin-tiny": 4.5, "tiny": 0.01}
NB360_TRAIN_SIZES = {
    "cifar100": 45_000,
    "ninapro": 2_638,
    "darcy": 900,
    "satellite": 800_000,
    "deepsea": 71_753,
    "ecg": 90_000,
}
ASSUMED_TFLOPS = {"gpu": 40.0, "cpu": 0.15}  # sustained; A10G/L4-class GPU with bf16, a 2-core laptop CPU


def estimate(cfg: TrialConfig) -> dict:
    """Order-of-magnitude compute of one trial (refine forward+backward, val/test forward, align epochs)."""
    from .refine import NB360_HPARAMS, hparams_for

    base = cfg.task.removeprefix("synthetic-")
    n_train = NB360_TRAIN_SIZES.get(base, 1_000) if base in NB360_HPARAMS else _bundled_size(cfg.task)
    if cfg.max_train_samples:
        n_train = min(n_train, cfg.max_train_samples)
    epochs = cfg.refine_epochs or hparams_for(cfg.task).epochs
    body = cfg.body.removeprefix("random:")
    if "swin" in body:
        per_sample = SWIN_GFLOPS_PER_IMAGE[
            "tiny" if "tiny-" in body else ("swin-tiny" if "tiny" in body else "swin-base")
        ]
    else:
        fam = "tiny" if body.startswith("tiny") else ("minilm" if "minilm" in body.lower() else "roberta")
        per_sample = BODY_GFLOPS_PER_TOKEN[fam] * (512 if base == "deepsea" else 64)
    gflop = per_sample * n_train * epochs * (3 + 0.4)  # train + ~20% of train size evaluated twice
    return {
        "train_samples": n_train,
        "refine_epochs": epochs,
        "embedder_epochs": cfg.embedder_epochs,
        "pflop": gflop / 1e6,
        "gpu_hours": gflop / (ASSUMED_TFLOPS["gpu"] * 1e3) / 3600,
        "cpu_hours": gflop / (ASSUMED_TFLOPS["cpu"] * 1e3) / 3600,
    }


def _bundled_size(task: str) -> int:
    return {
        "digits": 1_295,
        "basicmotions": 36,
        "gunpoint": 45,
        "arrowhead": 33,
        "osuleaf": 180,
        "acsf1": 90,
        "italypowerdemand": 61,
    }.get(task, 1_000)


def print_plan(spec: SweepSpec, configs: list[TrialConfig], out=sys.stdout) -> dict:
    varying = [k for k in TrialConfig.__dataclass_fields__ if len({getattr(c, k) for c in configs}) > 1]
    shown = varying or ["task", "body"]
    print(
        f"sweep {spec.name!r}: {len(configs)} trials ({spec.search}), storage {spec.experiment_path}",
        file=out,
    )
    print("  " + "  ".join(f"{k:>16}" for k in shown) + f"  {'GPU-h':>8}  {'CPU-h':>8}", file=out)
    tot = {"gpu_hours": 0.0, "cpu_hours": 0.0}
    for c in configs:
        e = estimate(c)
        tot["gpu_hours"] += e["gpu_hours"]
        tot["cpu_hours"] += e["cpu_hours"]
        print(
            "  "
            + "  ".join(f"{str(getattr(c, k)):>16}" for k in shown)
            + f"  {e['gpu_hours']:8.3f}  {e['cpu_hours']:8.2f}",
            file=out,
        )
    fixed = {
        k: getattr(configs[0], k)
        for k in TrialConfig.__dataclass_fields__
        if k not in varying and getattr(configs[0], k) is not None
    }
    print(f"  fixed: {json.dumps(fixed, default=str)}", file=out)
    print(
        f"estimate: {tot['gpu_hours']:.2f} GPU-hours at ~{ASSUMED_TFLOPS['gpu']:.0f} TFLOP/s sustained, or "
        f"{tot['cpu_hours']:.1f} CPU-hours at ~{ASSUMED_TFLOPS['cpu']} TFLOP/s (order of magnitude; "
        f"GPU-hours × your instance's hourly price ≈ cost)",
        file=out,
    )
    return tot


# ---- running ----------------------------------------------------------------------------------------------
def _tune_space(spec: SweepSpec) -> dict:
    """Grid sweeps: one Tune grid axis over the expanded trials (so unions of grids and task-dependent
    bodies are exact); Optuna: the flat space of distributions."""
    from ray import tune

    if spec.search == "grid":
        return {"trial": tune.grid_search([c.to_dict() for c in expand_grid(spec.space)])}
    return dict(spec.space)


def _trial_dirname(trial) -> str:
    """Named from the config hash; the trial's index is appended because Optuna or num_samples > 1 can
    propose one config twice, and two trials must never share a checkpoint directory."""
    from .trainable import trial_config

    return f"{trial_config(trial.config).short_name()}-{trial.trial_id.rsplit('_', 1)[-1]}"


def _connect(address: str | None) -> dict:
    import ray

    # every-epoch checkpoints are the point here: silence Tune's "snapshotting too often" advice
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    env_vars = {k: os.environ[k] for k in PASS_THROUGH_ENV if k in os.environ}
    if not ray.is_initialized():
        ray.init(
            address=address, runtime_env={"env_vars": env_vars} if env_vars else None, log_to_driver=True
        )
    ctx = ray.get_runtime_context()
    dashboard = None
    try:
        from ray._private.worker import global_worker

        dashboard = global_worker.node.address_info.get("webui_url") if global_worker.node else None
    except Exception:  # the dashboard URL is informational only
        dashboard = None
    return {"node_id": ctx.get_node_id(), "dashboard": dashboard}


def build_tuner(spec: SweepSpec, tasks: dict | None = None):
    """A new Tuner for `spec`, or the restored one when an experiment of this name exists in storage."""
    from ray import tune

    from .results import ParquetSink
    from .trainable import align_then_refine

    trainable = tune.with_resources(
        tune.with_parameters(align_then_refine, tasks=tasks or {}),
        {"cpu": spec.cpus_per_trial, "gpu": spec.gpus_per_trial},
    )
    if tune.Tuner.can_restore(spec.experiment_path):
        print(
            f"resuming sweep {spec.name!r} from {spec.experiment_path}: finished trials are kept, unfinished "
            "ones continue from their last checkpoint",
            flush=True,
        )
        # the trials (and their configs) come from the saved experiment; the trainable is re-specified so
        # preloaded tasks go through the object store again
        restored = tune.Tuner.restore(
            spec.experiment_path, trainable, resume_unfinished=True, resume_errored=True
        )
        restored.orca_restored = True
        return restored
    search_alg, scheduler = None, None
    param_space = _tune_space(spec)
    if spec.search == "optuna":
        from ray.tune.search import ConcurrencyLimiter
        from ray.tune.search.optuna import OptunaSearch

        search_alg = OptunaSearch(metric=spec.metric, mode=spec.mode, seed=spec.seed)
        if spec.max_concurrent:
            search_alg = ConcurrencyLimiter(search_alg, max_concurrent=spec.max_concurrent)
    if spec.asha:
        from ray.tune.schedulers import ASHAScheduler

        scheduler = ASHAScheduler(
            time_attr="refine_epoch", metric="val_score", mode="min", grace_period=1, max_t=10_000
        )
    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            # a search algorithm or scheduler carries its own metric; Tune refuses it twice
            metric=None if (search_alg or scheduler) else spec.metric,
            mode=None if (search_alg or scheduler) else spec.mode,
            search_alg=search_alg,
            scheduler=scheduler,
            num_samples=spec.num_samples,
            max_concurrent_trials=None if search_alg else spec.max_concurrent,
            reuse_actors=True,  # a trial process keeps torch/transformers imported for the next trial
            trial_name_creator=_trial_dirname,
            trial_dirname_creator=_trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=spec.name,
            storage_path=spec.storage if "://" in spec.storage else _join(spec.storage),
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            callbacks=[ParquetSink(spec.results_root, sweep=spec.name), *spec.extra_callbacks],
            verbose=1,
        ),
    )


def run_sweep(spec: SweepSpec, *, address: str | None = None):
    """Run (or resume) the sweep; returns Tune's ResultGrid. Prints where results, figures and the
    dashboard are."""
    info = _connect(address)
    tasks = _preload(spec) if spec.preload_tasks else None
    tuner = build_tuner(spec, tasks)
    _warn_unrunnable_cells(spec, tuner)
    t0 = time.time()
    grid = tuner.fit()
    errors = [r for r in grid if r.error is not None]
    print(
        f"\nsweep {spec.name!r}: {len(grid)} trials in {time.time() - t0:.0f} s, {len(errors)} failed",
        flush=True,
    )
    print(f"  Parquet results: {spec.results_root}")
    if spec.analysis and "://" not in spec.results_root:
        from . import analysis

        out = _join(spec.experiment_path, FIGURES_SUBDIR)
        analysis.main([spec.results_root, "--sweep", spec.name, "--out", out])
        print(f"  figures:         {out}")
    elif spec.analysis:
        print(
            f"  figures:         python -m orca_ray.analysis {spec.results_root} --out ./figures/{spec.name}"
        )
    if info.get("dashboard"):
        print(f"  Ray dashboard:   http://{info['dashboard']} (while Ray runs; token in ~/.ray/auth_token)")
    print("  resume:          run the same command again (same --name and --storage)")
    return grid


def _warn_unrunnable_cells(spec: SweepSpec, tuner) -> None:
    """Tuner.restore keeps the trials it had: grid cells added since (more seeds, epochs, tasks) never run."""
    from .trainable import trial_config

    if spec.search != "grid" or not getattr(tuner, "orca_restored", False):
        return
    try:
        had = {trial_config(r.config).config_hash for r in tuner.get_results()}
    except Exception:  # nothing recorded yet: every cell is still to run
        return
    new = [c for c in expand_grid(spec.space) if c.config_hash not in had]
    if new:
        print(
            f"warning: {len(new)} trial(s) of this grid are not in the restored sweep {spec.name!r} and will not "
            f"run (e.g. {new[0].short_name()}); give them a new --name to run them",
            flush=True,
        )


def _preload(spec: SweepSpec) -> dict:
    """Tasks loaded once on the driver and shared through Ray's object store (tune.with_parameters),
    keyed like trainable.task_key (the val split depends on the seed)."""
    from .trainable import load_trial_task, task_key

    tasks = {}
    for c in expand_grid(spec.space) if spec.search == "grid" else []:
        key = task_key(c)
        if key not in tasks:
            tasks[key] = load_trial_task(c)
            print(f"loaded {tasks[key].describe()}", flush=True)
    return tasks


# ---- the shared command line -------------------------------------------------------------------------------
def build_parser(description: str, default_name: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument(
        "--address",
        default=os.environ.get("RAY_ADDRESS"),
        help="Ray cluster address ('auto' on a cluster node); default: start a local Ray",
    )
    p.add_argument(
        "--preset",
        choices=("demo", "paper"),
        default="demo",
        help="demo: bundled real data + bundled MiniLM on CPU; paper: NAS-Bench-360 tasks, "
        "roberta-base / swin-base, ORCA's hyperparameters (needs --data-root)",
    )
    p.add_argument("--tasks", nargs="+", help="task names (default: the preset's)")
    p.add_argument("--seeds", nargs="+", type=int, help="seeds (default: the preset's)")
    p.add_argument(
        "--storage",
        default=os.environ.get("ORCA_RAY_STORAGE", DEMO_STORAGE),
        help="where Tune state and Parquet go: a local path or s3:// / gs:// (env ORCA_RAY_STORAGE)",
    )
    p.add_argument(
        "--name", default=None, help=f"sweep name (default: {default_name}-<preset>); reuse it to resume"
    )
    p.add_argument(
        "--dry-run", action="store_true", help="print the trial matrix and a cost estimate; start nothing"
    )
    p.add_argument(
        "--gpus-per-trial", type=float, default=None, help="GPUs per trial (fractions share a GPU)"
    )
    p.add_argument("--cpus-per-trial", type=float, default=None, help="CPUs per trial")
    p.add_argument(
        "--data-root",
        default=os.environ.get("ORCA_RAY_DATA"),
        help="NAS-Bench-360 files (and CIFAR-10 / CoNLL proxies) on every node (env ORCA_RAY_DATA)",
    )
    p.add_argument(
        "--cache-dir", default=None, help="embedder snapshots and proxy features (env ORCA_RAY_CACHE)"
    )
    p.add_argument("--refine-epochs", type=int, default=None, help="override fine-tuning epochs")
    p.add_argument("--max-concurrent", type=int, default=None, help="trials running at once")
    p.add_argument(
        "--max-failures", type=int, default=2, help="retries of a failed trial (from its checkpoint)"
    )
    p.add_argument("--no-analysis", action="store_true", help="do not draw figures at the end")
    return p


@dataclass(frozen=True)
class PresetDefaults:
    tasks: tuple[str, ...]
    seeds: tuple[int, ...]
    cpus: float
    gpus: float
    extra: dict = field(default_factory=dict)  # TrialConfig fields every trial of the preset gets


# CPU laptop demo: bundled real data (handwritten digits as images, GunPoint as series) through the bundled
# MiniLM and the bundled WNUT-16 text proxy, a subset and short runs so a sweep takes minutes on 2 cores.
# Paper: the NAS-Bench-360 tasks with ORCA's bodies, proxies and hyperparameters.
DEMO = PresetDefaults(
    tasks=("digits", "gunpoint"),
    seeds=(0, 1),
    cpus=1,
    gpus=0,
    extra={
        "refine_epochs": 6,
        "max_train_samples": 500,
        "val_fraction": 0.2,
        "proxy_size": 2000,
        "align_batch_per_class": 32,
    },
)
PAPER = PresetDefaults(
    tasks=("cifar100", "ninapro", "darcy", "satellite", "deepsea", "ecg"), seeds=(0, 1, 2), cpus=4, gpus=1
)
PRESETS = {"demo": DEMO, "paper": PAPER}


def main(
    *,
    default_name: str,
    description: str,
    space: Callable[[argparse.Namespace], dict | list[dict]],
    argv=None,
    search: str = "grid",
    num_samples: int = 1,
    add_args: Callable | None = None,
    presets: dict[str, PresetDefaults] = PRESETS,
) -> int:
    """The sweeps/ scripts' shared CLI. `space(args)` returns one grid dict or a list of them (args.tasks and
    args.seeds already hold the preset's defaults when not given)."""
    parser = build_parser(description, default_name)
    if add_args:
        add_args(parser)
    args = parser.parse_args(argv)
    preset = presets[args.preset]
    args.tasks = args.tasks or list(preset.tasks)
    args.seeds = args.seeds if args.seeds is not None else list(preset.seeds)
    cli = {
        k: v
        for k, v in (
            ("data_root", args.data_root),
            ("cache_dir", args.cache_dir),
            ("refine_epochs", args.refine_epochs),
        )
        if v is not None
    }
    grids = space(args)
    grids = [
        {**preset.extra, **g, **cli, "preset": args.preset}
        for g in (grids if isinstance(grids, list) else [grids])
    ]
    spec = SweepSpec(
        name=args.name or f"{default_name}-{args.preset}",
        space=grids if len(grids) > 1 else grids[0],
        storage=args.storage,
        search=search,
        num_samples=getattr(args, "num_samples", num_samples),
        max_concurrent=args.max_concurrent,
        cpus_per_trial=preset.cpus if args.cpus_per_trial is None else args.cpus_per_trial,
        gpus_per_trial=preset.gpus if args.gpus_per_trial is None else args.gpus_per_trial,
        max_failures=args.max_failures,
        preload_tasks=args.preset == "demo",
        analysis=not args.no_analysis,
    )
    if search == "grid":
        configs = expand_grid(spec.space)
    else:
        configs = [
            TrialConfig.from_dict(
                {k: (v.sample() if hasattr(v, "sample") else v) for k, v in grids[0].items()}
            )
            for _ in range(spec.num_samples)
        ]
        print(f"(optuna: {spec.num_samples} trials; the rows below are random draws from the space)")
    if args.dry_run:
        print_plan(spec, configs)
        return 0
    _check_data(configs)
    run_sweep(spec, address=args.address)
    return 0


def _check_data(configs: list[TrialConfig]) -> None:
    """Fail before starting Ray when a paper task has no data root."""
    from .tasks import task_info

    for c in configs:
        if task_info(c.task).needs_data_root and not c.data_root:
            raise SystemExit(
                f"task {c.task!r} reads NAS-Bench-360 files: pass --data-root DIR (see "
                f"`python -m orca_ray.data check DIR`) or use --preset demo"
            )
