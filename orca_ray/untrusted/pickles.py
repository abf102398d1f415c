"""Data pickles (CIFAR batches, Satellite ``.npy``, ECG ``.pkl``) read without running code, faking memory or
allocating more than the file holds.

The unpickler admits numpy arrays, dtypes and scalars inside plain containers (dict, list, tuple, str, bytes,
int, float, bool, None); any other global (``posix.system``, ``builtins.eval``, a class of any library) is refused
before it is even imported. What numpy itself would do with a pickle's arguments is narrowed as well, because
numpy trusts them:

- a dtype is built only from a plain type string (bool, integers, floats, complex, fixed-width bytes/text, or
  the object type) and its pickled state must be that type's own (either byte order): a forged state -- object
  flags on a numeric type, fields at chosen offsets -- would make numpy read raw bytes as object pointers;
- an array's pickled data must hold exactly the bytes (or, for object arrays, the items) its shape and dtype
  declare, so memory follows the file's size; ``numpy.ndarray`` itself cannot be called (``ndarray((2**40,))``
  from a 40-byte pickle), and ``_reconstruct`` only makes the empty array numpy's own pickles start from.

Any other failure of a malformed file is one `UnreadablePickleError` naming the file.
"""

from __future__ import annotations

import io
import os
import pickle
from math import prod
from typing import Any, ClassVar

import numpy as np

ALLOWED = "only numpy arrays and plain containers are allowed"
# bool, signed/unsigned integers, floats, complex, fixed-width bytes and text; "O" (object) only as the
# element type of an object array, whose items are themselves unpickled under these rules
PLAIN_KINDS = "biufcSU"
_OBJECT_STATE = np.dtype("O").__reduce__()[2]


class UnsafePickleError(pickle.UnpicklingError):
    """A data pickle references something other than numpy arrays/dtypes/scalars and plain containers."""


class UnreadablePickleError(pickle.UnpicklingError):
    """A data pickle that is malformed (truncated, inconsistent sizes, wrong opcodes): one line naming it."""


def _refuse(path: str, what: str) -> UnsafePickleError:
    return UnsafePickleError(f"refusing to unpickle {path}: it {what}; {ALLOWED}")


class _Token:
    """Stands for ``numpy.ndarray`` in a pickle: an argument of `_reconstruct`, never callable."""

    def __repr__(self) -> str:
        return "numpy.ndarray"


_NDARRAY = _Token()


def _latin1_encode(text: str, encoding: str = "latin1", errors: str = "strict") -> bytes:
    """What pickle protocols < 3 use to store bytes (``_codecs.encode(text, 'latin1')``); no other codec."""
    if encoding not in ("latin1", "latin-1", "iso-8859-1") or not isinstance(text, str):
        raise UnsafePickleError(f"_codecs.encode with codec {encoding!r}")
    return text.encode("latin1", errors)


def _raw_bytes(data) -> bytes:
    """An array's pickled raw data: bytes, or (Python 2 pickles read with encoding='latin1') latin-1 text."""
    if isinstance(data, str):
        return data.encode("latin1")
    if isinstance(data, (bytes, bytearray, pickle.PickleBuffer)):
        return bytes(data)
    raise UnreadablePickleError(f"array data of type {type(data).__name__}")


def _shape(shape) -> tuple[int, ...]:
    if isinstance(shape, int):
        shape = (shape,)
    if (
        not isinstance(shape, tuple)
        or not all(isinstance(n, int) and n >= 0 for n in shape)
        or len(shape) > 32
    ):
        raise UnreadablePickleError(f"array shape {shape!r}")
    return shape


