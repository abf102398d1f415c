#!/usr/bin/env python
"""Does stage one matter? ORCA's embedder (patch conv → LayerNorm → learned positions) against the study's
"much simpler method of converting dimensions", one Linear per patch (`linear`), and ORCA's embedder without
its LayerNorm or without its positions (`orca-no-norm`, `orca-no-pos`), each unaligned (0 embedder epochs)
and aligned, per task (orca_ray.embedders).

Demo (default): the bundled digits images (2D, where the kinds differ) through the bundled MiniLM, `orca` vs
`linear`, 0 / 10 embedder epochs, 3 seeds, plus the task's baselines; `--tasks` adds others (e.g.
`italypowerdemand-pooled`), `--embedders` the knock-outs. Paper: the NAS-Bench-360 tasks with
ORCA's bodies and recipes, every kind, 0 and each task's own embedder epochs.
"""

from orca_ray.embedders import EMBEDDERS
from orca_ray.recipes import align_epochs_for, body_for
from orca_ray.sweep import main

KINDS = {"demo": ["orca", "linear"], "paper": list(EMBEDDERS)}
# one task keeps the demo within 10 minutes on 2 cores (two tasks took 754 s: README "Beyond the study")
DEMO_TASKS = ["digits"]
DEMO_ALIGN_EPOCHS = 10  # of the demo's aligned arm (the embedder_epochs demo shows OTDD flat after ~10)


def space(args):
    grids = []
    for task in args.tasks:
        epochs = args.embedder_epochs or (
            DEMO_ALIGN_EPOCHS if args.preset == "demo" else align_epochs_for(task, args.preset)
        )
        grids.append(
            {
                "task": task,
                "body": body_for(task, args.preset),
                "proxy": "auto",
                "freeze": "none",
                "embedder": args.embedders or KINDS[args.preset],
                "embedder_epochs": [0, epochs],
                "seed": args.seeds,
            }
        )
    return grids


def add_args(parser):
    parser.add_argument(
        "--embedders",
        nargs="+",
        choices=list(EMBEDDERS),
        help="embedder kinds to compare (default: demo orca linear; paper: every kind)",
    )
    parser.add_argument("--embedder-epochs", type=int, help="embedder epochs of the aligned arm")


if __name__ == "__main__":
    raise SystemExit(
        main(
            default_name="stage_one",
            description=__doc__,
            space=space,
            add_args=add_args,
            default_tasks={"demo": DEMO_TASKS},
        )
    )
