#!/usr/bin/env python
"""What `--deterministic` costs and what it buys: one small real trial, each run in a fresh process (the
dispatch levels are read when torch starts), under four environments of this machine:

- `default`: as a sweep runs it today (PyTorch, MKL and oneDNN pick the best code path of this CPU);
- `avx2-node`: the same trial on a node whose CPU stops at AVX2, emulated by capping all three dispatch
  levels from outside (`ATEN_CPU_CAPABILITY=avx2 MKL_CBWR=AVX2 ONEDNN_MAX_CPU_ISA=AVX2`);
- `deterministic`: deterministic mode on this machine (`machine.DETERMINISTIC_ENV` + deterministic algorithms);
- `deterministic-avx2-node`: deterministic mode on the emulated AVX2 node.

It prints per environment the ISA PyTorch dispatched to, the wall and CPU seconds of the trial, and which
reported values (OTDD, train loss, val and test score) differ from `deterministic`. On an AVX-512 machine
`default` differs and the three others agree to the last bit: that is what makes numbers node-independent.
The cost of deterministic mode is its CPU time over `default`'s.

    python benchmarks/deterministic.py                  # digits through MiniLM: 3 embedder epochs, 2 refine
    python benchmarks/deterministic.py --repeat 2       # each environment twice (timings on a busy machine)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from orca_ray.machine import deterministic_env  # noqa: E402

VALUE_COLUMNS = ("otdd", "train_loss", "val_score", "test_score")
AVX2_NODE = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
# a small real trial of the demo's kind: real digits, the bundled MiniLM, the bundled WNUT-16 proxy
SMALL_TRIAL = {
    "task": "digits",
    "body": "minilm",
    "embedder_epochs": 3,
    "seed": 0,
    "refine_epochs": 2,
    "batch_size": 32,
    "lr": 2e-4,
    "val_fraction": 0.25,
    "target_seq_len": 4,
    "proxy_size": 2000,
    "align_batch_per_class": 32,
    "max_train_samples": 400,
}


def environments() -> dict[str, tuple[dict, bool]]:
    """name → (variables set outside the trial process, deterministic mode)."""
    return {
        "default": ({}, False),
        "avx2-node": (AVX2_NODE, False),
        "deterministic": ({}, True),
        "deterministic-avx2-node": (AVX2_NODE, True),
    }


def run_trial(config: dict, outside: dict, deterministic: bool, threads: int = 1) -> dict:
    """One trial in a fresh Python process (fresh caches): its fingerprint, rows, wall and CPU seconds.

    Args:
        config: TrialConfig fields (`cache_dir` is set here, a new temporary folder).
        outside: the node's own variables (what it would have before Ray starts the trial).
        deterministic: run the trial in deterministic mode; its variables are set as the sweep's runtime
            environment sets them, over the node's own.
        threads: torch threads (a sweep gives each trial its CPUs; 1 here, as the demo).
    """
    env = {**os.environ, **outside, "PYTHONPATH": str(ROOT)}
    for k in AVX2_NODE:  # the machine's own default unless `outside` names it
        if k not in outside:
            env.pop(k, None)
    if deterministic:
        env.update(deterministic_env())
    with tempfile.TemporaryDirectory(prefix="orca-det-") as cache:
        cfg = {**config, "deterministic": deterministic, "cache_dir": cache}
        t0 = time.perf_counter()
        done = subprocess.run(
            [sys.executable, __file__, "--child", json.dumps(cfg), "--threads", str(threads)],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"trial failed ({done.returncode}): {done.stderr[-2000:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    out["wall_seconds"] = wall
    return out


def differing(a: list[dict], b: list[dict]) -> list[str]:
    """`phase epoch column` of every reported value that is not bit-identical between two runs' rows."""
    out = []
    for x, y in zip(a, b, strict=True):
        for c in VALUE_COLUMNS:
            if x[c] != y[c] and not (x[c] != x[c] and y[c] != y[c]):  # NaN == NaN here
                out.append(f"{x['phase']} {x['epoch']} {c}")
    return out


def _child(config: str, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    from orca_ray.config import TrialConfig
    from orca_ray.trainable import TrialRun

    rows = []
    cpu0 = time.process_time()
    run = TrialRun(TrialConfig.from_dict(json.loads(config)))
    run.run(lambda row, state: rows.append({k: row[k] for k in ("phase", "epoch", *VALUE_COLUMNS)}))
    fingerprint = {k: run.constants[k] for k in ("cpu_model", "cpu_capability", "mkl_version", "threads")}
    print(json.dumps({"fingerprint": fingerprint, "rows": rows, "cpu_seconds": time.process_time() - cpu0}))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help="torch threads per trial")
    p.add_argument("--repeat", type=int, default=1, help="runs per environment (timings: the minimum)")
    a = p.parse_args(argv)
    if a.child:
        _child(a.child, a.threads)
        return 0
    runs = {}
    for name, (outside, det) in environments().items():
        tries = [run_trial(SMALL_TRIAL, outside, det, a.threads) for _ in range(a.repeat)]
        runs[name] = min(tries, key=lambda r: r["cpu_seconds"])
    ref = runs["deterministic"]
    print(f"machine: {ref['fingerprint']['cpu_model']}; MKL {ref['fingerprint']['mkl_version']}")
    print(f"load average: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print("| environment | ISA | trial CPU s | wall s | values differing from `deterministic` |")
    print("|---|---|---|---|---|")
    for name, r in runs.items():
        diff = differing(r["rows"], ref["rows"])
        what = f"{len(diff)} of {len(r['rows'])} rows' values, e.g. {diff[0]}" if diff else "none"
        print(
            f"| {name} | {r['fingerprint']['cpu_capability']} | {r['cpu_seconds']:.1f} | "
            f"{r['wall_seconds']:.1f} | {what} |"
        )
    cost = runs["deterministic"]["cpu_seconds"] / runs["default"]["cpu_seconds"] - 1
    print(f"deterministic mode's CPU time vs default: {cost:+.0%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
