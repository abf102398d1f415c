"""NAS-Bench-360 Satellite (satellite image time series, 24 land-cover classes).

Format: ``satellite_{train,test}.npy``, each a pickled dict {'data': (N, 46), 'label': 1..24} (read through
`orca_ray.untrusted.load_npy`: numpy arrays and plain containers only); labels shifted to 0..23. NAS-Bench-360
z-scores every series on its own (mean/std over its 46 values); ORCA feeds the raw values -- ``zscore=False``
(default) follows ORCA, ``zscore=True`` NAS-Bench-360. Validation: the last ``len(test)`` rows of the training
file, as NAS-Bench-360 (ORCA's own version overlaps train); protocol "orca": the whole training file trains,
val = test. Converted once per node into memory-mapped ``.npy`` files (see `cache`). Checked against ORCA
(sjunhongshen/ORCA, src/data_loaders.py) and NAS-Bench-360 (rtu715/NAS-Bench-360, its
download script and per-task loaders).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from ...untrusted import UnsafePickleError, load_npy
from .. import register_task
from ..base import Split, Task, TaskDataError, carve_validation
from .cache import _check_space, _new_npy, cached_arrays
from .files import _bad_file, _field, _finite_or_fail, _int_labels, _redownload, require


def _satellite_dict(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        obj = load_npy(path)
        d = obj[()] if isinstance(obj, np.ndarray) and obj.dtype == object and obj.ndim == 0 else obj
    except UnsafePickleError as e:  # one line: the file and the global it references
        raise TaskDataError(str(e)) from None
    except (ValueError, OSError, EOFError, pickle.UnpicklingError, TypeError, IndexError) as e:
        raise _bad_file(
            path, f"not a readable pickled .npy ({type(e).__name__}: {e})", _redownload(path, "satellite")
        ) from e
    data = np.asarray(_field(d, "data", path, "satellite"))
    label = np.asarray(_field(d, "label", path, "satellite"))
    if data.ndim != 2 or data.shape[1] != 46 or not np.issubdtype(data.dtype, np.number):
        raise _bad_file(
            path,
            f"'data' must be numeric (N, 46), got {data.dtype} {data.shape}",
            _redownload(path, "satellite"),
        )
    label = _int_labels(path, label, len(data))
    if len(label) and (label.min() < 1 or label.max() > 24):
        raise _bad_file(
            path,
            f"'label' spans [{label.min()}, {label.max()}], NAS-Bench-360 stores 1..24",
            "use the original satellite files (labels 1..24 are shifted to 0..23 on load)",
        )
    return data, label


def satellite_arrays(
    data: np.ndarray, label: np.ndarray, zscore: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Model inputs and targets from the file's arrays: x (N, 1, 46) float32 -- raw values as ORCA feeds them,
    or each series z-scored over its 46 values (NAS-Bench-360) -- and labels 1..24 shifted to 0..23.

    Args:
        data: (N, 46) the file's 'data'.
        label: (N,) the file's 'label' (1..24).
        zscore: z-score each series on its own.
    """
    block = np.asarray(data, dtype=np.float64)
    if zscore:
        std = block.std(axis=1, keepdims=True)
        block = (block - block.mean(axis=1, keepdims=True)) / np.where(std > 0, std, 1.0)
    return block[:, None, :].astype(np.float32), np.asarray(label, dtype=np.int64) - 1


def _convert_satellite(tmp: Path, paths: dict[str, Path], zscore: bool, chunk: int = 1 << 16) -> None:
    for part, path in paths.items():
        data, label = _satellite_dict(path)
        _check_space(tmp, data.shape[0] * 46 * 4)
        x = _new_npy(tmp, f"x_{part}", np.float32, (len(data), 1, 46))
        ys = []
        for start in range(0, len(data), chunk):
            block = np.asarray(data[start : start + chunk], dtype=np.float64)
            _finite_or_fail(path, "'data'", block, start)
            x[start : start + chunk], y = satellite_arrays(block, label[start : start + chunk], zscore)
            ys.append(y)
        x.flush()
        del x, data
        np.save(tmp / f"y_{part}.npy", np.concatenate(ys) if ys else label - 1)


@register_task(
    "satellite",
    modality="1d",
    needs_data_root=True,
    description="NAS-Bench-360 Satellite (pickled .npy), 1x46 series, 24 classes, 0-1 error (memmap)",
)
def satellite(
    data_root: Path,
    seed: int = 0,
    val_fraction: float = 0.1,
    zscore: bool = False,
    val: str = "last",
    val_size: int | None = None,
    cache_dir: str | Path | None = None,
    protocol: str = "honest",
) -> Task:
    """NAS-Bench-360 Satellite: 1x46 series, 24 classes, 0-1 error; memory-mapped.

    val="last" (default): the last `val_size` rows of the training file (default len(test), NAS-Bench-360);
    train and val stay views of the node's memory map. val="random": a seeded stratified `val_fraction` (copies
    the chosen rows into this process).

    Args:
        data_root: the folder holding the task's files (see `files.TASK_FILES`).
        seed: seed of the validation split when val="random".
        val_fraction: fraction held out when val="random".
        zscore: z-score each series on its own (NAS-Bench-360); False (default) feeds raw values (ORCA).
        val: "last" or "random".
        val_size: rows held out when val="last" (default: the test set's size).
        cache_dir: folder for the converted arrays (default `$ORCA_RAY_CACHE/nb360`).
        protocol: "honest" (the split above) or "orca" (the whole training file trains, val = test; `val`
            unused).
    """
    root = Path(data_root)
    paths = {p: require(root, "satellite", f"satellite_{p}.npy") for p in ("train", "test")}
    a = cached_arrays(
        "satellite",
        list(paths.values()),
        {"zscore": bool(zscore)},
        lambda tmp: _convert_satellite(tmp, paths, bool(zscore)),
        cache_dir,
    )
    full = Split(a["x_train"], np.asarray(a["y_train"]))
    test = Split(a["x_test"], np.asarray(a["y_test"]))
    if protocol == "orca":
        train, val_split, how = full, test, "none: the whole training file trains, val = test (ORCA)"
    elif val == "last":
        n_val = len(a["y_test"]) if val_size is None else int(val_size)
        if not 0 < n_val < len(full):
            raise TaskDataError(f"{paths['train']}: cannot hold out {n_val} of {len(full)} training rows")
        cut = len(full) - n_val
        train = Split(full.x[:cut], full.y[:cut])  # slices of a memmap: no copy
        val_split = Split(full.x[cut:], full.y[cut:])
        how = f"last {n_val} rows of satellite_train.npy (NAS-Bench-360)"
    elif val == "random":
        train, val_split = carve_validation(full, val_fraction, seed)
        how = f"seeded stratified {val_fraction:g} of train (seed {seed})"
    else:
        raise ValueError(f"satellite: val must be 'last' or 'random', got {val!r}")
    return Task(
        name="satellite",
        modality="1d",
        kind="classification",
        input_shape=(1, 46),
        num_outputs=24,
        train=train,
        val=val_split,
        test=test,
        metric="error",
        source=f"{paths['train']}, {paths['test']}",
        files=tuple(str(p) for p in paths.values()),
        notes={"val_split": how, "zscore": "per series (NAS-Bench-360)" if zscore else "none (ORCA)"},
    )
