#!/usr/bin/env python
"""What is transferred: pretrained knowledge or a good initialisation? Limit how much of the body may change --
nothing (freeze mask `body`), LoRA adapters of each rank in its attention (the body's own weights frozen), or
everything (full fine-tuning) -- for the pretrained body and the same architecture from random init
(`random:<body>`), and plot the score against the number of parameters refine updates (orca_ray.lora).

Demo (default): bundled ItalyPowerDemand series through the bundled MiniLM and `random:minilm`, ranks 1 / 4 /
16, no embedder training, 3 seeds. Paper: the 1D NAS-Bench-360 tasks with roberta-base, ORCA's recipes and
embedder epochs, ranks 1 / 4 / 16 / 64.
"""

from orca_ray.preflight import count
from orca_ray.recipes import align_epochs_for, body_for
from orca_ray.sweep import main

RANKS = {"demo": [1, 4, 16], "paper": [1, 4, 16, 64]}
DEMO_TASKS = ["italypowerdemand-pooled"]
PAPER_TASKS = ["satellite", "deepsea", "ecg"]


def arms(ranks: list[int]) -> list[dict]:
    """Body updates from none to all: the frozen body, LoRA at each rank, full fine-tuning.

    Args:
        ranks: the LoRA ranks.
    """
    return [
        {"freeze": "body", "lora_rank": 0},
        *({"freeze": "none", "lora_rank": r} for r in sorted(set(ranks))),
        {"freeze": "none", "lora_rank": 0},
    ]


def space(args):
    grids = []
    for task in args.tasks:
        body = args.body or body_for(task, args.preset)
        epochs = 0 if args.preset == "demo" else align_epochs_for(task, args.preset)
        for arm in arms(args.ranks or RANKS[args.preset]):
            grids.append(
                {
                    "task": task,
                    "body": [body, f"random:{body.removeprefix('random:')}"],
                    "proxy": "auto",
                    "embedder_epochs": args.embedder_epochs if args.embedder_epochs is not None else epochs,
                    "seed": args.seeds,
                    **arm,
                }
            )
    return grids


def add_args(parser):
    parser.add_argument("--ranks", nargs="+", type=count(1), help="LoRA ranks (>= 1; default: the preset's)")
    parser.add_argument("--body", help="the pretrained body (its random init is the other arm)")
    parser.add_argument("--embedder-epochs", type=int, help="embedder epochs of every arm")


if __name__ == "__main__":
    raise SystemExit(
        main(
            default_name="lora_rank",
            description=__doc__,
            space=space,
            add_args=add_args,
            default_tasks={"demo": DEMO_TASKS, "paper": PAPER_TASKS},
        )
    )
