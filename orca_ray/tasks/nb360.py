"""NAS-Bench-360 tasks read from the benchmark's own files (as ORCA and NAS-Bench-360 ship them).

    load_task("satellite", data_root="/data/nb360")      # cifar100, ninapro, darcy, satellite, deepsea, ecg

Every file may sit directly in the data root or in a per-task folder (``ROOT/<file>`` or
``ROOT/<task>/<file>``; the folder names of NAS-Bench-360's download script -- ``cifar-100``, ``ninaPro``,
``darcyflow`` -- are accepted too). ``python -m orca_ray.data check ROOT`` lists what is present and missing.

Formats and split logic, checked against ORCA (sjunhongshen/ORCA, src/data_loaders.py) and NAS-Bench-360
(rtu715/NAS-Bench-360, its download script and per-task loaders):

- CIFAR-100: torchvision's ``cifar-100-python/{train,test,meta}`` pickles ('data' uint8 (N, 3072) in CHW order,
  'fine_labels'); scaled to [0, 1] and normalised with mean (0.5071, 0.4867, 0.4408), std (0.2675, 0.2565,
  0.2761) as ORCA's ``load_cifar``. Validation: a seeded stratified ``val_fraction`` of train (NAS-Bench-360 used
  10,000 images, i.e. ``val_fraction=0.2``). ORCA's random-crop/flip augmentation is not applied here.
- NinaPro DB5: ``ninapro_{train,val,test}.npy`` (N, 52, 16) and ``label_{train,val,test}.npy``; ORCA permutes
  to (N, 16, 52) and adds a channel: 1x16x52. The given validation split is used (2,638/659/659).
- Darcy Flow: ``piececonst_r421_N1024_smooth{1,2}.mat`` fields ``coeff`` and ``sol`` (MATLAB v5 through scipy,
  v7.3/HDF5 through h5py, whose arrays come out transposed). Train = first 1,000 of smooth1, test = first 100
  of smooth2, subsampled ``::5`` to 85x85. x = [coeff normalised per pixel, grid, grid] with the grid built as
  ORCA (``np.meshgrid`` 'xy' indexing: channel 1 varies along the columns, channel 2 along the rows); both
  normalisers (x and y) are per-pixel unit-Gaussian fitted on the training part only. The targets are stored
  normalised and the Task carries ``y_normalizer`` so predictions are decoded before the relative L2 metric.
  Validation: a seeded ``val_fraction`` of the 1,000 (NAS-Bench-360: 900/100; ORCA took rows 900:1000).
- Satellite: ``satellite_{train,test}.npy`` each a pickled dict {'data': (N, 46), 'label': 1..24}; labels
  shifted to 0..23. NAS-Bench-360 z-scores every series on its own (mean/std over its 46 values); ORCA feeds
  the raw values -- ``zscore=True`` (default) follows NAS-Bench-360, ``zscore=False`` ORCA. Validation: the
  last ``len(test)`` rows of the training file, as NAS-Bench-360 (ORCA's own version overlaps train).
- DeepSEA: ``deepsea_filtered.npz`` with x_{train,val,test} (N, 1000, 4) one-hot and y_* (N, 36); x is
  transposed to 4x1000 as ORCA; BCE with pos_weight 4; the given validation split is used.
- ECG: ``challenge2017.pkl`` {'data': recordings (1-D), 'label': 'N'/'A'/'O'/'~'} -> 0..3; every recording
  z-scored on its own; recordings split 80/10/10 with ``sklearn.model_selection.train_test_split``
  (test_size=0.2 then 0.5, random_state=0) as NAS-Bench-360's ``read_data_physionet_4_with_val`` (the split is
  the benchmark's, fixed, not the trial seed); windows of 1,000 cut by ``slide_and_cut``: starts
  ``range(0, len - 1000, stride)`` with a class-dependent stride -- N 500, A 500//6 = 83, O 250, ~ 25 -- for every
  split (NAS-Bench-360 and ORCA do this for train, val and test alike; ``eval_class_strides=False`` cuts
  val/test with the plain 500 so the windowing does not depend on the label). Recordings shorter than 1,001
  samples give no window and drop out (as in the reference). ``groups`` = recording index, so the
  "1-macro-f1" metric votes per recording.

Memory: DeepSEA, Satellite and ECG (and Darcy's subsampled fields) are converted once per node into plain
``.npy`` files in a node-local cache (``$ORCA_RAY_CACHE/nb360`` or ``~/.cache/orca_ray/nb360``), keyed by the
source files' path, size and mtime plus the options, written to a temporary folder and renamed into place
under a file lock, then opened with ``np.load(mmap_mode="r")``: every trial process on a node shares the OS
page cache instead of holding its own copy. Point the cache at node-local disk (not NFS).
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import pickle
import shutil
import time
import uuid
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import register_task
from .base import Split, Task, TaskDataError, UnitGaussianNormalizer, carve_validation

log = logging.getLogger(__name__)

NB360_PAGE = "https://rtu715.github.io/NAS-Bench-360/"
_S3 = "https://pde-xd.s3.amazonaws.com"
CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
CACHE_VERSION = 1


# ---- where files go ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DataFile:
    task: str
    name: str  # path relative to ROOT or ROOT/<task>/, e.g. "cifar-100-python/train"
    url: str
    what: str

    def places(self, root: Path) -> list[Path]:
        """Every accepted location, preferred first: ROOT/<name>, ROOT/<task>/<name>, then folder aliases."""
        return [root / self.name] + [root / d / self.name for d in TASK_DIRS[self.task]]

    def find(self, root: Path) -> Path | None:
        return next((p for p in self.places(root) if p.is_file()), None)

    def where(self, root: Path) -> str:
        places = self.places(root)
        return f"{places[0]} or {places[1]}"

    def how_to_get(self) -> str:
        if self.task == "cifar100":
            return f"download {self.url} and extract it (it holds the cifar-100-python folder)"
        return f"download {self.url} (NAS-Bench-360 download page: {NB360_PAGE})"


TASK_DIRS: dict[str, tuple[str, ...]] = {
    "cifar100": ("cifar100", "cifar-100"),
    "ninapro": ("ninapro", "ninaPro"),
    "darcy": ("darcy", "darcyflow"),
    "satellite": ("satellite",),
    "deepsea": ("deepsea",),
    "ecg": ("ecg", "ECG"),
}

TASK_FILES: dict[str, tuple[DataFile, ...]] = {
    "cifar100": tuple(
        DataFile("cifar100", f"cifar-100-python/{n}", CIFAR100_URL, w)
        for n, w in (
            ("train", "training images (pickle)"),
            ("test", "test images (pickle)"),
            ("meta", "class names (pickle)"),
        )
    ),
    "ninapro": tuple(
        DataFile("ninapro", f"{kind}_{s}.npy", f"{_S3}/ninapro/{kind}_{s}.npy", f"{s} {what}")
        for s in ("train", "val", "test")
        for kind, what in (("ninapro", "sEMG windows (N, 52, 16)"), ("label", "labels 0..17"))
    ),
    "darcy": (
        DataFile(
            "darcy",
            "piececonst_r421_N1024_smooth1.mat",
            f"{_S3}/piececonst_r421_N1024_smooth1.mat",
            "train + validation fields coeff, sol",
        ),
        DataFile(
            "darcy",
            "piececonst_r421_N1024_smooth2.mat",
            f"{_S3}/piececonst_r421_N1024_smooth2.mat",
            "test fields coeff, sol",
        ),
    ),
    "satellite": tuple(
        DataFile(
            "satellite",
            f"satellite_{s}.npy",
            f"{_S3}/satellite/satellite_{s}.npy",
            f"{s} series (pickled dict data/label)",
        )
        for s in ("train", "test")
    ),
    "deepsea": (
        DataFile(
            "deepsea",
            "deepsea_filtered.npz",
            f"{_S3}/deepsea/deepsea_filtered.npz",
            "x_/y_ train/val/test arrays",
        ),
    ),
    "ecg": (
        DataFile(
            "ecg",
            "challenge2017.pkl",
            f"{_S3}/ECG/challenge2017.pkl",
            "PhysioNet 2017 recordings + labels (pickle)",
        ),
    ),
}

NB360_TASKS = tuple(TASK_FILES)


def require(root: Path, task: str, name: str) -> Path:
    """The file's path, or a TaskDataError saying exactly where it goes and where to get it."""
    df = next(f for f in TASK_FILES[task] if f.name == name)
    found = df.find(Path(root))
    if found is None:
        raise TaskDataError(
            f"{name}: missing ({df.what} of task {task!r}). Fix: put it at {df.where(Path(root))}; "
            f"{df.how_to_get()}. `python -m orca_ray.data check {root}` lists everything the folder needs"
        )
    return found


