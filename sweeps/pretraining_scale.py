#!/usr/bin/env python
"""How much pretraining does the body need? RoBERTa-base pretrained on 0 (random init), 10M, 100M, 1B and
~30B tokens (Warstadt et al. 2020's MiniBERTas and RoBERTa-base), same pipeline otherwise (study Fig. 5).

Demo: the bundled pretrained MiniLM vs the same architecture randomly initialised. Text bodies take 1D tasks.
"""

from orca_ray.recipes import align_epochs_for
from orca_ray.sweep import main
from orca_ray.tasks import task_modality

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


def space(args):
    tasks = [t for t in args.tasks if args.preset == "demo" or task_modality(t) == "1d"]
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
            "embedder_epochs": align_epochs_for(task, args.preset),
            "seed": args.seeds,
        }
        for task in tasks
    ]


def add_args(parser):
    parser.add_argument("--bodies", nargs="+", help="bodies to compare (names, hub ids, local folders)")


if __name__ == "__main__":
    raise SystemExit(
        main(
            default_name="pretraining_scale",
            description=__doc__,
            space=space,
            add_args=add_args,
            default_tasks={"paper": PAPER_TASKS},
        )
    )
