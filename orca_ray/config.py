"""TrialConfig: one trial of a sweep, validated and hashable.

The hash names the trial's directory and, through `align_key`, the embedder snapshots that trials share:
two trials that differ only in how they fine-tune (freeze mask, refine lr, epochs) reuse one aligned
embedder, and a trial asking for k embedder epochs starts from snapshot k of one that trained longer.
ORCA's results path omitted the embedder epochs, so parallel trials overwrote each other's embedders; the
key here holds every field the aligned embedder depends on.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields

from .model import freeze_label, parse_freeze

PRESETS = ("demo", "paper")

# fields that do not change a trial's results (where things live, how much to print)
_NOT_HASHED = {"data_root", "cache_dir", "device"}
# every field the aligned embedder depends on; the align optimiser is derived from the fine-tuning one
# (ORCA: same optimiser, lr ×10 when lr ≤ 1e-3), so lr / optimizer / weight_decay belong here too
_ALIGN_FIELDS = (
    "task",
    "body",
    "proxy",
    "seed",
    "proxy_size",
    "align_batch_per_class",
    "align_lr",
    "lr",
    "optimizer",
    "weight_decay",
    "target_seq_len",
    "val_fraction",
    "max_train_samples",
    "preset",
)


@dataclass(frozen=True)
class TrialConfig:
    task: str
    body: str
    proxy: str = "auto"  # "auto": the body's default proxy for the preset; "none": no embedder training
    embedder_epochs: int = 0
    freeze: str = "none"  # '+'-joined frozen parts of {embedder, body, predictor}
    seed: int = 0
    preset: str = "demo"
    # fine-tuning overrides (None: the task's defaults, see refine.hparams_for)
    refine_epochs: int | None = None
    lr: float | None = None
    optimizer: str | None = None
    weight_decay: float | None = None
    batch_size: int | None = None
    accum: int | None = None
    clip: float | None = None
    warmup_epochs: int | None = None
    decay_epochs: int | None = None
    dropout: float = 0.0
    # align overrides
    align_lr: float | None = None
    align_batch_per_class: int | None = None
    proxy_size: int = 5000
    target_seq_len: int | None = None
    # data
    val_fraction: float = 0.1
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    data_root: str | None = None
    cache_dir: str | None = None
    device: str = "auto"

    def __post_init__(self):
        if self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {PRESETS}, got {self.preset!r}")
        if self.embedder_epochs < 0:
            raise ValueError(f"embedder_epochs must be >= 0, got {self.embedder_epochs}")
        if self.proxy == "none" and self.embedder_epochs:
            raise ValueError("proxy='none' means no embedder training; set embedder_epochs=0 or name a proxy")
        object.__setattr__(self, "freeze", freeze_label(parse_freeze(self.freeze)))
        for name in ("refine_epochs", "batch_size", "accum", "align_batch_per_class", "proxy_size"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"{name} must be >= 1, got {v}")
        for name in ("lr", "align_lr"):
            v = getattr(self, name)
            if v is not None and not v > 0:
                raise ValueError(f"{name} must be > 0, got {v}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")

    @classmethod
    def from_dict(cls, d: dict) -> TrialConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown trial config field(s) {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)

    def _digest(self, keys) -> str:
        blob = json.dumps({k: getattr(self, k) for k in sorted(keys)}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def config_hash(self) -> str:
        """Stable over runs and machines: names trial directories and Parquet rows."""
        return self._digest(f.name for f in fields(self) if f.name not in _NOT_HASHED)

    @property
    def align_key(self) -> str:
        """Identifies the aligned-embedder trajectory; snapshots live under it, one per epoch."""
        return self._digest(_ALIGN_FIELDS)

    @property
    def frozen_parts(self) -> frozenset[str]:
        return parse_freeze(self.freeze)

    def short_name(self) -> str:
        return (
            f"{self.task}-{self.body.replace('/', '_').replace(':', '_')}-{self.proxy}-e{self.embedder_epochs}-"
            f"{self.freeze}-s{self.seed}-{self.config_hash[:8]}"
        )