def _bad_file(path: Path, problem: str, fix: str) -> TaskDataError:
    return TaskDataError(f"{path}: {problem}. Fix: {fix}")


def _redownload(path: Path, task: str) -> str:
    df = next((f for f in TASK_FILES[task] if Path(f.name).name == path.name), None)
    return f"the file is truncated or corrupt: re-download it ({df.how_to_get() if df else NB360_PAGE})"


# ---- node-local cache of converted arrays ------------------------------------------------------------------
def cache_root(cache_dir: str | Path | None = None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("ORCA_RAY_CACHE")
    return (Path(env).expanduser() if env else Path.home() / ".cache" / "orca_ray") / "nb360"


def _fingerprint(sources: list[Path]) -> list[list]:
    out = []
    for p in sources:
        st = p.stat()
        out.append([str(p.resolve()), st.st_size, st.st_mtime_ns])
    return out


def _complete(folder: Path) -> dict | None:
    try:
        meta = json.loads((folder / "meta.json").read_text())
        for name, size in meta["files"].items():
            if (folder / f"{name}.npy").stat().st_size != size:
                return None
        return meta
    except (OSError, ValueError, KeyError):
        return None


def cached_arrays(
    task: str,
    sources: list[Path],
    options: dict,
    build: Callable[[Path], None],
    cache_dir: str | Path | None = None,
) -> dict[str, np.ndarray]:
    """Arrays converted from `sources` by `build(tmp_folder)` (which writes NAME.npy files), memory-mapped.

    The conversion runs once per node and key (source path + size + mtime, options, CACHE_VERSION): under a
    file lock, into a temporary folder renamed into place, so concurrent trials never both convert and never
    see half a file. Later loads (any process) only open read-only memory maps.
    """
    root = cache_root(cache_dir)
    fp = _fingerprint(sources)
    key_src = json.dumps({"v": CACHE_VERSION, "task": task, "files": fp, "options": options}, sort_keys=True)
    final = root / f"{task}-{hashlib.sha256(key_src.encode()).hexdigest()[:20]}"
    meta = _complete(final)
    if meta is None:
        from filelock import FileLock

        root.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(final) + ".lock")
        t0 = time.monotonic()
        with lock:
            meta = _complete(final)
            if meta is None:
                waited = time.monotonic() - t0
                if waited > 1:
                    log.info("waited %.0fs for the %s cache lock", waited, task)
                shutil.rmtree(final, ignore_errors=True)
                for stale in root.glob(f"{final.name}.tmp-*"):  # a crashed conversion (we hold the lock)
                    shutil.rmtree(stale, ignore_errors=True)
                tmp = root / f"{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
                tmp.mkdir()
                try:
                    log.info("converting %s into %s (once per node)", ", ".join(map(str, sources)), final)
                    build(tmp)
                    files = {p.stem: p.stat().st_size for p in sorted(tmp.glob("*.npy"))}
                    meta = {
                        "task": task,
                        "sources": fp,
                        "options": options,
                        "version": CACHE_VERSION,
                        "files": files,
                        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    }
                    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
                    os.replace(tmp, final)
                except BaseException as e:
                    shutil.rmtree(tmp, ignore_errors=True)
                    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
                        raise TaskDataError(
                            f"{root}: the cache disk filled up while converting {task}. Fix: free space or set "
                            f"ORCA_RAY_CACHE to a node-local disk with room"
                        ) from e
                    raise
                _prune_stale(root, task, final, [f[0] for f in fp], options)
    return {name: np.load(final / f"{name}.npy", mmap_mode="r") for name in meta["files"]}


