"""The command line every sweeps/ script shares: `main(space=..., ...)` parses the flags, fills in the preset's
defaults (orca_ray.recipes.PRESETS), prints the plan for `--dry-run` (no Ray) or runs the sweep.

    def space(args):                                  # one grid dict or a list of them
        return {"task": args.tasks, "body": "minilm", "embedder_epochs": [0, 10], "seed": args.seeds}

    raise SystemExit(main(default_name="my_question", description=__doc__, space=space))
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping, Sequence

from ..precision import PRECISIONS
from ..recipes import PRESETS, PresetDefaults, seed_paper_batch_sizes
from ..tasks.base import PROTOCOLS
from ..tracking import TRACKERS, check_trackers
from .plan import DEMO_STORAGE, SweepSpec, expand_grid, print_plan, sample_configs


def build_parser(description: str, default_name: str) -> argparse.ArgumentParser:
    """The shared flags (README, "The sweeps").

    Args:
        description: the script's help text.
        default_name: the sweep name's stem (`<default_name>-<preset>`).
    """
    from ..preflight import OneLineParser, amount, check_name, count, fraction

    p = OneLineParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument(
        "--address",
        default=os.environ.get("RAY_ADDRESS"),
        help="Ray cluster address ('auto' on a cluster node); default: $RAY_ADDRESS, else a new local Ray",
    )
    p.add_argument(
        "--preset",
        choices=tuple(PRESETS),
        default="demo",
        help="demo: bundled real data + bundled MiniLM on CPU; paper: NAS-Bench-360 tasks, "
        "roberta-base / swin-base, ORCA's hyperparameters (needs --data-root)",
    )
    p.add_argument(
        "--tasks",
        nargs="+",
        help="task names, or your own data: npz:PATH, ucr:DIR, imagefolder:DIR, csv:PATH[#label=COL], "
        "parquet:PATH[#label=COL] (local, ~, s3://, gs://); openml:ID (staged); openml-cc18 (ORCA's 42)",
    )
    p.add_argument("--seeds", nargs="+", type=count(0), help="seeds (default: the preset's)")
    p.add_argument(
        "--storage",
        default=os.environ.get("ORCA_RAY_STORAGE", DEMO_STORAGE),
        help="where Tune state and Parquet go: a local path or s3:// / gs:// (env ORCA_RAY_STORAGE)",
    )
    p.add_argument(
        "--storage-shared",
        action="store_true",
        default=os.environ.get("ORCA_RAY_STORAGE_SHARED") == "1",
        help="the local --storage path is mounted on every node (NFS); without it a local path is refused "
        "when trials run on other nodes (env ORCA_RAY_STORAGE_SHARED=1)",
    )
    p.add_argument(
        "--name",
        type=check_name,
        default=None,
        help=f"sweep name (default: {default_name}-<preset>); reuse it to resume",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="print the trial matrix and a cost estimate; start nothing"
    )
    p.add_argument(
        "--throughput",
        default=None,
        help="--dry-run: GPU-hours from this benchmarks/gpu.py result (default: $ORCA_RAY_THROUGHPUT, else "
        "<cache>/throughput.json when present; else an assumed FLOP rate)",
    )
    p.add_argument(
        "--gpus-per-trial", type=amount(0), default=None, help="GPUs per trial (fractions share a GPU)"
    )
    p.add_argument("--cpus-per-trial", type=amount(0, inclusive=False), default=None, help="CPUs per trial")
    p.add_argument(
        "--data-root",
        default=os.environ.get("ORCA_RAY_DATA"),
        help="NAS-Bench-360 files (and CIFAR-10 / CoNLL proxies) on every node (env ORCA_RAY_DATA)",
    )
    p.add_argument(
        "--cache-dir", default=None, help="embedder snapshots and proxy features (env ORCA_RAY_CACHE)"
    )
    p.add_argument(
        "--protocol",
        nargs="+",
        choices=PROTOCOLS,
        default=["honest"],
        help="honest: best epoch on a validation split, metrics over whole splits, NAS-Bench-360's splits; "
        "orca: ORCA's own (validation data in train, best epoch on test, ECG 90/10 split, metrics averaged "
        "over 1,000-sample chunks). Give both to compare them in one sweep",
    )
    p.add_argument(
        "--precision",
        nargs="+",
        choices=PRECISIONS,
        default=["fp32"],
        help="fp32: ORCA's numbers (parity runs must use it); bf16 / fp16: autocast of the forwards in align "
        "and refine (fp16 with a gradient scaler), faster on GPUs with tensor cores. Give several to compare "
        "them in one sweep",
    )
    p.add_argument(
        "--tf32",
        action="store_true",
        help="allow TF32 matmuls and convolutions on CUDA (faster float32 on Ampere and later; changes "
        "its numbers, so it is recorded as precision '<p>+tf32')",
    )
    p.add_argument(
        "--batch-sizes",
        choices=("orca", "seed-paper"),
        default="orca",
        help="orca: ORCA's configs' batch sizes; seed-paper: the batch sizes the follow-up paper states "
        "(Satellite 64, ECG 32, one micro-batch per step; recipes.SEED_PAPER_BATCH_SIZES)",
    )
    p.add_argument("--refine-epochs", type=count(1), default=None, help="override fine-tuning epochs")
    p.add_argument(
        "--val-fraction",
        type=fraction,
        default=None,
        help="share of the training set carved off for validation (default: the preset's) when the data "
        "has no validation split",
    )
    p.add_argument("--max-concurrent", type=count(1), default=None, help="trials running at once")
    p.add_argument(
        "--max-failures", type=count(0), default=2, help="retries of a failed trial (from its checkpoint)"
    )
    p.add_argument("--no-analysis", action="store_true", help="do not draw figures at the end")
    p.add_argument(
        "--deterministic",
        action="store_true",
        help="the same numbers on any node: pin PyTorch's, MKL's and oneDNN's CPU code paths to AVX2 and use "
        "deterministic algorithms (README: 'Same numbers on any node')",
    )
    p.add_argument(
        "--trust-storage",
        action="store_true",
        help="resume even though this head has no record of writing the sweep's driver state (a lost head, "
        "a sweep from before the check): only when nobody else can write --storage",
    )
    p.add_argument(
        "--no-baselines",
        action="store_true",
        help="skip each task's baselines (linear model on the raw inputs, the body from random init)",
    )
    p.add_argument(
        "--log-to",
        nargs="+",
        choices=TRACKERS,
        default=[],
        metavar="TRACKER",
        help="also log every trial to these experiment trackers: "
        + ", ".join(TRACKERS)
        + " (pip install 'orca_ray[TRACKER]'; README, Tracking)",
    )
    return p


def main(
    *,
    default_name: str,
    description: str,
    space: Callable[[argparse.Namespace], dict | list[dict]],
    argv: Sequence[str] | None = None,
    search: str = "grid",
    num_samples: int = 1,
    add_args: Callable[[argparse.ArgumentParser], None] | None = None,
    presets: Mapping[str, PresetDefaults] = PRESETS,
    default_tasks: Mapping[str, Sequence[str]] | None = None,
) -> int:
    """The sweeps/ scripts' shared CLI: parse, fill in the preset, then `--dry-run` or run the sweep.

    Args:
        default_name: the sweep name's stem (`<default_name>-<preset>`).
        description: the script's help text.
        space: `space(args)` returns one grid dict or a list of them; args.tasks and args.seeds already hold
            the defaults when not given.
        argv: the arguments (default: sys.argv[1:]).
        search: "grid" or "optuna".
        num_samples: Optuna trials unless the script's flags set `--num-samples`.
        add_args: adds the script's own flags to the parser.
        presets: preset name → defaults.
        default_tasks: preset name → the script's own default tasks (instead of the preset's).

    Returns:
        The exit code.
    """
    parser = build_parser(description, default_name)
    if add_args:
        add_args(parser)
    args = parser.parse_args(argv)
    from ..preflight import PreflightError, fail, preflight

    try:
        spec, configs = _plan(
            args, presets[args.preset], default_name, default_tasks, space, search, num_samples
        )
    except PreflightError as e:
        return fail(e)
    if args.dry_run:
        from ..throughput import ThroughputFileError, default_throughput_path, load_throughput

        path = args.throughput or default_throughput_path()
        try:
            record = load_throughput(path)
        except ThroughputFileError as e:
            return fail(PreflightError([f"--throughput: {e}"]))
        if record is None and args.throughput:
            return fail(PreflightError([f"--throughput: {path} does not exist. Fix: run benchmarks/gpu.py"]))
        print_plan(spec, configs, throughput=record)
        try:  # what the real run would refuse, without Ray or weights; cluster-staged data may be absent here
            preflight(configs, dry_run=True)
        except PreflightError as e:
            return fail(e)
        if spec.baselines:
            from ..baselines import RANDOM_BODY, baselines_for

            random_body = [c for kind, c in baselines_for(configs) if kind == RANDOM_BODY]
            print(
                f"baselines: {len(random_body)} random-init-body trials more (unless cached) and a linear "
                "model per task and seed on the driver, gradient-boosted trees too for tables "
                "(--no-baselines skips them)"
            )
        return 0
    loaded: dict = {}  # the tasks preflight loaded: the sweep preloads them without loading them again
    try:
        preflight(configs, loaded=loaded)  # before Ray starts and before anything is written under --storage
    except PreflightError as e:
        return fail(e)
    from ..untrusted import UntrustedStateError
    from .runner import run_sweep  # imports Ray: only when something runs

    try:
        run_sweep(spec, address=args.address, loaded=loaded)
    except UntrustedStateError as e:
        raise SystemExit(f"error: {e}") from None
    return 0


# script flags that are counts, and their least value (checked whichever script defines them)
_COUNTS = {"embedder_epochs": 0, "num_samples": 1}


def _plan(args, preset: PresetDefaults, default_name, default_tasks, space, search: str, num_samples: int):
    """The SweepSpec and its trials from the parsed flags; every bad value is a PreflightError line."""
    from ..preflight import PreflightError
    from ..tasks import absolute_spec, task_info
    from ..tasks.tabular import suite_tasks

    problems = []
    for dest, least in _COUNTS.items():
        values = getattr(args, dest, None)
        for v in values if isinstance(values, list) else [values]:
            if v is not None and v < least:
                problems.append(f"--{dest.replace('_', '-')}: must be >= {least}, got {v}")
    tasks = args.tasks or list((default_tasks or {}).get(args.preset) or preset.tasks)
    tasks = [t for name in tasks for t in (suite_tasks(name) or [name])]  # openml-cc18 → its 42 openml:ID
    # a local path is pinned on the driver: trials run in their own folders, maybe on other nodes
    args.tasks = [absolute_spec(t) for t in tasks]
    for t in args.tasks:
        try:
            task_info(t)
        except KeyError as e:
            problems.append(f"--tasks: {e.args[0]}")
    problems += check_trackers(args.log_to, args.storage)
    if problems:
        raise PreflightError(problems)
    args.seeds = args.seeds if args.seeds is not None else list(preset.seeds)
    cli = {
        k: v
        for k, v in (
            ("data_root", args.data_root),
            ("cache_dir", args.cache_dir),
            ("refine_epochs", args.refine_epochs),
            ("val_fraction", args.val_fraction),
            ("deterministic", args.deterministic or None),
        )
        if v is not None
    }
    try:
        protocol = args.protocol[0] if len(args.protocol) == 1 else list(dict.fromkeys(args.protocol))
        precision = args.precision[0] if len(args.precision) == 1 else list(dict.fromkeys(args.precision))
        numerics = {"precision": precision, **({"tf32": True} if args.tf32 else {})}
        grids = space(args)
        grids = [
            {**preset.extra, **g, **cli, "preset": args.preset, "protocol": protocol, **numerics}
            for g in (grids if isinstance(grids, list) else [grids])
        ]
        if args.batch_sizes == "seed-paper":
            grids = [h for g in grids for h in seed_paper_batch_sizes(g)]
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
            storage_shared=args.storage_shared,
            preload_tasks=args.preset == "demo",
            analysis=not args.no_analysis,
            trust_storage=args.trust_storage,
            baselines=not args.no_baselines and search == "grid",
            log_to=tuple(dict.fromkeys(args.log_to)),
        )
        if search == "grid":
            configs = expand_grid(spec.space)
        else:
            configs = sample_configs(grids[0], spec.num_samples)
            print(f"(optuna: {spec.num_samples} trials; the rows below are random draws from the space)")
    except (ValueError, KeyError) as e:  # a trial config the flags make invalid, an unknown body or proxy
        raise PreflightError([str(e.args[0]) if e.args else str(e)]) from None
    return spec, configs
