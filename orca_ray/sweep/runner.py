"""Run (or resume) a sweep on Ray Tune: `run_sweep(spec)` builds the Tuner, runs it and says where
everything is.

An interrupted sweep of the same name under the same storage is resumed with Tuner.restore: finished trials
are not run again, unfinished ones continue from their last checkpoint, and the Parquet sink keeps every row
exactly once. Grid sweeps hand Tune one grid axis over whole trial configs (``{"trial": {...}}``); Optuna sweeps
a flat space holding every TrialConfig field, so both reach the trainable and the sink as one TrialConfig.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from dataclasses import MISSING, fields
from typing import NamedTuple

import ray
from ray import tune
from ray.job_config import JobConfig

from ..baselines import BaselineCache, cache_finished_baselines, prepare_baselines
from ..config import TrialConfig
from ..io import CACHE_ENV, is_uri, join
from ..machine import deterministic_env
from ..recipes import hparams_for
from ..reporter import StudyReporter, use_classic_console
from ..results.sink import ParquetSink
from ..tracking import log_sweep_outputs, tracker_callbacks, where_lines
from ..untrusted import record_driver_state, record_staged_driver_state, restore_filesystem, secure_folder
from .graceful import FinishSavesOnStop
from .plan import FIGURES_SUBDIR, SweepSpec, expand_grid

# environment a trial needs on every node (set on the driver → passed through the runtime env)
PASS_THROUGH_ENV = ("HF_HUB_OFFLINE", "HF_HOME", "HF_ENDPOINT", CACHE_ENV, "TRANSFORMERS_OFFLINE")


def tune_space(spec: SweepSpec, extra_trials: Sequence[dict] = ()) -> dict:
    """The Tune param_space of a sweep.

    Grid: one Tune grid axis over the expanded trials (so unions of grids and task-dependent bodies are
    exact). Optuna: every TrialConfig default, overridden by the space's constants and distributions.

    Args:
        spec: the sweep.
        extra_trials: more grid cells (TrialConfig fields plus markers such as a baseline's kind).
    """
    if spec.search == "grid":
        cells = [c.to_dict() for c in expand_grid(spec.space)] + list(extra_trials)
        return {"trial": tune.grid_search(cells)}
    defaults = {f.name: f.default for f in fields(TrialConfig) if f.default is not MISSING}
    return {**defaults, **spec.space}


def _trial_dirname(trial) -> str:
    """Named from the config hash; the trial's index is appended because Optuna or num_samples > 1 can
    propose one config twice, and two trials must never share a checkpoint directory."""
    cfg = TrialConfig.from_tune(trial.config)
    return f"{cfg.short_name()}-{trial.trial_id.rsplit('_', 1)[-1]}"


class DriverStateRecorder(tune.Callback):
    """Records on the head the sha256 of the driver state Tune is about to upload (orca_ray.untrusted), so a
    later resume can refuse files this head did not write.

    Tune asks every callback for its state while it saves the experiment state into its local staging folder,
    right before uploading that folder: the recorder digests the folder then and returns no state itself.

    Args:
        experiment: the experiment folder in the sweep storage (`SweepSpec.experiment_path`).
    """

    def __init__(self, experiment: str):
        self.experiment = experiment
        self._staging: str | None = None

    def on_step_begin(self, iteration: int, trials: list, **info):
        if self._staging is None and trials:
            self._staging = trials[0].local_experiment_path

    def get_state(self) -> None:
        if self._staging:
            record_driver_state(self.experiment, source=self._staging, staging=self._staging)
        return None


class Connection(NamedTuple):
    """What `connect` did.

    Args:
        dashboard: the dashboard URL when this call started Ray and the dashboard runs, else None.
        local: this call started a new local Ray (so trials run on this machine only).
        session_dir: the Ray session folder of this driver on this node (trial logs live under it), or None.
    """

    dashboard: str | None
    local: bool
    session_dir: str | None = None


def connect(address: str | None, env: dict[str, str] | None = None, sweep: str | None = None) -> Connection:
    """Start or join Ray (once per driver), passing the trial environment through.

    Without an address this joins `$RAY_ADDRESS`, else starts a new local Ray: never a bare `ray.init()`,
    which joins whichever cluster `ray start` last started on this machine
    (`$RAY_TMPDIR/ray/ray_current_cluster`), someone else's included.

    Args:
        address: Ray cluster address ("auto", "host:port", "ray://..."); None: `$RAY_ADDRESS`, else a
            new local Ray.
        env: more variables for every trial process, set before it starts (so before it imports torch:
            deterministic mode's dispatch levels); they win over the node's own.
        sweep: the sweep's name: the dashboard's Jobs list shows it in its Name column (job metadata
            `job_name`; a `ray job submit --metadata-json` of the same key wins) and `sweep` holds it too.
    """
    from ..trainable import LOGICAL_GPUS_ENV

    # every-epoch checkpoints are the point here: silence Tune's "snapshotting too often" advice
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if ray.is_initialized():
        # this driver's own session, not `session_latest`, which any other Ray started here repoints
        session = ray.get_runtime_context().get_session_name()
        return Connection(None, False, os.path.join(os.environ.get("RAY_TMPDIR", "/tmp"), "ray", session))
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    env_vars = {k: os.environ[k] for k in (*PASS_THROUGH_ENV, LOGICAL_GPUS_ENV) if k in os.environ}
    env_vars.update(env or {})
    # trial output (per-epoch lines, Ray's checkpoint messages) stays in each trial's log files
    # (RunConfig(log_to_file=True)); the console is the StudyReporter's
    context = ray.init(
        address=address,
        runtime_env={"env_vars": env_vars} if env_vars else None,
        job_config=JobConfig(metadata=job_metadata(sweep)) if sweep else None,
        log_to_driver=False,
    )
    info = getattr(context, "address_info", None) or {}
    return Connection(
        getattr(context, "dashboard_url", None) or None, address == "local", info.get("session_dir")
    )


def job_metadata(sweep: str) -> dict[str, str]:
    """The Ray job metadata that names a sweep: the dashboard's Jobs list reads `job_name`.

    Args:
        sweep: the sweep's name.
    """
    return {"job_name": sweep, "sweep": sweep}


def check_storage_reachable(spec: SweepSpec, nodes: list[dict], driver_node_id: str) -> None:
    """Stop before any trial runs when trials would write checkpoints to a path only this machine has.

    Ray Tune needs storage that every node reaches (S3, GCS, NFS) once trials run on other nodes than the
    driver's: on a cluster of several nodes, or one whose driver node cannot host a trial (a head without
    CPU/GPU, whose workers the autoscaler has yet to start).

    Args:
        spec: the sweep; a `storage` URI (`s3://`, `gs://`, ...) or `storage_shared` passes.
        nodes: `ray.nodes()` of the cluster the driver joined.
        driver_node_id: the driver's node (`ray.get_runtime_context().get_node_id()`).

    Raises:
        SystemExit: one line naming the fix.
    """
    if is_uri(spec.storage) or spec.storage_shared:
        return
    alive = [n for n in nodes if n.get("Alive")]
    need = {"CPU": spec.cpus_per_trial, "GPU": spec.gpus_per_trial}
    here = next((n["Resources"] for n in alive if n["NodeID"] == driver_node_id), {})
    if len(alive) > 1 or not all(here.get(k, 0) >= v for k, v in need.items() if v > 0):
        why = f"{len(alive)} nodes" if len(alive) > 1 else "this node runs no trials, others will"
        raise SystemExit(
            f"--storage {spec.storage} is a path on this machine, but trials run on other nodes of this Ray "
            f"cluster ({why}): use s3://... or gs://..., or a directory every node mounts (NFS) and add "
            "--storage-shared"
        )


def node_shapes(nodes: list[dict]) -> list[dict]:
    """The resources of every node the cluster has or may start: the alive nodes, and each node type of the
    autoscaler's config (when the cluster has one) that may start at least one node.

    Args:
        nodes: `ray.nodes()`.
    """
    shapes = [dict(n.get("Resources", {})) for n in nodes if n.get("Alive")]
    try:
        from ray._private.state import state

        config = state.get_cluster_config()
    except Exception:  # no GCS access or no autoscaler: the alive nodes are all there is
        config = None
    for group in getattr(config, "node_group_configs", None) or ():
        if getattr(group, "max_count", 1) != 0:
            shapes.append(dict(group.resources))
    return shapes


def check_resources_providable(spec: SweepSpec, shapes: list[dict]) -> None:
    """Stop before any trial runs when no node of the cluster (or of the autoscaler's node types) can ever
    hold one trial: Tune would wait for it forever.

    Args:
        spec: the sweep (`cpus_per_trial`, `gpus_per_trial`).
        shapes: `node_shapes(ray.nodes())`.

    Raises:
        SystemExit: exit code 2, after one line on stderr naming the flags and the biggest node.
    """
    need = {"CPU": spec.cpus_per_trial, "GPU": spec.gpus_per_trial}
    if any(all(s.get(k, 0) >= v for k, v in need.items() if v > 0) for s in shapes):
        return
    biggest = max(shapes, key=lambda s: (s.get("GPU", 0), s.get("CPU", 0)), default={})
    print(
        f"error: a trial needs {need['CPU']:g} CPU and {need['GPU']:g} GPU (--cpus-per-trial, --gpus-per-trial), "
        f"but no node of this Ray cluster can ever provide that (the biggest has {biggest.get('CPU', 0):g} CPU, "
        f"{biggest.get('GPU', 0):g} GPU); lower the flags or add such nodes",
        file=sys.stderr,
    )
    raise SystemExit(2)


def build_tuner(
    spec: SweepSpec,
    tasks: dict | None = None,
    *,
    extra_trials: Sequence[dict] = (),
    sink: ParquetSink | None = None,
    reporter: StudyReporter | None = None,
) -> tuple[tune.Tuner, bool]:
    """A new Tuner for `spec`, or the restored one when an experiment of this name exists in storage.

    Args:
        spec: the sweep.
        tasks: preloaded tasks by `trainable.task_key`, shared with the trials through the object store.
        extra_trials: grid cells beyond the space's (the baselines still to run).
        sink: the sweep's Parquet sink (default: a new one on `spec.results_root`).
        reporter: the console reporter (default: Tune's own).

    Returns:
        (tuner, restored): restored is True when the Tuner continues a saved experiment.
    """
    from ..trainable import align_then_refine, trial_actor_class

    # an actor class whose repr is the trial's name (the dashboard's Actors page)
    trainable = trial_actor_class(
        tune.with_resources(
            tune.with_parameters(align_then_refine, tasks=tasks or {}),
            {"cpu": spec.cpus_per_trial, "gpu": spec.gpus_per_trial},
        )
    )
    if tune.Tuner.can_restore(spec.experiment_path):
        # Tune unpickles what it restores: it reads the driver state from the head's verified private copy,
        # never the storage's (or, with --trust-storage and no copy, the storage's, copied once)
        fs, path = restore_filesystem(spec.experiment_path, trust=spec.trust_storage)
        if spec.trust_storage:
            print(f"warning: --trust-storage: restoring {spec.experiment_path} unchecked", flush=True)
        print(
            f"resuming sweep {spec.name!r} from {spec.experiment_path}: finished trials are kept, unfinished "
            "ones continue from their last checkpoint",
            flush=True,
        )
        # the trials (and their configs) come from the saved experiment; the trainable is re-specified so
        # preloaded tasks go through the object store again
        restored = tune.Tuner.restore(
            path, trainable, resume_unfinished=True, resume_errored=True, storage_filesystem=fs
        )
        return restored, True
    search_alg, scheduler = None, None
    if spec.search == "optuna":
        from ray.tune.search import ConcurrencyLimiter
        from ray.tune.search.optuna import OptunaSearch

        search_alg = OptunaSearch(metric=spec.metric, mode=spec.mode, seed=spec.seed)
        if spec.max_concurrent:
            search_alg = ConcurrencyLimiter(search_alg, max_concurrent=spec.max_concurrent)
    if spec.asha:
        from ray.tune.schedulers import ASHAScheduler

        scheduler = ASHAScheduler(
            time_attr="refine_epoch", metric="val_score", mode="min", grace_period=1, max_t=10_000
        )
    tuner = tune.Tuner(
        trainable,
        param_space=tune_space(spec, extra_trials),
        tune_config=tune.TuneConfig(
            # a search algorithm or scheduler carries its own metric; Tune refuses it twice
            metric=None if (search_alg or scheduler) else spec.metric,
            mode=None if (search_alg or scheduler) else spec.mode,
            search_alg=search_alg,
            scheduler=scheduler,
            num_samples=spec.num_samples,
            max_concurrent_trials=None if search_alg else spec.max_concurrent,
            # an actor per trial: Ray takes an actor's repr (the trial name on the dashboard's Actors page)
            # once, when it starts, and its log link then holds that trial's output only. A reused actor
            # would save the next trial's imports of torch/transformers (benchmarks/tune_overhead.py)
            reuse_actors=False,
            trial_name_creator=_trial_dirname,
            trial_dirname_creator=_trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=spec.name,
            storage_path=spec.storage if is_uri(spec.storage) else join(spec.storage),
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            # two, so a checkpoint cut short by a crash leaves the one before (trainable.load_trial_state)
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            callbacks=[
                sink or ParquetSink(spec.results_root, sweep=spec.name),
                DriverStateRecorder(spec.experiment_path),
                FinishSavesOnStop(),  # Ctrl+C waits for the checkpoints of reported epochs
                *([reporter.tracker] if reporter else []),
                *tracker_callbacks(spec),  # --log-to: MLflow, W&B, TensorBoard, Aim (orca_ray.tracking)
                *spec.extra_callbacks,
            ],
            progress_reporter=reporter,
            log_to_file=True,  # <trial dir>/stdout and stderr: what `tail -f` follows
            verbose=1,
        ),
    )
    record_driver_state(spec.experiment_path, only=["tuner.pkl"])  # written by the Tuner just now
    return tuner, False


def run_sweep(spec: SweepSpec, *, address: str | None = None, loaded: dict | None = None) -> tune.ResultGrid:
    """Run (or resume) the sweep, then print where the results, figures and dashboard are.

    Args:
        spec: the sweep.
        address: Ray cluster address (see `connect`).
        loaded: tasks already loaded on the driver (by preflight), by `trainable.task_key`.

    Returns:
        Tune's ResultGrid.
    """
    dashboard, local, session_dir = connect(
        address, deterministic_env() if _deterministic(spec) else None, sweep=spec.name
    )
    if session_dir and os.path.isdir(
        session_dir
    ):  # Tune stages driver state under it: others may not rename it
        secure_folder(session_dir)
    check_resources_providable(spec, node_shapes(ray.nodes()))  # else Tune waits for them forever
    if not local:
        check_storage_reachable(spec, ray.nodes(), ray.get_runtime_context().get_node_id())
    tasks = _preload(spec, loaded) if spec.preload_tasks else {}
    sink = ParquetSink(spec.results_root, sweep=spec.name)
    cache = None
    extra: list[dict] = []
    if spec.baselines and spec.search == "grid":
        configs = expand_grid(spec.space)
        cache = BaselineCache(configs[0].cache_dir)
        extra = prepare_baselines(configs, sink, tasks, cache)
    reporter = StudyReporter(nested=spec.search == "grid", name=spec.name, refine_epochs=_refine_epochs(spec))
    tuner, restored = build_tuner(spec, tasks, extra_trials=extra, sink=sink, reporter=reporter)
    if restored:
        _warn_unrunnable_cells(spec, tuner)
    print_where_to_look(spec, dashboard, session_dir)
    use_classic_console()
    t0 = time.time()
    try:
        grid = tuner.fit()
    finally:
        record_staged_driver_state(spec.experiment_path)
    if cache is not None:
        cache_finished_baselines(grid, sink, cache)
    errors = [r for r in grid if r.error is not None]
    print(
        f"\nsweep {spec.name!r}: {len(grid)} trials in {time.time() - t0:.0f} s, {len(errors)} failed",
        flush=True,
    )
    print(f"  Parquet results: {spec.results_root}")
    if spec.analysis and not is_uri(spec.results_root):
        from .. import analysis
        from ..tables import TABLE

        out = join(spec.experiment_path, FIGURES_SUBDIR)
        analysis.main([spec.results_root, "--sweep", spec.name, "--out", out])
        table = os.path.join(out, TABLE)
        if os.path.exists(table):  # the study's answer, with its baselines and noise, on the console too
            with open(table) as f:
                print("\n" + f.read(), flush=True)
        print(f"  figures:         {out}")
        for line in log_sweep_outputs(spec, out):
            print(line, flush=True)
    elif spec.analysis:
        print(
            f"  figures:         python -m orca_ray.analysis {spec.results_root} --out ./figures/{spec.name}"
        )
    if dashboard:
        print(f"  Ray dashboard:   {_url(dashboard)} (while Ray runs; token in ~/.ray/auth_token)")
    print("  resume:          run the same command again (same --name and --storage)")
    return grid


def _deterministic(spec: SweepSpec) -> bool:
    """Whether any trial of the sweep runs in deterministic mode (its variables then go to every trial
    process: Ray sets a job's runtime environment for all of them)."""
    if spec.search == "grid":
        return any(c.deterministic for c in expand_grid(spec.space))
    return bool(spec.space.get("deterministic")) if isinstance(spec.space, dict) else False


def _url(dashboard: str) -> str:
    return dashboard if is_uri(dashboard) else f"http://{dashboard}"


def _refine_epochs(spec: SweepSpec) -> int | None:
    """The sweep's fine-tuning epochs when every trial has the same number (for "epoch k/N")."""
    if spec.search != "grid":
        return None
    epochs = {c.refine_epochs or hparams_for(c.task).epochs for c in expand_grid(spec.space)}
    return epochs.pop() if len(epochs) == 1 else None


def print_where_to_look(spec: SweepSpec, dashboard: str | None, session_dir: str | None = None) -> None:
    """Before the first trial: where the live results, the dashboard and each trial's log are.

    Args:
        spec: the sweep.
        dashboard: the dashboard URL (`connect`), or None.
        session_dir: the Ray session folder on this node (`connect`); None: Ray's `session_latest` link.
    """
    session = session_dir or os.path.join(os.environ.get("RAY_TMPDIR", "/tmp"), "ray", "session_latest")
    print(f"\nsweep {spec.name!r}: while it runs, look here", flush=True)
    print(f"  live Parquet:    {spec.results_root} (one file per trial, rewritten every epoch)")
    if dashboard:
        print(f"  Ray dashboard:   {_url(dashboard)} (token in ~/.ray/auth_token)")
        print("                   (Jobs: this sweep by name; Actors: one row per trial, repr = its name)")
    print(
        f"  one trial's log: tail -f {session}/artifacts/*/{spec.name}/working_dirs/*-TRIAL/stdout\n"
        "                   (TRIAL: the first column of the table below; on a cluster, the node that runs it)",
        flush=True,
    )
    for line in where_lines(spec):
        print(line, flush=True)


def _warn_unrunnable_cells(spec: SweepSpec, tuner: tune.Tuner) -> None:
    """Tuner.restore keeps the trials it had: grid cells added since (more seeds, epochs, tasks) never run."""
    if spec.search != "grid":
        return
    try:
        had = {TrialConfig.from_tune(r.config).config_hash for r in tuner.get_results()}
    except Exception:  # nothing recorded yet: every cell is still to run
        return
    new = [c for c in expand_grid(spec.space) if c.config_hash not in had]
    if new:
        print(
            f"warning: {len(new)} trial(s) of this grid are not in the restored sweep {spec.name!r} and will not "
            f"run (e.g. {new[0].short_name()}); give them a new --name to run them",
            flush=True,
        )


def _preload(spec: SweepSpec, loaded: dict | None = None) -> dict:
    """Tasks loaded once on the driver and shared through Ray's object store (tune.with_parameters),
    keyed like trainable.task_key (the val split depends on the seed); those in `loaded` are not loaded again."""
    from ..trainable import load_trial_task, task_key

    tasks = {}
    for c in expand_grid(spec.space) if spec.search == "grid" else []:
        key = task_key(c)
        if key not in tasks and loaded and key in loaded:
            tasks[key] = loaded[key]
            print(f"loaded {tasks[key].describe()}", flush=True)
        elif key not in tasks:
            tasks[key] = load_trial_task(c)
            print(f"loaded {tasks[key].describe()}", flush=True)
    return tasks
