#!/usr/bin/env python
"""Does bf16 change the demo's scores beyond seed noise? The demo's aligned digits trials (MiniLM, WNUT-16
proxy, demo recipe) per seed in fp32 and in bf16 (CPU autocast), each trial through `TrialRun` (the trial
code, without Ray), then the final test scores side by side with the seed noise of the noise table.

    python benchmarks/precision_fidelity.py --precision fp32 --out DIR      # one process per precision
    python benchmarks/precision_fidelity.py --precision bf16 --out DIR      # (run them side by side)
    python benchmarks/precision_fidelity.py --summarize DIR                 # the comparison

Options: --task (default digits), --seeds (0 1 2), --embedder-epochs (30, the demo's aligned arm).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd


def run(args) -> None:
    import torch

    from orca_ray.config import TrialConfig
    from orca_ray.recipes import PRESETS
    from orca_ray.trainable import TrialRun

    torch.set_num_threads(1)  # as the demo's trials (one CPU each)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in args.seeds:
        cfg = TrialConfig(
            task=args.task,
            body="minilm",
            proxy="auto",
            embedder_epochs=args.embedder_epochs,
            seed=seed,
            preset="demo",
            precision=args.precision,
            cache_dir=str(out / "cache"),
            **PRESETS["demo"].extra,
        )
        t0 = time.perf_counter()
        trial = []
        TrialRun(cfg).run(lambda row, state, trial=trial: trial.append(row))
        for row in trial:
            rows.append({**row, "sweep": "precision-fidelity", "trial_id": cfg.short_name()})
        print(f"{args.precision} seed {seed}: {time.perf_counter() - t0:.0f} s", flush=True)
        (out / f"{args.precision}.json").write_text(json.dumps(rows, default=float))  # after every seed


def summarize(folder: str) -> None:
    from orca_ray.results import final_scores
    from orca_ray.tables import mean_std, noise_table

    rows = [r for p in sorted(Path(folder).glob("*.json")) for r in json.loads(p.read_text())]
    fs = final_scores(pd.DataFrame(rows))
    print("| precision | seed | final val | final test | final OTDD |\n|---|---|---|---|---|")
    for _, r in fs.sort_values(["precision", "seed"]).iterrows():
        print(f"| {r.precision} | {r.seed} | {r.final_val:.4f} | {r.final_test:.4f} | {r.final_otdd:.4f} |")
    stats = {p: mean_std(g["final_test"]) for p, g in fs.groupby("precision")}
    print()
    for p, (m, sd, n) in stats.items():
        print(f"{p}: final test {m:.4f} ± {sd:.4f} (sample std over {n} seeds)")
    if {"fp32", "bf16"} <= set(stats):
        diff = stats["bf16"][0] - stats["fp32"][0]
        pooled = math.sqrt((stats["fp32"][1] ** 2 + stats["bf16"][1] ** 2) / 2)
        se = pooled * math.sqrt(2 / min(stats["fp32"][2], stats["bf16"][2]))
        print(f"bf16 − fp32 = {diff:+.4f}; s.e. of a difference (pooled seed std · √(2/n)) = {se:.4f}")
    print("\n" + noise_table(fs))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--precision", choices=("fp32", "bf16", "fp16"))
    ap.add_argument("--out", help="folder for this precision's rows (and its cache)")
    ap.add_argument("--summarize", metavar="DIR", help="compare the rows in DIR")
    ap.add_argument("--task", default="digits")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--embedder-epochs", type=int, default=30)
    args = ap.parse_args()
    if args.summarize:
        summarize(args.summarize)
    elif args.precision and args.out:
        run(args)
    else:
        ap.error("give --precision P --out DIR, or --summarize DIR")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
