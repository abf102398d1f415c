#!/usr/bin/env python
"""Bayesian search (Optuna TPE through Ray Tune) over the fine-tuning learning rate, the embedder epochs and
the freeze mask on one task, minimising the best validation score (never the test score)."""

from ray import tune

from orca_ray.recipes import body_for
from orca_ray.sweep import main

EPOCH_CHOICES = {"demo": [0, 10, 30, 60], "paper": [0, 10, 20, 40, 60]}
MASKS = ["none", "embedder", "body"]


def space(args):
    # one task, one seed: Optuna models a single objective; run it per task/seed with --tasks / --seeds
    if len(args.tasks) > 1 or len(args.seeds) > 1:
        print(f"optuna_search: searching task {args.tasks[0]!r} with seed {args.seeds[0]} (the first given)")
    task = args.tasks[0]
    return {
        "task": task,
        "body": body_for(task, args.preset),
        "proxy": "auto",
        "seed": args.seeds[0],
        "lr": tune.loguniform(1e-5, 1e-3),
        "embedder_epochs": tune.choice(EPOCH_CHOICES[args.preset]),
        "freeze": tune.choice(MASKS),
    }


def add_args(parser):
    parser.add_argument("--num-samples", type=int, default=8, help="trials Optuna proposes")
    parser.set_defaults(max_concurrent=2)


if __name__ == "__main__":
    raise SystemExit(
        main(
            default_name="optuna_search", description=__doc__, space=space, add_args=add_args, search="optuna"
        )
    )
