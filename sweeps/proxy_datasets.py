#!/usr/bin/env python
"""Does the proxy dataset matter? Align to the real proxy, to another dataset, to pure noise, or not at all,
then compare the fine-tuning curves per epoch (study Fig. 2).

Image bodies: CIFAR-10 (paper) / digits (demo), MNIST (paper), FakeData noise; text bodies: CoNLL (paper) /
WNUT-16 (demo), fake text features. "none" fine-tunes the embedder straight from the body's initialisation.
"""

from orca_ray.bodies import body_modality
from orca_ray.recipes import align_epochs_for, body_for
from orca_ray.sweep import main

PROXIES = {
    ("2d", "demo"): ["digits", "fake-images"],
    ("2d", "paper"): ["cifar10", "mnist", "fake-images"],
    ("1d", "demo"): ["wnut16", "fake-text"],
    ("1d", "paper"): ["conll", "fake-text"],
}


def space(args):
    grids = []
    for task in args.tasks:
        body = body_for(task, args.preset)
        epochs = args.embedder_epochs or align_epochs_for(task, args.preset)
        proxies = args.proxies or PROXIES[(body_modality(body), args.preset)]
        common = {"task": task, "body": body, "freeze": "none", "seed": args.seeds}
        grids.append({**common, "proxy": proxies, "embedder_epochs": epochs})
        grids.append({**common, "proxy": "none", "embedder_epochs": 0})
    return grids


def add_args(parser):
    parser.add_argument("--proxies", nargs="+", help="proxies to compare (besides 'none')")
    parser.add_argument("--embedder-epochs", type=int, help="embedder epochs for every aligned trial")


if __name__ == "__main__":
    raise SystemExit(main(default_name="proxy_datasets", description=__doc__, space=space, add_args=add_args))