def _prune_stale(root: Path, task: str, keep: Path, source_paths: list[str], options: dict) -> None:
    """Drop older conversions of the same source paths with the same options (the files changed, so the key
    did). Processes that still map them keep reading: on POSIX the data lives until the last map closes."""
    for other in root.glob(f"{task}-*"):
        if other == keep or not other.is_dir() or ".tmp-" in other.name:
            continue
        meta = _complete(other)
        if (
            meta
            and [f[0] for f in meta.get("sources", [])] == source_paths
            and meta.get("options") == options
        ):
            shutil.rmtree(other, ignore_errors=True)


def _check_space(folder: Path, nbytes: int) -> None:
    free = shutil.disk_usage(folder).free
    if free < nbytes * 1.05:
        raise TaskDataError(
            f"{folder}: the converted arrays need {nbytes / 2**30:.1f} GiB, only {free / 2**30:.1f} GiB free. "
            f"Fix: set ORCA_RAY_CACHE to a node-local disk with room (or pass cache_dir=...)"
        )


def _new_npy(folder: Path, name: str, dtype, shape) -> np.memmap:
    return np.lib.format.open_memmap(folder / f"{name}.npy", mode="w+", dtype=dtype, shape=tuple(shape))


def _finite_or_fail(path: Path, what: str, a: np.ndarray, offset: int = 0) -> None:
    bad = ~np.isfinite(a.reshape(len(a), -1)).all(1)
    if bad.any():
        raise _bad_file(
            path,
            f"{what} contains NaN or inf (first at row {offset + int(np.flatnonzero(bad)[0])})",
            "clean or re-download the file",
        )


