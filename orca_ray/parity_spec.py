"""The golden-trace format shared by the ORCA parity maker and `orca_ray.parity` (numpy only).

The maker (`benchmarks/orca_parity/make_golden.py`) runs in ORCA's own environment and imports this module
too, so it must stay free of torch, transformers and everything else of this project.

Seeded weights: ORCA hard-codes its bodies' widths (RoBERTa 768, Swin-base 128→1024), so even one-layer
bodies are megabytes of float32. Instead of storing them, the golden files list every tensor (name, shape,
index) and both sides draw it with `seeded_array`, from numpy's frozen legacy `RandomState` stream, and check
the SHA-256 of the bytes (`tensors_sha256`) before use: the same weights on both sides, proven, in a few KB.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

FORMAT_VERSION = 1
ORCA_COMMIT = "19b8c1c"
MANIFEST = "manifest.json"


def is_norm_weight(name: str, ndim: int) -> bool:
    """Whether a tensor is a normalisation layer's scale (drawn around 1 rather than 0).

    Args:
        name: the tensor's name in its module's state dict.
        ndim: its number of dimensions.
    """
    return ndim == 1 and name.endswith("weight") and "norm" in name.lower()


def seeded_array(seed: int, index: int, shape: tuple[int, ...] | list[int], norm: bool) -> np.ndarray:
    """One deterministic float32 tensor of the golden weights: N(0, 1) from `RandomState([seed, index])`,
    scaled to 0.02 (or 1 + 0.1·N for a normalisation scale). numpy keeps RandomState's stream frozen, so
    every numpy version draws the same values.

    Args:
        seed: the golden set's weight seed.
        index: the tensor's position in its list (each tensor has its own stream).
        shape: the tensor's shape.
        norm: draw a normalisation scale (around 1).
    """
    n = int(np.prod(shape)) if len(shape) else 1
    z = np.random.RandomState([int(seed), int(index)]).standard_normal(n)
    v = 1.0 + 0.1 * z if norm else 0.02 * z
    return v.astype(np.float32).reshape(tuple(shape))


def seeded_tensors(seed: int, specs: list) -> dict[str, np.ndarray]:
    """{name: array} for specs `[[name, shape, index], ...]` (`seeded_array` each).

    Args:
        seed: the weight seed.
        specs: the tensor list as stored in the golden JSON.
    """
    return {
        name: seeded_array(seed, index, shape, is_norm_weight(name, len(shape)))
        for name, shape, index in specs
    }


def tensors_sha256(tensors: dict[str, np.ndarray]) -> str:
    """SHA-256 over the names, shapes and float32 bytes of `tensors` in sorted-name order.

    Args:
        tensors: name → array.
    """
    h = hashlib.sha256()
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name], dtype=np.float32)
        h.update(name.encode())
        h.update(json.dumps(list(a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def read_manifest(golden: str | Path) -> dict:
    """The golden folder's manifest (cases, options, versions), checked for the format version.

    Args:
        golden: the golden folder.
    """
    path = Path(golden) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: no golden traces there. Make them with "
            "benchmarks/orca_parity/make_golden.py (see its README) or pass --golden DIR"
        )
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT_VERSION:
        raise ValueError(
            f"{path}: golden format {manifest.get('format')!r}, this code reads {FORMAT_VERSION}; "
            "remake the golden files with this project's make_golden.py"
        )
    return manifest
