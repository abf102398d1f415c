"""Trust boundaries: data files and shared driver state are read without letting them run code, fake memory,
or allocate more than they declare.

- `pickles`: data pickles (NAS-Bench-360's CIFAR-100, Satellite ``.npy``, ECG ``.pkl``; the CIFAR-10 proxy) through
  an unpickler that admits numpy arrays, plain dtypes and scalars in plain containers, e.g.::

      refusing to unpickle /data/satellite_train.npy: it references posix.system; only numpy arrays and plain
      containers are allowed

- `arrays`: ``.npy``/``.npz`` headers checked (plain dtypes, declared sizes the file holds, a memory limit)
  before any array is read.
- `driver_state` and `storage`: a resume restores the head's private, verified copy of the driver state,
  never the storage's.
"""

from .arrays import UntrustedDataError, load_npy, memory_limit, npz_members, npz_shape, read_header, read_npz
from .driver_state import (
    LEDGER_ENV,
    TRUST_FLAG,
    UntrustedStateError,
    driver_state_digests,
    ledger_dir,
    ledger_path,
    private_copy,
    record_driver_state,
    record_staged_driver_state,
    restore_filesystem,
    secure_folder,
    verified_copy,
)
from .pickles import ALLOWED, UnreadablePickleError, UnsafePickleError, load_pickle

__all__ = [
    "ALLOWED",
    "LEDGER_ENV",
    "TRUST_FLAG",
    "UnreadablePickleError",
    "UnsafePickleError",
    "UntrustedDataError",
    "UntrustedStateError",
    "driver_state_digests",
    "ledger_dir",
    "ledger_path",
    "load_npy",
    "load_pickle",
    "memory_limit",
    "npz_members",
    "npz_shape",
    "private_copy",
    "read_header",
    "read_npz",
    "record_driver_state",
    "record_staged_driver_state",
    "restore_filesystem",
    "secure_folder",
    "verified_copy",
]
