"""Driver state in the sweep storage: Tune unpickles it on resume, so the driver restores only its own copy.

`Tuner.restore` unpickles ``tuner.pkl``, the experiment state (cloudpickle inside JSON), the searcher and
callback states, and Tune reads each errored trial's ``error.pkl`` when it builds results. Only the driver on the
head writes those files. So the head keeps, on its own disk and never in the shared storage, a **private copy**
of the current version of each (a folder of mode 0700 under `ledger_dir()`) and a ledger of their sha256:
`record_driver_state` copies what the driver just wrote (from its local staging folder, which Tune uploads).

On resume, `restore_filesystem` checks the private copy against the ledger and hands Tune a filesystem that
serves every driver-state read and listing from that copy, and everything else (checkpoints, results) from the
storage. The bytes Tune unpickles are the bytes the driver verified: a file replaced in the storage after any
check is never read, and an older (replayed) or newer (planted) version there is invisible. A sweep whose head
is gone (or that ran before this copy existed) has none: restoring it takes the explicit override
(``--trust-storage``), which copies the storage's files once.

Ray makes its session folder, where Tune stages driver state, world-writable; `secure_folder` sets the sticky
bit on every such folder this user owns above the staging folder (as ``/tmp`` has it), so no other local user
can rename it and plant files in its place, and refuses folders it cannot secure.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from pathlib import Path

from ..io import resolve

LEDGER_ENV = "ORCA_RAY_STATE_DIR"
TRUST_FLAG = "--trust-storage"
LEDGER_FORMAT = "orca_ray driver state v2"


class UntrustedStateError(RuntimeError):
    """Driver state in the sweep storage that this head did not write (or cannot vouch for)."""


def ledger_dir() -> Path:
    """The head-local folder of driver-state ledgers and private copies: ``$ORCA_RAY_STATE_DIR``, else
    ``~/.local/state/orca_ray/driver-state`` (never inside the sweep storage)."""
    return Path(os.environ.get(LEDGER_ENV) or "~/.local/state/orca_ray/driver-state").expanduser()


def _key(experiment: str) -> str:
    return hashlib.sha256(str(experiment).encode()).hexdigest()[:32]


def ledger_path(experiment: str) -> Path:
    """The ledger file of one experiment path (a local path or an ``s3://`` / ``gs://`` URI).

    Args:
        experiment: the experiment folder (``<storage>/<name>``).
    """
    return ledger_dir() / f"{_key(experiment)}.json"


def private_copy(experiment: str) -> Path:
    """The folder (mode 0700) holding the head's copy of the current driver state of `experiment`.

    Args:
        experiment: the experiment folder (``<storage>/<name>``).
    """
    return ledger_dir() / _key(experiment)


def is_driver_state(rel: str) -> bool:
    """Whether a path relative to the experiment folder is driver state Tune unpickles: the top-level ``*.pkl``
    and ``*.json`` (tuner, experiment, searcher and callback states) and each trial folder's ``*.pkl``
    (``error.pkl``, ``params.pkl``). Checkpoints, results and Parquet are not.

    Args:
        rel: the path relative to the experiment folder, with ``/`` separators.
    """
    parts = rel.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return False
    return (len(parts) == 1 and rel.endswith((".pkl", ".json"))) or (len(parts) == 2 and rel.endswith(".pkl"))


def driver_state_digests(experiment: str, *, filesystem=None) -> dict[str, str]:
    """sha256 of every driver-state file (`is_driver_state`) of a Tune experiment folder.

    Args:
        experiment: the experiment folder (a local path or a URI).
        filesystem: a pyarrow filesystem for `experiment` (else resolved from the URI).

    Returns:
        ``{relative path: sha256}``; empty when the folder does not exist.
    """
    fs, base = resolve(experiment, filesystem)
    return {rel: hashlib.sha256(data).hexdigest() for rel, data in _read_state(fs, base).items()}


def _read_state(fs, base: str) -> dict[str, bytes]:
    import pyarrow.fs as pafs

    out: dict[str, bytes] = {}
    for info in fs.get_file_info(pafs.FileSelector(base, allow_not_found=True, recursive=False)):
        if info.type == pafs.FileType.File and is_driver_state(info.base_name):
            with fs.open_input_stream(info.path) as f:
                out[info.base_name] = f.read()
        elif info.type == pafs.FileType.Directory:
            for sub in fs.get_file_info(pafs.FileSelector(info.path, allow_not_found=True)):
                rel = f"{info.base_name}/{sub.base_name}"
                if sub.type == pafs.FileType.File and is_driver_state(rel):
                    with fs.open_input_stream(sub.path) as f:
                        out[rel] = f.read()
    return out


# ---- private folders -----------------------------------------------------------------------------------------
def secure_folder(path: str | os.PathLike) -> None:
    """Make sure no other local user can rename or replace `path` or any folder above it.

    A folder writable by others without the sticky bit (Ray creates its temp and session folders mode 0777)
    lets any user rename what is inside and put their own files in its place. Such a folder owned by this user
    gets the sticky bit (others may still create their own files there, as in ``/tmp``); one owned by someone
    else is refused.

    Args:
        path: an existing folder (the driver's staging folder).

    Raises:
        UntrustedStateError: a folder above `path` is writable by others and not this user's to secure.
    """
    p = Path(os.path.realpath(path))
    for folder in [p, *p.parents]:
        st = folder.stat()
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not st.st_mode & stat.S_ISVTX:
            if st.st_uid != os.geteuid():
                raise UntrustedStateError(
                    f"{folder} is writable by other users and owned by uid {st.st_uid}: another user could "
                    f"replace the driver state staged under it. Fix: set RAY_TMPDIR to a folder of your own"
                )
            os.chmod(folder, stat.S_IMODE(st.st_mode) | stat.S_ISVTX)


def _private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        raise UntrustedStateError(f"{path}: not a folder of this user; delete it")
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(path, 0o700)
    return path


def _read_own_file(path: Path) -> bytes:
    """A file's bytes, only when it is a regular file of this user (no symlink followed)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
            raise UntrustedStateError(f"{path}: not a regular file of this user; refusing to record it")
        return f.read()


def _write_private(path: Path, data: bytes) -> None:
    _private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


# ---- the ledger and the private copy -------------------------------------------------------------------------
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
    if doc.get("format") != LEDGER_FORMAT or doc.get("experiment") != str(experiment):
        return None  # another experiment's, or a ledger from before private copies: no copy to restore
    return doc


def _store(experiment: str, files: dict[str, bytes], *, staging: str | None = None) -> dict:
    """Put `files` (relative path -> bytes) into the private copy as the current versions, then the ledger."""
    doc = _read_ledger(experiment) or {"format": LEDGER_FORMAT, "experiment": str(experiment), "files": {}}
    root = _private_dir(private_copy(experiment))
    changed = False
    for rel, data in files.items():
        digest = hashlib.sha256(data).hexdigest()
        if doc["files"].get(rel) != digest:
            _write_private(root / rel, data)
            doc["files"][rel] = digest
            changed = True
    if staging and doc.get("staging") != str(staging):
        doc["staging"] = str(staging)
        changed = True
    if changed or not ledger_path(experiment).exists():
        doc["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        _write_private(ledger_path(experiment), json.dumps(doc, indent=1).encode())
    return doc


def record_driver_state(
    experiment: str, *, source: str | None = None, only=None, staging: str | None = None, filesystem=None
) -> dict:
    """Copy driver-state files the driver just wrote into the head's private copy of `experiment`, as the
    current versions, and record their sha256 in its ledger.

    Args:
        experiment: the experiment folder in the sweep storage (the key of the ledger).
        source: the driver's local staging folder (what Tune is about to upload; secured with `secure_folder`
            and read only as this user's own regular files), or None for `experiment` itself (right after the
            driver wrote there, e.g. ``tuner.pkl``).
        only: record just these relative paths.
        staging: the driver's local staging folder, remembered for `record_staged_driver_state`.
        filesystem: a pyarrow filesystem for `experiment` when it is not a plain path or URI.

    Returns:
        The ledger as written.
    """
    if source is not None:
        secure_folder(source)
        files = {}
        for dirpath, dirnames, filenames in os.walk(source):
            rel_dir = os.path.relpath(dirpath, source)
            dirnames[:] = [] if rel_dir != "." else dirnames
            for name in filenames:
                rel = name if rel_dir == "." else f"{rel_dir}/{name}"
                if is_driver_state(rel):
                    files[rel] = _read_own_file(Path(dirpath, name))
    else:
        files = _read_state(*resolve(experiment, filesystem))
    if only is not None:
        files = {k: v for k, v in files.items() if k in set(only)}
    return _store(experiment, files, staging=staging)


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


def verified_copy(experiment: str, *, trust: bool = False, filesystem=None) -> dict[str, bytes]:
    """The head's private copy of `experiment`'s driver state, each file checked against the ledger.

    Args:
        experiment: the experiment folder in the sweep storage.
        trust: the explicit override (``--trust-storage``): without a copy, take the storage's files once (for
            a sweep whose head is gone or that predates the copy). Only for storage nobody else can write.
        filesystem: a pyarrow filesystem for `experiment` when it is not a plain path or URI.

    Returns:
        ``{relative path: bytes}`` of the current versions.

    Raises:
        UntrustedStateError: one line: no copy (and the override), or a copy that differs from the ledger.
    """
    base = str(experiment).split("?", 1)[0].rstrip("/")  # a URI's query (endpoint options) is not the path
    doc = _read_ledger(experiment)
    if doc is None or not doc["files"]:
        if not trust:
            raise UntrustedStateError(
                f"refusing to restore {base}: this head has no record of writing its driver state "
                f"({ledger_path(experiment)} is missing), and Tune would unpickle it; if nobody but you can write "
                f"that storage, resume with {TRUST_FLAG}"
            )
        doc = record_driver_state(experiment, filesystem=filesystem)
    root = private_copy(experiment)
    out = {}
    for rel, digest in sorted(doc["files"].items()):
        try:
            data = _read_own_file(root / rel)
        except FileNotFoundError:
            data = b""
        if hashlib.sha256(data).hexdigest() != digest:
            raise UntrustedStateError(
                f"refusing to restore {base}: the head's copy {root / rel} differs from its ledger "
                f"{ledger_path(experiment)}; if nobody but you can write the storage, resume with {TRUST_FLAG}"
            )
        out[rel] = data
    return out


def restore_filesystem(experiment: str, *, trust: bool = False, filesystem=None):
    """(pyarrow filesystem, path) to give `Tuner.restore`: driver state comes from the head's verified private
    copy (`verified_copy`), everything else from the storage.

    Args:
        experiment: the experiment folder in the sweep storage (a local path or a URI).
        trust: see `verified_copy`.
        filesystem: a pyarrow filesystem for `experiment` when it is not a plain path or URI.

    Raises:
        UntrustedStateError: see `verified_copy`.
    """
    import pyarrow.fs as pafs

    from .storage import VerifiedState

    files = verified_copy(experiment, trust=trust, filesystem=filesystem)
    fs, path = resolve(experiment, filesystem)
    differ = sorted(
        rel
        for rel, digest in driver_state_digests(experiment, filesystem=filesystem).items()
        if hashlib.sha256(files.get(rel, b"")).hexdigest() != digest
    )
    if differ:
        print(
            f"warning: the storage's {', '.join(differ[:3])}{' ...' if len(differ) > 3 else ''} differ from "
            f"the head's copy of the driver state; restoring from the head's copy (the storage's are never read)",
            flush=True,
        )
    return pafs.PyFileSystem(VerifiedState(fs, path, files)), path
