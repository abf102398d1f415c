"""Stage 3 of ORCA: fine-tune embedder + body + predictor (under a freeze mask) on the target task.

    refiner = Refiner(model, task, recipes.hparams_for(task.name), seed=0)
    for result in refiner.fit():            # or refiner.run_epoch() one at a time (the trainable does)
        print(result.epoch, result.train_loss, result.val_score, result.test_score)

Per epoch: one pass over train exactly as ORCA's `train_one_epoch` (`train_epoch`: undivided micro-batch
losses summed over `accum`, clipping after every backward, the schedule stepped per micro-batch from lr 0, a
trailing partial accumulation group dropped), then scores on val and test (whole splits, or ORCA's chunked
averages under protocol "orca"). float32 throughout, as ORCA. Deterministic on CPU for a seed (batch order and
any dropout / drop-path are drawn from (seed, epoch), so a run resumed from `state_dict()` after epoch k
continues exactly as if never stopped). No Ray here: the trainable reports what `run_epoch` returns.
"""

from __future__ import annotations

import itertools
import math
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .device_data import TrainFeed, batch_rows
from .metrics import chunked_metric, compute_metric, orca_chunks
from .model import trainable_parameters, trainable_state_dict
from .precision import FP32, Precision
from .tasks import PROTOCOLS, Split, Task
from .tasks.base import LOSSES


