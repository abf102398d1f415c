"""One trial = one TrialConfig: align the embedder, then refine, reporting every epoch to Ray Tune.

The only module that calls `tune.report`. Every report is one Parquet row (see results.RESULT_SCHEMA):
phase "align" rows carry the OTDD after k embedder epochs (k = 0..embedder_epochs); phase "refine" rows
carry train loss, validation and test score after each fine-tuning epoch.

Fault tolerance: the trial checkpoints after alignment and after every refine epoch (trainable weights,
the aligned embedder, optimiser and schedule). A trial restarted by Tune (FailureConfig) or by
`Tuner.restore` resumes from `tune.get_checkpoint()` and never repeats a finished epoch; embedder snapshots
and proxy features are shared on disk between trials (align.EmbedderSnapshots, proxies.proxy_features).
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable

import torch

from .align import Aligner, AlignHParams, EmbedderSnapshots
from .bodies import load_body
from .config import TrialConfig
from .io import cache_root
from .lora import apply_lora, is_lora_parameter
from .machine import machine_fingerprint, set_deterministic
from .model import ORCAModel, apply_freeze, build_model, trainable_parameters
from .proxies import proxy_features, resolve_proxy
from .recipes import hparams_for, recipe_for
from .refine import RefineHParams, Refiner, pick_device
from .tasks import Task, load_task

CHECKPOINT_FILE = "trial_state.pt"
# Set to 1 on a cluster whose GPUs are logical only (Ray's fake multi-node provider, cluster/local-test):
# a trial given a GPU then trains on CPU instead of failing for want of CUDA.
LOGICAL_GPUS_ENV = "ORCA_RAY_LOGICAL_GPUS"
# report(row, checkpoint state or None): how a trial hands each epoch's row to Tune (or to a test)
Report = Callable[[dict, dict | None], None]
log = logging.getLogger(__name__)


def refine_hparams(cfg: TrialConfig, task: Task) -> RefineHParams:
    """The fine-tuning hyperparameters of a trial: the task's recipe with the trial's overrides.

    When only `refine_epochs` is overridden, the linear decay is shortened to end with training.

    Args:
        cfg: the trial.
        task: the loaded task (its name selects the recipe).
    """
    hp = hparams_for(task.name).with_overrides(
        epochs=cfg.refine_epochs,
        lr=cfg.lr,
        optimizer=cfg.optimizer,
        weight_decay=cfg.weight_decay,
        batch_size=cfg.batch_size,
        accum=cfg.accum,
        clip=cfg.clip,
        warmup_epochs=cfg.warmup_epochs,
        decay_epochs=cfg.decay_epochs,
    )
    if cfg.refine_epochs is not None and cfg.decay_epochs is None and hp.decay_epochs < hp.epochs:
        hp = hp.with_overrides(decay_epochs=hp.epochs)
    return hp


def task_key(cfg: TrialConfig) -> str:
    """Trials with equal keys load identical Task objects (same data, subsets and validation split).

    Args:
        cfg: the trial.
    """
    return "|".join(
        str(v)
        for v in (
            cfg.task,
            cfg.seed,
            cfg.val_fraction,
            cfg.max_train_samples,
            cfg.max_eval_samples,
            cfg.data_root,
            cfg.protocol,
        )
    )


def load_trial_task(cfg: TrialConfig) -> Task:
    """The trial's task, loaded with its seed, validation fraction, subsets and data root.

    Args:
        cfg: the trial.
    """
    return load_task(
        cfg.task,
        data_root=cfg.data_root,
        seed=cfg.seed,
        val_fraction=cfg.val_fraction,
        max_train_samples=cfg.max_train_samples,
        max_eval_samples=cfg.max_eval_samples,
        cache_dir=cfg.cache_dir,
        protocol=cfg.protocol,
    )


class TrialRun:
    """A trial outside Ray: the pieces and the epoch loop, with `report(row, state)` injected. The Tune
    trainable below wires `report` to tune.report + checkpoints; tests and benchmarks call it directly.

    Args:
        cfg: the trial.
        task: the task, when already loaded (preloaded on the driver); else loaded from `cfg`.
    """

    def __init__(self, cfg: TrialConfig, task: Task | None = None):
        import transformers

        transformers.logging.set_verbosity_error()  # trial logs: our rows, not weight-loading progress bars
        transformers.logging.disable_progress_bar()
        self.cfg = cfg
        set_deterministic(
            cfg.deterministic
        )  # before any kernel runs; a reused process keeps the last setting
        self.cache_dir = cache_root(cfg.cache_dir)
        torch.manual_seed(cfg.seed)
        self.task = task if task is not None else load_trial_task(cfg)
        # a config's dropout overrides; else the recipe's (ORCA's OpenML configs set drop_out, the others 0)
        dropout = cfg.dropout or recipe_for(self.task.name).dropout
        self.body = load_body(cfg.body, dropout=dropout, seed=cfg.seed)
        self.proxy = resolve_proxy(cfg.proxy, cfg.body, cfg.preset)
        seq_len = cfg.target_seq_len or recipe_for(self.task.name).target_seq_len
        # ORCA initialises an embedder that will be aligned from the body, an unaligned one afresh
        self.aligned = self.proxy != "none" and cfg.embedder_epochs > 0
        self.model = build_model(
            self.task,
            self.body,
            aligned=self.aligned,
            target_seq_len=seq_len,
            seed=cfg.seed,
            pool=cfg.pool,
            embedder=cfg.embedder,
        )
        if cfg.lora_rank:
            # adapters start at zero (LoRA's B), so the body computes what it did until refine trains them
            apply_lora(
                self.model.body,
                rank=cfg.lora_rank,
                alpha=cfg.lora_alpha,
                dropout=cfg.lora_dropout,
                seed=cfg.seed,
            )
        set_refine_grads(self.model, cfg.frozen_parts, lora=bool(cfg.lora_rank))
        trainable_params = sum(p.numel() for p in trainable_parameters(self.model))
        for p in self.model.embedder.parameters():
            p.requires_grad_(True)  # the align stage trains the embedder whatever the freeze mask
        self.hp = refine_hparams(cfg, self.task)
        self.constants = {
            "config_hash": cfg.config_hash,
            "task": cfg.task,
            "body": cfg.body,
            "proxy": self.proxy,
            "embedder_epochs": cfg.embedder_epochs,
            "freeze": cfg.freeze,
            "seed": cfg.seed,
            "embedder": cfg.embedder,
            "lora_rank": cfg.lora_rank,
            "lora_alpha": cfg.lora_alpha,
            "lora_dropout": cfg.lora_dropout,
            "trainable_params": trainable_params,  # what refine updates: the freeze mask's parts (LoRA: adapters)
            "lr": self.hp.lr,
            "pretraining_tokens": _nan_if_none(self.body.pretraining_tokens),
            "body_family": self.body.family,
            "pool": cfg.pool,
            "preset": cfg.preset,
            # the original label of each class index, so results read back in the data's own terms
            "classes": json.dumps(list(self.task.class_names)) if self.task.class_names else None,
            "protocol": cfg.protocol,
            "deterministic": cfg.deterministic,
            "precision": cfg.numerics.label(),
            "metric": self.task.metric,
            "node": socket.gethostname(),
            **machine_fingerprint(pick_device(cfg.device)),
        }

    def row(self, phase: str, epoch: int, **values) -> dict:
        """One result row (see results.schema): the trial's constants, NaN for what this phase does not measure.

        Args:
            phase: "align" or "refine".
            epoch: embedder epochs done (align) or refine epochs done (refine).
            values: the measured columns (otdd, train_loss, val_score, test_score, seconds, ...).
        """
        nan = float("nan")
        row = {
            **self.constants,
            "phase": phase,
            "epoch": epoch,
            "otdd": nan,
            "train_loss": nan,
            "val_score": nan,
            "test_score": nan,
            "seconds": 0.0,
            "refine_epoch": 0,
            "best_val_score": nan,
        }
        row.update(values)
        return row

    def align(self, report: Report) -> None:
        """Stage 2, reporting one row per embedder epoch 0..k (restored epochs report seconds=0).

        Args:
            report: `report(row, state)`; state is the checkpoint after the last align epoch, else None.
        """
        if self.proxy == "none":
            return
        cfg = self.cfg
        px, py = proxy_features(
            self.proxy,
            cfg.body,
            self.body,
            size=cfg.proxy_size,
            seed=cfg.seed,
            data_root=cfg.data_root,
            cache_dir=self.cache_dir,
        )
        hp = AlignHParams.from_refine(
            self.hp, self.task.name, lr=cfg.align_lr, batch_per_class=cfg.align_batch_per_class
        )
        # the data's content fingerprint is part of the key: a changed file behind the same spec realigns;
        # the snapshots hold the body-initialised trajectory: a 0-epoch trial's fresh embedder is not on it
        key = cfg.align_key + (f"-d{self.task.fingerprint[:12]}" if self.task.fingerprint else "")
        snapshots = EmbedderSnapshots(self.cache_dir / "embedders" / key) if self.aligned else None
        aligner = Aligner(
            self.model.embedder,
            self.task,
            px,
            py,
            hp,
            seed=cfg.seed,
            snapshots=snapshots,
            device=cfg.device,
            precision=cfg.numerics,
        )
        last = cfg.embedder_epochs

        def on_epoch(k, value, seconds, restored):
            report(self.row("align", k, otdd=value, seconds=seconds), self.state(None) if k == last else None)

        aligner.run(cfg.embedder_epochs, on_epoch)
        self.model.embedder.to("cpu")

    def state(self, refiner: Refiner | None, best_val_score: float = math.inf) -> dict:
        """The checkpoint of the trial: the aligned embedder, the refine state, the best val score so far.

        Args:
            refiner: the running Refiner, or None right after alignment.
            best_val_score: the search metric so far (a resumed trial must not forget it).
        """
        return {
            "embedder": {k: v.detach().cpu() for k, v in self.model.embedder.state_dict().items()},
            "refine": None if refiner is None else refiner.state_dict(),
            "best_val_score": best_val_score,  # the search metric: a resumed trial must not forget it
        }

    def refine(self, report: Report, state: dict | None = None) -> Refiner:
        """Stage 3 under the trial's freeze mask, reporting one row (and a checkpoint) per epoch.

        Args:
            report: `report(row, state)`.
            state: a checkpoint to resume from (`state()`), or None to start fresh.
        """
        set_refine_grads(self.model, self.cfg.frozen_parts, lora=bool(self.cfg.lora_rank))
        refiner = Refiner(
            self.model,
            self.task,
            self.hp,
            seed=self.cfg.seed,
            device=self.cfg.device,
            protocol=self.cfg.protocol,
            precision=self.cfg.numerics,
        )
        if state is not None and state.get("refine") is not None:
            refiner.load_state_dict(state["refine"])
        best = float(state.get("best_val_score", math.inf)) if state is not None else math.inf
        for r in refiner.fit():
            best = min(best, r.val_score) if math.isfinite(r.val_score) else best
            report(
                self.row(
                    "refine",
                    r.epoch,
                    train_loss=r.train_loss,
                    val_score=r.val_score,
                    test_score=r.test_score,
                    seconds=r.seconds,
                    refine_epoch=r.epoch,
                    lr_now=r.lr,
                    best_val_score=best,
                ),
                self.state(refiner, best),
            )
        return refiner

    def run(self, report: Report, state: dict | None = None) -> None:
        """Align (unless resuming from a checkpoint, which holds the aligned embedder), then refine.

        Args:
            report: `report(row, state)`.
            state: a checkpoint to resume from, or None.
        """
        if state is None:
            self.align(report)
        else:
            self.model.embedder.load_state_dict(state["embedder"])  # the aligned embedder, not realigned
        self.refine(report, state)


def set_refine_grads(model: ORCAModel, frozen: frozenset[str], *, lora: bool) -> None:
    """What refine trains: the parts the freeze mask leaves, and of a LoRA body only its adapters.

    Args:
        model: the model, changed in place.
        frozen: the frozen part names.
        lora: the body carries LoRA adapters (`lora.apply_lora`); its base weights stay frozen.
    """
    apply_freeze(model, frozen)
    if lora:
        for name, p in model.body.named_parameters():
            p.requires_grad_(is_lora_parameter(name))


# ---- the Tune trainable ----------------------------------------------------------------------------------
def align_then_refine(config: dict, tasks: dict | None = None) -> None:
    """The Ray Tune function trainable: one trial, one `tune.report` per epoch, checkpoints to resume from.

    Args:
        config: the Tune trial config (a TrialConfig, nested under "trial" for grid sweeps).
        tasks: preloaded tasks by `task_key` (via tune.with_parameters, shared through the object store).
    """
    import ray
    from ray import tune

    cpu_start = time.process_time()
    cfg = TrialConfig.from_tune(config)
    require_cuda_for_gpus(cfg, ray.get_gpu_ids())
    node_id = ray.get_runtime_context().get_node_id()  # two raylets on one host are two nodes
    task = (tasks or {}).get(task_key(cfg))
    checkpoint = tune.get_checkpoint()
    state = load_trial_state(checkpoint) if checkpoint is not None else None
    run = TrialRun(cfg, task=task)
    # CPU time (this process, all threads) of the set-up and of each epoch: Tune metrics for
    # benchmarks/demo.py, not Parquet columns
    cpu = {"setup_cpu_seconds": time.process_time() - cpu_start, "last": time.process_time()}

    def report(row: dict, trial_state: dict | None) -> None:
        print(epoch_line(row), flush=True)  # the trial's log (<trial dir>/stdout), one line per epoch
        now = time.process_time()
        row = {
            **row,
            "node_id": node_id,
            "cpu_seconds": now - cpu["last"],
            "setup_cpu_seconds": cpu["setup_cpu_seconds"],
        }
        cpu["last"] = now
        gauges.set(row)  # before tune.report: the dashboard's charts show the epoch the Parquet row holds
        if trial_state is None:
            tune.report(row)
            return
        with tempfile.TemporaryDirectory(prefix="orca-ckpt-") as d:
            torch.save(trial_state, os.path.join(d, CHECKPOINT_FILE))
            tune.report(row, checkpoint=tune.Checkpoint.from_directory(d))

    context = tune.get_context()  # the sweep's name (RunConfig name) and the trial's (trial_name_creator)
    gauges = TrialGauges(context.get_experiment_name(), context.get_trial_name())
    try:
        run.run(report, state)
    finally:
        gauges.close()


def trial_actor_class(trainable: Callable) -> type:
    """The Tune trainable class for a function trainable, whose actors the Ray dashboard shows by trial.

    The dashboard's Actors page lists an actor by its class name and its repr, which Ray takes once, right
    after the actor starts; Tune's own wrapper reprs every trial as the function's name. This subclass reprs as
    the trial's name (the sweep's `trial_name_creator`: task, body, proxy, embedder epochs, freeze, seed, index),
    so the page can be filtered by it. An actor that Tune reuses for the next trial would keep the first
    trial's repr: the sweep runs each trial in an actor of its own (`reuse_actors=False`).

    Args:
        trainable: the function trainable, its resources set (`tune.with_resources(tune.with_parameters(
            align_then_refine, tasks=...), ...)`: `wrap_function` reads them from the function).
    """
    from ray.tune.trainable.function_trainable import wrap_function

    class OrcaTrial(wrap_function(trainable)):
        def __repr__(self) -> str:
            return self.trial_name

    # the Actors page's class column (not `trial_actor_class.<locals>.OrcaTrial`); Tune still names the
    # trainable after the function (Experiment.get_trainable_name), which a restore checks
    OrcaTrial.__qualname__ = "OrcaTrial"
    return OrcaTrial


# phase gauge values: Ray metrics are numbers
PHASE_CODES = {"align": 1, "refine": 2}
# Parquet column → (gauge name, description); Ray exports each as `ray_<name>` with tags sweep and trial
GAUGE_COLUMNS = {
    "phase": ("orca_trial_phase", "trial phase: 1 align, 2 refine"),
    "epoch": ("orca_trial_epoch", "align: embedder epochs done; refine: fine-tuning epochs done"),
    "otdd": ("orca_trial_otdd", "OTDD to the proxy after the last align epoch"),
    "train_loss": ("orca_trial_train_loss", "training loss of the last refine epoch"),
    "val_score": ("orca_trial_val_score", "validation score of the last refine epoch (lower is better)"),
    "test_score": ("orca_trial_test_score", "test score of the last refine epoch (lower is better)"),
}
GAUGE_TAGS = ("sweep", "trial")


class TrialGauges:
    """One trial's live metrics through Ray's metrics system (`ray.util.metrics.Gauge`): each reported row
    sets phase and epoch, and the values its phase measures (OTDD while aligning; loss and scores while
    fine-tuning), so the OTDD chart keeps the aligned value while the trial fine-tunes.

    Ray exports a gauge only when it was set since the last export and drops a series not refreshed within
    two export intervals; an epoch takes longer than that, so a daemon thread sets the last values again
    every `refresh_s` until `close()`.

    Args:
        sweep: the sweep's name (tag `sweep`).
        trial: the trial's name (tag `trial`), as the console, the Actors page and the trial folder name it.
        refresh_s: seconds between re-sets (Ray's export interval is 10 s unless
            `RAY_metrics_report_interval_ms` says otherwise, at least 1 s).
    """

    def __init__(self, sweep: str, trial: str, refresh_s: float = 1.0):
        from ray.util.metrics import Gauge

        self.tags = {"sweep": sweep, "trial": trial}
        self.gauges = {
            column: Gauge(name, description=description, tag_keys=GAUGE_TAGS)
            for column, (name, description) in GAUGE_COLUMNS.items()
        }
        self.values: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._refresh, args=(refresh_s,), daemon=True)
        self._thread.start()

    def set(self, row: dict) -> None:
        """Set the gauges from one result row (`TrialRun.row`); NaN columns (not measured in the row's
        phase) keep their last value.

        Args:
            row: the reported row.
        """
        values = {**row, "phase": PHASE_CODES[row["phase"]]}
        with self._lock:
            self.values.update((c, float(values[c])) for c in self.gauges if math.isfinite(float(values[c])))
            self._push()

    def close(self) -> None:
        """Stop refreshing (the series then leave Ray's export after two intervals)."""
        self._stop.set()
        self._thread.join()

    def _push(self) -> None:
        for column, value in self.values.items():
            self.gauges[column].set(value, tags=self.tags)

    def _refresh(self, every: float) -> None:
        while not self._stop.wait(every):
            with self._lock:
                self._push()


def load_trial_state(checkpoint) -> dict | None:
    """The trial state in `checkpoint`, or in the newest older one of the same trial when it is unreadable
    (Tune keeps two, see CheckpointConfig in the sweep), or None when none is readable (the trial starts over;
    its re-reported epochs replace the earlier rows).

    Args:
        checkpoint: the `ray.tune.Checkpoint` Tune hands a restored trial.
    """
    import pyarrow.fs as pafs
    from ray import tune

    fs, path = checkpoint.filesystem, checkpoint.path.rstrip("/")
    parent, name = path.rsplit("/", 1)
    try:
        siblings = fs.get_file_info(pafs.FileSelector(parent))
    except OSError:
        siblings = []
    older = sorted(
        (
            i.path
            for i in siblings
            if i.type == pafs.FileType.Directory
            and i.base_name.startswith("checkpoint_")
            and i.base_name < name
        ),
        reverse=True,
    )
    for candidate in [checkpoint, *(tune.Checkpoint(p, filesystem=fs) for p in older)]:
        try:
            with candidate.as_directory() as d:
                return torch.load(os.path.join(d, CHECKPOINT_FILE), map_location="cpu", weights_only=True)
        except Exception as e:  # a cut-short write shows up as several error types
            log.warning("trial checkpoint %s is unreadable (%s); trying the one before", candidate.path, e)
    return None


def require_cuda_for_gpus(cfg: TrialConfig, gpu_ids: list) -> None:
    """Fail a trial that Ray gave GPUs when torch sees no CUDA device, instead of silently training on CPU.

    Args:
        cfg: the trial; `device="cpu"` asks for CPU explicitly and is never refused.
        gpu_ids: the GPUs Ray assigned to the trial (`ray.get_gpu_ids()`); empty for a CPU-only trial.

    Raises:
        RuntimeError: naming the node and the fix, unless `ORCA_RAY_LOGICAL_GPUS=1` declares the cluster's
            GPUs logical (then the trial trains on CPU).
    """
    if not gpu_ids or cfg.device == "cpu" or torch.cuda.is_available():
        return
    if os.environ.get(LOGICAL_GPUS_ENV) == "1":
        return
    raise RuntimeError(
        f"trial {cfg.short_name()} was given GPU {gpu_ids} on {socket.gethostname()} but torch "
        f"{torch.__version__} finds no CUDA device (CUDA_VISIBLE_DEVICES="
        f"{os.environ.get('CUDA_VISIBLE_DEVICES')!r}): fix the node's NVIDIA driver or install a CUDA build "
        f"of torch; if this cluster's GPUs are logical only, set {LOGICAL_GPUS_ENV}=1 to train on CPU"
    )


def epoch_line(row: dict) -> str:
    """One readable log line for a reported row: phase, epoch, OTDD or loss / val / test, seconds.

    Args:
        row: a row as `TrialRun.row` builds it.
    """
    if row["phase"] == "align":
        what = f"OTDD {row['otdd']:.5g}"
    else:
        what = f"train loss {row['train_loss']:.4g}  val {row['val_score']:.4g}  test {row['test_score']:.4g}"
    return f"{row['phase']:>6} epoch {row['epoch']:>3}  {what}  ({row['seconds']:.1f} s)"


def _nan_if_none(v):
    return float("nan") if v is None else float(v)
