"""A staged data root's ``MANIFEST.json`` (written by `staging.stage`) and the check every loader runs against it
before reading a file (`verify_staged`). Its own module so that `files` (the loaders' file table) and `staging`
(which builds on that table) both use it without importing each other.
"""

from __future__ import annotations

import json
from pathlib import Path

from ... import io
from ..base import TaskDataError

MANIFEST = "MANIFEST.json"


class StageError(RuntimeError):
    """Staging or fetching refused (failed check, missing or unreadable manifest)."""


def read_manifest_local(root: Path) -> dict:
    """The `files` table of ROOT/MANIFEST.json (relpath → size, sha256, md5, task); {} when there is none.

    Args:
        root: a local data root.
    """
    p = Path(root) / MANIFEST
    if not p.is_file():
        return {}
    try:
        return json.loads(p.read_text()).get("files", {})
    except (OSError, ValueError) as e:
        raise StageError(f"{p}: unreadable manifest ({e}); delete it and stage again") from e


def verify_staged(root: Path, path: Path) -> None:
    """Refuse to load a file of a staged root that differs from the root's ``MANIFEST.json``.

    Every node checks each file a loader is about to read (size, then sha256) against the manifest `stage`
    wrote; a file the manifest does not list is refused too. A root without a manifest (your own download, not
    staged) is read as it is. The sha256 comes from `io.file_sha256`, remembered per node and file version, so
    later loads on the node do not hash the file again.

    Args:
        root: the data root, where ``MANIFEST.json`` sits.
        path: the file under `root` about to be read.

    Raises:
        TaskDataError: one line naming the file, what differs and the fix.
    """
    try:
        manifest = read_manifest_local(root)
    except StageError as e:
        raise TaskDataError(str(e)) from None
    if not manifest:
        return
    entry = manifest.get(path.relative_to(root).as_posix())
    fix = f"fetch or stage the root again (python -m orca_ray.data fetch/stage); {MANIFEST} is in {root}"
    if entry is None:
        raise TaskDataError(f"{path}: not listed in {root / MANIFEST}; refusing to load it. Fix: {fix}")
    st = path.stat()
    if st.st_size != entry.get("size"):
        raise TaskDataError(
            f"CHECKSUM {path}: {st.st_size} bytes, {MANIFEST} says {entry.get('size')}; refusing to load it. "
            f"Fix: {fix}"
        )
    sha = io.file_sha256(path)  # remembered: the task's content fingerprint then reads the file no more
    if sha != entry.get("sha256"):
        raise TaskDataError(
            f"CHECKSUM {path}: sha256 {sha[:16]}… differs from {MANIFEST} ({str(entry.get('sha256'))[:16]}…); "
            f"refusing to load it. Fix: {fix}"
        )