@dataclass(frozen=True)
class RefineHParams:
    """Fine-tuning hyperparameters (one ORCA config's optimiser, schedule and batching); `recipes` holds them
    per task.

    Args:
        optimizer: "sgd", "adam" or "adamw".
        lr: peak learning rate.
        betas: Adam(W) betas.
        momentum: SGD momentum.
        weight_decay: weight decay.
        epochs: fine-tuning epochs.
        batch_size: samples per micro-batch.
        accum: micro-batches per optimiser step.
        clip: max gradient norm, or None.
        warmup_epochs: linear warmup from lr 0, in epochs.
        decay_epochs: lr reaches 0 at this epoch (linear), may exceed `epochs`.
        eval_batch_size: samples per batch when predicting.
    """

    optimizer: str = "adamw"  # sgd | adam | adamw
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.98)
    momentum: float = 0.9  # SGD only
    weight_decay: float = 0.0
    epochs: int = 10
    batch_size: int = 32
    accum: int = 1  # micro-batches per optimiser step
    clip: float | None = None  # max gradient norm
    warmup_epochs: int = 0
    decay_epochs: int = 10  # lr reaches 0 at this epoch (linear), may exceed `epochs`
    eval_batch_size: int = 256

    def __post_init__(self):
        if self.optimizer not in ("sgd", "adam", "adamw"):
            raise ValueError(f"optimizer must be sgd, adam or adamw, got {self.optimizer!r}")
        for name in ("lr", "epochs", "batch_size", "accum"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")

    def lr_lambda(self, steps_per_epoch: int) -> Callable[[int], float]:
        """ORCA's WarmupLR as a LambdaLR factor of the micro-batch counter t (0, 1, ...): t / W during
        W = int(warmup_epochs · n) warmup steps, then (T − t) / (T − W) with T = int(decay_epochs · n), where n
        is the number of micro-batches per epoch. The first micro-batch trains at lr 0. Clamped at 0 past T
        (ORCA's configs never get there; its lambda would turn negative).

        Args:
            steps_per_epoch: micro-batches per epoch (ORCA's n_train = len(train_loader)).
        """
        if steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
        warmup = int(self.warmup_epochs * steps_per_epoch)
        total = int(self.decay_epochs * steps_per_epoch)

        def factor(step: int) -> float:
            if warmup > 0 and step < warmup:
                return step / warmup
            return max(0.0, (total - step) / max(1, total - warmup))

        return factor

    def with_overrides(self, **overrides) -> RefineHParams:
        """A copy with the given fields replaced; None values are ignored (an unset CLI override).

        Args:
            **overrides: field name → value, or None to keep the current value.
        """
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


def make_optimizer(params, hp) -> torch.optim.Optimizer:
    """The torch optimiser ORCA's config names (SGD with momentum, Adam, AdamW).

    Args:
        params: the parameters to train.
        hp: any hyperparameters with optimizer, lr, betas, momentum, weight_decay (RefineHParams,
            align.AlignHParams).
    """
    if hp.optimizer == "sgd":
        return torch.optim.SGD(params, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)
    if hp.optimizer not in ("adam", "adamw"):
        raise ValueError(f"optimizer must be sgd, adam or adamw, got {hp.optimizer!r}")
    cls = torch.optim.Adam if hp.optimizer == "adam" else torch.optim.AdamW
    return cls(params, lr=hp.lr, betas=hp.betas, weight_decay=hp.weight_decay)


def make_scheduler(
    optimizer: torch.optim.Optimizer, hp: RefineHParams, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """ORCA's warmup/decay schedule, stepped once per micro-batch (its WarmupLR sets lr_sched_iter).

    Args:
        optimizer: the fine-tuning optimiser; its lr becomes 0 at once (factor of step 0).
        hp: warmup_epochs and decay_epochs.
        steps_per_epoch: micro-batches per epoch.
    """
    return torch.optim.lr_scheduler.LambdaLR(optimizer, hp.lr_lambda(steps_per_epoch))


def pick_device(device: str | None = None) -> torch.device:
    """The torch device a name asks for; None or "auto" is CUDA when available, else CPU.

    Args:
        device: "cpu", "cuda", "cuda:1", "auto" or None.
    """
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def batches(split: Split, batch_size: int, order: np.ndarray | None = None):
    """(x, y, idx) numpy batches of the rows `order` names (default: as stored), `batch_size` at a time. Reads
    memory-maps batch by batch; rows within a batch come in ascending index order (cheap reads).

    Args:
        split: the split to read.
        batch_size: rows per batch (the last batch may be smaller).
        order: row indices in batch order, or None for stored order.
    """
    for idx in batch_rows(len(split), batch_size, order):
        yield np.asarray(split.x[idx]), np.asarray(split.y[idx]), idx


ORCA_FOCAL_EPS = 1e-9  # ORCA's FocalLoss adds this to the softmax before the log


def class_weights(y: np.ndarray, num_classes: int) -> np.ndarray:
    """1 / (share of each class among the labels), as ORCA weights its tabular cross-entropy.

    Args:
        y: (N,) training class indices (every class present; `Task` validates that).
        num_classes: K.
    """
    share = np.bincount(np.asarray(y), minlength=num_classes) / len(y)
    return (1.0 / share).astype(np.float32)


class TaskLoss(nn.Module):
    """A task's training loss on model outputs, as ORCA computes it.

    Args:
        loss: "cross_entropy" (mean over the batch); "weighted_cross_entropy" (ORCA's tabular loss: torch's
            class-weighted cross-entropy, `class_weights` = 1 / each class's share of the training labels);
            "focal" (ORCA's NinaPro FocalLoss with alpha 1, gamma 0:
            mean of −log(softmax + 1e-9) at the target); "bce" (BCE-with-logits, mean, `pos_weight` for every
            label); "rel_l2" (relative L2 per sample, summed over the batch, on de-normalised fields).
        num_outputs: labels of a "bce" task (sizes the pos_weight vector).
        pos_weight: BCE positive-class weight (DeepSEA: 4), or None.
        y_normalizer: decodes "rel_l2" predictions and targets before the loss (Darcy), or None.
        class_weights: (K,) per-class weights of "weighted_cross_entropy".
    """

    def __init__(
        self,
        loss: str,
        *,
        num_outputs: int | None = None,
        pos_weight: float | None = None,
        y_normalizer=None,
        class_weights=None,
    ):
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        if loss == "weighted_cross_entropy" and class_weights is None:
            raise ValueError("a weighted_cross_entropy loss needs class_weights")
        self.loss, self.normalizer = loss, y_normalizer
        pw = None
        if pos_weight is not None:
            if num_outputs is None:
                raise ValueError("a bce loss with pos_weight needs num_outputs")
            pw = torch.full((num_outputs,), float(pos_weight))
        self.register_buffer("pos_weight", pw, persistent=False)
        cw = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        self.register_buffer("class_weights", cw, persistent=False)

    @classmethod
    def for_task(cls, task: Task) -> TaskLoss:
        """The loss a Task names (task.loss, task.pos_weight, task.y_normalizer).

        Args:
            task: the target task.
        """
        return cls(
            task.loss,
            num_outputs=task.num_outputs,
            pos_weight=task.pos_weight,
            y_normalizer=task.y_normalizer,
            class_weights=class_weights(task.train.y, task.num_outputs)
            if task.loss == "weighted_cross_entropy"
            else None,
        )

    def forward(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The scalar loss of a batch.

        Args:
            out: model outputs (logits; normalised fields for "rel_l2").
            y: targets (class indices, multilabel 0/1, or normalised fields).
        """
        out = out.float()
        if self.loss == "cross_entropy":
            return F.cross_entropy(out, y)
        if self.loss == "weighted_cross_entropy":
            return F.cross_entropy(out, y, weight=self.class_weights)
        if self.loss == "focal":
            p = F.softmax(out, dim=1).gather(1, y.long()[:, None])[:, 0]
            return -torch.log(p + ORCA_FOCAL_EPS).mean()
        if self.loss == "bce":
            return F.binary_cross_entropy_with_logits(out, y.float(), pos_weight=self.pos_weight)
        pred, true = out, y.float()
        if self.normalizer is not None:
            pred, true = self.normalizer.decode(pred), self.normalizer.decode(true)
        n = len(pred)
        return ((pred - true).reshape(n, -1).norm(dim=1) / true.reshape(n, -1).norm(dim=1)).sum()


@dataclass(frozen=True)
class MicroBatch:
    """What one micro-batch of `train_epoch` did (passed to its `on_micro_batch` callback)."""

    index: int  # 0-based within the epoch
    loss: float  # the micro-batch's loss, as backpropagated (undivided)
    lr: float  # the lr in effect for this micro-batch (the one its optimiser step used, if it stepped)
    stepped: bool  # the optimiser stepped after this micro-batch
    grad_norm: float | None  # the accumulated gradient's norm before clipping (None without clipping)


def train_epoch(
    model: nn.Module,
    micro_batches: Iterable,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    *,
    accum: int = 1,
    clip: float | None = None,
    device: torch.device | str | None = None,
    on_micro_batch: Callable[[MicroBatch], None] | None = None,
    precision: Precision = FP32,
    scaler: torch.amp.GradScaler | None = None,
) -> float:
    """One fine-tuning epoch exactly as ORCA's `train_one_epoch` (src/main.py, commit 19b8c1c).

    For micro-batch i: forward, loss, `loss.backward()` undivided (gradients sum over the `accum` micro-batches
    of a step), clip the accumulated gradient of the trainable parameters to norm `clip` after *every* backward,
    optimiser step + zero_grad when (i + 1) % accum == 0, scheduler step after every micro-batch. Micro-batches
    that do not fill a last `accum` group are never applied: their gradients are dropped here (ORCA zeroes them
    at the start of the next epoch). The model is put in train mode.

    Args:
        model: maps a batch of inputs to outputs.
        micro_batches: iterable of (x, y), numpy arrays or tensors.
        loss_fn: e.g. `TaskLoss`.
        optimizer, scheduler: from `make_optimizer` / `make_scheduler`.
        accum: micro-batches per optimiser step.
        clip: max gradient norm, or None.
        device: where x and y go (default: the model's first parameter's device).
        on_micro_batch: called after each micro-batch (after its optimiser/scheduler steps) with a `MicroBatch`.
        precision: the forward runs under its autocast (fp32: none, ORCA's numbers); the loss is float32.
        scaler: fp16's `GradScaler` (kept across epochs by the caller): the loss is scaled before backward, the
            clip threshold scaled alike (the same clipping factor as on unscaled gradients), and a step whose
            gradients hold inf/NaN is skipped (reported `stepped=False`) while the scale is lowered.

    Returns:
        The mean micro-batch loss (ORCA's train loss).
    """
    if accum < 1:
        raise ValueError(f"accum must be >= 1, got {accum}")
    params = trainable_parameters(model)
    if device is None:
        device = params[0].device if params else torch.device("cpu")
    model.train()
    optimizer.zero_grad(set_to_none=True)
    total, n = 0.0, 0
    for i, (x, y) in enumerate(micro_batches):
        x, y = torch.as_tensor(x).to(device), torch.as_tensor(y).to(device)
        lr = optimizer.param_groups[0]["lr"]
        with precision.autocast(device):
            out = model(x)
        loss = loss_fn(out, y)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"training loss is {loss.item()} at micro-batch {i}; lower the learning rate (now {lr:g})"
            )
        if scaler is None:
            loss.backward()
        else:
            scaler.scale(loss).backward()
        norm = None
        if clip is not None and scaler is None:
            norm = float(torch.nn.utils.clip_grad_norm_(params, clip))
        elif clip is not None:  # scaled gradients against a scaled threshold: no unscale_ per micro-batch
            scale = scaler.get_scale()
            norm = float(torch.nn.utils.clip_grad_norm_(params, clip * scale)) / scale
        stepped = (i + 1) % accum == 0
        if stepped and scaler is None:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        elif stepped:
            scale = scaler.get_scale()
            scaler.step(optimizer)  # skipped when the gradients hold inf/NaN
            scaler.update()
            stepped = scaler.get_scale() >= scale  # the scale only drops after a skipped step
            optimizer.zero_grad(set_to_none=True)
        with warnings.catch_warnings():
            # ORCA's order: with accum > 1 the schedule steps before the first optimiser step (harmless)
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)` before")
            scheduler.step()
        value = loss.item()
        total += value
        n += 1
        if on_micro_batch is not None:
            on_micro_batch(MicroBatch(i, value, lr, stepped, norm))
    optimizer.zero_grad(set_to_none=True)  # a trailing partial group is never applied
    return total / max(n, 1)


@dataclass
class EpochResult:
    """What `Refiner.run_epoch` reports for one fine-tuning epoch (scores are lower-is-better).

    Args:
        epoch: epochs done (1-based).
        train_loss: mean micro-batch loss (ORCA's).
        val_score: the task's metric on val.
        test_score: the task's metric on test.
        seconds: wall time of the epoch, evaluation included.
        lr: the lr in effect at the end of the epoch.
    """

    epoch: int  # 1-based: epochs done
    train_loss: float  # mean micro-batch loss (ORCA's)
    val_score: float
    test_score: float
    seconds: float
    lr: float  # the lr in effect at the end of the epoch


ORCA_EVAL_CHUNK = 1000  # ORCA's eval_batch_size: metrics are averaged over chunks of this many samples


class Refiner:
    """Owns the optimiser, schedule and epoch counter for one fine-tuning run of `model` on `task`.

    Args:
        model: the ORCAModel (its freeze mask already applied).
        task: the target task.
        hp: fine-tuning hyperparameters.
        seed: batch order and dropout draws come from (seed, epoch).
        device: "cpu", "cuda", or None/"auto".
        protocol: "honest" scores whole splits; "orca" averages each metric over ORCA's 1,000-sample chunks
            (see metrics.orca_chunks). Which split is "val" is the task's business.
        max_steps_per_epoch: cap on micro-batches per epoch (smoke tests); the schedule counts the capped epoch.
        steps_per_epoch: micro-batches per epoch the schedule counts (default: ceil(len(train) / batch_size),
            ORCA's n_train); for `train_batches` on explicit batches.
        precision: fp32 (ORCA's numbers), or bf16 / fp16 autocast of forwards (fp16 with a gradient scaler);
            TF32 matmuls when it allows them.
        data_on_device: how training batches reach the device ("auto", "resident", "host"; see
            `device_data.TrainFeed`); the batches and numbers are the same either way.
    """

    def __init__(
        self,
        model: nn.Module,
        task: Task,
        hp: RefineHParams,
        *,
        seed: int = 0,
        device: str | torch.device | None = None,
        protocol: str = "honest",
        max_steps_per_epoch: int | None = None,
        steps_per_epoch: int | None = None,
        precision: Precision = FP32,
        data_on_device: str = "auto",
    ):
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
        self.task, self.hp, self.seed, self.protocol = task, hp, seed, protocol
        self.device = pick_device(device) if not isinstance(device, torch.device) else device
        self.model = model.to(self.device)
        params = trainable_parameters(model)
        if not params:
            raise ValueError("no trainable parameters: the freeze mask froze everything")
        self.max_steps_per_epoch = max_steps_per_epoch
        n = steps_per_epoch or math.ceil(len(task.train) / hp.batch_size)
        if max_steps_per_epoch is not None:
            n = min(n, max_steps_per_epoch)
        self.steps_per_epoch = n
        self.optimizer = make_optimizer(params, hp)
        self.scheduler = make_scheduler(self.optimizer, hp, n)
        self.loss_fn = TaskLoss.for_task(task).to(self.device)
        self.precision = precision
        self.scaler = precision.grad_scaler(self.device)  # fp16 only; its scale carries over epochs
        # a numpy augmentation (ORCA's crop/flip) runs on host batches
        feed_mode = "host" if task.augment is not None else data_on_device
        self.feed = TrainFeed.for_split(task.train, self.device, feed_mode)
        self.epoch = 0

    # ---- checkpointing ---------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything needed to continue: trainable weights only, optimiser, schedule, epoch."""
        state = {
            "model": trainable_state_dict(self.model),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch,
        }
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        """Continue from a `state_dict()`; a checkpoint holding weights this model lacks is refused.

        Args:
            state: what `state_dict()` returned (loaded weights-only).
        """
        missing = self.model.load_state_dict(state["model"], strict=False)
        if missing.unexpected_keys:
            raise ValueError(f"checkpoint holds weights this model lacks: {missing.unexpected_keys[:5]}")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        self.epoch = int(state["epoch"])

    # ---- training --------------------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        """Whether all `hp.epochs` epochs have run."""
        return self.epoch >= self.hp.epochs

    def fit(self):
        """Run the remaining epochs, yielding each one's `EpochResult`."""
        while not self.done:
            yield self.run_epoch()

    def run_epoch(self) -> EpochResult:
        """One epoch: train on the task's train split in a (seed, epoch)-seeded order, then score val and test."""
        t0 = time.perf_counter()
        rng = np.random.default_rng([self.seed, self.epoch])
        torch.manual_seed(int(rng.integers(2**31)))  # dropout / drop-path draws for this epoch
        order = rng.permutation(len(self.task.train))
        augment = None
        if self.task.augment is not None:  # ORCA's train-time crop/flip (CIFAR-100)
            aug_rng = np.random.default_rng([self.seed, self.epoch, 1])
            augment = lambda x: self.task.augment(x, aug_rng)  # noqa: E731
        micro = self.feed.batches(self.hp.batch_size, order, augment)
        if self.max_steps_per_epoch is not None:
            micro = itertools.islice(micro, self.max_steps_per_epoch)
        with self.precision.tf32_matmuls():
            train_loss = self.train_batches(micro)
            self.epoch += 1
            val = self.evaluate(self.task.val)
            test = val if self.task.test is self.task.val else self.evaluate(self.task.test)
        lr = self.optimizer.param_groups[0]["lr"]
        return EpochResult(self.epoch, train_loss, val, test, time.perf_counter() - t0, lr)

    def train_batches(self, micro_batches: Iterable, on_micro_batch=None) -> float:
        """One epoch of `train_epoch` over explicit (x, y) micro-batches with this refiner's optimiser,
        schedule and loss (does not advance `epoch`). Returns the mean micro-batch loss.

        Args:
            micro_batches: iterable of (x, y).
            on_micro_batch: called with a `MicroBatch` after each micro-batch, or None.
        """
        return train_epoch(
            self.model,
            micro_batches,
            self.loss_fn,
            self.optimizer,
            self.scheduler,
            accum=self.hp.accum,
            clip=self.hp.clip,
            device=self.device,
            on_micro_batch=on_micro_batch,
            precision=self.precision,
            scaler=self.scaler,
        )

    # ---- evaluation ------------------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, split: Split, order: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(outputs, targets) over a whole split (in `order`, default as stored); multilabel outputs through a
        sigmoid, regression outputs and targets de-normalised.

        Args:
            split: the split to predict.
            order: row indices in the order wanted, or None for stored order.
        """
        self.model.eval()
        outs, ys = [], []
        for x, y, _ in batches(split, self.hp.eval_batch_size, order):
            with self.precision.autocast(self.device):
                out = self.model(torch.from_numpy(x).to(self.device))
            out = out.float()
            if self.task.kind == "multilabel":
                out = torch.sigmoid(out)
            elif self.task.kind == "regression" and self.task.y_normalizer is not None:
                out = self.task.y_normalizer.decode(out)
                y = self.task.y_normalizer.decode(y)
            outs.append(out.cpu().numpy())
            ys.append(np.asarray(y))
        return np.concatenate(outs), np.concatenate(ys)

    def evaluate(self, split: Split) -> float:
        """The task's metric on `split`: over the whole split ("honest"), or ORCA's mean over chunks of
        loader batches ("orca"), in stored order -- or, for a task whose reference loader shuffles
        (`task.shuffle_eval`, ORCA's DeepSEA), in a fresh seeded order per epoch.

        Args:
            split: the split to score (the task's val or test).
        """
        if self.protocol == "orca":
            order = None
            if self.task.shuffle_eval:
                order = np.random.default_rng([self.seed, self.epoch, 2]).permutation(len(split))
            outputs, targets = self.predict(split, order)
            chunks = orca_chunks(len(targets), self.hp.batch_size, ORCA_EVAL_CHUNK)
            return chunked_metric(self.task.metric, targets, outputs, chunks)
        outputs, targets = self.predict(split)
        return compute_metric(self.task.metric, targets, outputs, split.groups)
