#!/usr/bin/env python
"""How much pretraining does the body need? RoBERTa-base pretrained on 0 (random init), 10M, 100M, 1B and
~30B tokens (Warstadt et al. 2020's MiniBERTas and RoBERTa-base), same pipeline otherwise (study Fig. 5).

Demo: the bundled pretrained MiniLM vs the same architecture randomly initialised. Text bodies take 1D tasks.
"""

from orca_ray.refine import NB360_ALIGN_EPOCHS
from orca_ray.sweep import main
from orca_ray.tasks import task_info

BODIES = {
    "demo": ["random:minilm", "minilm"],
    "paper": [
        "random:roberta-base",
        "roberta-base-10M",
        "roberta-base-100M",
        "roberta-base-1B",
        "roberta-base",
    ],
}
PAPER_TASKS = ["satellite", "deepsea", "ecg"]
DEMO_ALIGN_EPOCHS = 30


def space(args):
    tasks = [t for t in args.tasks if args.preset == "demo" or task_info(t).modality == "1d"]
    if not tasks:
        raise SystemExit(
            f"pretraining_scale compares text bodies: give 1D tasks (e.g. {' '.join(PAPER_TASKS)})"
        )
    return [
        {
            "task": task,
            "body": args.bodies or BODIES[args.preset],
            "proxy": "auto",
            "freeze": "none",
            "embedder_epochs": DEMO_ALIGN_EPOCHS
            if args.preset == "demo"
            else NB360_ALIGN_EPOCHS.get(task, 60),
            "seed": args.seeds,
        }
        for task in tasks
    ]


def add_args(parser):
    parser.add_argument("--bodies", nargs="+", help="bodies to compare (names, hub ids, local folders)")


if __name__ == "__main__":
    import sys

    argv = sys.argv[1:]
    if "--preset" in argv and "paper" in argv and "--tasks" not in argv:
        argv += ["--tasks", *PAPER_TASKS]
    raise SystemExit(
        main(default_name="pretraining_scale", description=__doc__, space=space, add_args=add_args, argv=argv)
    )
