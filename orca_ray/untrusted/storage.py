"""The filesystem a resumed Tuner reads: the sweep storage, except that driver state comes from memory.

`VerifiedState` wraps the storage's pyarrow filesystem (a `pyarrow.fs.FileSystemHandler`, used through
`pyarrow.fs.PyFileSystem`). Reads and listings of driver-state paths (`driver_state.is_driver_state`) under the
experiment folder are answered from the verified bytes the driver holds; the storage's own versions of those
files are invisible. Everything else -- checkpoints, results, new uploads -- goes to the storage unchanged.
Pickled for a trial process, it becomes a plain pass-through (trials read checkpoints, never driver state).
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.fs as pafs

from .driver_state import is_driver_state


class Forward(pafs.FileSystemHandler):
    """Every call forwarded to `base`.

    Args:
        base: the storage's pyarrow filesystem.
    """

    def __init__(self, base: pafs.FileSystem):
        self.base = base

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and self.base.equals(other.base)

    def __ne__(self, other) -> bool:
        return not self == other

    def __reduce__(self):
        return Forward, (self.base,)

    def get_type_name(self) -> str:
        return f"verified+{self.base.type_name}"

    def normalize_path(self, path):
        return self.base.normalize_path(path)

    def get_file_info(self, paths):
        return self.base.get_file_info(paths)

    def get_file_info_selector(self, selector):
        return self.base.get_file_info(selector)

    def create_dir(self, path, recursive):
        self.base.create_dir(path, recursive=recursive)

    def delete_dir(self, path):
        self.base.delete_dir(path)

    def delete_dir_contents(self, path, missing_dir_ok=False):
        self.base.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self):
        self.base.delete_dir_contents("/", accept_root_dir=True)

    def delete_file(self, path):
        self.base.delete_file(path)

    def move(self, src, dest):
        self.base.move(src, dest)

    def copy_file(self, src, dest):
        self.base.copy_file(src, dest)

    def open_input_stream(self, path):
        return self.base.open_input_stream(path)

    def open_input_file(self, path):
        return self.base.open_input_file(path)

    def open_output_stream(self, path, metadata):
        return self.base.open_output_stream(path, metadata=metadata)

    def open_append_stream(self, path, metadata):
        return self.base.open_append_stream(path, metadata=metadata)


class VerifiedState(Forward):
    """Driver state under `experiment` served from `files`; the rest forwarded to `base`.

    Args:
        base: the storage's pyarrow filesystem.
        experiment: the experiment folder's path on `base`.
        files: the verified driver state, relative path -> bytes (`driver_state.verified_copy`).
    """

    def __init__(self, base: pafs.FileSystem, experiment: str, files: dict[str, bytes]):
        super().__init__(base)
        self.experiment = experiment.rstrip("/")
        self.files = dict(files)

    def _rel(self, path: str) -> str | None:
        """The driver-state path relative to the experiment folder, or None for anything else."""
        path = path.rstrip("/")
        prefix = f"{self.experiment}/"
        if not path.startswith(prefix):
            return None
        rel = path[len(prefix) :]
        return rel if is_driver_state(rel) else None

    def _info(self, path: str) -> pafs.FileInfo:
        rel = self._rel(path)
        if rel in self.files:
            return pafs.FileInfo(path, pafs.FileType.File, size=len(self.files[rel]))
        return pafs.FileInfo(path, pafs.FileType.NotFound)

    def get_file_info(self, paths):
        return [
            self._info(p) if self._rel(p) is not None else i
            for p, i in zip(paths, self.base.get_file_info(paths))
        ]

    def get_file_info_selector(self, selector):
        infos = [i for i in self.base.get_file_info(selector) if self._rel(i.path) is None]
        base_dir = selector.base_dir.rstrip("/")
        for rel in self.files:
            path = f"{self.experiment}/{rel}"
            parent = path.rsplit("/", 1)[0]
            if parent == base_dir or (selector.recursive and path.startswith(f"{base_dir}/")):
                infos.append(self._info(path))
        return infos

    def _bytes(self, path: str) -> bytes | None:
        rel = self._rel(path)
        if rel is None:
            return None
        if rel not in self.files:
            raise FileNotFoundError(f"{path}: not driver state this head wrote")
        return self.files[rel]

    def open_input_stream(self, path):
        data = self._bytes(path)
        return self.base.open_input_stream(path) if data is None else pa.BufferReader(data)

    def open_input_file(self, path):
        data = self._bytes(path)
        return self.base.open_input_file(path) if data is None else pa.BufferReader(data)