# ---- CIFAR-100 ------------------------------------------------------------------------------------------------
CIFAR100_MEAN = np.array([0.5071, 0.4867, 0.4408], dtype=np.float32)
CIFAR100_STD = np.array([0.2675, 0.2565, 0.2761], dtype=np.float32)


def _read_pickle(path: Path, task: str):
    try:
        with open(path, "rb") as f:
            try:
                return pickle.load(f, encoding="latin1")  # torchvision's encoding for the python-2 pickles
            except UnicodeDecodeError:
                f.seek(0)
                return pickle.load(f, encoding="bytes")
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        ImportError,
        IndexError,
        KeyError,
        MemoryError,
        OverflowError,
    ) as e:
        raise _bad_file(path, f"cannot unpickle ({type(e).__name__}: {e})", _redownload(path, task)) from e


def _field(d, key: str, path: Path, task: str):
    if not isinstance(d, dict):
        raise _bad_file(path, f"expected a pickled dict, got {type(d).__name__}", _redownload(path, task))
    for k in (key, key.encode()):
        if k in d:
            return d[k]
    keys = sorted(str(k) for k in d)
    raise _bad_file(path, f"no field {key!r} (fields: {keys})", _redownload(path, task))


def _cifar_part(path: Path) -> tuple[np.ndarray, np.ndarray]:
    d = _read_pickle(path, "cifar100")
    data = np.asarray(_field(d, "data", path, "cifar100"))
    labels = np.asarray(_field(d, "fine_labels", path, "cifar100"))
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise _bad_file(
            path,
            f"'data' must be uint8 (N, 3072), got {data.dtype} {data.shape}",
            "use the CIFAR-100 python version (cifar-100-python.tar.gz)",
        )
    if labels.shape != (len(data),) or not np.issubdtype(labels.dtype, np.integer):
        raise _bad_file(
            path,
            f"'fine_labels' must be {len(data)} integers, got {labels.dtype} {labels.shape}",
            _redownload(path, "cifar100"),
        )
    if len(labels) and (labels.min() < 0 or labels.max() > 99):
        raise _bad_file(
            path,
            f"'fine_labels' span [{labels.min()}, {labels.max()}] outside [0, 99]",
            _redownload(path, "cifar100"),
        )
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _cifar_normalise(x_u8: np.ndarray) -> np.ndarray:
    x = x_u8.astype(np.float32)
    x *= np.float32(1 / 255)
    x -= CIFAR100_MEAN[:, None, None]
    x /= CIFAR100_STD[:, None, None]
    return x