class _RestrictedUnpickler(pickle._Unpickler):  # the Python unpickler: its BUILD can be checked
    dispatch: ClassVar[dict] = dict(pickle._Unpickler.dispatch)

    def __init__(self, file, *, path: str, encoding: str):
        super().__init__(file, encoding=encoding)
        self._path = path
        self._dtypes: set[int] = set()  # ids of dtypes this load made (and so checked)
        from numpy._core import multiarray, numeric  # numpy >= 2 (the project's floor)

        del multiarray, numeric  # imported once so a refused name below never imports anything
        calls = {"_reconstruct": self._reconstruct, "scalar": self._scalar, "_frombuffer": self._frombuffer}
        self._allowed: dict[tuple[str, str], Any] = {
            ("numpy", "ndarray"): _NDARRAY,
            ("numpy", "dtype"): self._dtype,
            ("_codecs", "encode"): _latin1_encode,
        }
        # numpy 1.x pickles name numpy.core, numpy 2.x numpy._core
        for core in ("numpy.core", "numpy._core"):
            for mod, name in (
                ("multiarray", "_reconstruct"),
                ("multiarray", "scalar"),
                ("numeric", "_frombuffer"),
            ):
                self._allowed[(f"{core}.{mod}", name)] = calls[name]

    def find_class(self, module: str, name: str):
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise _refuse(self._path, f"references {module}.{name}") from None

    def persistent_load(self, pid):
        raise _refuse(self._path, "uses persistent ids")

    # ---- what numpy's pickles call, with their arguments checked ----
    def _dtype(self, obj, align=False, copy=True):
        if not isinstance(obj, str) or len(obj) > 12:
            raise _refuse(self._path, f"builds a dtype from {type(obj).__name__}")
        try:
            d = np.dtype(obj)
        except (TypeError, ValueError):
            raise _refuse(self._path, f"builds the dtype {obj!r}") from None
        plain = d.kind in PLAIN_KINDS or d.kind == "O"
        if not plain or d.fields is not None or d.subdtype is not None or d.itemsize == 0:
            raise _refuse(self._path, f"builds the dtype {obj!r} (only plain numeric, text and object types)")
        d = np.dtype(obj)
        self._dtypes.add(id(d))
        return d

    def _checked_dtype(self, d) -> np.dtype:
        if not isinstance(d, np.dtype) or id(d) not in self._dtypes:
            raise _refuse(self._path, "uses a dtype it did not build")
        return d

    def _reconstruct(self, subtype, shape, dtype):
        # numpy's pickles start every array as _reconstruct(ndarray, (0,), b'b'), then BUILD fills it
        if subtype is not _NDARRAY or shape not in ((0,), 0) or dtype not in (b"b", "b"):
            raise _refuse(self._path, "calls numpy's _reconstruct with arguments numpy never pickles")
        return np.ndarray((0,), "b")

    def _scalar(self, dtype, data=None):
        d = self._checked_dtype(dtype)
        if d.kind == "O":
            return data
        raw = _raw_bytes(data)
        if len(raw) != d.itemsize:
            raise UnreadablePickleError(f"a {d} scalar of {len(raw)} bytes")
        return np.frombuffer(raw, dtype=d)[0]

    def _frombuffer(self, buf, dtype, shape, order, axis_order=None):
        d = self._checked_dtype(dtype)
        shape = _shape(shape)
        raw = _raw_bytes(buf)
        if d.kind == "O" or len(raw) != prod(shape) * d.itemsize or order not in ("C", "F", "K"):
            raise UnreadablePickleError(f"a buffer of {len(raw)} bytes for a {d} array of shape {shape}")
        a = np.frombuffer(raw, dtype=d)
        if order == "K" and axis_order is not None:
            return a.reshape(shape, order="C").transpose(axis_order)
        return a.reshape(shape, order="C" if order == "K" else order)

    def _check_build(self, inst, state) -> None:
        if isinstance(inst, np.dtype):
            self._checked_dtype(inst)
            own = [inst.__reduce__()[2], inst.newbyteorder().__reduce__()[2]]
            if not isinstance(state, tuple) or (state not in own and state[:8] not in own):
                raise _refuse(self._path, f"gives the dtype {inst} a forged state {state!r}"[:300])
            if len(state) == 9 and state[8] is not None:
                raise _refuse(self._path, "gives a dtype metadata")
            return
        if isinstance(inst, np.ndarray) and inst.shape == (0,) and inst.dtype == np.dtype("b"):
            if not isinstance(state, tuple) or len(state) not in (4, 5):
                raise UnreadablePickleError(f"array state {type(state).__name__}")
            shape, dtype, _, data = state[-4:]
            shape, d = _shape(shape), self._checked_dtype(dtype)
            if d.kind == "O":
                if not isinstance(data, list) or len(data) != prod(shape):
                    raise UnreadablePickleError(f"an object array of shape {shape} with mismatched items")
            elif len(_raw_bytes(data)) != prod(shape) * d.itemsize:
                raise UnreadablePickleError(
                    f"a {d} array of shape {shape} with {len(_raw_bytes(data))} bytes"
                )
            return
        raise _refuse(self._path, f"sets the state of a {type(inst).__name__}")

    def load_build(self):
        self._check_build(self.stack[-2], self.stack[-1])
        pickle._Unpickler.load_build(self)

    dispatch[pickle.BUILD[0]] = load_build

    def load(self):
        try:
            return super().load()
        except UnsafePickleError:
            raise
        except Exception as e:  # a malformed file fails as one line, whatever broke inside
            raise UnreadablePickleError(
                f"{self._path}: not a readable data pickle ({type(e).__name__}: {str(e)[:200]})"
            ) from None


def load_pickle(source: str | os.PathLike | io.IOBase, *, encoding: str = "ASCII") -> Any:
    """Read a data pickle (a CIFAR batch, NAS-Bench-360's ECG file) without letting it run code.

    Args:
        source: the pickle file, or an open binary file positioned at the pickle.
        encoding: as in `pickle.load`; ``"latin1"`` for Python 2 pickles holding numpy arrays.

    Raises:
        UnsafePickleError: the file references anything but numpy arrays/dtypes/scalars and plain containers,
            or gives numpy a forged dtype.
        UnreadablePickleError: the file is malformed (one line naming it).
    """
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as f:
            return _RestrictedUnpickler(f, path=str(source), encoding=encoding).load()
    return _RestrictedUnpickler(source, path=getattr(source, "name", "<stream>"), encoding=encoding).load()
