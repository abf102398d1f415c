"""The Ray dashboard shows the study: a real local sweep, read as a user's browser and Prometheus read it.

Through the dashboard's HTTP API (with the cluster's token) the sweep's job carries the sweep's name and the
alive trial actors carry the trials' names; the node's metrics endpoint serves each trial's gauges with the
values its Parquet rows hold."""

from __future__ import annotations

import json
import math
import os
import re
import time
import urllib.request
from pathlib import Path

import pytest
import ray
from prometheus_client.parser import text_string_to_metric_families
from ray import tune

from orca_ray.results import read_results
from orca_ray.trainable import GAUGE_COLUMNS, PHASE_CODES


def auth_headers() -> dict:
    """The dashboard's bearer token, where Ray keeps it (`$RAY_AUTH_TOKEN`, `$RAY_AUTH_TOKEN_PATH`,
    `~/.ray/auth_token`); no header when there is none (a Ray without token auth)."""
    token = os.environ.get("RAY_AUTH_TOKEN")
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", "~/.ray/auth_token")).expanduser()
    if not token and path.exists():
        token = path.read_text().strip()
    return {"Authorization": f"Bearer {token}"} if token else {}


def get(url: str) -> str:
    req = urllib.request.Request(url, headers=auth_headers())
    with urllib.request.urlopen(req, timeout=20) as r:
        return r.read().decode()


def trial_gauges(text: str, sweep: str) -> dict[str, dict[str, float]]:
    """{trial: {gauge name: value}} of the sweep's trial gauges in a Prometheus scrape."""
    out: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.startswith("ray_orca_trial_") and s.labels.get("sweep") == sweep:
                out.setdefault(s.labels["trial"], {})[s.name.removeprefix("ray_")] = s.value
    return out


class DashboardProbe(tune.Callback):
    """At each trial's last result (the trial is alive and waits in `tune.report`): the jobs and actors as the
    dashboard serves them, and the trial's gauges once the node's metrics endpoint shows this result."""

    def __init__(self, capfd, sweep: str, last_epoch: int):
        self.capfd, self.sweep, self.last_epoch = capfd, sweep, last_epoch
        self.out = ""
        self.seen: dict[str, dict] = {}

    def __getstate__(self):  # Tune pickles its callbacks into tuner.pkl; pytest's capture is not picklable
        return {k: v for k, v in self.__dict__.items() if k != "capfd"}

    def dashboard(self) -> str:
        self.out += self.capfd.readouterr().out
        return re.search(r"Ray dashboard:\s+(http://\S+)", self.out).group(1)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if result["phase"] != "refine" or result["epoch"] != self.last_epoch:
            return
        url = self.dashboard()
        jobs = json.loads(get(f"{url}/api/jobs/"))
        actors = json.loads(get(f"{url}/api/v0/actors?detail=1&limit=1000"))["data"]["result"]["result"]
        node = next(n for n in ray.nodes() if n["Alive"])
        scrape = f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
        # this result in every gauge (an export may fall between two of a report's gauge sets)
        want = {"orca_trial_phase": PHASE_CODES["refine"], "orca_trial_epoch": self.last_epoch}
        want.update((GAUGE_COLUMNS[c][0], result[c]) for c in ("train_loss", "val_score", "test_score"))
        deadline, gauges = time.monotonic() + 30, {}
        while time.monotonic() < deadline:  # the node exports every metrics_report_interval_ms
            gauges = trial_gauges(get(scrape), self.sweep).get(str(trial), {})
            if all(gauges.get(k) == v for k, v in want.items()):
                break
            time.sleep(0.25)
        self.seen[trial.trial_id] = {"name": str(trial), "jobs": jobs, "actors": actors, "gauges": gauges}


@pytest.mark.slow
def test_dashboard_names_the_sweep_and_trials_and_serves_their_metrics(
    tmp_path, capfd, monkeypatch, tiny_sweep_space
):
    from orca_ray.sweep import SweepSpec, run_sweep

    if ray.is_initialized():  # a module fixture's Ray (no dashboard): this test needs run_sweep's own
        ray.shutdown()
    monkeypatch.setenv("RAY_metrics_report_interval_ms", "500")  # Ray's default is 10 s
    name = "dashboard-probe"
    probe = DashboardProbe(capfd, name, tiny_sweep_space["refine_epochs"])
    spec = SweepSpec(
        name=name,
        space=tiny_sweep_space,
        storage=str(tmp_path / "store"),
        analysis=False,
        extra_callbacks=[probe],
    )
    try:
        grid = run_sweep(spec)
    finally:
        ray.shutdown()
    assert not any(r.error for r in grid)
    rows = read_results(spec.results_root)
    assert sorted(probe.seen) == sorted(rows["trial_id"].unique())
    assert len(probe.seen) == 2
    for trial_id, seen in probe.seen.items():
        trial_name = seen["name"]
        # the Jobs list's Name column: the driver job's metadata job_name
        named = [j for j in seen["jobs"] if (j.get("metadata") or {}).get("job_name") == name]
        assert len(named) == 1
        assert named[0]["status"] == "RUNNING"
        # the Actors page: each alive trial actor's repr is its trial's name
        alive = {a["repr_name"]: a for a in seen["actors"] if a["state"] == "ALIVE"}
        assert trial_name in alive
        assert alive[trial_name]["class_name"] == "OrcaTrial"
        # the gauges hold the Parquet values: the last refine row, and the OTDD of the last align row
        trial_rows = rows[rows["trial_id"] == trial_id]
        refine = trial_rows[trial_rows["phase"] == "refine"].sort_values("epoch").iloc[-1]
        align = trial_rows[trial_rows["phase"] == "align"].sort_values("epoch").iloc[-1]
        gauges = seen["gauges"]
        assert gauges["orca_trial_phase"] == PHASE_CODES["refine"]
        assert gauges["orca_trial_epoch"] == refine["epoch"]
        assert gauges["orca_trial_otdd"] == align["otdd"]
        for column in ("train_loss", "val_score", "test_score"):
            assert math.isfinite(refine[column])
            assert gauges[GAUGE_COLUMNS[column][0]] == refine[column]