@register_task(
    "cifar100",
    modality="2d",
    needs_data_root=True,
    description="NAS-Bench-360 CIFAR-100 (torchvision folder), 3x32x32, 100 classes, 0-1 error",
)
def cifar100(data_root: Path, seed: int = 0, val_fraction: float = 0.1) -> Task:
    root = Path(data_root)
    paths = {n: require(root, "cifar100", f"cifar-100-python/{n}") for n in ("train", "test", "meta")}
    x_tr, y_tr = _cifar_part(paths["train"])
    x_te, y_te = _cifar_part(paths["test"])
    names = _field(_read_pickle(paths["meta"], "cifar100"), "fine_label_names", paths["meta"], "cifar100")
    names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
    # carve on the uint8 images, then convert each part once: no float32 copy of the whole training set
    train_u8, val_u8 = carve_validation(Split(x_tr, y_tr), val_fraction, seed)
    return Task(
        name="cifar100",
        modality="2d",
        kind="classification",
        input_shape=(3, 32, 32),
        num_outputs=100,
        train=Split(_cifar_normalise(train_u8.x), train_u8.y),
        val=Split(_cifar_normalise(val_u8.x), val_u8.y),
        test=Split(_cifar_normalise(x_te), y_te),
        source=str(paths["train"].parent),
        metric="error",
        class_names=names if len(names) == 100 else None,
        notes={
            "val_split": f"seeded stratified {val_fraction:g} of train (seed {seed})",
            "normalisation": "x/255, mean (0.5071, 0.4867, 0.4408), std (0.2675, 0.2565, 0.2761) (ORCA)",
        },
    )


# ---- NinaPro DB5 ------------------------------------------------------------------------------------------------
def _load_npy(path: Path, task: str) -> np.ndarray:
    try:
        return np.load(
            path, allow_pickle=True, encoding="bytes"
        )  # ORCA's arguments; plain arrays need neither
    except (ValueError, OSError, EOFError, pickle.UnpicklingError, TypeError) as e:
        raise _bad_file(
            path, f"not a readable .npy file ({type(e).__name__}: {e})", _redownload(path, task)
        ) from e


def _int_labels(path: Path, y: np.ndarray, n: int) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.shape != (n,):
        raise _bad_file(
            path,
            f"labels must have shape ({n},) to match the data, got {y.shape}",
            "pair every data file with its own label file",
        )
    if not np.issubdtype(y.dtype, np.integer):
        if not np.issubdtype(y.dtype, np.number) or not np.array_equal(y, np.round(y)):
            raise _bad_file(path, f"labels must be integers, got {y.dtype}", "store class indices")
    return y.astype(np.int64)


