#!/usr/bin/env bash
# A cluster on one machine, tested end to end: Ray's fake multi-node provider (RAY_FAKE_CLUSTER=1) runs
# cluster/local-test/cluster.yaml (a head with no CPU/GPU, GPU workers launched on demand, min 0, max 3, one
# logical GPU each); a small embedder_epochs sweep with --gpus-per-trial 0.5 runs on it, one worker node is
# killed mid-trial, and check.py verifies that
#   - the autoscaler launched as many workers as the trials' demand needs (and no more than max),
#   - two trials shared each logical GPU,
#   - the killed node's trials resumed from their checkpoints on another node, every Parquet row exactly once,
#   - the cluster scaled back down to the head when idle,
#   - a sweep with a local --storage path (not declared --storage-shared) is refused before it starts,
# then stops exactly the processes this run started and prints one summary line (the last line). Exit 0 only
# if all of that held.
#
#   bash cluster/local-test/run.sh            # from anywhere; PYTHON=/path/to/python to pick the interpreter
#   KEEP=1 bash cluster/local-test/run.sh     # keep the work directory (logs, Parquet) afterwards
#
# Isolation from any other Ray on the machine: a private RAY_TMPDIR (so `ray.init()` elsewhere never finds
# this cluster, and this run never finds theirs), free ports instead of Ray's defaults (6379, 10001, 8265,
# 52365), private result/cache directories, token authentication with a token of its own, and no `ray stop`:
# teardown signals only the processes that carry this run's marker (ORCA_LOCAL_TEST_RUN) in their environment.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
if [[ -z "${PYTHON:-}" ]]; then
    PYTHON=$REPO/.venv/bin/python
    [[ -x "$PYTHON" ]] || PYTHON=$(command -v python3)
fi
# Become a child subreaper first (then exec bash again): Ray's daemons, orphaned by `ray start`, are reaped
# here, so `times` at the end counts the CPU time of the whole cluster.
if [[ -z "${_ORCA_LT_REAPER:-}" ]]; then
    export _ORCA_LT_REAPER=1 PYTHON
    exec "$PYTHON" -c 'import ctypes, os, sys
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
os.execv("/bin/bash", ["bash", *sys.argv[1:]])' "${BASH_SOURCE[0]}" "$@"
fi
RAY="$(dirname "$PYTHON")/ray"
if ! "$PYTHON" -c 'import ray, orca_ray' 2>/dev/null || [[ ! -x "$RAY" ]]; then
    echo "run.sh: $PYTHON cannot import ray and orca_ray: set PYTHON to the project's venv python" >&2
    exit 2
fi
T0=$(date +%s)

# The sweep: tiny trials (a small bundled task, 3 refine epochs) so the whole run fits a 2-core machine.
TASKS=${LT_TASKS:-basicmotions}
SEEDS=${LT_SEEDS:-0 1}
EMBEDDER_EPOCHS=${LT_EMBEDDER_EPOCHS:-0 1}
REFINE_EPOCHS=${LT_REFINE_EPOCHS:-3}
GPUS_PER_TRIAL=0.5
SWEEP_TIMEOUT=${LT_SWEEP_TIMEOUT:-1200}   # seconds; generous for a loaded machine, but bounded
IDLE_TIMEOUT=${LT_IDLE_TIMEOUT:-240}

WORK=$(mktemp -d /tmp/orca-lt.XXXXXX)   # short: Ray's unix socket paths live below it
RUN_ID=$(basename "$WORK")-$$
STATE=$WORK/state.json
log() { printf '[%4ds] %s\n' $(($(date +%s) - T0)) "$*"; }
check() { "$PYTHON" "$HERE/check.py" "$@" --run-id "$RUN_ID" --state "$STATE"; }

SUMMARY=""
finish() {
    local rc=$1
    FINISHED=1
    log "tearing down (only this run's processes)"
    check teardown || rc=1
    local wall=$(($(date +%s) - T0)) cpu
    times > "$WORK/times"   # in this shell, not a subshell: its children's (and adopted orphans') CPU time
    cpu=$(tail -1 "$WORK/times" | awk '{split($1, u, /[ms]/); split($2, s, /[ms]/);
        printf "%.0f", u[1] * 60 + u[2] + s[1] * 60 + s[2]}')
    if [[ "${KEEP:-0}" == 1 || $rc -ne 0 ]]; then log "work directory kept: $WORK"; else rm -rf "$WORK"; fi
    [[ -n "$SUMMARY" ]] || SUMMARY="local cluster test: FAILED before the checks (see above)"
    echo "$SUMMARY; wall ${wall} s, cpu ${cpu} s; exit $rc"
    exit "$rc"
}
trap 'finish 1' INT TERM
trap '[[ -n "${FINISHED:-}" ]] || finish 1' EXIT

read -r GCS_PORT CLIENT_PORT AGENT_PORT DASH_PORT < <("$PYTHON" - <<'EOF'
import socket
socks = [socket.socket() for _ in range(4)]
for s in socks:
    s.bind(("", 0))
print(*(s.getsockname()[1] for s in socks))
EOF
)
NODE_IP=$("$PYTHON" -c 'import ray._private.services as s; print(s.get_node_ip_address())')
sed "s/GCS_ADDRESS/$NODE_IP:$GCS_PORT/" "$HERE/cluster.yaml" > "$WORK/cluster.yaml"

