"""Measured GPU throughput on record: what `benchmarks/gpu.py` writes and the `--dry-run` estimate reads.

    record = load_throughput(default_throughput_path())   # None when no benchmark has run here
    entry = record.entry_for("roberta-base", "bf16") if record else None

The file is small JSON (format 1): the card, when and at which commit it was measured, and one entry per
workload and precision with refine samples/s and the align step time. It is read as untrusted input: a size
limit, plain JSON only, every number checked finite and positive; a bad file is one error line naming it.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

from .io import cache_root

THROUGHPUT_FILE = "throughput.json"
THROUGHPUT_ENV = "ORCA_RAY_THROUGHPUT"
FORMAT = 1
MAX_BYTES = 1 << 20
# body families the benchmark measures, by what a body name contains (the paper's two bodies)
FAMILIES = {"roberta-base": "roberta", "swin-base": "swin"}


class ThroughputFileError(ValueError):
    """A throughput file that is unreadable or not what `benchmarks/gpu.py` writes."""


def default_throughput_path() -> Path:
    """`$ORCA_RAY_THROUGHPUT`, else `<cache root>/throughput.json` (where `benchmarks/gpu.py` writes)."""
    env = os.environ.get(THROUGHPUT_ENV)
    return Path(env).expanduser() if env else cache_root() / THROUGHPUT_FILE


def measured_family(body: str) -> str | None:
    """The measured family a body belongs to ("roberta-base", "swin-base"), or None (not measured: small or
    other bodies keep the FLOP-based estimate).

    Args:
        body: a body name as a trial gives it ("random:roberta-base", "roberta-base-10M", "swin-base").
    """
    name = body.removeprefix("random:").lower()
    if "roberta" in name:
        return "roberta-base"
    if "swin" in name and "tiny" not in name:
        return "swin-base"
    return None


@dataclass(frozen=True)
class ThroughputEntry:
    """One measured workload at one precision.

    Args:
        body: the body family ("roberta-base", "swin-base").
        task: the task shape it was measured on ("satellite", "cifar100").
        precision: the precision label ("fp32", "bf16", "fp16", "fp32+tf32").
        refine_samples_per_s: training samples per second in refine (one trial alone on the card).
        align_step_s: seconds per align epoch (one optimiser step over b points per class).
    """

    body: str
    task: str
    precision: str
    refine_samples_per_s: float
    align_step_s: float


@dataclass(frozen=True)
class ThroughputRecord:
    """A benchmark result on record.

    Args:
        path: the file it was read from.
        device: the card's name.
        measured_at: ISO time of the run.
        commit: the code's commit.
        entries: the measured workloads.
    """

    path: str
    device: str
    measured_at: str
    commit: str
    entries: tuple[ThroughputEntry, ...]

    def entry_for(self, body: str, precision: str) -> ThroughputEntry | None:
        """The entry measured for this body's family at this precision, or None.

        Args:
            body: the trial's body name.
            precision: the trial's precision label (`Precision.label()`).
        """
        family = measured_family(body)
        for e in self.entries:
            if e.body == family and e.precision == precision:
                return e
        return None

    def describe(self) -> str:
        """One line: the card, the date and the file."""
        return f"{self.device}, measured {self.measured_at[:10]} at {self.commit[:10]} ({self.path})"


def _positive(path, where: str, v) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v <= 0:
        raise ThroughputFileError(
            f"{path}: {where} must be a positive number, got {v!r}. Fix: rerun benchmarks/gpu.py"
        )
    return float(v)


def _text(path, where: str, v, limit: int = 200) -> str:
    if not isinstance(v, str) or len(v) > limit:
        raise ThroughputFileError(f"{path}: {where} must be a string of at most {limit} characters")
    return v


def load_throughput(path: str | Path) -> ThroughputRecord | None:
    """The record in `path`, or None when the file does not exist.

    Args:
        path: a throughput JSON (`benchmarks/gpu.py --out`).

    Raises:
        ThroughputFileError: naming the file and the field, for anything else than what the benchmark writes.
    """
    path = Path(path)
    if not path.is_file():
        return None
    if path.stat().st_size > MAX_BYTES:
        raise ThroughputFileError(f"{path}: larger than {MAX_BYTES} bytes; not a benchmarks/gpu.py result")
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ThroughputFileError(f"{path}: not readable JSON ({e}). Fix: rerun benchmarks/gpu.py") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT or not isinstance(raw.get("entries"), list):
        raise ThroughputFileError(f"{path}: not a format-{FORMAT} benchmarks/gpu.py result")
    entries = []
    for i, e in enumerate(raw["entries"][:100]):
        if not isinstance(e, dict):
            raise ThroughputFileError(f"{path}: entries[{i}] must be an object")
        if e.get("body") not in FAMILIES:  # quick (tiny) shapes say nothing about the paper's bodies
            continue
        entries.append(
            ThroughputEntry(
                body=e["body"],
                task=_text(path, f"entries[{i}].task", e.get("task")),
                precision=_text(path, f"entries[{i}].precision", e.get("precision")),
                refine_samples_per_s=_positive(
                    path, f"entries[{i}].refine_samples_per_s", e.get("refine_samples_per_s")
                ),
                align_step_s=_positive(path, f"entries[{i}].align_step_s", e.get("align_step_s")),
            )
        )
    if raw.get("device_type") != "cuda":
        entries = []  # a CPU run is no GPU-hour estimate
    return ThroughputRecord(
        path=str(path),
        device=_text(path, "device", raw.get("device")),
        measured_at=_text(path, "measured_at", raw.get("measured_at")),
        commit=_text(path, "commit", raw.get("commit")),
        entries=tuple(entries),
    )
