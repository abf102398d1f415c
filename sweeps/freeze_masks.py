#!/usr/bin/env python
"""Which parts must be fine-tuned? Freeze the embedder, the body, or both, with and without embedder
training (study Fig. 4). The predictor always trains."""

from orca_ray.recipes import align_epochs_for, body_for
from orca_ray.sweep import main

MASKS = ["none", "embedder", "body", "embedder+body"]


def space(args):
    grids = []
    for task in args.tasks:
        epochs = args.embedder_epochs or align_epochs_for(task, args.preset)
        grids.append(
            {
                "task": task,
                "body": body_for(task, args.preset),
                "proxy": "auto",
                "freeze": args.masks,
                "embedder_epochs": [0, epochs],
                "seed": args.seeds,
            }
        )
    return grids


def add_args(parser):
    parser.add_argument("--masks", nargs="+", default=MASKS, help="freeze masks ('+'-joined parts, or none)")
    parser.add_argument("--embedder-epochs", type=int, help="embedder epochs of the aligned arm")


if __name__ == "__main__":
    raise SystemExit(main(default_name="freeze_masks", description=__doc__, space=space, add_args=add_args))
