"""A sweep before it runs: its spec, its trial matrix and what it will cost. No Ray here (`--dry-run`).

    spec = SweepSpec(name="embedder_epochs-demo", space={"task": ["osuleaf"], "embedder_epochs": [0, 2, 4],
                     "seed": [0, 1], "body": "minilm"}, storage="./results")
    configs = expand_grid(spec.space)          # 6 TrialConfigs, validated
    print_plan(spec, configs)                  # the matrix and a GPU-hour estimate

A list in `space` is a grid axis; a Tune/Optuna distribution makes it a search dimension (search="optuna");
anything else is a constant.
"""

from __future__ import annotations

import itertools
import json
import sys
from dataclasses import dataclass, field
from typing import TextIO

from ..config import TrialConfig
from ..io import join
from ..recipes import ORCA_RECIPE_TASKS, base_task, hparams_for, recipe_for
from ..throughput import ThroughputRecord

DEMO_STORAGE = "./results"
RESULTS_SUBDIR = "parquet"
FIGURES_SUBDIR = "figures"


@dataclass
class SweepSpec:
    """Everything `run_sweep` needs to build (or resume) one Ray Tune sweep.

    Args:
        name: sweep name: names the experiment folder and the Parquet partition; the same name resumes.
        space: one grid dict or a list of them (their union); see the module docstring.
        storage: local path or s3:// / gs:// URI for Tune state, checkpoints and Parquet.
        results: Parquet root (default `<storage>/<name>/parquet`).
        search: "grid" or "optuna".
        num_samples: optuna: trials to sample; grid: repeats of the grid.
        max_concurrent: trials running at once (None: as resources allow).
        asha: stop weak trials early on val_score (ASHA over refine epochs).
        cpus_per_trial: CPUs per trial.
        gpus_per_trial: GPUs per trial (fractions share a card).
        max_failures: retries of a failed trial from its last checkpoint.
        storage_shared: a local `storage` path that every node mounts at the same place (NFS); without it a
            local path is refused when trials run on other nodes than the driver's.
        preload_tasks: load tasks on the driver and share them through the object store.
        metric: the search metric reported by the trainable.
        mode: "min" or "max" for `metric`.
        seed: the search algorithm's own seed.
        analysis: draw the figures when the sweep ends.
        extra_callbacks: more Tune callbacks besides the Parquet sink.
        trust_storage: resume even when this head has no record of writing the experiment's driver state
            (a lost head, a sweep from before the check); only for storage nobody else can write.
        baselines: grid sweeps also score each task's baselines (a linear model on the raw inputs and the
            body from random init, `orca_ray.baselines`), cached across sweeps.
        log_to: experiment trackers every trial also logs to (`orca_ray.tracking.TRACKERS`: mlflow, wandb,
            tensorboard, aim).
    """

    name: str
    space: dict | list[dict]
    storage: str = DEMO_STORAGE
    results: str | None = None
    search: str = "grid"
    num_samples: int = 1
    max_concurrent: int | None = None
    asha: bool = False
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_failures: int = 2
    storage_shared: bool = False
    preload_tasks: bool = False
    metric: str = "best_val_score"
    mode: str = "min"
    seed: int = 0
    analysis: bool = True
    extra_callbacks: list = field(default_factory=list)
    trust_storage: bool = False
    baselines: bool = False
    log_to: tuple[str, ...] = ()

    def __post_init__(self):
        if self.search not in ("grid", "optuna"):
            raise ValueError(f"search must be 'grid' or 'optuna', got {self.search!r}")
        for grid in self.space if isinstance(self.space, list) else [self.space]:
            if "task" not in grid or "body" not in grid:
                raise ValueError("every sweep grid needs at least 'task' and 'body'")

    @property
    def experiment_path(self) -> str:
        """`<storage>/<name>`: Tune's experiment folder."""
        return join(self.storage, self.name)

    @property
    def results_root(self) -> str:
        """The Parquet root of this sweep."""
        return self.results or join(self.experiment_path, RESULTS_SUBDIR)


def expand_grid(space: dict | list[dict]) -> list[TrialConfig]:
    """All TrialConfigs of a grid space, every cell validated up front.

    Args:
        space: a dict whose list values are axes (the rest constants), or a list of such dicts (the union of
            their grids, e.g. one grid per task when the body or proxies depend on the task).
    """
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


