#!/usr/bin/env python
"""Time the README's first command (`python sweeps/embedder_epochs.py`, the demo preset) and split its cost.

    python benchmarks/demo.py                 # fresh storage and cache in a temporary folder, as a new user
    python benchmarks/demo.py --keep DIR      # keep the results (and reuse DIR's cache on a second run)
    python benchmarks/demo.py --split DIR     # only the CPU split of a finished run kept in DIR

Runs the demo exactly as the README does (a subprocess, its own local Ray, 2 trials at a time with one
thread each) and prints:

- wall time of the whole command, and the machine's load while it ran (a shared machine inflates wall time);
- CPU time per trial and per phase, summed over the trials: set-up (task, body and model), align (embedder
  epochs, OTDD), refine (training) and eval (validation + test scores every epoch), from the `cpu_seconds` and
  `setup_cpu_seconds` every trial reports to Tune; eval is measured here directly (one evaluation pass per
  task, the same model and splits, one thread) and taken out of refine;
- the prediction for a quiet machine: wall ≈ trial CPU / concurrent trials + overhead, where the overhead
  (driver start-up, Ray, Tune per trial, baselines on the driver, figures) is this run's wall time minus its
  trial CPU / concurrency — on a quiet machine the two sides should match; on a busy one wall time is larger.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's orca_ray, as the demo subprocess uses
SCRIPT = ROOT / "sweeps" / "embedder_epochs.py"
NAME = "embedder_epochs-demo"


def _cpu_children() -> float:
    r = os.times()
    return r.children_user + r.children_system


def trial_cpu(experiment: Path) -> list[dict]:
    """Per trial: its config, set-up / align / refine CPU seconds and Tune's wall time, from result.json."""
    out = []
    for result_file in sorted(experiment.glob("*/result.json")):
        rows = [json.loads(line) for line in result_file.read_text().splitlines() if line.strip()]
        if not rows:
            continue
        cfg = rows[0]["config"].get("trial", rows[0]["config"])
        phase_cpu = defaultdict(float)
        for r in rows:
            phase_cpu[r["phase"]] += r.get("cpu_seconds", 0.0)
        out.append(
            {
                "task": cfg["task"],
                "body": cfg["body"],
                "embedder_epochs": cfg["embedder_epochs"],
                "seed": cfg["seed"],
                "baseline": cfg.get("baseline"),
                "refine_epochs": sum(1 for r in rows if r["phase"] == "refine"),
                "setup": rows[0].get("setup_cpu_seconds", 0.0),
                "align": phase_cpu["align"],
                "refine": phase_cpu["refine"],
                "wall": rows[-1].get("time_total_s", float("nan")),
            }
        )
    return out


def eval_cpu_per_epoch(trials: list[dict]) -> dict[str, float]:
    """CPU seconds of one validation + test pass per task (one thread, the demo's model and splits)."""
    import torch

    from orca_ray.config import TrialConfig
    from orca_ray.recipes import PRESETS
    from orca_ray.refine import Refiner
    from orca_ray.trainable import TrialRun

    torch.set_num_threads(1)
    out = {}
    for task in sorted({t["task"] for t in trials}):
        cfg = TrialConfig.from_dict(
            {
                **PRESETS["demo"].extra,
                "task": task,
                "body": "minilm",
                "proxy": "none",
                "cache_dir": tempfile.mkdtemp(),
            }
        )
        run = TrialRun(cfg)
        refiner = Refiner(run.model, run.task, run.hp, seed=0)
        t0 = time.process_time()
        refiner.evaluate(run.task.val)
        refiner.evaluate(run.task.test)
        out[task] = time.process_time() - t0
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--keep", default=None, help="storage + cache folder to use and keep (default: a temp dir)"
    )
    p.add_argument(
        "--split", default=None, help="a folder a --keep run left: print its CPU split, run nothing"
    )
    p.add_argument("--concurrent", type=int, default=2, help="trials the demo runs at once (2 on 2 cores)")
    p.add_argument("args", nargs="*", help="extra flags for the demo command (after --)")
    args = p.parse_args()

    base = Path(args.split or args.keep or tempfile.mkdtemp(prefix="orca-demo-bench-"))
    storage, cache = base / "results", base / "cache"
    wall = None
    if not args.split:
        cmd = [sys.executable, str(SCRIPT), "--storage", str(storage), "--cache-dir", str(cache), *args.args]
        print("running:", " ".join(cmd), flush=True)
        load0 = os.getloadavg()[0]
        cpu0, t0 = _cpu_children(), time.perf_counter()
        done = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        wall = time.perf_counter() - t0
        cpu_reaped = _cpu_children() - cpu0
        load1 = os.getloadavg()[0]
        if done.returncode != 0:
            raise SystemExit(f"the demo failed (exit {done.returncode})")

    trials = trial_cpu(storage / NAME)
    evals = eval_cpu_per_epoch(trials)
    if wall is not None:
        print(
            f"\n== demo: {len(trials)} trials, wall {wall:.0f} s (load average {load0:.1f} → {load1:.1f}) =="
        )
        print(f"CPU of the driver and the processes it reaped (Ray, workers): {cpu_reaped:.0f} s")
    head = f"{'task':<26}{'setting':<24}{'n':>3}{'set-up':>8}{'align':>8}{'refine':>8}{'eval':>8}{'total':>8}"
    print("\nCPU seconds per trial (mean over seeds; eval = val + test every epoch):")
    print(head)
    groups = defaultdict(list)
    for t in trials:
        setting = t["baseline"] or f"minilm, E={t['embedder_epochs']}"
        groups[(t["task"], setting)].append(t)
    totals = defaultdict(float)
    for (task, setting), ts in sorted(groups.items()):
        n = len(ts)
        setup = sum(t["setup"] for t in ts) / n
        align = sum(t["align"] for t in ts) / n
        ev = evals[task] * sum(t["refine_epochs"] for t in ts) / n
        refine = sum(t["refine"] for t in ts) / n - ev
        total = setup + align + refine + ev
        for k, v in (("set-up", setup), ("align", align), ("refine", refine), ("eval", ev), ("total", total)):
            totals[k] += v * n
        print(f"{task:<26}{setting:<24}{n:>3}{setup:>8.1f}{align:>8.1f}{refine:>8.1f}{ev:>8.1f}{total:>8.1f}")
    trial_total = totals["total"]
    print(
        f"{'all trials (sum)':<50}{totals['set-up']:>8.0f}{totals['align']:>8.0f}{totals['refine']:>8.0f}"
        f"{totals['eval']:>8.0f}{trial_total:>8.0f}"
    )
    share = {k: 100 * totals[k] / trial_total for k in ("set-up", "align", "refine", "eval")}
    print("share of trial CPU: " + ", ".join(f"{k} {v:.0f}%" for k, v in share.items()))
    ideal = trial_total / args.concurrent
    print(
        f"\nprediction: wall = trial CPU / {args.concurrent} concurrent + overhead"
        f"\n  trial CPU / {args.concurrent}:          {ideal:6.0f} s"
    )
    if wall is not None:
        print(
            f"  overhead (this run):     {wall - ideal:6.0f} s  (wall − the above: start-up, Ray, Tune per trial,"
            " driver baselines, figures; inflated on a busy machine)"
            f"\n  measured wall:           {wall:6.0f} s  (limit 600 s)"
        )
    print(f"\nresults: {storage / NAME}")


if __name__ == "__main__":
    main()
