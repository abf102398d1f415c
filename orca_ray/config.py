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
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from .embedders import check_embedder_kind
from .model import POOLS, freeze_label, parse_freeze
from .precision import Precision
from .recipes import PRESETS
from .tasks.base import PROTOCOLS

# fields that do not change a trial's results (where things live, how much to print)
_NOT_HASHED = {"data_root", "cache_dir", "device"}
# fields added after trials were first hashed: hashed only when set away from this default, so the trials of
# earlier sweeps keep their hashes (their folders, cached baselines, snapshots and resumes)
_HASHED_WHEN_SET = {
    "pool": "mean",
    "deterministic": False,
    "precision": "fp32",
    "tf32": False,
    "embedder": "orca",
    "lora_rank": 0,
    "lora_alpha": 16.0,
    "lora_dropout": 0.0,
}
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
    "protocol",  # ORCA's composition trains the embedder on train ∪ val
    "deterministic",  # other kernels, other last bits: a snapshot from either mode is not the other's
    "precision",  # autocast changes the aligned embedder (hashed only when not fp32, as the next)
    "tf32",
    "embedder",  # the kind of embedder that is aligned
)
# bumped when what an aligned embedder is changes (v2: ORCA's embedder init, StepLR lambda, class weights)
ALIGN_VERSION = "v2"


def flat_config(config: Mapping[str, Any]) -> dict:
    """A Tune trial's config as one flat dict of TrialConfig fields (and whatever else it holds).

    Grid sweeps nest the whole TrialConfig under "trial" (one Tune grid axis over trial configs, see
    sweep.runner.tune_space); Optuna sweeps are flat already.

    Args:
        config: the Tune trial config.
    """
    return {**{k: v for k, v in config.items() if k != "trial"}, **config.get("trial", {})}


def _drop_unset(values: dict) -> dict:
    """`values` without the `_HASHED_WHEN_SET` fields at their default (what a hash saw before they existed)."""
    return {k: v for k, v in values.items() if k not in _HASHED_WHEN_SET or v != _HASHED_WHEN_SET[k]}


