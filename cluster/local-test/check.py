"""The checks of cluster/local-test/run.sh: a sweep on Ray's fake multi-node cluster, watched from outside.

    check.py watch      while the sweep runs: record the nodes the autoscaler launches and where Tune places
                        the trials' GPU bundles, kill one worker node mid-trial (its raylet and its trial
                        processes, as a machine dies), snapshot the Parquet rows at that moment
    check.py scale-down after the sweep: wait until the autoscaler has removed every worker node
    check.py verify     read the Parquet, compare with the grid and the snapshot, print the summary line
    check.py teardown   stop every process of this cluster (found by the run's marker in its environment)

State goes from one step to the next in a JSON file (--state). Every process of the cluster inherits the
environment variable ORCA_LOCAL_TEST_RUN=<run id> from run.sh; this is how `teardown` and the node kill find
their processes without touching any other Ray on the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

MARKER = "ORCA_LOCAL_TEST_RUN"
NODE_ID_ENV = "RAY_OVERRIDE_NODE_ID_FOR_TESTING"  # the fake provider fixes each raylet's node id with it


# ---- processes of this run -------------------------------------------------------------------------------
def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    return dict(kv.split("=", 1) for kv in raw.decode(errors="replace").split("\0") if "=" in kv)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def run_processes(run_id: str) -> list[int]:
    """PIDs of live processes carrying this run's marker (never this process)."""
    me = os.getpid()
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != me and _environ(int(entry)).get(MARKER) == run_id:
            pids.append(int(entry))
    return pids


def node_processes(run_id: str, node_id: str) -> list[int]:
    """This run's processes that belong to one fake node: its raylet and the workers it started."""
    out = []
    for pid in run_processes(run_id):
        env, cmd = _environ(pid), _cmdline(pid)
        if env.get(NODE_ID_ENV) == node_id or f"--node_id={node_id}" in cmd or f"--node-id={node_id}" in cmd:
            out.append(pid)
    return out


def raylets(run_id: str) -> list[int]:
    return [p for p in run_processes(run_id) if "/raylet/raylet " in _cmdline(p)]