@register_task(
    "ninapro",
    modality="2d",
    needs_data_root=True,
    description="NAS-Bench-360 NinaPro DB5 (.npy), 1x16x52 sEMG, 18 classes, 0-1 error",
)
def ninapro(data_root: Path, seed: int = 0, val_fraction: float = 0.1) -> Task:
    root = Path(data_root)
    splits, used = {}, []
    for s in ("train", "val", "test"):
        xp, yp = require(root, "ninapro", f"ninapro_{s}.npy"), require(root, "ninapro", f"label_{s}.npy")
        used += [xp, yp]
        x = _load_npy(xp, "ninapro")
        if x.ndim != 3 or x.shape[1:] != (52, 16) or not np.issubdtype(x.dtype, np.number):
            raise _bad_file(
                xp,
                f"expected numeric (N, 52, 16) (time x electrodes), got {x.dtype} {x.shape}",
                "use NAS-Bench-360's processed NinaPro DB5 files",
            )
        x = np.ascontiguousarray(x.transpose(0, 2, 1)[:, None], dtype=np.float32)  # ORCA: permute(0, 2, 1)
        _finite_or_fail(xp, "data", x)
        splits[s] = Split(x, _int_labels(yp, _load_npy(yp, "ninapro"), len(x)))
    return Task(
        name="ninapro",
        modality="2d",
        kind="classification",
        input_shape=(1, 16, 52),
        num_outputs=18,
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        metric="error",
        source=", ".join(map(str, used)),
        notes={"val_split": "NAS-Bench-360's ninapro_val.npy (val_fraction unused)"},
    )


# ---- Darcy Flow ---------------------------------------------------------------------------------------------------
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
) -> Task:
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

    return Task(
        name="darcy",
        modality="2d",
        kind="regression",
        input_shape=(3, s, s),
        num_outputs=1,
        output_shape=(s, s),
        train=split(coeff_tr[tr_rows], sol_tr[tr_rows]),
        val=split(coeff_tr[val_rows], sol_tr[val_rows]),
        test=split(np.asarray(a["coeff_test"]), np.asarray(a["sol_test"])),
        y_normalizer=y_norm,
        metric="rel-l2",
        loss="rel_l2",
        source=f"{p_train}, {p_test}",
        notes={
            "val_split": f"seeded {val_fraction:g} of the first {n_train} samples of smooth1 (seed {seed})",
            "train_rows": tr_rows,
            "val_rows": val_rows,
            "x": "[coeff per-pixel unit-Gaussian, grid varying along columns, grid varying along rows] (ORCA)",
        },
    )


# ---- Satellite ----------------------------------------------------------------------------------------------------
def _satellite_dict(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        obj = np.load(path, allow_pickle=True)
        d = obj[()] if isinstance(obj, np.ndarray) and obj.dtype == object and obj.ndim == 0 else obj
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
    return data, label - 1


def _convert_satellite(tmp: Path, paths: dict[str, Path], zscore: bool, chunk: int = 1 << 16) -> None:
    for part, path in paths.items():
        data, label = _satellite_dict(path)
        _check_space(tmp, data.shape[0] * 46 * 4)
        x = _new_npy(tmp, f"x_{part}", np.float32, (len(data), 1, 46))
        for start in range(0, len(data), chunk):
            block = np.asarray(data[start : start + chunk], dtype=np.float64)
            _finite_or_fail(path, "'data'", block, start)
            if zscore:  # per series over its 46 values, as NAS-Bench-360 (ORCA skips this)
                std = block.std(axis=1, keepdims=True)
                block = (block - block.mean(axis=1, keepdims=True)) / np.where(std > 0, std, 1.0)
            x[start : start + chunk, 0] = block
        x.flush()
        del x, data
        np.save(tmp / f"y_{part}.npy", label)


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
    zscore: bool = True,
    val: str = "last",
    val_size: int | None = None,
    cache_dir: str | Path | None = None,
) -> Task:
    """val="last" (default): the last `val_size` rows of the training file (default len(test), NAS-Bench-360);
    train and val stay views of the node's memory map. val="random": a seeded stratified `val_fraction` (copies
    the chosen rows into this process)."""
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
    if val == "last":
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
        test=Split(a["x_test"], np.asarray(a["y_test"])),
        metric="error",
        source=f"{paths['train']}, {paths['test']}",
        notes={"val_split": how, "zscore": "per series (NAS-Bench-360)" if zscore else "none (ORCA)"},
    )


