"""NAS-Bench-360 DeepSEA (chromatin profiles of DNA sequences, 36 labels).

Format: ``deepsea_filtered.npz`` with x_{train,val,test} (N, 1000, 4) one-hot and y_* (N, 36) 0/1, read as a
zip without unpickling and streamed in row blocks (the file does not fit in memory on small nodes). x is
transposed to 4x1000 as ORCA; BCE with pos_weight 4; the given validation split is used. Converted once per
node into memory-mapped ``.npy`` files (see `cache`). Checked against ORCA (sjunhongshen/ORCA, src/data_loaders.py) and NAS-Bench-360 (rtu715/NAS-Bench-360, its
download script and per-task loaders).
"""

from __future__ import annotations

import errno
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .. import register_task
from ..base import Split, Task, TaskDataError
from .cache import _check_space, _new_npy, cached_arrays
from .files import _bad_file, _redownload, require


def _npz_member(zf: zipfile.ZipFile, key: str, path: Path):
    member = f"{key}.npy"
    if member not in zf.namelist():
        raise _bad_file(
            path,
            f"no array {key!r} (arrays: {sorted(n[:-4] for n in zf.namelist())})",
            _redownload(path, "deepsea"),
        )
    f = zf.open(member)
    version = np.lib.format.read_magic(f)
    header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = header(f)
    if dtype.hasobject:
        f.close()
        raise _bad_file(path, f"array {key!r} holds Python objects", _redownload(path, "deepsea"))
    return f, tuple(shape), fortran, dtype


def _npz_shape(zf: zipfile.ZipFile, key: str, path: Path) -> tuple[int, ...]:
    f, shape, _, _ = _npz_member(zf, key, path)
    f.close()
    return shape


def _npz_rows(
    zf: zipfile.ZipFile, key: str, path: Path, chunk_bytes: int = 64 << 20
) -> Iterator[tuple[int, np.ndarray]]:
    """Stream one array of an .npz (stored or deflated) in row blocks without reading it whole."""
    f, shape, fortran, dtype = _npz_member(zf, key, path)
    with f:
        if fortran:  # not how the benchmark file is written; fall back to reading it whole
            f.close()
            with zf.open(f"{key}.npy") as g:
                yield 0, np.ascontiguousarray(np.lib.format.read_array(g, allow_pickle=False))
            return
        row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        step = max(1, chunk_bytes // max(1, row_bytes))
        for start in range(0, shape[0], step):
            k = min(step, shape[0] - start)
            buf = f.read(k * row_bytes)
            if len(buf) != k * row_bytes:
                raise _bad_file(
                    path,
                    f"array {key!r} is cut short at row {start + len(buf) // row_bytes}",
                    _redownload(path, "deepsea"),
                )
            yield start, np.frombuffer(buf, dtype=dtype).reshape(k, *shape[1:])
        f.read()  # reach the end so zipfile checks the CRC


def _convert_deepsea(tmp: Path, path: Path, merge_val: bool = False) -> None:
    """x_/y_{train,val,test} as memory-mappable .npy; with `merge_val` (ORCA) x_val/y_val are appended to
    x_train/y_train and there is no val part."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise _bad_file(path, f"not a readable .npz/zip file ({e})", _redownload(path, "deepsea")) from e
    try:
        with zf:
            sizes = {}
            for part in ("train", "val", "test"):
                xs, ys = _npz_shape(zf, f"x_{part}", path), _npz_shape(zf, f"y_{part}", path)
                if len(xs) != 3 or xs[1:] != (1000, 4):
                    raise _bad_file(
                        path,
                        f"x_{part} has shape {xs}, expected (N, 1000, 4) one-hot",
                        _redownload(path, "deepsea"),
                    )
                if len(ys) != 2 or ys[1] != 36 or ys[0] != xs[0]:
                    raise _bad_file(
                        path,
                        f"y_{part} has shape {ys}, expected ({xs[0]}, 36) to match x_{part}",
                        _redownload(path, "deepsea"),
                    )
                sizes[part] = xs[0]
            _check_space(tmp, sum(sizes.values()) * (4000 + 36) * 4)
            sources = {"train": ["train", "val"], "test": ["test"]} if merge_val else {p: [p] for p in sizes}
            for out, parts in sources.items():
                n = sum(sizes[p] for p in parts)
                x = _new_npy(tmp, f"x_{out}", np.float32, (n, 4, 1000))
                y = _new_npy(tmp, f"y_{out}", np.float32, (n, 36))
                offset = 0
                for part in parts:
                    for start, block in _npz_rows(zf, f"x_{part}", path):
                        x[offset + start : offset + start + len(block)] = block.transpose(0, 2, 1)  # ORCA
                    for start, block in _npz_rows(zf, f"y_{part}", path):
                        if not np.isin(block, (0, 1)).all():
                            raise _bad_file(
                                path,
                                f"y_{part} must be 0/1 labels (rows from {start})",
                                _redownload(path, "deepsea"),
                            )
                        y[offset + start : offset + start + len(block)] = block
                    offset += sizes[part]
                x.flush()
                y.flush()
                del x, y
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, zlib.error) as e:
        if isinstance(e, TaskDataError) or getattr(e, "errno", None) == errno.ENOSPC:
            raise
        raise _bad_file(path, f"cannot read ({type(e).__name__}: {e})", _redownload(path, "deepsea")) from e


@register_task(
    "deepsea",
    modality="1d",
    needs_data_root=True,
    description="NAS-Bench-360 DeepSEA (.npz), 4x1000 one-hot DNA, 36 labels, 1-AUROC (memmap)",
)
def deepsea(
    data_root: Path,
    seed: int = 0,
    val_fraction: float = 0.1,
    cache_dir: str | Path | None = None,
    protocol: str = "honest",
) -> Task:
    """NAS-Bench-360 DeepSEA: 4x1000 one-hot DNA, 36 labels, BCE with pos_weight 4, 1-AUROC; memory-mapped.

    Args:
        data_root: the folder holding the task's files (see `files.TASK_FILES`).
        seed: unused (the file's validation split is used).
        val_fraction: unused (the file's validation split is used).
        cache_dir: folder for the converted arrays (default `$ORCA_RAY_CACHE/nb360`).
        protocol: "honest" (the split above) or "orca" (x_val joins x_train in one memory map, val = test;
            `shuffle_eval` as ORCA's shuffling test loader).
    """
    path = require(Path(data_root), "deepsea", "deepsea_filtered.npz")
    merge = protocol == "orca"
    opts = {"merge_val": True} if merge else {}  # the honest layout keeps its existing cache key
    a = cached_arrays("deepsea", [path], opts, lambda tmp: _convert_deepsea(tmp, path, merge), cache_dir)
    sp = {p: Split(a[f"x_{p}"], a[f"y_{p}"]) for p in ("train", "test")}
    sp["val"] = sp["test"] if merge else Split(a["x_val"], a["y_val"])
    how = (
        "none: x_val joins train, val = test (ORCA)"
        if merge
        else "the file's x_val/y_val (val_fraction unused)"
    )
    return Task(
        name="deepsea",
        modality="1d",
        kind="multilabel",
        input_shape=(4, 1000),
        num_outputs=36,
        train=sp["train"],
        val=sp["val"],
        test=sp["test"],
        loss="bce",
        pos_weight=4.0,
        metric="1-auroc",
        source=str(path),
        files=(str(path),),
        notes={"val_split": how},
        shuffle_eval=True,
    )
