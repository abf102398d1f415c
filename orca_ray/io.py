"""Where files live and how they are written: the cache root, local or object-store paths, atomic writes and
build-once-under-a-file-lock. Every module that writes a file shared between processes goes through here.

- `cache_root()`: `$ORCA_RAY_CACHE`, else `~/.cache/orca_ray` (embedder snapshots, proxy features, converted
  NAS-Bench-360 arrays). Point it at node-local disk.
- `resolve(uri)`: a pyarrow filesystem and path for a local path, `file://`, `s3://` or `gs://` URI (S3 URIs may
  carry `?endpoint_override=host:port&scheme=http`).
- `write_bytes(fs, path, data)` / `write_file(path, write)`: never visible half-written under the final name
  (local: temporary name in the same folder, fsync, rename; object store: one PUT, visible only when complete).
- `build_once(target, build)`: a file or folder built by one process per node while the others wait on a file
  lock, then read by all.

Temporary names start with "." and end in ".tmp" (or hold ".tmp-"), so Parquet readers and globs skip them.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

CACHE_ENV = "ORCA_RAY_CACHE"
_OBJECT_STORES = ("s3", "gcs", "gs", "abfs", "az")


# ---- paths ---------------------------------------------------------------------------------------------------
def cache_root(cache_dir: str | Path | None = None) -> Path:
    """The cache folder: `cache_dir` when given, else `$ORCA_RAY_CACHE`, else `~/.cache/orca_ray`.

    Args:
        cache_dir: an explicit folder (a trial's `--cache-dir`); None for the environment's default.
    """
    if cache_dir:
        return Path(cache_dir).expanduser()
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "orca_ray"


def is_uri(path: str | Path) -> bool:
    """True for `scheme://...` locations (s3://, gs://, file://), False for plain local paths.

    Args:
        path: a path or URI.
    """
    return "://" in str(path)


def join(base: str, *parts: str) -> str:
    """`base/part/...` for a URI (kept as a URI) or a local path (made absolute, `~` expanded).

    Args:
        base: a local path or a URI.
        parts: path components appended in order.
    """
    if is_uri(base):
        return "/".join([str(base).rstrip("/"), *parts])
    return str(Path(base).expanduser().resolve().joinpath(*parts))


def resolve(uri: str | Path, filesystem=None):
    """(pyarrow filesystem, path inside it) for a local path or a URI.

    Args:
        uri: a local path, or `s3://`, `gs://`, `file://` URI.
        filesystem: a pyarrow filesystem to use instead of the URI's own; the URI's scheme and query are
            stripped (`s3://bucket/prefix?x=y` → `bucket/prefix`).
    """
    import pyarrow.fs as pafs

    uri = str(uri)
    if filesystem is not None:
        path = uri.split("://", 1)[1] if is_uri(uri) else uri
        return filesystem, path.split("?", 1)[0].rstrip("/")
    if is_uri(uri):
        fs, path = pafs.FileSystem.from_uri(uri)
        return fs, path.rstrip("/")
    return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(uri))


def is_object_store(fs) -> bool:
    """True when `fs` is an object store (S3, GCS, Azure), where one upload appears whole when complete.

    Args:
        fs: a pyarrow filesystem.
    """
    name = fs.type_name.lower()
    return any(s in name for s in _OBJECT_STORES) and name not in ("local", "subtree", "hdfs")


def is_file(fs, path: str) -> bool:
    """True when `path` is a regular file on the pyarrow filesystem `fs`.

    Args:
        fs: a pyarrow filesystem.
        path: a path inside it.
    """
    import pyarrow.fs as pafs

    return fs.get_file_info(path).type == pafs.FileType.File


# ---- atomic writes ---------------------------------------------------------------------------------------------
def _tmp_name(path: str) -> str:
    directory, name = path.rsplit("/", 1)
    return f"{directory}/.{name}.{uuid.uuid4().hex[:8]}.tmp"


def write_bytes(fs, path: str, data: bytes) -> None:
    """Make `path` on the pyarrow filesystem `fs` hold `data`, never visible half-written under that name.

    Args:
        fs: a pyarrow filesystem (see `resolve`).
        path: the final path inside `fs`.
        data: the whole content.
    """
    if is_object_store(fs):
        # a single-object upload (or a completed multipart upload) appears atomically
        with fs.open_output_stream(path) as out:
            out.write(data)
        return
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    tmp = _tmp_name(path)
    if fs.type_name == "local":
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return
    try:
        with fs.open_output_stream(tmp) as out:
            out.write(data)
        fs.move(tmp, path)
    finally:
        if is_file(fs, tmp):
            fs.delete_file(tmp)


def write_file(path: str | Path, write: Callable[[Path], None]) -> None:
    """Make the local file `path` hold what `write(tmp_path)` writes (torch.save, safetensors, ...), atomically.

    Args:
        path: the final local path; its folder is created.
        write: writes the whole file to the temporary path it is given (same folder as `path`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(_tmp_name(str(path)))
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)  # a reader sees the old file or the whole new one
    finally:
        if tmp.exists():
            tmp.unlink()


def copy_file(src_fs, src: str, dst_fs, dst: str, chunk_size: int = 8 << 20) -> None:
    """Copy one file between pyarrow filesystems; the destination never holds a partial copy.

    Args:
        src_fs, src: source filesystem and path.
        dst_fs, dst: destination filesystem and path (its folder is created on local disk).
        chunk_size: bytes per read/write.
    """
    import pyarrow.fs as pafs

    if is_object_store(dst_fs):
        pafs.copy_files(
            src, dst, source_filesystem=src_fs, destination_filesystem=dst_fs, chunk_size=chunk_size
        )
        return
    dst_fs.create_dir(dst.rsplit("/", 1)[0], recursive=True)
    tmp = _tmp_name(dst)
    try:
        pafs.copy_files(
            src, tmp, source_filesystem=src_fs, destination_filesystem=dst_fs, chunk_size=chunk_size
        )
        dst_fs.move(tmp, dst)
    finally:
        if is_file(dst_fs, tmp):
            dst_fs.delete_file(tmp)


# ---- locks and build-once --------------------------------------------------------------------------------------
@contextmanager
def file_lock(path: str | Path, timeout: float = -1) -> Iterator[None]:
    """Hold an inter-process lock on the lock file `path` (created if missing).

    Args:
        path: the lock file.
        timeout: seconds to wait before `filelock.Timeout`; -1 waits forever.
    """
    from filelock import FileLock

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path), timeout=timeout):
        yield


