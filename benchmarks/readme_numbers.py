#!/usr/bin/env python
"""The README's demo numbers ("What the demo can and cannot show"), printed from a sweep's Parquet, with the
machine the trials ran on: no result in the README is typed by hand.

    python sweeps/embedder_epochs.py                                   # the demo (or benchmarks/demo.py --keep)
    python benchmarks/readme_numbers.py results/embedder_epochs-demo/parquet

Per task: the OTDD to the proxy before and after the longest alignment (mean ± std over seeds of the aligned
arm's align rows at epoch 0 and at its last epoch) and where the 0-epoch arm's fresh embedder starts; the final
test score (test at the best-validation epoch) per embedder-epoch setting and of each baseline; the seed noise
(pooled seed std, the standard error of a difference, the spread of the setting means, as the final-score
table's last section). Then one line per distinct machine fingerprint in the rows.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orca_ray.baselines import LINEAR, RANDOM_BODY
from orca_ray.results import final_scores, read_results
from orca_ray.results.schema import MACHINE_FIELDS
from orca_ray.tables import mean_std, split_baselines


def _ms(values, digits: int = 3) -> str:
    mean, std, n = mean_std(values)
    if n == 0:
        return "–"
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if n > 1 else f"{mean:.{digits}f} (one seed)"


def task_numbers(df: pd.DataFrame, task: str) -> dict:
    """The README's numbers for one task of a demo-like sweep (an embedder-epochs grid plus baselines).

    Args:
        df: the sweep's rows (`read_results`).
        task: the task.
    """
    rows = df[df["task"] == task]
    trials, baselines = split_baselines(rows, final_scores(rows))
    epochs = sorted(int(e) for e in trials["embedder_epochs"].dropna().unique())
    longest = epochs[-1] if epochs else 0
    align = rows[(rows["phase"] == "align") & rows["trial_id"].isin(trials["trial_id"])]
    aligned = align[align["embedder_epochs"] == longest]
    fresh = align[(align["embedder_epochs"] == 0) & (align["epoch"] == 0)]
    scores = {e: trials.loc[trials["embedder_epochs"] == e, "final_test"] for e in epochs}
    means = {e: mean_std(v) for e, v in scores.items()}
    stds = [sd for _, sd, n in means.values() if n > 1]
    n_min = min((n for _, _, n in means.values()), default=0)
    pooled = float(np.sqrt(np.mean(np.square(stds)))) if stds else math.nan
    metric = ", ".join(sorted({str(m) for m in trials["metric"].dropna()}))
    return {
        "task": task,
        "metric": metric,
        "longest": longest,
        "otdd_start": aligned.loc[aligned["epoch"] == 0, "otdd"],
        "otdd_end": aligned.loc[aligned["epoch"] == longest, "otdd"],
        "otdd_fresh": fresh["otdd"],
        "scores": scores,
        "baselines": {
            k: baselines.loc[baselines["baseline"] == k, "final_test"] for k in (LINEAR, RANDOM_BODY)
        },
        "seed_std": pooled,
        "se_diff": pooled * math.sqrt(2.0 / n_min) if stds and n_min else math.nan,
        "spread": max(m for m, _, _ in means.values()) - min(m for m, _, _ in means.values())
        if means
        else math.nan,
    }


def render(df: pd.DataFrame) -> str:
    """The README's result lines and table for every task of the sweep, then the machines behind them.

    Args:
        df: the sweep's rows (`read_results`).
    """
    out = []
    for task in sorted(df["task"].dropna().unique()):
        t = task_numbers(df, task)
        if t["longest"]:
            out.append(
                f"- **{task}**: OTDD to the proxy {_ms(t['otdd_start'], 0)} before alignment, "
                f"{_ms(t['otdd_end'], 0)} after {t['longest']} embedder epochs; the 0-epoch arm's fresh "
                f"embedder starts at {_ms(t['otdd_fresh'], 0)}."
            )
        out.append(f"\n| {task} ({t['metric']}, final test) | mean ± std over seeds | n |\n|---|---|---|")
        for e, v in t["scores"].items():
            out.append(f"| {e} embedder epochs | {_ms(v)} | {v.notna().sum()} |")
        for kind, v in t["baselines"].items():
            if len(v):
                out.append(f"| baseline: {kind} | {_ms(v)} | {v.notna().sum()} |")
        out.append(
            f"\nseed std (pooled) {t['seed_std']:.3f}, s.e. of a difference {t['se_diff']:.3f}, "
            f"spread of the setting means {t['spread']:.3f}\n"
        )
    out.append("machines (distinct fingerprints in the rows, with their row counts):")
    fp = df[[*MACHINE_FIELDS, "deterministic"]].astype(object).where(lambda x: x.notna(), "unknown")
    for values, n in fp.value_counts(dropna=False).items():
        out.append("- " + ", ".join(f"{c}={v}" for c, v in zip(fp.columns, values)) + f" ({n} rows)")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", help="the sweep's Parquet root (local, s3://, gs://)")
    p.add_argument("--sweep", help="one sweep of several under the root")
    a = p.parse_args(argv)
    df = read_results(a.results, sweep=a.sweep)
    if df.empty:
        print(f"error: no rows under {a.results}: give a sweep's Parquet root", file=sys.stderr)
        return 2
    print(render(df))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
