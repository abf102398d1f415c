"""What machine a trial ran on, and the deterministic mode that makes its numbers independent of it.

Why the numbers move between machines (measured on one AVX-512 Xeon by switching each dispatch level on its
own, README "Same numbers on any node"): PyTorch's own CPU kernels (`ATEN_CPU_CAPABILITY`), MKL's GEMMs and
LAPACK (`MKL_CBWR`) and oneDNN's convolutions (`ONEDNN_MAX_CPU_ISA`) each pick a code path from the CPU they
find, and each path rounds differently in the last bits. Every arm sees those last-bit differences; the
aligned arms amplify them most in fine-tuning, so it is their scores that move. `DETERMINISTIC_ENV` pins every
dispatch level to AVX2 (which any x86-64 CPU of the last decade has): those variables are read once, when
torch (and MKL, oneDNN) initialise, so they must be in a trial process's environment before it imports torch
(the sweep puts them in Ray's runtime environment). No Ray here.
"""

from __future__ import annotations

import os
import platform
import re
from functools import cache

import torch

from .results.schema import MACHINE_FIELDS

# read when torch / MKL / oneDNN / cuBLAS initialise: the trial process must start with these
DETERMINISTIC_ENV = {
    "ATEN_CPU_CAPABILITY": "avx2",  # PyTorch's vectorised CPU kernels (default: the best the CPU has)
    "MKL_CBWR": "AVX2",  # MKL's conditional numerical reproducibility: the AVX2 code path on every CPU
    "ONEDNN_MAX_CPU_ISA": "AVX2",  # oneDNN (convolutions): no AVX-512 / AMX kernels
    "CUBLAS_WORKSPACE_CONFIG": ":4096:8",  # cuBLAS: deterministic GEMM reductions (needed by torch's mode)
}
# the columns `machine_fingerprint` fills: the schema's machine columns, one list
FINGERPRINT_FIELDS = MACHINE_FIELDS


@cache
def cpu_model() -> str:
    """The CPU's model name (`/proc/cpuinfo` on Linux, else the platform's processor string)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@cache
def _build_versions() -> tuple[str | None, str | None]:
    """MKL and oneDNN versions as torch was built with them (torch has no API for MKL's)."""
    show = torch.__config__.show()
    mkl = re.search(r"Math Kernel Library Version ([0-9][^\s-]*)", show)
    dnn = re.search(r"MKL-DNN v([0-9.]+)", show)
    return (mkl.group(1) if mkl else None), (dnn.group(1) if dnn else None)


def machine_fingerprint(device: torch.device | str | None = None) -> dict:
    """The machine a trial runs on, as the Parquet fingerprint columns hold it.

    Args:
        device: the trial's training device; a CUDA device names its GPU model, anything else gives a null
            `gpu_model`.
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" and torch.cuda.is_available() else None
    mkl, dnn = _build_versions()
    return {
        "cpu_model": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "gpu_model": gpu,
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
        "mkl_version": f"{mkl} (oneDNN {dnn})" if mkl and dnn else mkl,
        "threads": torch.get_num_threads(),
    }


def deterministic_env() -> dict[str, str]:
    """The environment variables of deterministic mode (a copy of `DETERMINISTIC_ENV`)."""
    return dict(DETERMINISTIC_ENV)


def set_deterministic(enabled: bool) -> None:
    """Switch this process's deterministic algorithms on or off (a reused trial process keeps the setting of
    the trial before it otherwise), and check that the dispatch levels were pinned before torch started.

    Ops without a deterministic implementation warn (naming themselves) instead of failing the trial. TF32 is
    off (only some GPUs have it, so it is machine-dependent).

    Args:
        enabled: the trial's `deterministic` setting.

    Raises:
        RuntimeError: deterministic mode in a process whose environment lacks `DETERMINISTIC_ENV` (torch
            has initialised already, so setting it now would change nothing).
    """
    missing = {k: v for k, v in DETERMINISTIC_ENV.items() if os.environ.get(k) != v}
    if enabled and missing:
        raise RuntimeError(
            "deterministic mode needs these variables in the trial process's environment before torch starts: "
            + " ".join(f"{k}={v}" for k, v in missing.items())
            + " (the sweep's --deterministic sets them through Ray's runtime environment; outside a sweep, "
            "export them before starting Python)"
        )
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    if enabled:
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