def build_once(
    target: str | Path,
    build: Callable[[Path], None],
    *,
    ready: Callable[[Path], bool] | None = None,
) -> bool:
    """Make `target` (a file or a folder) exist, built by `build(tmp)` in exactly one process per node.

    Under the file lock `<target>.lock`: if `target` is not ready, leftovers of a crashed build are removed,
    `build(tmp)` writes a file or folder at the temporary path it is given (same folder as `target`), and that
    is renamed into place. Processes that find the target ready never take the lock; the others wait for it.

    Args:
        target: the final path.
        build: writes the whole file or folder at the path it is given.
        ready: says whether a target on disk is complete (default: it exists); an incomplete one is rebuilt.

    Returns:
        True when this call built the target, False when it was already there.
    """
    target = Path(target)
    ready = ready or Path.exists
    if ready(target):
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    with file_lock(f"{target}.lock"):
        if ready(target):
            return False
        if time.monotonic() - t0 > 1:
            log.info("waited %.0fs for the lock on %s", time.monotonic() - t0, target)
        for stale in target.parent.glob(f".{target.name}.*.tmp"):  # a crashed build (we hold the lock)
            _remove(stale)
        _remove(target)
        tmp = Path(_tmp_name(str(target)))
        try:
            build(tmp)
            if tmp.is_file():
                with open(tmp, "rb") as f:
                    os.fsync(f.fileno())
            os.replace(tmp, target)
        finally:
            _remove(tmp)
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)