# ---- DeepSEA ------------------------------------------------------------------------------------------------------
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
                yield 0, np.ascontiguousarray(np.lib.format.read_array(g))
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


def _convert_deepsea(tmp: Path, path: Path) -> None:
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
            for part, n in sizes.items():
                x = _new_npy(tmp, f"x_{part}", np.float32, (n, 4, 1000))
                for start, block in _npz_rows(zf, f"x_{part}", path):
                    x[start : start + len(block)] = block.transpose(0, 2, 1)  # ORCA: transpose(-1, -2)
                x.flush()
                del x
                y = _new_npy(tmp, f"y_{part}", np.float32, (n, 36))
                for start, block in _npz_rows(zf, f"y_{part}", path):
                    if not np.isin(block, (0, 1)).all():
                        raise _bad_file(
                            path,
                            f"y_{part} must be 0/1 labels (rows from {start})",
                            _redownload(path, "deepsea"),
                        )
                    y[start : start + len(block)] = block
                y.flush()
                del y
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
    data_root: Path, seed: int = 0, val_fraction: float = 0.1, cache_dir: str | Path | None = None
) -> Task:
    path = require(Path(data_root), "deepsea", "deepsea_filtered.npz")
    a = cached_arrays("deepsea", [path], {}, lambda tmp: _convert_deepsea(tmp, path), cache_dir)
    sp = {p: Split(a[f"x_{p}"], a[f"y_{p}"]) for p in ("train", "val", "test")}
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
        notes={"val_split": "the file's x_val/y_val (val_fraction unused)"},
    )


# ---- ECG ----------------------------------------------------------------------------------------------------------
ECG_CLASSES = ("N", "A", "O", "~")
ECG_STRIDE_DIVISOR = {
    0: 1,
    1: 6,
    2: 2,
    3: 20,
}  # slide_and_cut: N stride, A stride//6, O stride//2, ~ stride//20


