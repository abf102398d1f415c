#!/usr/bin/env python
"""How much pretraining does the body need? RoBERTa-base pretrained on 0 (random init), 10M, 100M, 1B and
~30B tokens (Warstadt et al. 2020's MiniBERTas and RoBERTa-base), same pipeline otherwise (study Fig. 5).

`--ladder pythia` adds a decoder ladder beside it: Pythia-160M at its published intermediate checkpoints
(revision stepN = N × 2,097,152 tokens: step4 ≈ 8M, step64 ≈ 134M, step512 ≈ 1.1B, step16000 ≈ 34B, final
≈ 300B) and from random init, so causal bodies can be compared with the MiniBERTas at matching scales.

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
# the paper preset's ladders (--ladder); "roberta" is the study's
LADDERS = {
    "roberta": BODIES["paper"],
    "pythia": [
        "random:pythia-160m",
        "pythia-160m@step4",
        "pythia-160m@step64",
        "pythia-160m@step512",
        "pythia-160m@step16000",
        "pythia-160m",
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
            "body": args.bodies or bodies(args),
            "proxy": "auto",
            "freeze": "none",
            "embedder_epochs": align_epochs_for(task, args.preset),
            "seed": args.seeds,
        }
        for task in tasks
    ]


def bodies(args) -> list[str]:
    if args.preset == "demo":
        return BODIES["demo"]
    return [b for ladder in dict.fromkeys(args.ladder) for b in LADDERS[ladder]]


def add_args(parser):
    parser.add_argument("--bodies", nargs="+", help="bodies to compare (names, hub ids, local folders)")
    parser.add_argument(
        "--ladder",
        nargs="+",
        choices=tuple(LADDERS),
        default=["roberta"],
        help="paper preset: the MiniBERTas (roberta) and/or Pythia-160M's checkpoints (pythia)",
    )


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
