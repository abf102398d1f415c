#!/usr/bin/env python
"""Ray Tune's overhead per trial: the same trials through run_sweep (real Tuner, checkpoints every epoch,
Parquet sink) vs a plain Python loop calling the same TrialRun, one trial at a time in both.

    python benchmarks/tune_overhead.py [--trials 4] [--epochs 3]

Prints seconds per trial for each, the overhead per trial, and the ratio. ray.init is timed separately (it
is paid once per sweep, not per trial).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=4)
    p.add_argument("--epochs", type=int, default=3, help="refine epochs per trial")
    p.add_argument("--embedder-epochs", type=int, default=2)
    args = p.parse_args()

    import ray
    import torch

    from orca_ray.sweep import SweepSpec, expand_grid, run_sweep
    from orca_ray.trainable import TrialRun

    tmp = tempfile.mkdtemp(prefix="orca-tune-overhead-")
    space = {
        "task": "synthetic-satellite",
        "body": "tiny-text",
        "proxy": "fake-text",
        "embedder_epochs": args.embedder_epochs,
        "seed": list(range(args.trials)),
        "refine_epochs": args.epochs,
        "batch_size": 32,
        "proxy_size": 400,
        "align_batch_per_class": 8,
        "cache_dir": os.path.join(tmp, "cache"),
    }
    configs = expand_grid(space)

    # warm the shared caches (proxy features) and imports so neither side pays them
    TrialRun(configs[0]).run(lambda row, state: None)

    torch.set_num_threads(1)  # a Tune trial with 1 CPU runs with one thread too
    t0 = time.perf_counter()
    for cfg in configs:
        TrialRun(cfg).run(lambda row, state: None)
    loop = (time.perf_counter() - t0) / len(configs)

    t0 = time.perf_counter()
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    init = time.perf_counter() - t0
    spec = SweepSpec(
        name="overhead", space=space, storage=os.path.join(tmp, "store"), max_concurrent=1, analysis=False
    )
    t0 = time.perf_counter()
    run_sweep(spec)
    tune_per_trial = (time.perf_counter() - t0) / len(configs)
    ray.shutdown()

    print(
        f"\n{len(configs)} trials, {args.embedder_epochs} align + {args.epochs} refine epochs each, one at a time"
    )
    print(f"{'plain loop':>28}: {loop:7.2f} s per trial")
    print(f"{'Ray Tune (run_sweep)':>28}: {tune_per_trial:7.2f} s per trial")
    print(f"{'overhead per trial':>28}: {tune_per_trial - loop:7.2f} s")
    print(f"{'ratio Tune / loop':>28}: {tune_per_trial / loop:7.2f}x")
    print(f"{'ray.init (once per sweep)':>28}: {init:7.2f} s")


if __name__ == "__main__":
    main()