def ecg_split_indices(n: int, split_seed: int = 0) -> dict[str, np.ndarray]:
    """Recording indices of NAS-Bench-360's split: train_test_split(test_size=0.2, random_state=0) and the
    held-out fifth halved again (test_size=0.5, random_state=0). Index arrays give the same permutation the
    reference draws when it splits the recordings themselves."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(n)
    tr, rest = train_test_split(idx, test_size=0.2, random_state=split_seed)
    va, te = train_test_split(rest, test_size=0.5, random_state=split_seed)
    return {"train": np.asarray(tr), "val": np.asarray(va), "test": np.asarray(te)}


def ecg_window_starts(
    length: int, label: int, window: int = 1000, stride: int = 500, class_strides: bool = True
) -> range:
    step = max(1, stride // ECG_STRIDE_DIVISOR[label] if class_strides else stride)
    return range(0, length - window, step)  # as slide_and_cut: the end is exclusive


def _ecg_records(path: Path) -> tuple[list[np.ndarray], np.ndarray]:
    d = _read_pickle(path, "ecg")
    data, labels = _field(d, "data", path, "ecg"), _field(d, "label", path, "ecg")
    if len(data) != len(labels):
        raise _bad_file(path, f"{len(data)} recordings but {len(labels)} labels", _redownload(path, "ecg"))
    if len(data) < 10:
        raise _bad_file(
            path,
            f"only {len(data)} recordings; the 80/10/10 split needs at least 10",
            _redownload(path, "ecg"),
        )
    code = {c: i for i, c in enumerate(ECG_CLASSES)}
    y = np.empty(len(labels), dtype=np.int64)
    for i, lab in enumerate(labels):
        lab = lab.decode() if isinstance(lab, bytes) else str(lab)
        if lab not in code:
            raise _bad_file(
                path, f"recording {i} has label {lab!r}; expected one of N, A, O, ~", _redownload(path, "ecg")
            )
        y[i] = code[lab]
    recs = []
    for i, r in enumerate(data):
        r = np.asarray(r)
        if (
            r.ndim > 2
            or (r.ndim == 2 and min(r.shape) != 1)
            or r.size == 0
            or not np.issubdtype(r.dtype, np.number)
        ):
            raise _bad_file(
                path,
                f"recording {i} must be a non-empty 1-D numeric series, got {r.dtype} {r.shape}",
                _redownload(path, "ecg"),
            )
        r = r.ravel().astype(np.float64)
        if not np.isfinite(r).all():
            raise _bad_file(path, f"recording {i} contains NaN or inf", "clean or re-download the file")
        std = r.std()
        recs.append(((r - r.mean()) / (std if std > 0 else 1.0)).astype(np.float32))  # per-recording z-score
    return recs, y


def _convert_ecg(tmp: Path, path: Path, opts: dict) -> None:
    recs, y = _ecg_records(path)
    window, stride = opts["window"], opts["stride"]
    for part, idx in ecg_split_indices(len(recs), opts["split_seed"]).items():
        cs = opts["class_strides"] if part == "train" else opts["eval_class_strides"]
        starts = [ecg_window_starts(len(recs[i]), int(y[i]), window, stride, cs) for i in idx]
        n = sum(len(s) for s in starts)
        if n == 0:
            raise _bad_file(
                path,
                f"no {part} recording is longer than the {window}-sample window",
                _redownload(path, "ecg"),
            )
        _check_space(tmp, n * window * 4)
        x = _new_npy(tmp, f"x_{part}", np.float32, (n, 1, window))
        labels, groups = np.empty(n, np.int64), np.empty(n, np.int64)
        k = 0
        for i, st in zip(idx, starts):
            r = recs[i]
            for j in st:
                x[k, 0] = r[j : j + window]
                k += 1
            labels[k - len(st) : k], groups[k - len(st) : k] = y[i], i
        x.flush()
        del x
        np.save(tmp / f"y_{part}.npy", labels)
        np.save(tmp / f"g_{part}.npy", groups)


@register_task(
    "ecg",
    modality="1d",
    needs_data_root=True,
    description="NAS-Bench-360 ECG (PhysioNet 2017 .pkl), 1x1000 windows, 4 classes, 1-macro-F1 per recording",
)
def ecg(
    data_root: Path,
    seed: int = 0,
    val_fraction: float = 0.1,
    window: int = 1000,
    stride: int = 500,
    class_strides: bool = True,
    eval_class_strides: bool = True,
    split_seed: int = 0,
    cache_dir: str | Path | None = None,
) -> Task:
    path = require(Path(data_root), "ecg", "challenge2017.pkl")
    opts = {
        "window": int(window),
        "stride": int(stride),
        "class_strides": bool(class_strides),
        "eval_class_strides": bool(eval_class_strides),
        "split_seed": int(split_seed),
    }
    a = cached_arrays("ecg", [path], opts, lambda tmp: _convert_ecg(tmp, path, opts), cache_dir)
    sp = {
        p: Split(a[f"x_{p}"], np.asarray(a[f"y_{p}"]), np.asarray(a[f"g_{p}"]))
        for p in ("train", "val", "test")
    }
    return Task(
        name="ecg",
        modality="1d",
        kind="classification",
        input_shape=(1, window),
        num_outputs=4,
        train=sp["train"],
        val=sp["val"],
        test=sp["test"],
        metric="1-macro-f1",
        source=str(path),
        class_names=ECG_CLASSES,
        notes={
            "val_split": f"NAS-Bench-360 recording split 80/10/10 (random_state={split_seed}); "
            "val_fraction and seed unused",
            "windows": f"{window} long; strides N {stride}, A {stride // 6}, O {stride // 2}, "
            f"~ {stride // 20} (train{', val, test' if eval_class_strides else ''}); "
            "groups = recording index",
        },
    )
