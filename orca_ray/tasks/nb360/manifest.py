"""A staged data root's ``MANIFEST.json`` (written by `staging.stage`) and the check every loader runs against it
before reading a file (`verify_staged`). Its own module so that `files` (the loaders' file table) and `staging`
(which builds on that table) both use it without importing each other.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path

from ... import io
from ..base import TaskDataError

MANIFEST = "MANIFEST.json"


class StageError(RuntimeError):
    """Staging or fetching refused (failed check, missing or unreadable manifest)."""


def parse_manifest(doc, where: str) -> dict[str, dict]:
    """The checked `files` table of a MANIFEST.json document: relpath -> {size, sha256, md5, task}.

    A relpath is a relative POSIX path of plain names (no ``..``, no absolute path, no backslash or control
    character); sizes are whole numbers; sha256 is 64 hex digits. Anything else is one line naming the manifest.

    Args:
        doc: the parsed JSON.
        where: the manifest's path or URI, for messages.

    Raises:
        StageError: the manifest is malformed.
    """
    files = doc.get("files") if isinstance(doc, dict) else None
    if not isinstance(files, dict):
        raise StageError(
            f"{where}: not a {MANIFEST} written by `stage` (no files table); stage the root again"
        )
    for rel, e in files.items():
        parts = rel.split("/")
        if (
            not rel
            or len(rel) > 1024
            or rel.startswith("/")
            or any(p in ("", ".", "..") for p in parts)
            or any(ch == "\\" or ord(ch) < 32 or ord(ch) == 127 for ch in rel)
        ):
            raise StageError(
                f"{where}: file path {rel[:200]!r} is not a plain relative path; refusing the manifest"
            )
        ok = (
            isinstance(e, dict)
            and isinstance(e.get("size"), int)
            and not isinstance(e.get("size"), bool)
            and e["size"] >= 0
            and isinstance(e.get("sha256"), str)
            and len(e["sha256"]) == 64
            and all(c in "0123456789abcdef" for c in e["sha256"])
        )
        if not ok:
            raise StageError(f"{where}: entry {rel!r} lacks a size and sha256; refusing the manifest")
    return files


def read_manifest_local(root: Path) -> dict:
    """The `files` table of ROOT/MANIFEST.json (relpath → size, sha256, md5, task); {} when there is none.

    Args:
        root: a local data root.
    """
    p = Path(root) / MANIFEST
    if not p.is_file():
        return {}
    try:
        doc = json.loads(p.read_text())
    except (OSError, ValueError, RecursionError) as e:
        raise StageError(
            f"{p}: unreadable manifest ({' '.join(str(e).split())[:200]}); stage again"
        ) from None
    return parse_manifest(doc, str(p))


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
        if staged_before(root):  # deleting the manifest must not turn a staged root into an unchecked one
            raise TaskDataError(
                f"{root / MANIFEST}: missing, but this node has read {root} as a staged root before; refusing to "
                f"load unchecked files. Fix: fetch the root again (python -m orca_ray.data fetch SRC {root})"
            )
        return
    remember_staged(root)
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


STAGED_SUBDIR = "staged-roots"


def _staged_record(root: Path) -> Path:
    return (
        io.cache_root() / STAGED_SUBDIR / hashlib.sha256(str(Path(root).resolve()).encode()).hexdigest()[:32]
    )


def remember_staged(root: Path) -> None:
    """Note in this node's cache that `root` holds a MANIFEST.json, so its later removal is noticed.

    Args:
        root: a local data root with a manifest.
    """
    record = _staged_record(root)
    if not record.exists():
        with contextlib.suppress(OSError):  # a read-only cache: nothing remembered, nothing else changes
            io.write_bytes(*io.resolve(record), str(Path(root).resolve()).encode())


def staged_before(root: Path) -> bool:
    """Whether this node's cache records `root` as staged (`remember_staged`).

    Args:
        root: a local data root.
    """
    return _staged_record(root).is_file()
