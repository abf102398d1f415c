#!/usr/bin/env python
"""Does ORCA's recipe hold beyond encoders? Body architecture as a sweep axis: encoder, decoder-only (causal
attention kept) and encoder-decoder bodies (its encoder stack alone, and the whole model read through a short
learned query sequence), each with 0 and N embedder epochs (study limitation 2).

Paper: Satellite, DeepSEA and ECG with roberta-base, gpt2, pythia-160m, t5-base-encoder, t5-base and bart-base.
Demo (offline, 2 CPU cores, under 10 minutes): ItalyPowerDemand through the bundled pretrained MiniLM and,
because no pretrained decoder or encoder-decoder ships offline, RANDOM-INIT members of every family at MiniLM's
width (mini-gpt2, mini-pythia, and the encoder stacks mini-t5-encoder, mini-bart-encoder: 384-d, 4 layers, 0
tokens of pretraining) -- a check that the families run end to end, not a comparison of pretrained families.
The whole encoder-decoder models (`--bodies ... mini-t5 mini-bart`) cost ~3 times an encoder stack per trial:
with them the demo takes ~12 minutes on 2 cores, so it leaves them to `--bodies`.
"""

from orca_ray.recipes import align_epochs_for
from orca_ray.sweep import main
from orca_ray.tasks import task_modality

BODIES = {
    "demo": ["minilm", "mini-gpt2", "mini-pythia", "mini-t5-encoder", "mini-bart-encoder"],
    "paper": ["roberta-base", "gpt2", "pythia-160m", "t5-base-encoder", "t5-base", "bart-base"],
}
DEMO_TASKS = ["italypowerdemand-pooled"]
PAPER_TASKS = ["satellite", "deepsea", "ecg"]


def space(args):
    tasks = [t for t in args.tasks if task_modality(t) == "1d"]
    if not tasks:
        raise SystemExit(
            f"body_families compares text bodies of every family: give 1D tasks (e.g. {' '.join(PAPER_TASKS)})"
        )
    return [
        {
            "task": task,
            "body": args.bodies or BODIES[args.preset],
            "proxy": "auto",
            "freeze": "none",
            "pool": args.pool if len(args.pool) > 1 else args.pool[0],
            "embedder_epochs": sorted({0, args.embedder_epochs or align_epochs_for(task, args.preset)}),
            "seed": args.seeds,
        }
        for task in tasks
    ]


def add_args(parser):
    parser.add_argument(
        "--bodies", nargs="+", help="bodies to compare (aliases, hub ids, local folders, random:NAME)"
    )
    parser.add_argument("--embedder-epochs", type=int, help="embedder epochs of the aligned arm (N)")
    parser.add_argument(
        "--pool",
        nargs="+",
        choices=("mean", "last"),
        default=["mean"],
        help="how the predictor reads the body's tokens: mean (ORCA) or last (the last token, for causal bodies)",
    )


if __name__ == "__main__":
    raise SystemExit(
        main(
            default_name="body_families",
            description=__doc__,
            space=space,
            add_args=add_args,
            default_tasks={"demo": DEMO_TASKS, "paper": PAPER_TASKS},
        )
    )
