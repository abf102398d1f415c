"""How a training split reaches the device, batch by batch: resident on the device, or copied from the host.

    feed = TrainFeed.for_split(task.train, device, mode="auto")
    for x, y in feed.batches(batch_size, order):     # tensors on `device`, the rows `refine.batches` yields
        ...

"resident": the whole split is copied to the device once and every batch is an index into it (no per-batch
host→device copy, no worker processes). Chosen by "auto" on CUDA when the split takes at most
`DEVICE_SHARE` of the card's memory (and fits in what is free now); otherwise batches are read on the host as
`refine.batches` reads them and copied through pinned memory with non-blocking copies. On CPU, "auto" keeps
the host path (the data is in host memory already; a resident copy would only duplicate it). Either way the
batches hold the same rows in the same order with the same float32 values, so the numbers do not change.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from .tasks import Split

# the share of a card's total memory a training split may take to stay resident: the rest is the model's,
# its optimiser state's and the activations' (and, with fractional GPUs, the other trials' on the card)
DEVICE_SHARE = 0.10
MODES = ("auto", "resident", "host")


def batch_rows(n: int, batch_size: int, order: np.ndarray | None = None) -> Iterator[np.ndarray]:
    """The row indices of each batch: `order` (default 0..n-1) cut into `batch_size` pieces, each sorted
    (ascending reads are cheap on memory maps).

    Args:
        n: rows in the split.
        batch_size: rows per batch (the last may be smaller).
        order: row indices in batch order, or None for stored order.
    """
    order = np.arange(n) if order is None else order
    for start in range(0, n, batch_size):
        yield np.sort(order[start : start + batch_size])


def fits_on_device(nbytes: int, device: torch.device, share: float = DEVICE_SHARE) -> bool:
    """Whether `nbytes` may stay resident on a CUDA `device`: at most `share` of its total memory and less
    than what is free now. Always False off CUDA.

    Args:
        nbytes: the split's size in bytes (inputs and targets).
        device: the training device.
        share: the largest share of the card's total memory the split may take.
    """
    if device.type != "cuda":
        return False
    free, total = torch.cuda.mem_get_info(device)
    return nbytes <= share * total and nbytes < free


@dataclass
class TrainFeed:
    """Batches of one split on one device. Build it with `for_split`.

    Args:
        split: the split (numpy arrays, possibly memory-mapped).
        device: where the batches go.
        resident: the split's (x, y) tensors on `device`, or None to copy each batch from the host.
    """

    split: Split
    device: torch.device
    resident: tuple[torch.Tensor, torch.Tensor] | None = None

    @classmethod
    def for_split(
        cls,
        split: Split,
        device: torch.device,
        mode: str = "auto",
        share: float = DEVICE_SHARE,
    ) -> TrainFeed:
        """The feed `mode` asks for.

        Args:
            split: the training split.
            device: the training device.
            mode: "auto" (resident on CUDA when the split fits in `share` of the card, else host),
                "resident" (always, e.g. on CPU for tests), "host" (never).
            share: see `fits_on_device`.
        """
        if mode not in MODES:
            raise ValueError(f"data_on_device must be one of {MODES}, got {mode!r}")
        nbytes = int(split.x.nbytes + split.y.nbytes)
        if mode == "resident" or (mode == "auto" and fits_on_device(nbytes, device, share)):
            x = torch.from_numpy(np.ascontiguousarray(split.x)).to(device)
            y = torch.from_numpy(np.ascontiguousarray(split.y)).to(device)
            return cls(split, device, (x, y))
        return cls(split, device, None)

    def batches(
        self,
        batch_size: int,
        order: np.ndarray | None = None,
        augment: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(x, y) tensors on the device, the rows of `batch_rows(len(split), batch_size, order)`.

        Args:
            batch_size: rows per batch.
            order: row indices in batch order, or None for stored order.
            augment: a numpy transform of each input batch (ORCA's crop/flip): host batches only.
        """
        if augment is not None and self.resident is not None:
            raise ValueError("a resident split cannot take a numpy augmentation; use the host feed")
        pin = self.device.type == "cuda"
        for idx in batch_rows(len(self.split), batch_size, order):
            if self.resident is not None:
                i = torch.from_numpy(idx).to(self.device)
                yield self.resident[0][i], self.resident[1][i]
                continue
            x, y = np.asarray(self.split.x[idx]), np.asarray(self.split.y[idx])
            if augment is not None:
                x = augment(x)
            yield _to_device(x, self.device, pin), _to_device(y, self.device, pin)


def _to_device(a: np.ndarray, device: torch.device, pin: bool) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(a))
    if pin:  # a page-locked buffer lets the copy run asynchronously with the previous batch's compute
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)
