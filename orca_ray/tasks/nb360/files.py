"""NAS-Bench-360's files: where each goes, where to get it, and the readers the loaders share.

Every file may sit directly in the data root or in a per-task folder (``ROOT/<file>`` or ``ROOT/<task>/<file>``;
the folder names of NAS-Bench-360's download script -- ``cifar-100``, ``ninaPro``, ``darcyflow`` -- are accepted
too). ``python -m orca_ray.data check ROOT`` lists what is present and missing. Every reader fails with a
`TaskDataError` naming the file, the problem and the fix.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...untrusted import UnsafePickleError, load_npy, load_pickle
from ..base import TaskDataError
from .manifest import verify_staged

NB360_PAGE = "https://rtu715.github.io/NAS-Bench-360/"
_S3 = "https://pde-xd.s3.amazonaws.com"
CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"


# ---- where files go ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DataFile:
    """One file a NAS-Bench-360 task needs: its name (relative to ROOT or ROOT/<task>/), download URL and what
    it holds.
    """

    task: str
    name: str  # path relative to ROOT or ROOT/<task>/, e.g. "cifar-100-python/train"
    url: str
    what: str

    def places(self, root: Path) -> list[Path]:
        """Every accepted location, preferred first: ROOT/<name>, ROOT/<task>/<name>, then folder aliases.

        Args:
            root: the data root.
        """
        return [root / self.name] + [root / d / self.name for d in TASK_DIRS[self.task]]

    def find(self, root: Path) -> Path | None:
        """The first accepted location that holds the file, else None.

        Args:
            root: the data root.
        """
        return next((p for p in self.places(root) if p.is_file()), None)

    def where(self, root: Path) -> str:
        """The two preferred locations, for messages.

        Args:
            root: the data root.
        """
        places = self.places(root)
        return f"{places[0]} or {places[1]}"

    def how_to_get(self) -> str:
        """Where to download the file from, for messages."""
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
    """The file's path, or a TaskDataError saying exactly where it goes and where to get it. When the root
    holds a ``MANIFEST.json`` (written by ``python -m orca_ray.data stage``), the file must match it before any
    loader reads it (see `manifest.verify_staged`).

    Args:
        root: the data root.
        task: the NAS-Bench-360 task.
        name: the file's name in `TASK_FILES[task]`.
    """
    df = next(f for f in TASK_FILES[task] if f.name == name)
    found = df.find(Path(root))
    if found is None:
        raise TaskDataError(
            f"{name}: missing ({df.what} of task {task!r}). Fix: put it at {df.where(Path(root))}; "
            f"{df.how_to_get()}. `python -m orca_ray.data check {root}` lists everything the folder needs"
        )
    verify_staged(Path(root), found)
    return found


def _bad_file(path: Path, problem: str, fix: str) -> TaskDataError:
    return TaskDataError(f"{path}: {problem}. Fix: {fix}")


def _redownload(path: Path, task: str) -> str:
    df = next((f for f in TASK_FILES[task] if Path(f.name).name == path.name), None)
    return f"the file is truncated or corrupt: re-download it ({df.how_to_get() if df else NB360_PAGE})"


# ---- readers shared by the loaders (pickles through orca_ray.untrusted: numpy arrays and plain containers) ---
def _read_pickle(path: Path, task: str):
    try:
        try:
            return load_pickle(path, encoding="latin1")  # torchvision's encoding for the python-2 pickles
        except UnicodeDecodeError:
            return load_pickle(path, encoding="bytes")
    except UnsafePickleError as e:  # one line: the file and the global it references
        raise TaskDataError(str(e)) from None
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


def _load_npy(path: Path, task: str) -> np.ndarray:
    try:  # plain arrays, header checked (ORCA's allow_pickle=True is not needed)
        return load_npy(path, allow_object=False)
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
    if not np.issubdtype(y.dtype, np.integer) and (
        not np.issubdtype(y.dtype, np.number) or not np.array_equal(y, np.round(y))
    ):
        raise _bad_file(path, f"labels must be integers, got {y.dtype}", "store class indices")
    return y.astype(np.int64)


def _finite_or_fail(path: Path, what: str, a: np.ndarray, offset: int = 0) -> None:
    bad = ~np.isfinite(a.reshape(len(a), -1)).all(1)
    if bad.any():
        raise _bad_file(
            path,
            f"{what} contains NaN or inf (first at row {offset + int(np.flatnonzero(bad)[0])})",
            "clean or re-download the file",
        )
