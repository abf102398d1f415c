"""Stage 3 of ORCA: fine-tune embedder + body + predictor (under a freeze mask) on the target task.

    refiner = Refiner(model, task, recipes.hparams_for(task.name), seed=0)
    for result in refiner.fit():            # or refiner.run_epoch() one at a time (the trainable does)
        print(result.epoch, result.train_loss, result.val_score, result.test_score)

Per epoch: one pass over train with gradient accumulation and clipping, then scores over the whole val and
test splits. Deterministic on CPU for a seed (batch order and any dropout are drawn from (seed, epoch), so a
run resumed from `state_dict()` after epoch k continues exactly as if never stopped). Uses CUDA with bf16
autocast when present. No Ray here: the trainable reports what `run_epoch` returns.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .metrics import compute_metric
from .model import trainable_parameters, trainable_state_dict
from .tasks import Split, Task


@dataclass(frozen=True)
class RefineHParams:
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

    def lr_factor(self, epoch: int) -> float:
        """Linear warmup over `warmup_epochs` (from 1/warmup), then linear decay to 0 at `decay_epochs`.
        (ORCA's schedule; here the first epoch trains at lr/warmup rather than at 0.)"""
        if epoch < self.warmup_epochs:
            return (epoch + 1) / self.warmup_epochs
        return max(0.0, (self.decay_epochs - epoch) / max(1, self.decay_epochs - self.warmup_epochs))

    def with_overrides(self, **overrides) -> RefineHParams:
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


def make_optimizer(params, hp) -> torch.optim.Optimizer:
    """From any hyperparameters with optimizer, lr, betas, momentum, weight_decay (RefineHParams,
    align.AlignHParams)."""
    if hp.optimizer == "sgd":
        return torch.optim.SGD(params, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)
    if hp.optimizer not in ("adam", "adamw"):
        raise ValueError(f"optimizer must be sgd, adam or adamw, got {hp.optimizer!r}")
    cls = torch.optim.Adam if hp.optimizer == "adam" else torch.optim.AdamW
    return cls(params, lr=hp.lr, betas=hp.betas, weight_decay=hp.weight_decay)


def pick_device(device: str | None = None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def autocast_for(device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def batches(split: Split, batch_size: int, order: np.ndarray | None = None):
    """(x, y, idx) numpy batches in `order` (default: as stored). Reads memory-maps batch by batch."""
    n = len(split)
    order = np.arange(n) if order is None else order
    for start in range(0, n, batch_size):
        idx = np.sort(order[start : start + batch_size])  # ascending reads are cheap on memory maps
        yield np.asarray(split.x[idx]), np.asarray(split.y[idx]), idx


class TaskLoss(nn.Module):
    """The task's training loss on model outputs: cross-entropy, BCE-with-logits (pos_weight), or relative L2
    summed over the batch on de-normalised fields (Darcy, as ORCA/FNO)."""

    def __init__(self, task: Task):
        super().__init__()
        self.kind, self.loss = task.kind, task.loss
        self.normalizer = task.y_normalizer
        pw = None if task.pos_weight is None else torch.full((task.num_outputs,), float(task.pos_weight))
        self.register_buffer("pos_weight", pw, persistent=False)

    def forward(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.loss == "cross_entropy":
            return F.cross_entropy(out.float(), y)
        if self.loss == "bce":
            return F.binary_cross_entropy_with_logits(out.float(), y.float(), pos_weight=self.pos_weight)
        pred, true = out.float(), y.float()
        if self.normalizer is not None:
            pred, true = self.normalizer.decode(pred), self.normalizer.decode(true)
        diff = (pred - true).flatten(1).norm(dim=1)
        return (diff / true.flatten(1).norm(dim=1).clamp_min(1e-12)).sum()


@dataclass
class EpochResult:
    epoch: int  # 1-based: epochs done
    train_loss: float
    val_score: float
    test_score: float
    seconds: float
    lr: float


class Refiner:
    """Owns the optimiser, schedule and epoch counter for one fine-tuning run of `model` on `task`."""

    def __init__(
        self,
        model: nn.Module,
        task: Task,
        hp: RefineHParams,
        *,
        seed: int = 0,
        device: str | torch.device | None = None,
        max_steps_per_epoch: int | None = None,
    ):
        self.task, self.hp, self.seed = task, hp, seed
        self.device = pick_device(device) if not isinstance(device, torch.device) else device
        self.model = model.to(self.device)
        params = trainable_parameters(model)
        if not params:
            raise ValueError("no trainable parameters: the freeze mask froze everything")
        self.optimizer = make_optimizer(params, hp)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, hp.lr_factor)
        self.loss_fn = TaskLoss(task).to(self.device)
        self.epoch = 0
        self.max_steps_per_epoch = max_steps_per_epoch

    # ---- checkpointing ---------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything needed to continue: trainable weights only, optimiser, schedule, epoch."""
        return {
            "model": trainable_state_dict(self.model),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch,
        }

    def load_state_dict(self, state: dict) -> None:
        missing = self.model.load_state_dict(state["model"], strict=False)
        if missing.unexpected_keys:
            raise ValueError(f"checkpoint holds weights this model lacks: {missing.unexpected_keys[:5]}")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch = int(state["epoch"])

    # ---- training --------------------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return self.epoch >= self.hp.epochs

    def fit(self):
        while not self.done:
            yield self.run_epoch()

    def run_epoch(self) -> EpochResult:
        t0 = time.perf_counter()
        lr = self.optimizer.param_groups[0]["lr"]
        train_loss = self._train_one_epoch()
        self.scheduler.step()
        self.epoch += 1
        val = self.evaluate(self.task.val)
        test = self.evaluate(self.task.test)
        return EpochResult(self.epoch, train_loss, val, test, time.perf_counter() - t0, lr)

    def _train_one_epoch(self) -> float:
        hp, model = self.hp, self.model
        model.train()
        rng = np.random.default_rng([self.seed, self.epoch])
        torch.manual_seed(int(rng.integers(2**31)))  # dropout / drop-path draws for this epoch
        order = rng.permutation(len(self.task.train))
        total, count, micro = 0.0, 0, 0
        self.optimizer.zero_grad(set_to_none=True)
        for step, (x, y, _) in enumerate(batches(self.task.train, hp.batch_size, order)):
            if self.max_steps_per_epoch is not None and step >= self.max_steps_per_epoch:
                break
            x, y = self._to_device(x, y)
            with autocast_for(self.device):
                out = model(x)
            loss = self.loss_fn(out, y)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"training loss is {loss.item()} at epoch {self.epoch + 1}, step {step}; "
                    f"lower the learning rate (now {self.optimizer.param_groups[0]['lr']:g})"
                )
            (loss / hp.accum).backward()
            micro += 1
            total += loss.item() * (1 if self.task.loss == "rel_l2" else len(y))
            count += len(y)
            if micro % hp.accum == 0:
                self._step()
        if micro % hp.accum:
            self._step()  # the last partial accumulation still counts
        return total / max(count, 1)

    def _step(self) -> None:
        if self.hp.clip is not None:
            torch.nn.utils.clip_grad_norm_(trainable_parameters(self.model), self.hp.clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def _to_device(self, x: np.ndarray, y: np.ndarray):
        return torch.from_numpy(x).to(self.device, non_blocking=True), torch.from_numpy(y).to(self.device)

    # ---- evaluation ------------------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, split: Split) -> tuple[np.ndarray, np.ndarray]:
        """(outputs, targets) over a whole split in stored order; regression outputs de-normalised."""
        self.model.eval()
        outs, ys = [], []
        for x, y, _ in batches(split, self.hp.eval_batch_size):
            with autocast_for(self.device):
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
        outputs, targets = self.predict(split)
        return compute_metric(self.task.metric, targets, outputs, split.groups)
