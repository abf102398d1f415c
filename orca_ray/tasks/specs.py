"""Task specs that name the user's own files: `npz:PATH`, `ucr:PATH`, `imagefolder:PATH`, `csv:PATH`,
`parquet:PATH` (a table's label column as `csv:PATH#label=COL`).

PATH may be absolute, relative, start with `~`, or be an `s3://` / `gs://` URI (S3 URIs may carry
`?endpoint_override=host:port&scheme=http`). On the driver, `absolute_spec` pins local paths to absolute ones,
so trials (which run in their own folders, possibly on other nodes) read the same files; `local_path` stages
an object-store path once per node into the cache, under a file lock, and returns the local copy.
`task_slug` is the short, file-name-safe form of a spec used in trial names (the spec itself can hold `/`).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

PATH_PREFIXES = ("npz", "ucr", "imagefolder", "csv", "parquet")
PATH_FORMS = (
    "'npz:/path/file.npz', 'ucr:/path/DIR', 'imagefolder:/path/DIR', 'csv:/path/file.csv#label=COL' or "
    "'parquet:/path/file.parquet#label=COL' for your own data; 'openml:ID' for a staged OpenML dataset"
)
LABEL_FRAGMENT = "#label="
STAGED_SUBDIR = "staged"


def split_spec(name: str) -> tuple[str, str | None]:
    """("npz", "/data/x.npz") for a path spec, (name, None) for a registered task name.

    Args:
        name: a task spec as given on the command line.
    """
    prefix, sep, rest = name.partition(":")
    if sep and prefix in PATH_PREFIXES:
        return prefix, rest
    return name, None


def split_fragment(path: str) -> tuple[str, str]:
    """("/data/t.csv", "#label=y") for a table path with a label fragment; (path, "") without one.

    Args:
        path: the path part of a spec.
    """
    base, sep, frag = path.partition("#")
    return (base, sep + frag) if sep else (path, "")


def split_label(path: str) -> tuple[Path, str | None]:
    """The local file and the label column of a table path (`/data/t.csv#label=y` → (Path, "y")).

    Args:
        path: the path part of a csv / parquet spec, already local.
    """
    from .base import TaskDataError

    base, frag = split_fragment(path)
    if frag and not frag.startswith(LABEL_FRAGMENT):
        raise TaskDataError(f"{path}: unknown '{frag}'; name the label column as PATH{LABEL_FRAGMENT}COL")
    label = frag[len(LABEL_FRAGMENT) :] if frag else None
    if frag and not label:
        raise TaskDataError(f"{path}: '{LABEL_FRAGMENT}' names no column; give PATH{LABEL_FRAGMENT}COL")
    return Path(base).expanduser(), label


def absolute_spec(name: str) -> str:
    """The spec with a local path made absolute (`~` expanded); registered names and URIs unchanged.

    Args:
        name: a task spec.
    """
    prefix, path = split_spec(name)
    if path is None or "://" in path or not path:
        return name
    return f"{prefix}:{Path(path).expanduser().resolve()}"


def task_slug(name: str, max_stem: int = 32) -> str:
    """A short, file-name-safe form of a task spec: the name itself for registered tasks; for path specs the
    format, the file or folder's stem and a hash of the whole spec (`npz-mydata-3f9c1a`).

    Args:
        name: a task spec.
        max_stem: longest stem kept.
    """
    prefix, path = split_spec(name)
    if path is None:
        return re.sub(r"[^A-Za-z0-9._+-]", "_", name)
    stem = Path(path.split("?", 1)[0].rstrip("/")).name
    stem = (
        split_fragment(stem)[0].removesuffix(".npz").removesuffix(".csv").removesuffix(".parquet") or prefix
    )
    stem = re.sub(r"[^A-Za-z0-9._+-]", "_", stem).strip("._")[:max_stem] or prefix
    return f"{prefix}-{stem}-{hashlib.sha256(name.encode()).hexdigest()[:6]}"


def local_path(path: str, cache_dir: str | Path | None = None) -> Path:
    """A local path for the data a spec names: local paths as they are (`~` expanded); `s3://` / `gs://`
    files, folders or file prefixes (`ucr:s3://bucket/UCR/GunPoint/GunPoint`) copied once per node into
    `<cache>/staged/<hash>/`, under a file lock, and reused afterwards.

    Args:
        path: the path part of a spec.
        cache_dir: cache folder (default `io.cache_root()`).
    """
    import pyarrow.fs as pafs

    from .. import io
    from .base import TaskDataError

    if "://" not in path:
        return Path(path).expanduser()
    base = Path(path.split("?", 1)[0].rstrip("/")).name
    try:
        fs, remote = io.resolve(path)
        info = fs.get_file_info(remote)
        if info.type == pafs.FileType.File:
            root, files = remote.rsplit("/", 1)[0], [info]
        else:
            # a folder, or a file prefix (.../GunPoint/GunPoint for GunPoint_TRAIN.tsv and GunPoint_TEST.tsv)
            is_dir = info.type == pafs.FileType.Directory
            root = remote if is_dir else remote.rsplit("/", 1)[0]
            found = fs.get_file_info(pafs.FileSelector(root, recursive=is_dir, allow_not_found=True))
            files = [
                f for f in found if f.type == pafs.FileType.File and (is_dir or f.base_name.startswith(base))
            ]
    except OSError as e:  # missing bucket, no credentials, unreachable endpoint
        raise TaskDataError(f"{path}: cannot list it ({e})") from None
    if not files:
        raise TaskDataError(f"{path}: no such file or folder")
    # the listing (names, sizes, modification times) is part of the key: a changed remote file is staged anew
    listing = sorted((f.path, f.size, f.mtime_ns) for f in files)
    key = hashlib.sha256(repr((path, listing)).encode()).hexdigest()[:16]
    target = io.cache_root(cache_dir) / STAGED_SUBDIR / key
    sub = base if info.type == pafs.FileType.Directory else ""

    def build(tmp: Path) -> None:
        for f in files:
            dest = tmp / sub / f.path[len(root) :].lstrip("/")
            io.copy_file(fs, f.path, pafs.LocalFileSystem(), str(dest))

    io.build_once(target, build)
    return target / base