@dataclass(frozen=True)
class TrialConfig:
    """One trial of a sweep: what to train and how, validated on construction.

    Args:
        task: target task name (see `tasks.load_task`).
        body: pretrained body name or path (see `bodies.load_body`).
        proxy: proxy data set; "auto": the body's default for the preset; "none": no embedder training.
        embedder_epochs: align epochs before fine-tuning.
        freeze: '+'-joined frozen parts of {embedder, body, predictor}, or "none".
        embedder: the embedder kind (see `embedders.EMBEDDERS`): "orca" (ORCA's), "linear", "orca-no-norm",
            "orca-no-pos".
        lora_rank: 0: off; r >= 1: the body's own weights stay frozen and rank-r LoRA adapters in its
            attention train with the embedder and predictor (see `lora`). Refused with a frozen body.
        lora_alpha, lora_dropout: LoRA's alpha (updates scaled by alpha / r) and adapter dropout.
        pool: how the point predictor reads the body's tokens: "mean" (ORCA) or "last" (the last token: the
            only one a causal body lets see the whole input).
        seed: data split, initialisation and batch order.
        preset: "demo" or "paper" (see `recipes.PRESETS`).
        protocol: "honest" (default): model selection on a validation split, metrics over whole splits,
            NAS-Bench-360's splits. "orca": ORCA's own protocol -- its split composition (validation data in
            train, "val" = test), its ECG split, metrics averaged over 1,000-sample chunks.
        refine_epochs, lr, optimizer, weight_decay, batch_size, accum, clip, warmup_epochs, decay_epochs,
            dropout: fine-tuning overrides (None: the task's recipe, see `recipes.hparams_for`).
        align_lr, align_batch_per_class, proxy_size, target_seq_len: align overrides.
        val_fraction, max_train_samples, max_eval_samples: validation split and seeded subsets.
        deterministic: pin PyTorch's, MKL's and oneDNN's CPU code paths and use deterministic algorithms
            (`machine.set_deterministic`), so the numbers do not depend on the node. It changes the numbers
            (other kernels), so it enters the hash (only when True: earlier trials keep their hashes).
        precision: "fp32" (ORCA's numbers), "bf16" or "fp16" autocast of the forwards in align and refine.
        tf32: allow TF32 matmuls / convolutions on CUDA (changes fp32 numbers on Ampere and later).
        data_root: NAS-Bench-360 files and proxy data; cache_dir: snapshots and features; device: where to
            train. These three do not enter the hash.
    """

    task: str
    body: str
    proxy: str = "auto"  # "auto": the body's default proxy for the preset; "none": no embedder training
    embedder_epochs: int = 0
    freeze: str = "none"  # '+'-joined frozen parts of {embedder, body, predictor}
    pool: str = "mean"  # "mean" or "last" (see model.POOLS)
    seed: int = 0
    embedder: str = "orca"
    lora_rank: int = 0  # 0: off
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    preset: str = "demo"
    protocol: str = "honest"
    # fine-tuning overrides (None: the task's recipe, see recipes.hparams_for)
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
    deterministic: bool = False
    # numerics (hashed only when not fp32 / False, see _HASHED_WHEN_SET)
    precision: str = "fp32"
    tf32: bool = False
    data_root: str | None = None
    cache_dir: str | None = None
    device: str = "auto"

    def __post_init__(self):
        if self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {tuple(PRESETS)}, got {self.preset!r}")
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {self.protocol!r}")
        if self.pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {self.pool!r}")
        if self.embedder_epochs < 0:
            raise ValueError(f"embedder_epochs must be >= 0, got {self.embedder_epochs}")
        if self.proxy == "none" and self.embedder_epochs:
            raise ValueError("proxy='none' means no embedder training; set embedder_epochs=0 or name a proxy")
        object.__setattr__(self, "freeze", freeze_label(parse_freeze(self.freeze)))
        check_embedder_kind(self.embedder)
        if self.lora_rank < 0:
            raise ValueError(f"lora_rank must be >= 0 (0: no LoRA), got {self.lora_rank}")
        if self.lora_rank and "body" in parse_freeze(self.freeze):
            raise ValueError(
                f"lora_rank={self.lora_rank} trains adapters inside the body but freeze={self.freeze!r} "
                "keeps the body fixed: drop 'body' from the freeze mask or set lora_rank 0"
            )
        if not self.lora_alpha > 0:
            raise ValueError(f"lora_alpha must be > 0, got {self.lora_alpha}")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
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
        Precision(self.precision, self.tf32)  # validates the name

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrialConfig:
        """A TrialConfig from its fields; unknown keys fail naming them.

        Args:
            d: field name → value.
        """
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown trial config field(s) {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)

    @classmethod
    def from_tune(cls, config: Mapping[str, Any]) -> TrialConfig:
        """The TrialConfig inside a Tune trial config (grid: under "trial"; Optuna: flat); other keys ignored.

        Args:
            config: the Tune trial config.
        """
        known = {f.name for f in fields(cls)}
        return cls.from_dict({k: v for k, v in flat_config(config).items() if k in known})

    def to_dict(self) -> dict:
        """Every field as a plain dict (what a grid sweep hands Tune; `from_dict` inverts it)."""
        return asdict(self)

    @property
    def config_hash(self) -> str:
        """Stable over runs and machines: names trial directories and Parquet rows."""
        keys = sorted(f.name for f in fields(self) if f.name not in _NOT_HASHED)
        blob = json.dumps(_drop_unset({k: getattr(self, k) for k in keys}), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def align_key(self) -> str:
        """Identifies the aligned-embedder trajectory; snapshots live under it, one per epoch. The proxy is
        hashed resolved, so "auto" and the proxy it stands for share snapshots."""
        proxy = self.proxy
        if proxy == "auto":
            from .proxies import resolve_proxy

            proxy = resolve_proxy(proxy, self.body, self.preset)
        blob = json.dumps(
            {
                **_drop_unset(
                    {k: proxy if k == "proxy" else getattr(self, k) for k in sorted(_ALIGN_FIELDS)}
                ),
                "version": ALIGN_VERSION,
            },
            sort_keys=True,
            default=str,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def numerics(self) -> Precision:
        """The trial's `Precision` (autocast dtype and TF32)."""
        return Precision(self.precision, self.tf32)

    @property
    def frozen_parts(self) -> frozenset[str]:
        """The frozen parts as a set (see `model.parse_freeze`)."""
        return parse_freeze(self.freeze)

    def short_name(self) -> str:
        """A readable, unique, file-name-safe trial name: task (short form: specs may hold `/`), body, proxy,
        embedder epochs, freeze, the embedder kind and LoRA rank when not the defaults, seed and hash prefix."""
        from .tasks.specs import task_slug

        kinds = (f"-{self.embedder}" if self.embedder != "orca" else "") + (
            f"-r{self.lora_rank}" if self.lora_rank else ""
        )
        return (
            f"{task_slug(self.task)}-{self.body.replace('/', '_').replace(':', '_')}-{self.proxy}-"
            f"e{self.embedder_epochs}-{self.freeze}{kinds}-s{self.seed}-{self.config_hash[:8]}"
        )
