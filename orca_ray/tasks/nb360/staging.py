"""Check a NAS-Bench-360 data root, stage it to shared storage, fetch it back (``python -m orca_ray.data``).

`check` lists, per task, every file it needs: where it was found (``ROOT/<file>`` or ``ROOT/<task>/<file>``),
its size and sha256 (streamed), whether that matches a published checksum (torchvision's md5 for CIFAR-100;
NAS-Bench-360 publishes none) or the ``MANIFEST.json`` written when the folder was staged, then loads the task
(shapes, class counts). Missing files are reported with where they go and where to download them. Loading
converts the large tasks into the node-local cache (see `cache`), so a check on a worker node also warms it.

`stage` refuses a root whose check fails, copies the files with ``pyarrow.fs`` (S3/GCS URIs may carry
``?endpoint_override=host:port&scheme=http`` for S3-compatible stores), skips files already there with the
same size and sha256, and writes ``MANIFEST.json`` (size, sha256, md5 of every file) into DEST. `fetch` copies
a staged root to local disk and verifies every file against that manifest.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ... import io
from .files import NB360_TASKS, TASK_FILES
from .manifest import (  # noqa: F401 (staging's API)
    MANIFEST,
    StageError,
    parse_manifest,
    read_manifest_local,
    remember_staged,
    verify_staged,
)

MANIFEST_FORMAT = "orca_ray nb360 manifest v1"

# Published checksums. torchvision's CIFAR100 class lists these md5s for the python-version files; NAS-Bench-360
# (rtu715.github.io/NAS-Bench-360, its README and download script) publishes no checksums for its own files,
# so those are recorded in MANIFEST.json when a root is staged and verified against it afterwards.
KNOWN_CHECKSUMS: dict[str, dict[str, str]] = {
    "cifar-100-python/train": {"md5": "16019d7e3df5f24257cddd939b257f8d", "by": "torchvision"},
    "cifar-100-python/test": {"md5": "f0ef6b0ae62326f3e7ffdfab6717acfc", "by": "torchvision"},
    "cifar-100-python/meta": {"md5": "7973b15100ade9c7d40fb424638fde48", "by": "torchvision"},
}
NO_PUBLISHED = "no published checksum; recorded in MANIFEST.json on stage"


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def digests(path: str | Path, chunk: int = 8 << 20) -> dict[str, str]:
    """sha256 and md5 of a file, read once in chunks.

    Args:
        path: the file.
        chunk: bytes per read.
    """
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            sha.update(block)
            md5.update(block)
    return {"sha256": sha.hexdigest(), "md5": md5.hexdigest()}


def _tasks(tasks) -> list[str]:
    known = NB360_TASKS
    tasks = list(tasks or known)
    unknown = [t for t in tasks if t not in known]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; NAS-Bench-360 tasks here: {', '.join(known)}")
    return tasks


# ---- check -------------------------------------------------------------------------------------------------------
def check(root: str | Path, tasks=None, *, hash_files: bool = True, load: bool = True) -> dict:
    """Report on a local data root (see module docstring). `report["ok"]` is False if anything is off.

    Args:
        root: the local data root.
        tasks: NAS-Bench-360 task names to check (default: all six).
        hash_files: compute every file's sha256/md5 and compare with published checksums and the manifest.
        load: load each complete task (shapes, class counts; warms the node's conversion cache).
    """
    root = Path(root).expanduser()
    report = {"root": str(root), "ok": True, "tasks": {}}
    if not root.is_dir():
        report.update(ok=False, error=f"{root}: no such folder")
        return report
    manifest = read_manifest_local(root)
    for task in _tasks(tasks):
        entry = {"ok": True, "files": [], "problems": [], "load": None}
        for df in TASK_FILES[task]:
            f = {
                "name": df.name,
                "what": df.what,
                "url": df.url,
                "places": [str(p) for p in df.places(root)[:2]],
            }
            path = df.find(root)
            if path is None:
                f["status"] = "missing"
                entry["problems"].append(f"MISSING {df.name}: put it at {df.where(root)}; {df.how_to_get()}")
            else:
                f.update(
                    status="present",
                    path=str(path),
                    relpath=path.relative_to(root).as_posix(),
                    size=path.stat().st_size,
                )
                if hash_files:
                    f.update(digests(path))
                    f["checksum"] = _verify(f, df.name, manifest, entry["problems"])
            entry["files"].append(f)
        # never load (unpickle) a file whose checksum is off: it is not the file that was staged
        if load and all(f["status"] == "present" for f in entry["files"]) and not entry["problems"]:
            entry["load"] = _try_load(task, root, entry["problems"])
        entry["ok"] = not entry["problems"]
        report["ok"] &= entry["ok"]
        report["tasks"][task] = entry
    return report


def _verify(f: dict, name: str, manifest: dict, problems: list[str]) -> str:
    known = KNOWN_CHECKSUMS.get(name)
    staged = manifest.get(f["relpath"])
    notes = []
    if known:
        if f["md5"] != known["md5"]:
            problems.append(
                f"CHECKSUM {f['path']}: md5 {f['md5']} != {known['md5']} published by {known['by']}; "
                "the file is corrupt or a different version: re-download it"
            )
            return "md5 MISMATCH vs published"
        notes.append(f"md5 matches {known['by']}")
    if staged:
        if staged.get("size") != f["size"] or staged.get("sha256") != f["sha256"]:
            problems.append(
                f"CHECKSUM {f['path']}: size/sha256 differ from {MANIFEST} (staged {staged.get('size')} "
                f"bytes, sha256 {staged.get('sha256')}); the copy is incomplete or altered: stage again"
            )
            return f"MISMATCH vs {MANIFEST}"
        notes.append(f"matches {MANIFEST}")
    return "; ".join(notes) if notes else NO_PUBLISHED


def _try_load(task: str, root: Path, problems: list[str]) -> dict | None:
    from .. import load_task

    t0 = time.monotonic()
    try:
        t = load_task(task, data_root=root)
    except Exception as e:  # a check reports every failure instead of stopping at the first
        problems.append(f"LOAD {task}: {type(e).__name__}: {e}")
        return None
    out = {
        "seconds": round(time.monotonic() - t0, 2),
        "kind": t.kind,
        "metric": t.metric,
        "input_shape": list(t.input_shape),
        "num_outputs": t.num_outputs,
        "output_shape": None if t.output_shape is None else list(t.output_shape),
        "memory_mapped": isinstance(t.train.x, np.memmap),
        "splits": {},
    }
    for name, s in t.splits().items():
        d = {"n": len(s), "x": list(s.x.shape), "y": list(s.y.shape)}
        if t.kind == "classification":
            d["class_counts"] = np.bincount(s.y, minlength=t.num_outputs).tolist()
        elif t.kind == "multilabel":
            d["positive_rate"] = round(float(np.asarray(s.y[:100_000]).mean()), 4)
        if s.groups is not None:
            d["groups"] = len(np.unique(s.groups))
        out["splits"][name] = d
    return out


def print_check(report: dict, out=print) -> None:
    """Print a `check` report, one line per file and task.

    Args:
        report: what `check` returned.
        out: where lines go (print, or a logger).
    """
    out(f"data root {report['root']}")
    if "error" in report:
        out(f"  ERROR {report['error']}")
        return
    for task, e in report["tasks"].items():
        out(f"{task}: {'OK' if e['ok'] else 'PROBLEMS'}")
        for f in e["files"]:
            if f["status"] == "missing":
                continue
            line = f"  present  {f['relpath']}  {_human(f['size'])}"
            if "sha256" in f:
                line += f"  sha256 {f['sha256'][:16]}…  ({f['checksum']})"
            out(line)
        ld = e["load"]
        if ld:
            shapes = "; ".join(
                f"{k} {v['n']} x{tuple(v['x'][1:])}"
                + (f" ({v['groups']} recordings)" if "groups" in v else "")
                for k, v in ld["splits"].items()
            )
            out(
                f"  loaded   {ld['kind']}, {ld['num_outputs']} outputs, metric {ld['metric']}: {shapes}"
                f"{'  [memory-mapped]' if ld['memory_mapped'] else ''} in {ld['seconds']}s"
            )
            counts = ld["splits"]["train"].get("class_counts")
            if counts:
                out(f"  train class counts {counts}")
        for p in e["problems"]:
            out(f"  {p}")
    out("all requested tasks OK" if report["ok"] else "check FAILED: see the lines above")


# ---- filesystems ----------------------------------------------------------------------------------------------------
def _read_manifest(fs, base: str) -> dict:
    import pyarrow.fs as pafs

    path = f"{base}/{MANIFEST}"
    if fs.get_file_info(path).type != pafs.FileType.File:
        return {}
    try:
        with fs.open_input_stream(path) as f:
            doc = json.loads(f.read().decode())
    except (OSError, ValueError, RecursionError) as e:
        raise StageError(
            f"{path}: unreadable manifest ({' '.join(str(e).split())[:200]}); stage again"
        ) from None
    parse_manifest(doc, path)
    return doc


def _sync(
    entries: dict[str, dict],
    src_fs,
    src_base: str,
    dst_fs,
    dst_base: str,
    dst_manifest: dict,
    log: Callable[[str], None],
    verify_after: bool,
) -> tuple[list[str], list[str]]:
    """Copy every `entries` file (relpath -> size/sha256) unless DEST has it with the same size and sha256."""
    import pyarrow.fs as pafs

    copied, skipped = [], []
    total = len(entries)
    for i, (rel, e) in enumerate(sorted(entries.items()), 1):
        src, dst = f"{src_base}/{rel}", f"{dst_base}/{rel}"
        info = dst_fs.get_file_info(dst)
        if info.type == pafs.FileType.File and info.size == e["size"]:
            have = (
                dst_manifest.get(rel, {}).get("sha256")
                if dst_manifest.get(rel, {}).get("size") == e["size"]
                else None
            )
            if have is None:
                have = io.stream_sha256(dst_fs, dst)
            if have == e["sha256"]:
                log(f"[{i}/{total}] {rel}: already there ({_human(e['size'])}, same sha256), skipped")
                skipped.append(rel)
                continue
        t0 = time.monotonic()
        log(f"[{i}/{total}] {rel}: copying {_human(e['size'])} ...")
        io.copy_file(src_fs, src, dst_fs, dst)
        dt = max(time.monotonic() - t0, 1e-6)
        got = dst_fs.get_file_info(dst).size
        if got != e["size"]:
            raise RuntimeError(f"{dst}: copied {got} bytes, expected {e['size']}")
        if verify_after and io.stream_sha256(dst_fs, dst) != e["sha256"]:
            raise RuntimeError(
                f"{dst}: sha256 differs from the manifest after copying; the source copy is corrupt"
            )
        log(f"[{i}/{total}] {rel}: done in {dt:.1f}s ({_human(e['size'] / dt)}/s)")
        copied.append(rel)
    return copied, skipped


# ---- stage / fetch ----------------------------------------------------------------------------------------------------
def stage(
    root: str | Path,
    dest: str,
    tasks=None,
    *,
    filesystem=None,
    load: bool = True,
    log: Callable[[str], None] = print,
) -> dict:
    """Copy a verified local data root to DEST (local path or URI) and write DEST/MANIFEST.json.

    Args:
        root: the local data root; it must pass `check`.
        dest: a local path, s3:// or gs:// URI.
        tasks: NAS-Bench-360 task names to stage (default: all six).
        filesystem: a pyarrow filesystem for `dest` (default: from the URI).
        load: load each task during the check.
        log: where progress lines go.
    """
    import pyarrow.fs as pafs

    report = check(root, tasks, hash_files=True, load=load)
    if not report["ok"]:
        print_check(report, log)
        raise StageError(f"{root}: check failed, nothing staged")
    entries = {}
    for task, e in report["tasks"].items():
        for f in e["files"]:
            entries[f["relpath"]] = {"task": task, "size": f["size"], "sha256": f["sha256"], "md5": f["md5"]}
    dst_fs, base = io.resolve(dest, filesystem)
    manifest = _read_manifest(dst_fs, base)
    files = dict(manifest.get("files", {}))
    copied, skipped = _sync(
        entries,
        pafs.LocalFileSystem(),
        str(Path(root).expanduser().resolve()),
        dst_fs,
        base,
        files,
        log,
        verify_after=False,
    )
    files.update(entries)
    doc = {
        "format": MANIFEST_FORMAT,
        "staged": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "source": str(Path(root).expanduser().resolve()),
        "files": dict(sorted(files.items())),
    }
    io.write_bytes(dst_fs, f"{base}/{MANIFEST}", json.dumps(doc, indent=1).encode())
    log(f"staged {len(copied)} file(s), skipped {len(skipped)}; manifest {dest.rstrip('/')}/{MANIFEST}")
    return {"dest": dest, "copied": copied, "skipped": skipped, "manifest": doc}


def _inside(root: Path, rel: str, where: str) -> Path:
    """ROOT/rel, refused unless it stays inside ROOT with no symlink on the way (checked on the disk as it is)."""
    path = root / rel
    for p in [*reversed(path.relative_to(root).parents), Path(rel)]:
        if p == Path("."):
            continue
        if (root / p).is_symlink():
            raise StageError(
                f"{where}: {rel!r} goes through the symlink {root / p}; refusing to copy through it. "
                "Fix: remove the symlink"
            )
    if not path.resolve().is_relative_to(root.resolve()):
        raise StageError(f"{where}: {rel!r} resolves outside {root}; refusing to write there")
    return path


def fetch(
    src: str, dest: str | Path, tasks=None, *, filesystem=None, log: Callable[[str], None] = print
) -> dict:
    """Copy a staged root (local or URI) to local DEST, verifying sizes and sha256 against its manifest.

    Args:
        src: a staged root (written by `stage`): local path, s3:// or gs:// URI.
        dest: the local folder to fill.
        tasks: NAS-Bench-360 task names to fetch (default: all six).
        filesystem: a pyarrow filesystem for `src` (default: from the URI).
        log: where progress lines go.
    """
    import pyarrow.fs as pafs

    src_fs, base = io.resolve(src, filesystem)
    manifest = _read_manifest(src_fs, base)
    if not manifest:
        raise StageError(f"{src}: no {MANIFEST}; only a root written by `stage` can be fetched")
    wanted = set(_tasks(tasks))
    entries = {rel: e for rel, e in manifest["files"].items() if e.get("task") in wanted}
    dest = Path(dest).expanduser().resolve()
    dest.mkdir(parents=True, exist_ok=True)
    for (
        rel
    ) in entries:  # every write must land inside DEST, through no symlink (a .pth in site-packages runs)
        _inside(dest, rel, f"{src.rstrip('/')}/{MANIFEST}")
        if isinstance(src_fs, pafs.LocalFileSystem):
            _inside(Path(base), rel, f"{src.rstrip('/')}/{MANIFEST}")
    local = read_manifest_local(dest)
    copied, skipped = _sync(
        entries, src_fs, base, pafs.LocalFileSystem(), str(dest), local, log, verify_after=True
    )
    doc = dict(manifest, files=dict(sorted({**local, **entries}.items())))
    io.write_bytes(pafs.LocalFileSystem(), str(dest / MANIFEST), json.dumps(doc, indent=1).encode())
    remember_staged(dest)
    log(f"fetched {len(copied)} file(s), skipped {len(skipped)} into {dest}")
    return {"dest": str(dest), "copied": copied, "skipped": skipped}
