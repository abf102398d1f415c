"""Stage 2 of ORCA: train the embedder so embedded target data is close (OTDD) to the proxy dataset.

Algorithm 1 of the follow-up study, as ORCA's get_tgt_model (src/embedder.py) runs it: with target classes i
of weight w_i = n_i / n, draw b target points of class i, embed them (embedder only, mean over tokens),
d_i = OTDD(proxy, those points); loss = Σ w_i d_i over the classes with ≥ 2 points (weights not renormalised);
one optimiser step per epoch; ORCA's StepLR lambda (×0.2 once the epoch index *exceeds* 20, 40, 60). Tasks
without classes (multilabel, regression) get 10 k-means pseudo-classes fitted as ORCA's infer_labels.

`otdd[k]` is the loss of the embedder after k epochs (measured on the sample epoch k+1 trains on), so row k
of a sweep's align phase describes exactly the embedder that a trial with k embedder epochs fine-tunes.

Every epoch's state (embedder, optimiser, schedule, OTDD so far) is saved as a snapshot under the trial
config's `align_key`: a trial asking for k epochs loads snapshot k if any trial got that far, or continues
from the latest one below k, bit-identically to training from scratch. Snapshots are written atomically and a
file lock serialises trials of one key on a node (the second waits, then reuses instead of retraining).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .io import file_lock, quarantine, write_file
from .otdd import ProxyDistance
from .precision import FP32, Precision
from .recipes import DEFAULT_BATCH_PER_CLASS, recipe_for
from .refine import RefineHParams, make_optimizer, pick_device
from .tasks import Task

PSEUDO_CLASSES = 10
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AlignHParams:
    """Align-stage hyperparameters (ORCA's embedder training); usually `from_refine` of the task's recipe.

    Args:
        optimizer: "sgd", "adam" or "adamw".
        lr: learning rate.
        betas: Adam(W) betas.
        momentum: SGD momentum.
        weight_decay: weight decay.
        batch_per_class: b, target points drawn per class each epoch.
        milestones: epochs after which the lr is multiplied by `gamma`.
        gamma: the lr factor per milestone passed.
        inner: OTDD label distance: "exact" (entropic OT) or "gaussian".
    """

    optimizer: str = "adamw"
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.98)
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_per_class: int = DEFAULT_BATCH_PER_CLASS
    milestones: tuple[int, ...] = (20, 40, 60)  # ORCA's no_warmup_scheduler "sched"
    gamma: float = 0.2  # its "base"
    inner: str = "exact"  # OTDD label distance: "exact" (entropic OT) or "gaussian"

    def lr_factor(self, epoch: int) -> float:
        """ORCA's StepLR lambda (src/task_configs.py): gamma ** (number of milestones m with epoch > m), so epoch
        21 (0-based) is the first at ×0.2 -- one later than torch's MultiStepLR would decay.

        Args:
            epoch: the 0-based align epoch.
        """
        return self.gamma ** sum(epoch > m for m in self.milestones)

    @classmethod
    def from_refine(
        cls,
        hp: RefineHParams,
        task_name: str,
        *,
        lr: float | None = None,
        batch_per_class: int | None = None,
        inner: str = "exact",
    ) -> AlignHParams:
        """ORCA: the fine-tuning optimiser, its lr ×10 when lr ≤ 1e-3.

        Args:
            hp: the task's fine-tuning hyperparameters.
            task_name: the task (its recipe gives the default `batch_per_class`).
            lr: the align lr, or None for ORCA's rule above.
            batch_per_class: b, or None for the recipe's.
            inner: OTDD label distance ("exact" or "gaussian").
        """
        b = batch_per_class or recipe_for(task_name).align_batch_per_class
        return cls(
            optimizer=hp.optimizer,
            lr=lr or (hp.lr * 10 if hp.lr <= 1e-3 else hp.lr),
            betas=hp.betas,
            momentum=hp.momentum,
            weight_decay=hp.weight_decay,
            batch_per_class=b,
            inner=inner,
        )


KMEANS_FULL_BATCH_LIMIT = 10_000  # ORCA: k_means on all rows up to this many, else MiniBatchKMeans


def align_labels(task: Task, seed: int) -> np.ndarray:
    """Class labels of the training split for Algorithm 1: the classes themselves, or `pseudo_labels` of the
    targets for multilabel / regression tasks (ORCA's infer_labels).

    Args:
        task: the target task (its train split).
        seed: k-means random_state.
    """
    y = task.train.y
    if task.kind == "classification":
        return np.asarray(y, dtype=np.int64)
    return pseudo_labels(y, seed)


def pseudo_labels(y: np.ndarray, seed: int, k: int = PSEUDO_CLASSES) -> np.ndarray:
    """ORCA's pseudo-classes: k k-means clusters of the flattened targets (as stored, i.e. normalised), fitted
    on every row (≤ 10,000 rows: KMeans; more: MiniBatchKMeans with batches of 10,000), with the scikit-learn
    defaults of ORCA's time (10 and 3 restarts).

    Args:
        y: (N, ...) targets.
        seed: k-means random_state.
        k: clusters (fewer if the targets have fewer distinct rows).
    """
    from sklearn.cluster import KMeans, MiniBatchKMeans

    flat = np.asarray(y, dtype=np.float32).reshape(len(y), -1)
    k = min(k, len(np.unique(flat, axis=0)))
    if len(flat) <= KMEANS_FULL_BATCH_LIMIT:
        km = KMeans(n_clusters=k, n_init=10, random_state=seed)
    else:
        km = MiniBatchKMeans(n_clusters=k, batch_size=KMEANS_FULL_BATCH_LIMIT, n_init=3, random_state=seed)
    return km.fit(flat).predict(flat).astype(np.int64)


def make_align_scheduler(
    optimizer: torch.optim.Optimizer, hp: AlignHParams
) -> torch.optim.lr_scheduler.LambdaLR:
    """ORCA's align schedule: `hp.lr_factor` of the epoch, stepped once per align epoch.

    Args:
        optimizer: the embedder's optimiser.
        hp: milestones and gamma.
    """
    return torch.optim.lr_scheduler.LambdaLR(optimizer, hp.lr_factor)


def class_weighted_otdd(
    embedder: nn.Module,
    distance: ProxyDistance,
    x: torch.Tensor,
    labels: torch.Tensor,
    class_weights: torch.Tensor,
    precision: Precision = FP32,
) -> torch.Tensor:
    """ORCA's align loss on one drawn sample: Σ_c w_c · OTDD(proxy, mean-over-tokens(embedder(x[labels == c]))),
    each class a one-class target dataset; classes with fewer than 2 rows are left out (ORCA skips them too).

    Args:
        embedder: maps x to (tokens, grid).
        distance: the proxy's cached `ProxyDistance`.
        x: the sample's inputs, any class order.
        labels: (N,) class index of each row.
        class_weights: (num_classes,) w_c = n_c / n over the whole training split, indexed by class.
        precision: the embedder's forward runs under its autocast; the OTDD is computed in float32.
    """
    with precision.autocast(x.device):
        tokens, _ = embedder(x)
    feats = tokens.float().mean(1)  # float32 already under fp32: .float() is the same tensor
    classes, counts = torch.unique(labels, return_counts=True)
    keep = counts >= 2
    if not keep.any():
        raise ValueError("no class has 2 or more rows in the align sample; OTDD needs a cloud per class")
    if not keep.all():
        rows = torch.isin(labels, classes[keep])
        feats, labels, classes = feats[rows], labels[rows], classes[keep]
    per_class = distance.classwise(feats, labels)  # sorted class order, as torch.unique
    return (class_weights.to(per_class)[classes] * per_class).sum()


class EmbedderSnapshots:
    """Per-epoch embedder states of one align trajectory: `<root>/epoch_0007.pt`, loaded weights-only.

    Args:
        root: the trajectory's folder (created if missing).
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, epoch: int) -> Path:
        """The snapshot file of an epoch.

        Args:
            epoch: embedder epochs done.
        """
        return self.root / f"epoch_{epoch:04d}.pt"

    def epochs(self) -> list[int]:
        """The epochs that have a snapshot file, ascending."""
        return sorted(int(p.stem.split("_")[1]) for p in self.root.glob("epoch_*.pt"))

    def save(self, epoch: int, state: dict) -> None:
        """Write an epoch's snapshot atomically.

        Args:
            epoch: embedder epochs done.
            state: tensors and plain values only (`Aligner.state_dict`), so it loads weights-only.
        """
        write_file(self.path(epoch), lambda tmp: torch.save(state, tmp))

    def load(self, epoch: int) -> dict:
        """An epoch's snapshot, loaded weights-only; RuntimeError naming the file when it is unreadable.

        Args:
            epoch: embedder epochs done.
        """
        try:
            return torch.load(self.path(epoch), map_location="cpu", weights_only=True)
        except Exception as e:
            raise RuntimeError(f"embedder snapshot {self.path(epoch)} is unreadable ({e})") from e

    def load_latest_at_most(self, epoch: int) -> tuple[int, dict] | None:
        """(k, state) of the latest readable snapshot with k <= `epoch`, or None. An unreadable one (a crash
        mid-write on a filesystem without atomic rename, a bad disk) is moved aside and the one below tried, so
        the trajectory is retrained from there rather than failing the trial.

        Args:
            epoch: the most embedder epochs wanted.
        """
        for k in sorted((e for e in self.epochs() if e <= epoch), reverse=True):
            try:
                return k, self.load(k)
            except RuntimeError as e:
                quarantine(self.path(k), e.__cause__ or e)
        return None

    def lock(self, timeout: float = -1):
        """The inter-process lock of this trajectory: one trial trains it at a time, the others then reuse.

        Args:
            timeout: seconds to wait for the lock; -1 waits forever.
        """
        return file_lock(self.root / ".lock", timeout=timeout)


def drop_small_classes(
    x: torch.Tensor, y: torch.Tensor, least: int = 2
) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """The points of classes with at least `least` points, as microsoft/otdd's `min_labelcount=2` keeps them.

    Args:
        x: (N, d) features.
        y: (N,) labels.
        least: the fewest points a class keeps.

    Returns:
        (x, y, classes dropped, points dropped).
    """
    _, inverse, counts = torch.unique(y, return_inverse=True, return_counts=True)
    small = counts < least
    if not bool(small.any()):
        return x, y, 0, 0
    keep = ~small[inverse]
    return x[keep], y[keep], int(small.sum()), int((~keep).sum())


class Aligner:
    """Algorithm 1 for one embedder. `run(epochs, on_epoch)` trains (or restores) to `epochs` and calls
    `on_epoch(epoch, otdd, seconds, restored)` for every epoch 0..epochs in order.

    Args:
        embedder: the embedder to train (`model.build_embedder`).
        task: the target task (its train split).
        proxy_x: the proxy's features (N, D).
        proxy_y: the proxy's labels (N,).
        hp: align hyperparameters.
        seed: the per-epoch samples and the k-means pseudo-classes come from it.
        snapshots: where epoch states are saved and reused, or None to keep nothing.
        device: "cpu", "cuda", or None/"auto".
        precision: autocast of the embedder's forward (fp32: none); fp16 scales the loss (`GradScaler`).
    """

    def __init__(
        self,
        embedder: nn.Module,
        task: Task,
        proxy_x: torch.Tensor,
        proxy_y: torch.Tensor,
        hp: AlignHParams,
        *,
        seed: int = 0,
        snapshots: EmbedderSnapshots | None = None,
        device: str | torch.device | None = None,
        precision: Precision = FP32,
    ):
        self.device = pick_device(device) if not isinstance(device, torch.device) else device
        self.embedder = embedder.to(self.device)
        self.task, self.hp, self.seed, self.snapshots = task, hp, seed, snapshots
        self.labels = align_labels(task, seed)
        counts = np.bincount(self.labels)
        self.classes = np.flatnonzero(counts >= 2)  # OTDD needs a cloud of ≥2 points per class
        # ORCA's weights n_c / n over the whole split, not renormalised over the classes kept
        self.weights = torch.tensor(counts / counts.sum(), dtype=torch.float32, device=self.device)
        self.members = {c: np.flatnonzero(self.labels == c) for c in self.classes}
        proxy_x, proxy_y, self.dropped_proxy_classes, self.dropped_proxy_points = drop_small_classes(
            proxy_x, proxy_y
        )
        if self.dropped_proxy_classes:  # ORCA's OTDD (min_labelcount=2) drops them silently
            log.warning(
                "align: %d proxy class(es) with fewer than 2 points left out of the OTDD (%d point(s)); "
                "an OT distance between classes needs a cloud of at least 2 points",
                self.dropped_proxy_classes,
                self.dropped_proxy_points,
            )
        self.distance = ProxyDistance(proxy_x.to(self.device), proxy_y.to(self.device), inner=hp.inner)
        self.optimizer = make_optimizer([p for p in self.embedder.parameters() if p.requires_grad], hp)
        self.scheduler = make_align_scheduler(self.optimizer, hp)
        self.precision = precision
        self.scaler = precision.grad_scaler(self.device)
        self.epoch = 0
        self.otdd: list[float] = []

    def loss(self, epoch: int) -> torch.Tensor:
        """The class-weighted OTDD of the current embedder on the sample drawn for `epoch`.

        Args:
            epoch: selects the (seed, epoch)-seeded sample of b points per class.
        """
        rng = np.random.default_rng([self.seed, epoch])
        idx, lab = [], []
        for c in self.classes:
            members = self.members[c]
            take = (
                members
                if len(members) <= self.hp.batch_per_class
                else rng.choice(members, self.hp.batch_per_class, replace=False)
            )
            idx.append(np.sort(take))
            lab.append(np.full(len(take), c))
        idx, lab = np.concatenate(idx), np.concatenate(lab)
        ascending = np.argsort(idx)  # ascending reads are cheap on memory maps
        idx, lab = idx[ascending], lab[ascending]
        x = torch.from_numpy(np.asarray(self.task.train.x[idx])).to(self.device)
        return class_weighted_otdd(
            self.embedder,
            self.distance,
            x,
            torch.from_numpy(lab).to(self.device),
            self.weights,
            self.precision,
        )

    def state_dict(self) -> dict:
        """Everything needed to continue: embedder, optimiser, schedule, epoch and the OTDD so far."""
        state = {
            "embedder": {k: v.detach().cpu() for k, v in self.embedder.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch,
            "otdd": list(self.otdd),
        }
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        """Continue from a `state_dict()` (a snapshot).

        Args:
            state: what `state_dict()` returned.
        """
        self.embedder.load_state_dict(state["embedder"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.otdd = int(state["epoch"]), [float(v) for v in state["otdd"]]

    def run(
        self, epochs: int, on_epoch: Callable[[int, float, float, bool], None] | None = None
    ) -> list[float]:
        """Train (or restore from snapshots) to `epochs` embedder epochs; returns the OTDD after 0..epochs.

        Args:
            epochs: embedder epochs wanted.
            on_epoch: called as on_epoch(epoch, otdd, seconds, restored) for every epoch 0..epochs in order.
        """
        on_epoch = on_epoch or (lambda *a: None)
        lock = self.snapshots.lock() if self.snapshots else nullcontext()
        with lock, self.precision.tf32_matmuls():
            found = self.snapshots.load_latest_at_most(epochs) if self.snapshots else None
            if found is not None:
                self.load_state_dict(found[1])
            for k, value in enumerate(self.otdd):
                on_epoch(k, value, 0.0, True)
            while True:
                t0 = time.perf_counter()
                k = self.epoch
                if k < len(self.otdd) and k == epochs:
                    break  # restored exactly the requested epoch
                train = k < epochs
                self.embedder.train(train)
                with torch.set_grad_enabled(train):
                    loss = self.loss(k)
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise FloatingPointError(
                        f"OTDD is {value} at embedder epoch {k}; lower the align lr "
                        f"(now {self.optimizer.param_groups[0]['lr']:g})"
                    )
                if k == len(self.otdd):
                    self.otdd.append(value)
                    if self.snapshots:
                        self.snapshots.save(k, self.state_dict())
                    on_epoch(k, value, time.perf_counter() - t0, False)
                if not train:
                    break
                self.optimizer.zero_grad(set_to_none=True)
                if self.scaler is None:
                    loss.backward()
                    self.optimizer.step()
                else:  # fp16: an epoch whose gradients overflow is skipped and the scale lowered
                    self.scaler.scale(loss).backward()
                    self.scaler.step(self.optimizer)
                    self.scaler.update()
                self.scheduler.step()
                self.epoch += 1
        return self.otdd[: epochs + 1]
