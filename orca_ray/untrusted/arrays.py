"""``.npy`` and ``.npz`` files read with memory bounded by what they declare, before any array is read.

A ``.npy`` header declares a shape and dtype; numpy allocates that much before reading the data, so a 100-byte
file declaring a terabyte ends in MemoryError, and an ``.npz`` member can expand a few kilobytes into gigabytes.
Here every header is checked first: plain dtypes only (no Python objects, no structured fields), the declared
bytes must be what the file (or the zip entry) holds, and an ``.npz`` may declare at most `memory_limit()` bytes
in all. Every refusal is one `UntrustedDataError` line naming the file, the member and the fix.
"""

from __future__ import annotations

import io
import os
import zipfile
from dataclasses import dataclass
from math import prod
from typing import Any

import numpy as np

from .pickles import PLAIN_KINDS, _RestrictedUnpickler

LIMIT_ENV = "ORCA_RAY_MAX_ARRAY_BYTES"
MAX_HEADER = 10_000  # numpy's own default limit on a header's size
SAVEZ = "write it with numpy.savez (x_train=..., y_train=..., ...)"


class UntrustedDataError(ValueError):
    """An array file that is malformed or declares more than it may: one line naming the file and the fix."""


def memory_limit() -> int:
    """The most bytes one ``.npz`` may declare: ``$ORCA_RAY_MAX_ARRAY_BYTES``, else half this machine's memory."""
    env = os.environ.get(LIMIT_ENV)
    if env:
        try:
            return int(float(env))
        except ValueError:
            raise UntrustedDataError(f"{LIMIT_ENV}={env!r}: expected a number of bytes") from None
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e7 else f"{n} bytes"


@dataclass(frozen=True)
class NpyHeader:
    """A checked ``.npy`` header.

    Args:
        shape: the declared shape.
        fortran: Fortran (column-major) order.
        dtype: a plain dtype (or object, for `load_npy`'s pickled arrays).
        offset: bytes before the data.
    """

    shape: tuple[int, ...]
    fortran: bool
    dtype: np.dtype
    offset: int

    @property
    def nbytes(self) -> int:
        """The data's declared size."""
        return prod(self.shape) * self.dtype.itemsize


def plain_dtype(dtype: np.dtype) -> bool:
    """Numbers, bools and fixed-width text: what the loaders accept (no objects, no structured fields).

    Args:
        dtype: the dtype.
    """
    return (
        dtype.kind in PLAIN_KINDS and dtype.fields is None and dtype.subdtype is None and dtype.itemsize > 0
    )


def read_header(f, where: str, *, allow_object: bool = False) -> NpyHeader:
    """Read and check a ``.npy`` header from an open binary file (left at the start of the data).

    Args:
        f: the open file (a local file or a zip member).
        where: the file (and member) for messages.
        allow_object: accept an object dtype (the data is then a pickle; see `load_npy`).

    Raises:
        UntrustedDataError: not a ``.npy`` header, or a dtype other than plain numbers and text.
    """
    try:
        # the header's length is checked before it is read: numpy would read (and allocate) what it says
        magic = f.read(8)
        if len(magic) != 8 or magic[:6] != b"\x93NUMPY" or magic[6] not in (1, 2, 3) or magic[7] != 0:
            raise ValueError("no .npy magic string and version")
        size_field = f.read(2 if magic[6] == 1 else 4)
        length = int.from_bytes(size_field, "little")
        if len(size_field) not in (2, 4) or length > MAX_HEADER:
            raise ValueError(f"a header of {length} bytes")
        header = f.read(length)
        reader = np.lib.format.read_array_header_1_0 if magic[6] == 1 else np.lib.format.read_array_header_2_0
        buf = io.BytesIO(magic + size_field + header)
        buf.seek(8)
        shape, fortran, dtype = reader(buf, max_header_size=MAX_HEADER)
    except Exception as e:  # any malformed header, whatever numpy's parser raises about it
        raise UntrustedDataError(
            f"{where}: not a readable .npy array ({type(e).__name__}: {' '.join(str(e).split())[:200]})"
        ) from None
    if dtype.hasobject and allow_object and dtype.kind == "O":
        return NpyHeader(tuple(shape), bool(fortran), dtype, f.tell())
    if dtype.hasobject:
        raise UntrustedDataError(
            f"{where} is a Python-object array, which would need pickle to load. Fix: save it as numbers or "
            f"fixed-width strings (np.asarray(labels, dtype=str))"
        )
    if not plain_dtype(dtype):
        raise UntrustedDataError(
            f"{where}: dtype {dtype} is not plain numbers or text (structured, void or datetime arrays are not "
            "read). Fix: save each field as its own array of numbers"
        )
    return NpyHeader(tuple(shape), bool(fortran), dtype, f.tell())