def sample_configs(space: dict, num_samples: int) -> list[TrialConfig]:
    """Random draws from a search space (what `--dry-run` shows for an Optuna sweep).

    Args:
        space: one dict of constants and Tune distributions.
        num_samples: how many configs to draw.
    """
    return [
        TrialConfig.from_dict({k: (v.sample() if hasattr(v, "sample") else v) for k, v in space.items()})
        for _ in range(num_samples)
    ]


# Rough cost model for --dry-run: forward GFLOPs per sample. Training ≈ 3× forward.
BODY_GFLOPS_PER_TOKEN = {"minilm": 2 * 21.3e6 / 1e9, "roberta": 2 * 85e6 / 1e9, "tiny": 2 * 0.03e6 / 1e9}
SWIN_GFLOPS_PER_IMAGE = {"swin-base": 15.4, "swin-tiny": 4.5, "tiny": 0.01}
# non-embedding parameters of the stack that reads the N input tokens (an encoder-decoder's whole model adds a
# decoder over QUERY_TOKENS queries only, small beside it); the demo's mini-* members: 384-d, 4 layers
BODY_PARAMS = {
    "gpt2": 85e6,
    "distilgpt2": 43e6,
    "gpt2-medium": 302e6,
    "pythia-70m": 19e6,
    "pythia-160m": 85e6,
    "pythia-410m": 302e6,
    "t5-small": 19e6,
    "t5-base": 85e6,
    "flan-t5-base": 85e6,
    "bart-base": 43e6,
    "mini": 7.1e6,
}
ASSUMED_TFLOPS = {"gpu": 40.0, "cpu": 0.15}  # sustained; A10G/L4-class GPU with bf16, a 2-core laptop CPU
DEFAULT_TOKENS = 64  # tokens per sample when the task's recipe sets no target sequence length


EVAL_SHARE = 0.4 / 3  # val + test forwards per epoch relative to training (~20% of train evaluated twice)


def tokens_for(task: str) -> int:
    """Tokens per sample the estimate assumes for a 1D task (its recipe's target length, else 64).

    Args:
        task: a task name.
    """
    return recipe_for(task).target_seq_len or DEFAULT_TOKENS


def estimate(cfg: TrialConfig, throughput: ThroughputRecord | None = None) -> dict:
    """Order-of-magnitude compute of one trial (refine forward+backward, val/test forward; align too when
    measured). GPU-hours come from measured throughput when `throughput` holds the trial's body family at its
    precision (1D scaled by tokens per sample), else from the FLOP count at an assumed sustained rate.

    Args:
        cfg: the trial.
        throughput: a `benchmarks/gpu.py` result on record, or None.

    Returns:
        train_samples, refine_epochs, embedder_epochs, pflop, gpu_hours, cpu_hours, and gpu_source
        ("measured" or "assumed").
    """
    recipe = recipe_for(cfg.task)
    n_train = recipe.train_size
    if cfg.max_train_samples:
        n_train = min(n_train, cfg.max_train_samples)
    epochs = cfg.refine_epochs or hparams_for(cfg.task).epochs
    body = cfg.body.removeprefix("random:")
    if "swin" in body:
        per_sample = SWIN_GFLOPS_PER_IMAGE[
            "tiny" if "tiny-" in body else ("swin-tiny" if "tiny" in body else "swin-base")
        ]
    else:
        base = body.partition("@")[0].removesuffix("-encoder")
        base = "mini" if base.startswith("mini-") else base
        fam = "tiny" if body.startswith("tiny") else ("minilm" if "minilm" in body.lower() else "roberta")
        per_token = 2 * BODY_PARAMS[base] / 1e9 if base in BODY_PARAMS else BODY_GFLOPS_PER_TOKEN[fam]
        per_sample = per_token * tokens_for(cfg.task)
    gflop = per_sample * n_train * epochs * (3 + 0.4)  # train + ~20% of train size evaluated twice
    gpu_hours, source = gflop / (ASSUMED_TFLOPS["gpu"] * 1e3) / 3600, "assumed"
    entry = throughput.entry_for(cfg.body, cfg.numerics.label()) if throughput is not None else None
    if entry is not None:
        sps = entry.refine_samples_per_s
        if "swin" not in body:  # cost per sample grows with the tokens (linearly at these lengths)
            sps *= tokens_for(entry.task) / tokens_for(cfg.task)
        seconds = n_train * epochs * (1 + EVAL_SHARE) / sps + cfg.embedder_epochs * entry.align_step_s
        gpu_hours, source = seconds / 3600, "measured"
    return {
        "train_samples": n_train,
        "refine_epochs": epochs,
        "embedder_epochs": cfg.embedder_epochs,
        "pflop": gflop / 1e6,
        "gpu_hours": gpu_hours,
        "gpu_source": source,
        "cpu_hours": gflop / (ASSUMED_TFLOPS["cpu"] * 1e3) / 3600,
    }


