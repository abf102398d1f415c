#!/usr/bin/env python
"""Does `mlflow ui` show a sweep as Parquet has it? Starts `mlflow ui` (the `[mlflow]` extra) on the SQLite store a
sweep run with `--log-to mlflow` wrote, reads the store back through the UI server's REST API (what the UI's pages
call) and compares every Tune trial's metric history with the sweep's Parquet rows.

    python sweeps/embedder_epochs.py --log-to mlflow            # the demo, logged to MLflow
    python benchmarks/mlflow_ui_check.py results/embedder_epochs-demo

Prints whether the UI serves its page, the runs against the Parquet trials, the metric series compared and
mismatched, and the sweep-level run's artifacts; exits 1 on any mismatch.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orca_ray.results import read_results
from orca_ray.tracking import PHASE_METRICS


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment", help="the sweep's folder, <storage>/<name>")
    p.add_argument("--port", type=int, default=5077)
    args = p.parse_args()
    exp_dir = Path(args.experiment)
    mlflow = os.path.join(os.path.dirname(sys.executable), "mlflow")
    store = f"sqlite:///{(exp_dir / 'mlflow' / 'mlflow.db').resolve()}"
    ui = subprocess.Popen(
        [mlflow, "ui", "--backend-store-uri", store, "--port", str(args.port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{args.port}"

    def get(path: str, **query) -> bytes:
        url = base + path + ("?" + urllib.parse.urlencode(query) if query else "")
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.read()

    def post(path: str, body: dict) -> dict:
        req = urllib.request.Request(
            base + path, json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())

    try:
        for _ in range(120):
            try:
                page = get("/")
                break
            except OSError:
                time.sleep(1)
        print("mlflow ui serves its page:", b"<html" in page.lower(), f"({len(page)} bytes)")
        exp = json.loads(get("/api/2.0/mlflow/experiments/get-by-name", experiment_name=exp_dir.name))
        body = {"experiment_ids": [exp["experiment"]["experiment_id"]], "max_results": 1000}
        runs = post("/api/2.0/mlflow/runs/search", body)["runs"]

        def tags(run):
            return {t["key"]: t["value"] for t in run["data"].get("tags", [])}

        trial_runs = {tags(r)["trial_id"]: r for r in runs if "trial_id" in tags(r)}
        df = read_results(str(exp_dir / "parquet"), sweep=exp_dir.name)
        tune_trials = {t for t in df["trial_id"].unique() if not t.startswith("baseline-")}
        print(
            f"experiment {exp_dir.name!r}: {len(runs)} runs ({len(trial_runs)} of trials); Parquet: "
            f"{len(tune_trials)} Tune trials, {df['trial_id'].nunique() - len(tune_trials)} driver baselines"
        )
        checked = mismatched = 0
        for tid in sorted(tune_trials & set(trial_runs)):
            rows, run_id = df[df.trial_id == tid], trial_runs[tid]["info"]["run_id"]
            for phase, names in PHASE_METRICS.items():
                part = rows[rows.phase == phase].sort_values("epoch")
                for name in names:
                    want = [(int(e), float(v)) for e, v in zip(part.epoch, part[name]) if not math.isnan(v)]
                    if not want:
                        continue
                    hist = json.loads(
                        get("/api/2.0/mlflow/metrics/get-history", run_id=run_id, metric_key=name)
                    )
                    got = sorted((m["step"], m["value"]) for m in hist.get("metrics", []))
                    same = len(got) == len(want) and all(
                        s == t and math.isclose(u, v, rel_tol=1e-6) for (s, u), (t, v) in zip(got, want)
                    )
                    checked, mismatched = checked + 1, mismatched + (not same)
        print(
            f"metric series compared with Parquet through the UI server: {checked}, mismatched: {mismatched}"
        )
        for r in runs:
            if "trial_id" not in tags(r):
                files = json.loads(get("/api/2.0/mlflow/artifacts/list", run_id=r["info"]["run_id"]))
                names = sorted(f["path"] for f in files.get("files", []))
                print(f"sweep-level run {r['info'].get('run_name')!r}: artifacts {names}")
        return 0 if set(trial_runs) == tune_trials and mismatched == 0 else 1
    finally:
        ui.terminate()
        ui.wait(timeout=30)


if __name__ == "__main__":
    raise SystemExit(main())