# Everything below inherits this environment: the head, the autoscaler, the worker raylets it starts, their
# trial processes, the driver and check.py.
export ORCA_LOCAL_TEST_RUN=$RUN_ID
export RAY_TMPDIR=$WORK/tmp RAY_USAGE_STATS_ENABLED=0
export RAY_AUTH_MODE=token RAY_AUTH_TOKEN
RAY_AUTH_TOKEN=$("$PYTHON" -c 'import secrets; print(secrets.token_hex(32))')
export RAY_FAKE_CLUSTER=1 AUTOSCALER_UPDATE_INTERVAL_S=2
export HF_HUB_OFFLINE=1 ORCA_RAY_CACHE=$WORK/cache PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}
export ORCA_RAY_LOGICAL_GPUS=1   # the workers' GPUs are logical: trials train on CPU (see README)
mkdir -p "$RAY_TMPDIR"

log "starting the head ($NODE_IP:$GCS_PORT, RAY_TMPDIR=$RAY_TMPDIR)"
if ! timeout 300 "$RAY" start --head --port="$GCS_PORT" --ray-client-server-port="$CLIENT_PORT" \
    --dashboard-agent-listen-port="$AGENT_PORT" --dashboard-port="$DASH_PORT" --include-dashboard=false \
    --num-cpus=0 --num-gpus=0 --disable-usage-stats --autoscaling-config="$WORK/cluster.yaml" \
    > "$WORK/ray-start.log" 2>&1; then
    tail -20 "$WORK/ray-start.log"
    finish 1
fi
export RAY_ADDRESS=$NODE_IP:$GCS_PORT

log "a local --storage path without --storage-shared must be refused here (trials run on other nodes)"
(cd "$WORK" && exec timeout 300 "$PYTHON" "$REPO/sweeps/embedder_epochs.py" --address auto \
    --gpus-per-trial "$GPUS_PER_TRIAL" --tasks basicmotions --seeds 0 --embedder-epochs 0 --refine-epochs 1 \
    --storage "$WORK/unshared" --name refused --no-analysis > "$WORK/refused.log" 2>&1)
REFUSED_RC=$?
tail -1 "$WORK/refused.log"
STORAGE_REFUSED=no
if [[ $REFUSED_RC -ne 0 ]] && tail -1 "$WORK/refused.log" | grep -q -- "--storage-shared" \
    && [[ ! -e "$WORK/unshared/refused" ]]; then
    STORAGE_REFUSED=yes
fi

log "sweep: tasks $TASKS, seeds $SEEDS, embedder epochs $EMBEDDER_EPOCHS, $REFINE_EPOCHS refine epochs," \
    "$GPUS_PER_TRIAL GPU per trial"
# shellcheck disable=SC2086
(cd "$WORK" && exec timeout "$SWEEP_TIMEOUT" "$PYTHON" "$REPO/sweeps/embedder_epochs.py" --address auto \
    --gpus-per-trial "$GPUS_PER_TRIAL" --tasks $TASKS --seeds $SEEDS --embedder-epochs $EMBEDDER_EPOCHS \
    --refine-epochs "$REFINE_EPOCHS" --storage "$WORK/storage" --storage-shared --name local-test \
    --no-analysis > "$WORK/sweep.log" 2>&1) &
SWEEP_PID=$!
check watch --address "$RAY_ADDRESS" --results "$WORK/storage/local-test/parquet" \
    --done-file "$WORK/sweep.done" --refine-epochs "$REFINE_EPOCHS" --timeout $((SWEEP_TIMEOUT + 60)) \
    > >(grep --line-buffered '^  \[watch') 2> "$WORK/watch.err" &   # its own lines, not Ray's notices
WATCH_PID=$!
wait "$SWEEP_PID"
SWEEP_RC=$?
touch "$WORK/sweep.done"
wait "$WATCH_PID"
WATCH_RC=$?
if [[ $WATCH_RC -ne 0 ]]; then tail -20 "$WORK/watch.err"; fi
log "sweep exited with $SWEEP_RC"
grep "^sweep '" "$WORK/sweep.log"
if [[ $SWEEP_RC -ne 0 ]]; then tail -40 "$WORK/sweep.log"; fi

log "waiting for the autoscaler to remove the idle workers"
check scale-down --address "$RAY_ADDRESS" --timeout "$IDLE_TIMEOUT"
IDLE_RC=$?

# shellcheck disable=SC2086
SUMMARY=$(check verify --results "$WORK/storage/local-test/parquet" --tasks $TASKS --seeds $SEEDS \
    --embedder-epochs $EMBEDDER_EPOCHS --refine-epochs "$REFINE_EPOCHS" --gpus-per-trial "$GPUS_PER_TRIAL" \
    --gpus-per-node 1 --max-workers 3 --storage-refused "$STORAGE_REFUSED")
VERIFY_RC=$?
echo "$SUMMARY" | head -n -1   # details and failures; the summary itself is printed last
SUMMARY=$(echo "$SUMMARY" | tail -1)
RC=0
for rc in $SWEEP_RC $WATCH_RC $IDLE_RC $VERIFY_RC; do [[ $rc -eq 0 ]] || RC=1; done
finish $RC