def recipe_line(r) -> str:
    """One line of a task recipe's fields, as the dry run lists them.

    Args:
        r: a `recipes.TaskRecipe`.
    """
    h = r.refine
    opt = f"{h.optimizer} lr {h.lr:g} wd {h.weight_decay:g}" + (
        f" mom {h.momentum:g}" if h.optimizer == "sgd" else ""
    )
    return (
        f"{opt}, {h.epochs} epochs, batch {h.batch_size}×{h.accum}, clip {h.clip}, warmup/decay "
        f"{h.warmup_epochs}/{h.decay_epochs}, target_seq_len {r.target_seq_len}, embedder epochs {r.align_epochs}, "
        f"align batch/class {r.align_batch_per_class}, dropout {r.dropout:g}"
    )


def print_plan(
    spec: SweepSpec,
    configs: list[TrialConfig],
    out: TextIO | None = None,
    throughput: ThroughputRecord | None = None,
) -> dict:
    """Print the trial matrix (the fields that vary) with a per-trial and total cost estimate, saying whether
    the GPU-hours come from measured throughput (which card, which file) or the assumed FLOP rate.

    Args:
        spec: the sweep.
        configs: its trials (`expand_grid` or `sample_configs`).
        out: where to print (default: sys.stdout at call time).
        throughput: a `benchmarks/gpu.py` result on record, or None.

    Returns:
        The totals: gpu_hours, cpu_hours, measured (trials with measured GPU-hours).
    """
    out = out or sys.stdout
    varying = [k for k in TrialConfig.__dataclass_fields__ if len({getattr(c, k) for c in configs}) > 1]
    shown = varying or ["task", "body"]
    print(
        f"sweep {spec.name!r}: {len(configs)} trials ({spec.search}), storage {spec.experiment_path}",
        file=out,
    )
    print(
        "  " + "  ".join(f"{k:>16}" for k in shown) + f"  {'GPU-h':>8}  {'from':>8}  {'CPU-h':>8}", file=out
    )
    tot = {"gpu_hours": 0.0, "cpu_hours": 0.0, "measured": 0}
    for c in configs:
        e = estimate(c, throughput)
        tot["gpu_hours"] += e["gpu_hours"]
        tot["cpu_hours"] += e["cpu_hours"]
        tot["measured"] += e["gpu_source"] == "measured"
        print(
            "  "
            + "  ".join(f"{getattr(c, k)!s:>16}" for k in shown)
            + f"  {e['gpu_hours']:8.3f}  {e['gpu_source']:>8}  {e['cpu_hours']:8.2f}",
            file=out,
        )
    fixed = {
        k: getattr(configs[0], k)
        for k in TrialConfig.__dataclass_fields__
        if k not in varying and getattr(configs[0], k) is not None
    }
    print(f"  fixed: {json.dumps(fixed, default=str)}", file=out)
    recipes = [t for t in dict.fromkeys(c.task for c in configs) if base_task(t) in ORCA_RECIPE_TASKS]
    if recipes:
        print("  ORCA's recipes (before the flags' overrides):", file=out)
    for t in recipes:
        print(f"    {t:>16}  {recipe_line(recipe_for(t))}", file=out)
    assumed = len(configs) - tot["measured"]
    how = []
    if tot["measured"]:
        how.append(f"{tot['measured']} trial(s) from measured throughput on {throughput.describe()}")
    if assumed:
        how.append(
            f"{assumed} trial(s) at an assumed ~{ASSUMED_TFLOPS['gpu']:.0f} TFLOP/s sustained"
            + ("" if throughput is not None else " (no benchmarks/gpu.py result on record)")
        )
    print(
        f"estimate: {tot['gpu_hours']:.2f} GPU-hours ({'; '.join(how)}), or "
        f"{tot['cpu_hours']:.1f} CPU-hours at ~{ASSUMED_TFLOPS['cpu']} TFLOP/s (order of magnitude; "
        f"GPU-hours × your instance's hourly price ≈ cost)",
        file=out,
    )
    return tot
