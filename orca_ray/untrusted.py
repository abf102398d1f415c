"""Trust boundaries: reading data files and shared driver state without letting either run code.

Two kinds of input cross a boundary here:

- **Data files** (NAS-Bench-360's CIFAR-100/CIFAR-10 batches, Satellite ``.npy``, ECG ``.pkl``) are Python
  pickles. `load_pickle` and `load_npy` read them with an unpickler that admits only numpy arrays, dtypes and
  scalars inside plain containers (dict, list, tuple, str, bytes, int, float, bool, None). Any other global
  (``posix.system``, ``builtins.eval``, a class of any library) is refused before it is even imported::

      refusing to unpickle /data/satellite_train.npy: it references posix.system; only numpy arrays and plain
      containers are allowed

  Plain ``.npy`` arrays go through ``np.load(allow_pickle=False)`` (memory-mappable); only object arrays take
  the restricted unpickler.

- **Driver state in the sweep storage.** `Tuner.restore` unpickles ``tuner.pkl``, the experiment state
  (cloudpickle inside JSON), the searcher and callback states, and Tune reads each errored trial's
  ``error.pkl`` when it builds results. Only the driver on the head writes those files, so the head keeps a
  ledger -- on its own disk, never in the shared storage -- of the sha256 of every version it wrote
  (`record_driver_state`), and `verify_driver_state` refuses to restore when a file in storage is not one
  of them. A driver killed between writing its state and recording it leaves the newest files in its local
  staging folder, which the ledger names and the check also accepts. A sweep whose head is gone (or that ran
  before this check existed) has no ledger: restoring it needs the explicit override (``--trust-storage``).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from .io import resolve, stream_sha256

ALLOWED = "only numpy arrays and plain containers are allowed"


class UnsafePickleError(pickle.UnpicklingError):
    """A data pickle references something other than numpy arrays/dtypes/scalars and plain containers."""


class UntrustedStateError(RuntimeError):
    """Driver state in the sweep storage that this head did not write (or cannot vouch for)."""


# ---- data pickles ------------------------------------------------------------------------------------------------
def _latin1_encode(text: str, encoding: str = "latin1", errors: str = "strict") -> bytes:
    """What pickle protocols < 3 use to store bytes (``_codecs.encode(text, 'latin1')``); no other codec."""
    if encoding not in ("latin1", "latin-1", "iso-8859-1") or not isinstance(text, str):
        raise UnsafePickleError(f"_codecs.encode with codec {encoding!r}")
    return text.encode("latin1", errors)


def _allowed_globals() -> dict[tuple[str, str], Any]:
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy < 2
        from numpy.core import multiarray, numeric

    # numpy 1.x pickles name numpy.core, numpy 2.x numpy._core; both resolve to the same functions here,
    # looked up in this table so that a refused name is never imported.
    out: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for core in ("numpy.core", "numpy._core"):
        out[(f"{core}.multiarray", "_reconstruct")] = multiarray._reconstruct
        out[(f"{core}.multiarray", "scalar")] = multiarray.scalar
        out[(f"{core}.numeric", "_frombuffer")] = numeric._frombuffer
    out[("_codecs", "encode")] = _latin1_encode
    return out


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, *, path: str, encoding: str):
        super().__init__(file, encoding=encoding)
        self._path = path
        self._allowed = _allowed_globals()

    def find_class(self, module: str, name: str):
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to unpickle {self._path}: it references {module}.{name}; {ALLOWED}"
            ) from None

    def persistent_load(self, pid):
        raise UnsafePickleError(f"refusing to unpickle {self._path}: it uses persistent ids; {ALLOWED}")


def loads_restricted(data: bytes, *, path: str = "<bytes>", encoding: str = "ASCII") -> Any:
    """Unpickle bytes admitting only numpy arrays/dtypes/scalars and plain containers.

    Args:
        data: the pickle.
        path: where the bytes came from, for the error message.
        encoding: how to decode Python 2 ``str`` objects (``"latin1"`` for numpy arrays pickled by Python 2,
            ``"bytes"`` to keep them as bytes), as in `pickle.load`.

    Raises:
        UnsafePickleError: naming `path` and the first refused global.
    """
    return _RestrictedUnpickler(io.BytesIO(data), path=path, encoding=encoding).load()


def load_pickle(path: str | os.PathLike, *, encoding: str = "ASCII") -> Any:
    """Read a data pickle (a CIFAR batch, NAS-Bench-360's ECG file) without letting it run code.

    Args:
        path: the pickle file.
        encoding: as in `pickle.load`; ``"latin1"`` for Python 2 pickles holding numpy arrays.

    Raises:
        UnsafePickleError: the file references anything but numpy arrays/dtypes/scalars and plain containers.
    """
    with open(path, "rb") as f:
        return _RestrictedUnpickler(f, path=str(path), encoding=encoding).load()


def load_npy(path: str | os.PathLike, *, mmap_mode: str | None = None, encoding: str = "ASCII") -> Any:
    """Read a ``.npy`` file: plain arrays with ``np.load(allow_pickle=False)``, object arrays (a pickled dict,
    as NAS-Bench-360's Satellite files) through the restricted unpickler.

    Args:
        path: the ``.npy`` file.
        mmap_mode: passed to `np.load` for plain arrays (object arrays cannot be memory-mapped).
        encoding: as in `np.load`, for object arrays pickled by Python 2.

    Raises:
        UnsafePickleError: an object array references anything but numpy arrays and plain containers.
        ValueError: not a ``.npy`` file.
    """
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read_header = (
            np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        )
        _, _, dtype = read_header(f)
        if dtype.hasobject:  # the rest of the file is a pickle of the whole array
            return _RestrictedUnpickler(f, path=str(path), encoding=encoding).load()
    return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)


# ---- driver state in the sweep storage --------------------------------------------------------------------------
LEDGER_ENV = "ORCA_RAY_STATE_DIR"
KEEP_VERSIONS = 64  # digests kept per driver-state file
TRUST_FLAG = "--trust-storage"


def ledger_dir() -> Path:
    """The head-local folder of driver-state ledgers: ``$ORCA_RAY_STATE_DIR``, else
    ``~/.local/state/orca_ray/driver-state`` (never inside the sweep storage)."""
    return Path(os.environ.get(LEDGER_ENV) or "~/.local/state/orca_ray/driver-state").expanduser()


def ledger_path(experiment: str) -> Path:
    """The ledger file of one experiment path (a local path or an ``s3://`` / ``gs://`` URI).

    Args:
        experiment: the experiment folder (``<storage>/<name>``).
    """
    return ledger_dir() / f"{hashlib.sha256(str(experiment).encode()).hexdigest()[:32]}.json"


def driver_state_digests(experiment: str, *, filesystem=None) -> dict[str, str]:
    """sha256 of every file of a Tune experiment folder that Tune unpickles: the top-level ``*.pkl`` and
    ``*.json`` (tuner, experiment, searcher and callback states) and the ``*.pkl`` of each trial folder
    (``error.pkl``, ``params.pkl``). Checkpoints, results and Parquet are not driver state.

    Args:
        experiment: the experiment folder (``<storage>/<name>``, a local path or a URI), or the driver's local
            staging copy of it.
        filesystem: a pyarrow filesystem for `experiment` (else resolved from the URI).

    Returns:
        ``{relative path: sha256}``; empty when the folder does not exist.
    """
    import pyarrow.fs as pafs

    fs, base = resolve(experiment, filesystem)
    out: dict[str, str] = {}
    for info in fs.get_file_info(pafs.FileSelector(base, allow_not_found=True)):
        if info.type == pafs.FileType.File and info.base_name.endswith((".pkl", ".json")):
            out[info.base_name] = stream_sha256(fs, info.path)
        elif info.type == pafs.FileType.Directory:
            for sub in fs.get_file_info(pafs.FileSelector(info.path, allow_not_found=True)):
                if sub.type == pafs.FileType.File and sub.base_name.endswith(".pkl"):
                    out[f"{info.base_name}/{sub.base_name}"] = stream_sha256(fs, sub.path)
    return out


def _read_ledger(experiment: str) -> dict | None:
    path = ledger_path(experiment)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise UntrustedStateError(
            f"{path}: unreadable driver-state ledger ({e}); delete it and resume with {TRUST_FLAG}"
        ) from e
    if doc.get("experiment") != str(experiment):
        raise UntrustedStateError(f"{path}: ledger of {doc.get('experiment')!r}, not {experiment!r}")
    return doc


def record_driver_state(
    experiment: str,
    *,
    source: str | None = None,
    only: Iterable[str] | None = None,
    staging: str | None = None,
    filesystem=None,
) -> dict:
    """Add the digests of driver-state files this driver wrote to the head's ledger of `experiment`.

    Args:
        experiment: the experiment folder in the sweep storage (the key of the ledger).
        source: where to read the files: the driver's local staging folder (what it is about to upload), or
            None for `experiment` itself (right after the driver wrote there, e.g. ``tuner.pkl``).
        only: record just these relative paths.
        staging: the driver's local staging folder, remembered so that a killed driver's newest files are
            accepted by `verify_driver_state`.
        filesystem: a pyarrow filesystem for `source`/`experiment` when it is not a plain path or URI.

    Returns:
        The ledger as written.
    """
    found = driver_state_digests(source or experiment, filesystem=None if source else filesystem)
    if only is not None:
        keep = set(only)
        found = {k: v for k, v in found.items() if k in keep}
    doc = _read_ledger(experiment) or {"experiment": str(experiment), "files": {}}
    changed = False
    for rel, digest in found.items():
        known = doc["files"].setdefault(rel, [])
        if digest not in known:
            # the experiment state changes with every save; the storage lags the driver by an upload at most
            known[:] = [*known, digest][-KEEP_VERSIONS:]
            changed = True
    if staging and doc.get("staging") != str(staging):
        doc["staging"] = str(staging)
        changed = True
    if changed or not ledger_path(experiment).exists():
        doc["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        _write_private(ledger_path(experiment), json.dumps(doc, indent=1))
    return doc


def record_staged_driver_state(experiment: str) -> dict | None:
    """After the driver stops: record its final driver state from the local staging folder the ledger names
    (Tune writes the last callback state after the recorder runs, so this catches it).

    Args:
        experiment: the experiment folder in the sweep storage.

    Returns:
        The ledger as written, or None when it names no staging folder that still exists.
    """
    doc = _read_ledger(experiment)
    if not doc or not doc.get("staging") or not Path(doc["staging"]).is_dir():
        return None
    return record_driver_state(experiment, source=doc["staging"])


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def verify_driver_state(experiment: str, *, trust: bool = False, filesystem=None) -> dict[str, str]:
    """Refuse to restore `experiment` unless every driver-state file in it is one this head wrote.

    Args:
        experiment: the experiment folder in the sweep storage.
        trust: the explicit override (``--trust-storage``): accept the files as they are and record them, for
            a sweep whose head is gone or that predates the ledger. Only for storage nobody else can write.
        filesystem: a pyarrow filesystem for `experiment` when it is not a plain path or URI.

    Returns:
        The verified ``{relative path: sha256}``.

    Raises:
        UntrustedStateError: one line naming the first file that is not the head's (or the missing ledger)
            and the override.
    """
    base = str(experiment).split("?", 1)[0].rstrip("/")  # a URI's query (endpoint options) is not the path
    found = driver_state_digests(experiment, filesystem=filesystem)
    if trust:
        record_driver_state(experiment, filesystem=filesystem)
        return found
    doc = _read_ledger(experiment)
    if doc is None:
        raise UntrustedStateError(
            f"refusing to restore {base}: this head has no record of writing its driver state "
            f"({ledger_path(experiment)} is missing), and Tune would unpickle it; if nobody but you can write "
            f"that storage, resume with {TRUST_FLAG}"
        )
    staged = {}
    if doc.get("staging") and Path(doc["staging"]).is_dir():  # a killed driver's newest files
        staged = driver_state_digests(doc["staging"])
    for rel, digest in sorted(found.items()):
        if digest not in doc["files"].get(rel, ()) and digest != staged.get(rel):
            raise UntrustedStateError(
                f"refusing to restore {base}: {base}/{rel} (sha256 {digest[:16]}…) is not a file this "
                f"head wrote (ledger {ledger_path(experiment)}), and Tune would unpickle it; if nobody but you "
                f"can write that storage, resume with {TRUST_FLAG}"
            )
    return found
