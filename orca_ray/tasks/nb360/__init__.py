"""NAS-Bench-360 tasks read from the benchmark's own files (as ORCA and NAS-Bench-360 ship them).

    load_task("satellite", data_root="/data/nb360")      # cifar100, ninapro, darcy, satellite, deepsea, ecg

One module per loader, each with its file format and split logic: `cifar100`, `ninapro`, `darcy`,
`satellite`, `deepsea`, `ecg`. `files` is the table of what each task needs, where it goes and where to get
it (plus the readers the loaders share); `cache` converts the large arrays once per node into memory-mapped
``.npy`` files; `manifest` checks every file of a staged root before it is read; `staging` checks a data root and copies it to and from shared storage
(``python -m orca_ray.data check|stage|fetch``).
"""

from . import cifar100, darcy, deepsea, ecg, ninapro, satellite  # noqa: F401  (registers the tasks)
from .files import NB360_PAGE, NB360_TASKS, TASK_FILES, DataFile, require

__all__ = ["NB360_PAGE", "NB360_TASKS", "TASK_FILES", "DataFile", "require"]