def _kill(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


# ---- Ray and Parquet views -------------------------------------------------------------------------------
def connect(address: str) -> None:
    import ray

    ray.init(address=address, log_to_driver=False, logging_level="WARNING", include_dashboard=False)


def worker_nodes() -> dict[str, bool]:
    """node id -> alive, for every non-head node the cluster has ever had (GCS keeps dead nodes listed)."""
    import ray

    head = ray.get_runtime_context().get_node_id()  # this process runs on the head
    return {n["NodeID"]: bool(n["Alive"]) for n in ray.nodes() if n["NodeID"] != head}


def gpu_bundles_per_node() -> dict[str, int]:
    """node id -> placement-group bundles holding a GPU fraction placed there now (one per running trial)."""
    from ray.util import placement_group_table

    count: dict[str, int] = {}
    for pg in placement_group_table().values():
        if pg.get("state") != "CREATED":
            continue
        for idx, bundle in pg["bundles"].items():
            if bundle.get("GPU", 0) > 0:
                node = pg["bundles_to_node_id"].get(idx)
                if node:
                    count[node] = count.get(node, 0) + 1
    return count


def read_rows(results: str) -> list[dict]:
    """Every row of every part file under the sweep's Parquet root (temporary '.…tmp' files skipped)."""
    import pyarrow.parquet as pq

    rows = []
    for path in sorted(Path(results).glob("sweep=*/*.parquet")):
        rows += pq.read_table(path).to_pylist()
    return rows


# the baseline kinds a row's config_json names (orca_ray.baselines: LINEAR, RANDOM_BODY, BASELINE_KEY)
LINEAR, RANDOM_BODY = "linear model (raw inputs)", "random-init body"
TRIAL = "trial"  # a row of one of the sweep's own trials


def kind(r: dict) -> str:
    """The row's baseline kind, or TRIAL: a baseline shares task, seed and embedder epochs (0) with a trial."""
    try:
        return json.loads(r.get("config_json") or "{}").get("baseline") or TRIAL
    except ValueError:
        return TRIAL


def row_key(r: dict) -> tuple:
    return (r["task"], int(r["seed"]), int(r["embedder_epochs"]), kind(r), r["phase"], int(r["epoch"]))


def trial_key(r: dict) -> tuple:
    return (r["task"], int(r["seed"]), int(r["embedder_epochs"]), kind(r))


def checkpointed_keys(rows: list[dict]) -> set[tuple]:
    """Rows of one trial that its last checkpoint covers: the trainable checkpoints with the last align
    epoch and with every refine epoch, so a restored trial must never report these again."""
    order = sorted(rows, key=lambda r: (r["phase"] != "align", r["epoch"]))
    last = -1
    for i, r in enumerate(order):
        if r["phase"] == "refine" or r["epoch"] == r["embedder_epochs"]:
            last = i
    return {row_key(r) for r in order[: last + 1]}


def _stamp(r: dict) -> list:
    """What identifies one report of a row: when and where (a re-reported epoch changes both)."""
    return [r["reported_at"].isoformat(), r.get("node_id")]


def _before(r: dict, when: str) -> bool:
    return r["reported_at"] < datetime.fromisoformat(when)


# ---- steps -----------------------------------------------------------------------------------------------
def watch(a) -> int:
    """Poll the cluster and the Parquet until the sweep is done; kill one worker node mid-trial."""
    connect(a.address)
    state = {
        "launched": [],
        "peak_workers_before_kill": 0,
        "gpu_bundles_max": {},
        "killed": None,
    }
    t0 = time.time()
    deadline = t0 + a.timeout
    alive_before: set[str] = set()
    while not Path(a.done_file).exists():
        if time.time() > deadline:
            print(f"check: the sweep did not finish within {a.timeout} s", file=sys.stderr)
            _save(a.state, state)
            return 1
        nodes = worker_nodes()
        for n, ok in nodes.items():
            if n not in state["launched"]:
                _say(t0, f"worker node {short(n)} up ({sum(nodes.values())} alive)")
            elif not ok and n in alive_before:
                _say(t0, f"worker node {short(n)} gone")
        state["launched"] = sorted(set(state["launched"]) | set(nodes))
        alive = [n for n, ok in nodes.items() if ok]
        alive_before = set(alive)
        if state["killed"] is None:
            state["peak_workers_before_kill"] = max(state["peak_workers_before_kill"], len(alive))
        for node, k in gpu_bundles_per_node().items():
            state["gpu_bundles_max"][node] = max(state["gpu_bundles_max"].get(node, 0), k)
        if state["killed"] is None:
            victim = _pick_victim(read_rows(a.results), alive, a.refine_epochs, a.kill_after)
            if victim is not None:
                state["killed"] = k = _kill_node(a, victim)
                _say(
                    t0,
                    f"killed worker node {short(victim)} (SIGKILL to its raylet and trial processes, pids "
                    f"{k['pids']}) while it ran {len(k['trials'])} trial(s), checkpointed rows "
                    f"{len(k['checkpointed_rows'])}",
                )
        time.sleep(a.poll)
    nodes = worker_nodes()
    state["launched"] = sorted(set(state["launched"]) | set(nodes))
    _save(a.state, state)
    return 0


def short(node_id: str | None) -> str:
    """The fake provider's node ids differ only in their last digits (fff…00001, fff…00002, ...); a row
    without one was written on the driver (a linear baseline)."""
    return "…" + node_id[-5:] if node_id else "driver"


def _say(t0: float, msg: str) -> None:
    print(f"  [watch {time.time() - t0:5.0f}s] {msg}", flush=True)


def _pick_victim(rows: list[dict], alive: list[str], refine_epochs: int, kill_after: int) -> str | None:
    """A live worker node all of whose running trials have checkpointed >= kill_after refine epochs and
    still have epochs to go (the kill then lands mid-trial, with a checkpoint to resume from)."""
    by_trial: dict[tuple, list[dict]] = {}
    for r in rows:
        by_trial.setdefault(trial_key(r), []).append(r)
    running: dict[str, list[int]] = {}
    for trial_rows in by_trial.values():
        last = max(trial_rows, key=lambda r: r["reported_at"])
        refine = [r["epoch"] for r in trial_rows if r["phase"] == "refine"]
        if len(refine) < refine_epochs and last.get("node_id") in alive:
            running.setdefault(last["node_id"], []).append(len(refine))
    for node, done in sorted(running.items()):
        if len(done) >= 2 and min(done) >= kill_after:
            return node
    # last chance before a trial finishes: a node where one trial has a refine checkpoint will do (a
    # co-tenant without one restarts from scratch, which the checks allow for rows no checkpoint covers)
    for node, done in sorted(running.items()):
        if max(done) >= max(kill_after, refine_epochs - 1):
            return node
    return None


def _kill_node(a, node_id: str) -> dict:
    rows = read_rows(a.results)
    pids = node_processes(a.run_id, node_id)
    _kill(pids, signal.SIGKILL)  # no goodbye: as a machine that loses power
    at = datetime.now(UTC)
    refine = {}
    for r in rows:
        refine.setdefault(trial_key(r), set()).update([r["epoch"]] if r["phase"] == "refine" else [])
    # the trials running there: last reported from that node, not finished
    last = {}
    for r in sorted(rows, key=lambda r: r["reported_at"]):
        last[trial_key(r)] = r.get("node_id")
    trials = sorted(t for t, n in last.items() if n == node_id and len(refine[t]) < a.refine_epochs)
    snapshot = {}
    for t in trials:
        trial_rows = [r for r in rows if trial_key(r) == t]
        covered = checkpointed_keys(trial_rows)
        snapshot.update({json.dumps(row_key(r)): _stamp(r) for r in trial_rows if row_key(r) in covered})
    return {
        "node": node_id,
        "at": at.isoformat(),
        "pids": pids,
        "trials": [list(t) for t in trials],
        "checkpointed_rows": snapshot,
    }


def scale_down(a) -> int:
    """Wait until no worker node is alive (GCS) and no worker raylet process of this run is left."""
    connect(a.address)
    state = _load(a.state)
    t0 = time.time()
    while True:
        alive = [n for n, ok in worker_nodes().items() if ok]
        local = len(raylets(a.run_id))  # the head's raylet is the one that stays
        if not alive and local == 1:
            state["scaled_down_after_s"] = round(time.time() - t0, 1)
            _save(a.state, state)
            return 0
        if time.time() - t0 > a.timeout:
            state["scaled_down_after_s"] = None
            state["left_running"] = {"alive_worker_nodes": len(alive), "raylet_processes": local}
            _save(a.state, state)
            print(f"check: {len(alive)} worker node(s) still up after {a.timeout} s idle", file=sys.stderr)
            return 1
        time.sleep(a.poll)


def verify(a) -> int:
    state = _load(a.state)
    rows = read_rows(a.results)
    # GPU trials: the sweep's, and (grid sweeps run them by default) a random-init-body baseline per task and
    # seed; a linear baseline per task and seed is one refine row fitted on the driver
    expected_trials = [(t, s, e, TRIAL) for t in a.tasks for s in a.seeds for e in a.embedder_epochs]
    if not a.no_baselines:
        expected_trials += [(t, s, 0, RANDOM_BODY) for t in a.tasks for s in a.seeds]
    expected = {
        (t, s, e, k, phase, epoch)
        for t, s, e, k in expected_trials
        for phase, epochs in (
            ("align", range(e + 1) if k == TRIAL else ()),
            ("refine", range(1, a.refine_epochs + 1)),
        )
        for epoch in epochs
    }
    if not a.no_baselines:
        expected |= {(t, s, 0, LINEAR, "refine", 1) for t in a.tasks for s in a.seeds}
    seen: dict[tuple, int] = {}
    for r in rows:
        seen[row_key(r)] = seen.get(row_key(r), 0) + 1
    lost = sorted(expected - set(seen))
    extra = sorted(set(seen) - expected)
    duplicated = sum(n - 1 for n in seen.values())
    failures = []
    if lost:
        failures.append(f"{len(lost)} row(s) missing, e.g. {lost[0]}")
    if extra:
        failures.append(f"{len(extra)} unexpected row(s), e.g. {extra[0]}")
    if duplicated:
        failures.append(f"{duplicated} duplicated row(s)")
    if any(not r.get("node_id") or not r.get("node") for r in rows if kind(r) != LINEAR):
        failures.append("rows without node / node_id")

    # the autoscaler: no worker at the start (min 0), as many as the demand needs, never above max
    launched = state.get("launched", [])
    demand = math.ceil(len(expected_trials) * a.gpus_per_trial / a.gpus_per_node)
    if state.get("peak_workers_before_kill", 0) != demand:
        failures.append(
            f"{state.get('peak_workers_before_kill')} workers up before the kill; demand needs {demand}"
        )
    if not demand <= len(launched) <= a.max_workers:
        failures.append(f"{len(launched)} worker nodes launched (demand {demand}, max {a.max_workers})")

    # fractional GPUs: every node that ran trials held two GPU bundles at once on its one logical GPU
    per_gpu = {n: k / a.gpus_per_node for n, k in state.get("gpu_bundles_max", {}).items()}
    trial_nodes = {r["node_id"] for r in rows}
    shared = sorted(per_gpu.get(n, 0) for n in trial_nodes)
    if not shared or max(shared) != 1 / a.gpus_per_trial:
        failures.append(f"trials per GPU {shared}, expected {1 / a.gpus_per_trial:g}")
    pre_kill_nodes = {r["node_id"] for r in rows if state.get("killed") and _before(r, state["killed"]["at"])}
    if any(per_gpu.get(n, 0) != 1 / a.gpus_per_trial for n in pre_kill_nodes):
        failures.append(f"before the kill not every worker ran {1 / a.gpus_per_trial:g} trials on its GPU")

    # the node loss: its trials went on elsewhere from their checkpoints, nothing checkpointed ran again
    killed = state.get("killed")
    rerun = 0
    if not killed:
        failures.append("no worker node was killed mid-trial")
    else:
        now = {json.dumps(row_key(r)): _stamp(r) for r in rows}
        rerun = sum(1 for k, v in killed["checkpointed_rows"].items() if now.get(k) != v)
        if rerun:
            failures.append(f"{rerun} checkpointed row(s) reported again after the kill (not resumed)")
        for t in map(tuple, killed["trials"]):
            mine = sorted((r for r in rows if trial_key(r) == t), key=lambda r: (r["phase"], r["epoch"]))
            after = [r for r in mine if not _before(r, killed["at"])]
            if not after or any(r["node_id"] == killed["node"] for r in after):
                failures.append(f"trial {t} did not continue on another node after the kill")
            path = " ".join(f"{r['phase'][0]}{r['epoch']}@{short(r['node_id'])}" for r in mine)
            print(f"  killed node's trial {t}: {path}")
        duplicated += rerun

    if a.storage_refused != "yes":
        failures.append("a sweep with an unshared local --storage was not refused on this multi-node cluster")
    if state.get("scaled_down_after_s") is None:
        failures.append(f"the cluster did not scale down when idle ({state.get('left_running')})")

    trials_per_gpu = f"{max(shared):g}" if shared else "?"
    for f in failures:
        print(f"  FAILED: {f}")
    print(
        f"local cluster test: {'PASSED' if not failures else 'FAILED'}: nodes launched {len(launched)} "
        f"(peak {state.get('peak_workers_before_kill')} for {len(expected_trials)} trials, max "
        f"{a.max_workers}), trials per GPU {trials_per_gpu}, worker killed mid-trial -> "
        f"{len(killed['trials']) if killed else 0} trial(s) resumed elsewhere, scaled down in "
        f"{state.get('scaled_down_after_s')} s, unshared local storage refused {a.storage_refused}, "
        f"rows {len(rows)}/{len(expected)}, lost {len(lost)}, duplicated {duplicated}"
    )
    return 0 if not failures else 1


def teardown(a) -> int:
    """SIGTERM every process of this run, then SIGKILL what is left after a grace period."""
    pids = run_processes(a.run_id)
    _kill(pids, signal.SIGTERM)
    deadline = time.time() + a.grace
    while time.time() < deadline and run_processes(a.run_id):
        time.sleep(0.5)
    left = run_processes(a.run_id)
    _kill(left, signal.SIGKILL)
    time.sleep(0.5)
    still = run_processes(a.run_id)
    print(
        f"teardown: {len(pids)} process(es) of this run stopped ({len(left)} by SIGKILL), {len(still)} left"
    )
    return 0 if not still else 1


def _save(path: str, state: dict) -> None:
    Path(path).write_text(json.dumps(state, indent=1))


def _load(path: str) -> dict:
    return json.loads(Path(path).read_text()) if Path(path).exists() else {}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="step", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--run-id", default=os.environ.get("ORCA_LOCAL_TEST_ID"))
    common.add_argument("--state", help="JSON file passed between the steps")
    common.add_argument("--address", help="the cluster's GCS address")
    common.add_argument("--results", help="the sweep's Parquet root")
    common.add_argument("--timeout", type=float, default=900)
    common.add_argument("--poll", type=float, default=2.0)
    w = sub.add_parser("watch", parents=[common])
    w.add_argument("--done-file", required=True, help="run.sh creates it when the sweep has exited")
    w.add_argument("--refine-epochs", type=int, required=True)
    w.add_argument("--kill-after", type=int, default=1, help="refine epochs checkpointed before the kill")
    sub.add_parser("scale-down", parents=[common])
    v = sub.add_parser("verify", parents=[common])
    v.add_argument("--tasks", nargs="+", required=True)
    v.add_argument("--seeds", nargs="+", type=int, required=True)
    v.add_argument("--embedder-epochs", nargs="+", type=int, required=True)
    v.add_argument("--refine-epochs", type=int, required=True)
    v.add_argument("--gpus-per-trial", type=float, required=True)
    v.add_argument("--gpus-per-node", type=float, default=1.0)
    v.add_argument("--max-workers", type=int, default=3)
    v.add_argument("--storage-refused", choices=("yes", "no"), required=True, help="run.sh's result")
    v.add_argument("--no-baselines", action="store_true", help="the sweep ran with --no-baselines")
    t = sub.add_parser("teardown", parents=[common])
    t.add_argument("--grace", type=float, default=5)
    a = p.parse_args(argv)
    if not a.run_id:
        p.error("--run-id (or ORCA_LOCAL_TEST_ID) is required")
    return {"watch": watch, "scale-down": scale_down, "verify": verify, "teardown": teardown}[a.step](a)


if __name__ == "__main__":
    raise SystemExit(main())