def load_npy(
    path: str | os.PathLike,
    *,
    mmap_mode: str | None = None,
    encoding: str = "ASCII",
    allow_object: bool = True,
) -> Any:
    """Read a ``.npy`` file: plain arrays with ``np.load(allow_pickle=False)`` once the header's declared size
    matches the file, object arrays (a pickled dict, as NAS-Bench-360's Satellite files) through the restricted
    unpickler (`pickles`).

    Args:
        path: the ``.npy`` file.
        mmap_mode: passed to `np.load` for plain arrays (object arrays cannot be memory-mapped).
        encoding: as in `np.load`, for object arrays pickled by Python 2.
        allow_object: read object arrays through the restricted unpickler (else refuse them).

    Raises:
        UnsafePickleError: an object array references anything but numpy arrays and plain containers.
        UnreadablePickleError: an object array's pickle is malformed.
        UntrustedDataError: not a ``.npy`` file, a dtype that is not plain, or a size the file does not hold.
    """
    with open(path, "rb") as f:
        h = read_header(f, str(path), allow_object=allow_object)
        if h.dtype.hasobject:  # the rest of the file is a pickle of the whole array
            return _RestrictedUnpickler(f, path=str(path), encoding=encoding).load()
    held = os.path.getsize(path) - h.offset
    if held != h.nbytes:
        raise UntrustedDataError(
            f"{path}: its header declares {h.shape} {h.dtype} ({_gb(h.nbytes)}) but the file holds {_gb(held)} "
            "of data; it is truncated or forged: re-download or re-save it"
        )
    return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)


def npz_members(zf: zipfile.ZipFile, where: str, *, limit: int | None = None) -> dict[str, NpyHeader]:
    """The checked headers of every array in an open ``.npz``, by name (without ``.npy``); nothing is read but
    the headers.

    Every member must be a ``.npy`` named once; its dtype plain; its uncompressed size (from the zip's
    directory, which bounds what zipfile will ever inflate) exactly the header plus the declared data; all
    members together at most `limit` bytes.

    Args:
        zf: the open zip file.
        where: the file, for messages.
        limit: the most bytes the arrays may declare in all (default `memory_limit()`).

    Raises:
        UntrustedDataError: one line naming the file, the member and the fix.
    """
    limit = memory_limit() if limit is None else limit
    infos = zf.infolist()
    names = [i.filename for i in infos]
    seen: dict[str, str] = {}
    for n in names:
        key = n[:-4] if n.endswith(".npy") else n
        if not n.endswith(".npy") or "/" in n:
            raise UntrustedDataError(
                f"{where}: member {n[:200]!r} is not an array of numpy.savez. Fix: {SAVEZ}"
            )
        if key in seen:
            raise UntrustedDataError(
                f"{where}: field {key[:200]} is stored twice ({seen[key][:200]!r} and {n[:200]!r}), so which one counts is "
                f"ambiguous. Fix: {SAVEZ}"
            )
        seen[key] = n
    total = sum(i.file_size for i in infos)
    if total > limit:
        raise UntrustedDataError(
            f"{where}: its arrays declare {_gb(total)} uncompressed, more than this machine allows "
            f"({_gb(limit)}, ${LIMIT_ENV}). Fix: subsample the data, or raise {LIMIT_ENV} on a machine with the memory"
        )
    out = {}
    for info in infos:
        key, member = info.filename[:-4], f"{where}: field {info.filename[:-4]}"
        with zf.open(info) as f:
            h = read_header(f, member)
        if h.offset + h.nbytes != info.file_size:
            raise UntrustedDataError(
                f"{member}: its header declares {h.shape} {h.dtype} ({_gb(h.nbytes)}) but the zip entry holds "
                f"{_gb(info.file_size - h.offset)} of data; it is truncated or forged. Fix: {SAVEZ}"
            )
        out[key] = h
    return out


def read_npz(path: str | os.PathLike, *, limit: int | None = None) -> dict[str, np.ndarray]:
    """Every array of an ``.npz``, checked by `npz_members` before any is read (never unpickled).

    Args:
        path: the ``.npz`` file.
        limit: the most bytes the arrays may declare in all (default `memory_limit()`).

    Raises:
        UntrustedDataError: not a zip of ``.npy`` arrays, a refused member, or a corrupt one.
    """
    where = str(path)
    try:
        with zipfile.ZipFile(path) as zf:
            headers = npz_members(zf, where, limit=limit)
            out = {}
            for key in headers:  # sizes checked: read_array allocates what the header declares
                with zf.open(f"{key}.npy") as f:
                    out[key] = np.lib.format.read_array(f, allow_pickle=False)
            return out
    except UntrustedDataError:
        raise
    except Exception as e:  # a corrupt zip fails in many ways (BadZipFile, zlib.error, EOFError, CRC, ...)
        raise UntrustedDataError(
            f"{where}: not a readable .npz file ({' '.join(str(e).split())[:200]}). Fix: {SAVEZ}"
        ) from None


def npz_shape(path: str | os.PathLike, key: str) -> tuple[int, ...]:
    """The declared shape of one array of an ``.npz`` (its header only).

    Args:
        path: the ``.npz`` file.
        key: the array's name.

    Raises:
        UntrustedDataError: as `npz_members`, or no such array.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            headers = npz_members(zf, str(path))
    except UntrustedDataError:
        raise
    except Exception as e:  # as in read_npz
        raise UntrustedDataError(f"{path}: not a readable .npz file ({e}). Fix: {SAVEZ}") from None
    if key not in headers:
        raise UntrustedDataError(f"{path}: missing field {key}; found {sorted(headers)}")
    return headers[key].shape
