#!/usr/bin/env python
"""How long should the embedder be aligned? OTDD and downstream score after 0…N embedder epochs (study Fig. 3).

Each task is aligned once per seed: trials asking for fewer epochs load that trajectory's snapshot instead of
training again. Demo (default): bundled digits images and ItalyPowerDemand series through the bundled MiniLM with the
bundled WNUT-16 text proxy, 0 / 10 / 30 embedder epochs, 3 seeds, plus each task's baselines, on 2 CPU cores in
under ten minutes (benchmarks/demo.py).
"""

from orca_ray.recipes import body_for, recipe_for
from orca_ray.sweep import main

DEMO_EPOCHS = [0, 10, 30]
PAPER_EPOCHS = [0, 5, 10, 20, 40, 60]


def embedder_epochs(task: str, args) -> list[int]:
    if args.embedder_epochs:
        return args.embedder_epochs
    if args.preset == "demo":
        return DEMO_EPOCHS
    return sorted(set(PAPER_EPOCHS) | {recipe_for(task).align_epochs})  # ORCA's own count too (NinaPro: 100)


def space(args):
    return [
        {
            "task": task,
            "body": body_for(task, args.preset),
            "proxy": "auto",
            "freeze": "none",
            "embedder_epochs": embedder_epochs(task, args),
            "seed": args.seeds,
        }
        for task in args.tasks
    ]


def add_args(parser):
    parser.add_argument("--embedder-epochs", type=int, nargs="+", help="embedder epochs to compare")


if __name__ == "__main__":
    raise SystemExit(
        main(default_name="embedder_epochs", description=__doc__, space=space, add_args=add_args)
    )
