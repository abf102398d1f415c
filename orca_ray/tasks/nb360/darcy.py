"""NAS-Bench-360 Darcy Flow (FNO's piecewise-constant coefficient fields).

Format: ``piececonst_r421_N1024_smooth{1,2}.mat`` fields ``coeff`` and ``sol`` (N, 421, 421) (MATLAB v5 through
scipy, v7.3/HDF5 through h5py, whose arrays come out transposed). Train = first 1,000 of smooth1, test = first
100 of smooth2, subsampled ``::5`` to 85x85. x = [coeff normalised per pixel, grid, grid] with the grid built
as ORCA (``np.meshgrid`` 'xy' indexing: channel 1 varies along the columns, channel 2 along the rows); both
normalisers (x and y) are per-pixel unit-Gaussian fitted on the training part only. The targets are stored
normalised and the Task carries ``y_normalizer`` so predictions are decoded before the relative L2 metric.
Validation: a seeded ``val_fraction`` of the 1,000 (NAS-Bench-360: 900/100; ORCA took rows 900:1000).
Checked against ORCA (sjunhongshen/ORCA, src/data_loaders.py) and NAS-Bench-360 (rtu715/NAS-Bench-360, its
download script and per-task loaders).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import register_task
from ..base import Split, Task, TaskDataError, UnitGaussianNormalizer, carve_validation
from .cache import cached_arrays
from .files import _bad_file, _finite_or_fail, _redownload, require

DARCY_GRID = 421


def _read_mat_fields(path: Path, fields: tuple[str, ...], n: int, sub: int) -> dict[str, np.ndarray]:
    """First `n` samples of each (N, 421, 421) field subsampled [::sub, ::sub], float32, MATLAB v5 or v7.3."""
    import h5py

    out = {}
    if h5py.is_hdf5(path):  # MATLAB v7.3: HDF5 (after a 512-byte userblock); arrays stored transposed
        try:
            with h5py.File(path, "r") as f:
                for name in fields:
                    if name not in f:
                        raise _bad_file(
                            path,
                            f"no field {name!r} (fields: {sorted(f.keys())})",
                            _redownload(path, "darcy"),
                        )
                    ds = f[name]
                    if ds.ndim != 3 or ds.shape[:2] != (DARCY_GRID, DARCY_GRID):
                        raise _bad_file(
                            path,
                            f"field {name!r} has MATLAB shape {tuple(reversed(ds.shape))}, "
                            f"expected (N, {DARCY_GRID}, {DARCY_GRID})",
                            _redownload(path, "darcy"),
                        )
                    a = ds[
                        ::sub, ::sub, :n
                    ]  # read only the subsampled rows: HDF5 (W, H, N) == MATLAB (N, H, W)
                    out[name] = np.ascontiguousarray(a.transpose(2, 1, 0), dtype=np.float32)
        except TaskDataError:
            raise
        except (OSError, KeyError, ValueError, TypeError) as e:
            raise _bad_file(
                path,
                f"unreadable MATLAB v7.3/HDF5 file ({type(e).__name__}: {e})",
                _redownload(path, "darcy"),
            ) from e
        return out
    import scipy.io

    for name in fields:  # one field at a time: scipy reads a v5 variable whole
        try:
            d = scipy.io.loadmat(path, variable_names=[name])
        except NotImplementedError as e:
            raise _bad_file(path, f"unsupported MATLAB file ({e})", _redownload(path, "darcy")) from e
        except Exception as e:  # scipy raises ValueError/TypeError/OSError/... on bad headers or cut-off data
            raise _bad_file(
                path, f"not a readable MATLAB .mat file ({type(e).__name__}: {e})", _redownload(path, "darcy")
            ) from e
        if name not in d:
            raise _bad_file(
                path,
                f"no field {name!r} (fields: {sorted(k for k in d if not k.startswith('__'))})",
                _redownload(path, "darcy"),
            )
        a = d.pop(name)
        if a.ndim != 3 or a.shape[1:] != (DARCY_GRID, DARCY_GRID):
            raise _bad_file(
                path,
                f"field {name!r} has shape {a.shape}, expected (N, {DARCY_GRID}, {DARCY_GRID})",
                _redownload(path, "darcy"),
            )
        out[name] = np.ascontiguousarray(a[:n, ::sub, ::sub], dtype=np.float32)
        del a, d
    return out


def _darcy_grid(s: int) -> tuple[np.ndarray, np.ndarray]:
    lin = np.linspace(0, 1, s, dtype=np.float32)
    gx, gy = np.meshgrid(lin, lin)  # 'xy' indexing as ORCA: gx[i, j] = lin[j], gy[i, j] = lin[i]
    return gx, gy


@register_task(
    "darcy",
    modality="2d",
    needs_data_root=True,
    description="NAS-Bench-360 Darcy Flow (.mat v5/v7.3), 3x85x85 -> 85x85, relative L2",
)
def darcy(
    data_root: Path,
    seed: int = 0,
    val_fraction: float = 0.1,
    n_train: int = 1000,
    n_test: int = 100,
    sub: int = 5,
    cache_dir: str | Path | None = None,
    protocol: str = "honest",
) -> Task:
    """NAS-Bench-360 Darcy Flow: 3x85x85 inputs → 85x85 solution, relative L2 (format: module docstring).

    Args:
        data_root: the folder holding the task's files (see `files.TASK_FILES`).
        seed: seed of the validation split.
        val_fraction: fraction of train held out for validation.
        n_train: samples of smooth1 used for train and validation.
        n_test: samples of smooth2 used for test.
        sub: subsampling step of the 421x421 grid (5 → 85x85).
        cache_dir: folder for the converted arrays (default `$ORCA_RAY_CACHE/nb360`).
        protocol: "honest" (the split above) or "orca" (all n_train samples train, normalisers fitted on all
            of them, val = test).
    """
    root = Path(data_root)
    p_train = require(root, "darcy", "piececonst_r421_N1024_smooth1.mat")
    p_test = require(root, "darcy", "piececonst_r421_N1024_smooth2.mat")

    def build(tmp: Path) -> None:
        for part, path, n in (("train", p_train, n_train), ("test", p_test, n_test)):
            fields = _read_mat_fields(path, ("coeff", "sol"), n, sub)
            if len(fields["coeff"]) != len(fields["sol"]):
                raise _bad_file(
                    path,
                    f"coeff has {len(fields['coeff'])} samples but sol {len(fields['sol'])}",
                    _redownload(path, "darcy"),
                )
            for name, a in fields.items():
                _finite_or_fail(path, f"field {name!r}", a)
                np.save(tmp / f"{name}_{part}.npy", a)

    a = cached_arrays(
        "darcy", [p_train, p_test], {"n_train": n_train, "n_test": n_test, "sub": sub}, build, cache_dir
    )
    coeff_tr, sol_tr = np.asarray(a["coeff_train"]), np.asarray(a["sol_train"])
    s = coeff_tr.shape[-1]
    rows = np.arange(len(coeff_tr))
    # carve on row numbers, then fit both normalisers on the remaining training rows only
    if protocol == "orca":
        tr_rows, val_rows = rows, rows[:0]
    else:
        tr_part, val_part = carve_validation(Split(rows, rows), val_fraction, seed, stratify=False)
        tr_rows, val_rows = tr_part.y, val_part.y
    x_norm = UnitGaussianNormalizer.fit(coeff_tr[tr_rows])
    y_norm = UnitGaussianNormalizer.fit(sol_tr[tr_rows])
    gx, gy = _darcy_grid(s)

    def split(coeff: np.ndarray, sol: np.ndarray) -> Split:
        x = np.empty((len(coeff), 3, s, s), dtype=np.float32)
        x[:, 0] = x_norm.encode(coeff)
        x[:, 1] = gx
        x[:, 2] = gy
        return Split(x, y_norm.encode(sol))

    test = split(np.asarray(a["coeff_test"]), np.asarray(a["sol_test"]))
    val = test if protocol == "orca" else split(coeff_tr[val_rows], sol_tr[val_rows])
    how = f"seeded {val_fraction:g} of the first {n_train} samples of smooth1 (seed {seed})"
    if protocol == "orca":
        how = f"none: the first {n_train} samples of smooth1 train, val = test (ORCA)"
    return Task(
        name="darcy",
        modality="2d",
        kind="regression",
        input_shape=(3, s, s),
        num_outputs=1,
        output_shape=(s, s),
        train=split(coeff_tr[tr_rows], sol_tr[tr_rows]),
        val=val,
        test=test,
        y_normalizer=y_norm,
        metric="rel-l2",
        loss="rel_l2",
        source=f"{p_train}, {p_test}",
        files=(str(p_train), str(p_test)),
        notes={
            "val_split": how,
            "train_rows": tr_rows,
            "val_rows": val_rows,
            "x": "[coeff per-pixel unit-Gaussian, grid varying along columns, grid varying along rows] (ORCA)",
        },
    )
