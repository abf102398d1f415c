"""Numeric precision of a trial: fp32 (ORCA's numbers, the default), bf16 or fp16 autocast, and TF32 matmuls.

    prec = Precision("bf16")
    with prec.autocast(device):            # the model's forward; losses and OTDD stay float32
        out = model(x)
    scaler = prec.grad_scaler(device)      # fp16 only: scales the loss, skips steps whose gradients overflow

fp32 is a no-op everywhere (no autocast, no scaler), so its numbers are bit-identical to a run without this
module. bf16 keeps fp32's exponent range and needs no scaler; fp16 has a 5-bit exponent, so its gradients go
through `torch.amp.GradScaler`, which skips an optimiser step whose gradients hold inf/NaN and lowers the scale.
TF32 (CUDA matmuls and convolutions on a 10-bit mantissa) is used only when asked (`tf32=True`): it is a
process-wide torch switch, so `tf32_matmuls` sets it for a block and restores it afterwards.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch

PRECISIONS = ("fp32", "bf16", "fp16")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Precision:
    """How a trial computes: the autocast dtype of forward passes and whether TF32 matmuls are allowed.

    Args:
        name: "fp32" (no autocast: ORCA's numbers), "bf16" or "fp16" (autocast of the model's forward).
        tf32: allow TF32 for float32 matmuls and convolutions on CUDA (no effect on CPU).
    """

    name: str = "fp32"
    tf32: bool = False

    def __post_init__(self):
        if self.name not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.name!r}")

    @property
    def dtype(self) -> torch.dtype:
        """The autocast dtype (float32 for fp32)."""
        return DTYPES[self.name]

    @property
    def mixed(self) -> bool:
        """Whether forwards run under autocast (bf16, fp16)."""
        return self.name != "fp32"

    def autocast(self, device: torch.device | str):
        """A context that runs the forward passes in this precision on `device` (a no-op for fp32).

        Args:
            device: where the model runs ("cpu", "cuda", a torch.device).
        """
        if not self.mixed:
            return nullcontext()
        return torch.autocast(torch.device(device).type, dtype=self.dtype)

    def grad_scaler(self, device: torch.device | str) -> torch.amp.GradScaler | None:
        """A fresh gradient scaler for fp16 on `device`, else None (fp32 and bf16 need none).

        Args:
            device: where the model's gradients live.
        """
        if self.name != "fp16":
            return None
        return torch.amp.GradScaler(torch.device(device).type)

    @contextmanager
    def tf32_matmuls(self):
        """Allow TF32 in CUDA matmuls and cuDNN convolutions inside the block when `tf32` is set; restores
        torch's previous switches on exit (they are process-wide). Without `tf32` nothing is touched."""
        if not self.tf32:
            yield
            return
        before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before

    def label(self) -> str:
        """The precision as recorded in Parquet: "fp32", "bf16", "fp16", with "+tf32" when TF32 is allowed."""
        return self.name + ("+tf32" if self.tf32 else "")


FP32 = Precision()
