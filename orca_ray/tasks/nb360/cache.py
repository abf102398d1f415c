"""Node-local cache of converted arrays: DeepSEA, Satellite and ECG (and Darcy's subsampled fields) are
converted once per node into plain ``.npy`` files under ``$ORCA_RAY_CACHE/nb360`` (or ``~/.cache/orca_ray/nb360``),
keyed by the source files' path, size and mtime plus the options, built under a file lock (`io.build_once`),
then opened with ``np.load(mmap_mode="r")``: every trial process on a node shares the OS page cache instead of
holding its own copy. Point the cache at node-local disk (not NFS).
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ... import io
from ..base import TaskDataError

log = logging.getLogger(__name__)

CACHE_VERSION = 1


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """Where converted arrays go: `cache_dir` when given, else `<io.cache_root()>/nb360`.

    Args:
        cache_dir: an explicit folder for the converted arrays.
    """
    return Path(cache_dir).expanduser() if cache_dir is not None else io.cache_root() / "nb360"


def _fingerprint(sources: list[Path]) -> list[list]:
    """Each source's name and content hash: the rule every cache of the project keys data by
    (`io.file_sha256`, hashed once per node and file version), so a file replaced under the same size and
    modification time (`cp -p`, `rsync -t`) is converted again, and a copy at another path is not."""
    return [[p.name, io.file_sha256(p)] for p in sources]


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

    The conversion runs once per node and key (the sources' content hashes, options, CACHE_VERSION) through
    `io.build_once`, so concurrent trials never both convert and never see half a file. Later loads (any
    process) only open read-only memory maps.

    Args:
        task: the task name (prefixes the cache folder).
        sources: the data files the arrays come from (their content hashes key the cache).
        options: loader options that change the arrays (part of the key).
        build: writes NAME.npy files into the folder it is given.
        cache_dir: cache folder (default: see `cache_root`).
    """
    root = cache_root(cache_dir)
    fp = _fingerprint(sources)
    key_src = json.dumps({"v": CACHE_VERSION, "task": task, "files": fp, "options": options}, sort_keys=True)
    final = root / f"{task}-{hashlib.sha256(key_src.encode()).hexdigest()[:20]}"

    def convert(tmp: Path) -> None:
        tmp.mkdir()
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

    try:
        built = io.build_once(final, convert, ready=lambda p: _complete(p) is not None)
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise TaskDataError(
                f"{root}: the cache disk filled up while converting {task}. Fix: free space or set "
                f"ORCA_RAY_CACHE to a node-local disk with room"
            ) from e
        raise
    if built:
        _prune_stale(root, task, final, [f[0] for f in fp], options)
    meta = _complete(final)
    return {name: np.load(final / f"{name}.npy", mmap_mode="r", allow_pickle=False) for name in meta["files"]}


def _prune_stale(root: Path, task: str, keep: Path, source_paths: list[str], options: dict) -> None:
    """Drop older conversions of the same source paths with the same options (the files changed, so the key
    did). Processes that still map them keep reading: on POSIX the data lives until the last map closes."""
    for other in root.glob(f"{task}-*"):
        if other == keep or not other.is_dir():
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