# ---- content fingerprints ---------------------------------------------------------------------------------------
FINGERPRINT_SUBDIR = "fingerprints"


def sha256_of(f, chunk_size: int = 8 << 20) -> str:
    """sha256 (hex) of everything left in an open binary file: a local file or a pyarrow input stream.

    Args:
        f: the file object (`open(path, "rb")`, `fs.open_input_stream(path)`); read to its end, not closed.
        chunk_size: bytes per read.
    """
    sha = hashlib.sha256()
    while block := f.read(chunk_size):
        sha.update(block)
    return sha.hexdigest()


def stream_sha256(fs, path: str) -> str:
    """sha256 (hex) of a file on a pyarrow filesystem (local, S3, GCS), read as a stream; not memoised.

    Args:
        fs: the pyarrow filesystem (`resolve`).
        path: the file's path on `fs`.
    """
    with fs.open_input_stream(path) as f:
        return sha256_of(f)


def file_sha256(path: str | Path, cache_dir: str | Path | None = None, chunk_size: int = 8 << 20) -> str:
    """sha256 (hex) of a local file's content, hashed once per node and version of the file.

    The digest is remembered under `<cache>/fingerprints/`, keyed by the file's path, size, modification and
    change time, so a changed (or touched) file is hashed again and an unchanged one is not; processes hashing
    the same file at once wait on a lock and hash it once. A missing or unreadable memo is recomputed, and so
    is one that another user could have written (not this user's, or its folder or itself writable by group or
    others): the memo vouches for a file's content, so it is trusted no more than this user's own writes.

    Args:
        path: the file.
        cache_dir: cache folder (default `cache_root()`).
        chunk_size: bytes per read.
    """
    path = str(Path(path).resolve())
    st = os.stat(path)
    key = hashlib.sha256(repr((path, st.st_size, st.st_mtime_ns, st.st_ctime_ns)).encode()).hexdigest()[:32]
    memo = cache_root(cache_dir) / FINGERPRINT_SUBDIR / key

    def remembered() -> str | None:
        try:
            if not (_own_private(memo) and _own_private(memo.parent)):
                return None
            value = memo.read_text().strip()
        except OSError:
            return None
        return value if len(value) == 64 else None

    def compute() -> str:
        with open(path, "rb") as f:
            return sha256_of(f, chunk_size)

    if value := remembered():
        return value
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(f"{memo}.lock"):  # trials starting together on a node hash a large file once
            if value := remembered():
                return value
            value = compute()
            write_bytes(*resolve(memo), value.encode())
            return value
    except PermissionError as e:  # a read-only cache: the right answer, just not remembered
        log.info("fingerprint cache %s unusable (%s)", memo.parent, e)
        return compute()


def _own_private(path: Path) -> bool:
    """This user's file or folder, which nobody else can write (no group/other write bit, no symlink)."""
    st = path.lstat()
    return st.st_uid == os.geteuid() and not st.st_mode & 0o022 and not os.path.islink(path)


def content_fingerprint(paths, cache_dir: str | Path | None = None) -> str:
    """A fingerprint (24 hex digits) of the contents of local files, in the given order: sha256 over each
    file's name and `file_sha256`, so every file is read at most once per node and version.

    Args:
        paths: the files.
        cache_dir: cache folder (default `cache_root()`).
    """
    h = hashlib.sha256()
    for p in paths:
        h.update(f"{os.path.basename(p)}\0{file_sha256(p, cache_dir)}\0".encode())
    return h.hexdigest()[:24]


def quarantine(path: str | Path, why: object = "") -> Path:
    """Move a corrupt cache file aside (`<name>.corrupt-<time>`) so it is rebuilt, keeping it for a post-mortem.

    Args:
        path: the unreadable file.
        why: the error, for the one-line warning.

    Returns:
        Where the file now is.
    """
    path = Path(path)
    aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:4]}")
    try:
        os.replace(path, aside)
    except FileNotFoundError:  # another process moved it first
        return aside
    log.warning("cache file %s is unreadable (%s); moved it to %s and rebuilding", path, why, aside.name)
    return aside
