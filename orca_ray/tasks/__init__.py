"""Target tasks by name: bundled real data, seeded synthetic stand-ins, user arrays, NAS-Bench-360 files.

    load_task("digits")                       # scikit-learn digits, 2D, ships with scikit-learn
    load_task("basicmotions")                 # sktime's bundled UEA series, 1D
    load_task("synthetic-darcy", seed=3)      # NAS-Bench-360 shapes and types, generated
    load_task("npz:/path/to/arrays.npz")      # x_train / y_train / x_test / y_test
    load_task("ucr:/data/UCRArchive_2018/GunPoint")   # <Name>_TRAIN.tsv / _TEST.tsv (or .ts)
    load_task("imagefolder:/data/pets")       # train/<class>/*.png, test/<class>/..., optional val/
    load_task("satellite", data_root="/data/nb360")
    load_task("csv:/data/churn.csv#label=churned")   # tables: tabular/ (also parquet:, openml:ID, breast-cancer)

Every factory returns a validated `Task` with a seeded validation split carved from train.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .base import (
    PROTOCOLS,
    Split,
    Task,
    TaskDataError,
    UnitGaussianNormalizer,
    carve_validation,
    limit_samples,
    orca_composition,
)
from .specs import PATH_FORMS, PATH_PREFIXES, absolute_spec, local_path, split_fragment, split_spec, task_slug

__all__ = [
    "PATH_PREFIXES",
    "PROTOCOLS",
    "Split",
    "Task",
    "TaskDataError",
    "TaskInfo",
    "UnitGaussianNormalizer",
    "absolute_spec",
    "available_tasks",
    "carve_validation",
    "limit_samples",
    "load_task",
    "orca_composition",
    "register_task",
    "split_spec",
    "task_info",
    "task_modality",
    "task_slug",
]


@dataclass(frozen=True)
class TaskInfo:
    """A registered task: its name, input modality, one-line description, whether it reads files from a data
    root, and the factory that builds it.
    """

    name: str
    modality: str
    description: str
    needs_data_root: bool
    factory: Callable[..., Task]


_REGISTRY: dict[str, TaskInfo] = {}
OPENML_PREFIX = "openml:"  # openml:<ID> resolves to the "openml" loader with that id


def register_task(name: str, *, modality: str, description: str, needs_data_root: bool = False):
    """Decorator: `factory(data_root, seed, val_fraction, **options) -> Task` becomes loadable by `name`.

    Args:
        name: the task name `load_task` takes.
        modality: "1d" (sequences) or "2d" (images).
        description: one line for `available_tasks`.
        needs_data_root: the factory reads files under `data_root` (NAS-Bench-360).
    """

    def deco(factory):
        if name in _REGISTRY:
            raise ValueError(f"task {name!r} registered twice")
        _REGISTRY[name] = TaskInfo(name, modality, description, needs_data_root, factory)
        return factory

    return deco


def available_tasks() -> list[TaskInfo]:
    """Every registered task, sorted by name."""
    _import_loaders()
    return sorted(_REGISTRY.values(), key=lambda t: t.name)


def task_info(name: str) -> TaskInfo:
    """Registry entry for a task spec ("npz:PATH", "ucr:DIR", "imagefolder:DIR" map to their loaders).

    Args:
        name: a task name or path spec.
    """
    _import_loaders()
    if name.startswith(OPENML_PREFIX):
        from .tabular.openml import parse_id

        parse_id(name)  # KeyError naming the form when the id is not a number
        return _REGISTRY["openml"]
    key, path = split_spec(name)
    if path is not None and not path:
        raise KeyError(f"task {name!r} names no path: give e.g. {key}:/path/to/data")
    if key not in _REGISTRY:
        known = ", ".join(n for n in sorted(_REGISTRY) if n not in PATH_PREFIXES)
        raise KeyError(f"unknown task {name!r}. Known tasks: {known}; or {PATH_FORMS}")
    return _REGISTRY[key]


def task_modality(name: str) -> str:
    """ "1d" or "2d" for a task spec, without loading the data (npz: the rank of x_train in the file header).

    Args:
        name: a task name or path spec.
    """
    info = task_info(name)
    if info.modality in ("1d", "2d"):
        return info.modality
    from .arrays import npz_modality

    return npz_modality(local_path(split_spec(name)[1]))


def load_task(
    name: str,
    *,
    data_root: str | Path | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    cache_dir: str | Path | None = None,
    protocol: str = "honest",
    **options,
) -> Task:
    """Load a validated task by name, with a seeded validation split carved from train (never from test).

    Args:
        name: a registered task name (`available_tasks`) or a path spec ("npz:PATH", "ucr:DIR",
            "imagefolder:DIR").
        data_root: folder with the task's files (NAS-Bench-360 tasks need it).
        seed: seed of the validation split and of the subsets.
        val_fraction: fraction of train held out for validation (tasks with a given split ignore it).
        max_train_samples: seeded subset of train (demo presets, smoke runs); None keeps all.
        max_eval_samples: seeded subsets of val and test; None keeps all.
        cache_dir: where s3:// / gs:// data is staged and file fingerprints are remembered (default
            `io.cache_root()`).
        protocol: "honest" (the split above) or "orca" (ORCA's own composition: the validation data joins
            train and val is the test split; NAS-Bench-360 loaders apply ORCA's task-specific splits, e.g. its
            ECG split).
        options: loader-specific options (e.g. satellite's `zscore`, ecg's `window`).
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    info = task_info(name)
    _, path = split_spec(name)
    if path is not None:
        base, fragment = split_fragment(path)  # a table's "#label=COL" is no part of the file's path
        options["path"] = str(local_path(base, cache_dir)) + fragment  # s3:// / gs:// staged once per node
    if name.startswith(OPENML_PREFIX):
        from .tabular.openml import parse_id

        options["did"] = parse_id(name)
    if info.needs_data_root and data_root is None:
        raise TaskDataError(
            f"task {name!r} reads NAS-Bench-360 files: pass data_root (CLI: --data-root DIR). "
            f"`python -m orca_ray.data check DIR` lists what the folder must hold."
        )
    own_protocol = "protocol" in inspect.signature(info.factory).parameters
    if own_protocol:
        options["protocol"] = protocol
    task = info.factory(
        data_root=None if data_root is None else Path(data_root),
        seed=seed,
        val_fraction=val_fraction,
        **options,
    )
    if protocol == "orca" and not own_protocol:
        task = orca_composition(task)
    if max_train_samples is not None or max_eval_samples is not None:
        test = limit_samples(task.test, max_eval_samples, seed + 2)
        task = task.with_splits(
            train=limit_samples(task.train, max_train_samples, seed, stratify=task.kind == "classification"),
            val=test if task.val is task.test else limit_samples(task.val, max_eval_samples, seed + 1),
            test=test,
        )
    if task.files and not task.fingerprint:
        from ..io import content_fingerprint

        # set after validation: the Task is otherwise immutable, and re-validating large arrays costs time
        object.__setattr__(task, "fingerprint", content_fingerprint(task.files, cache_dir))
    return task


def _import_loaders() -> None:
    # imported lazily: the loaders pull in sklearn / sktime / scipy, which a sweep driver may not need
    from . import arrays, bundled, imagefolder, nb360, synthetic, tabular, ucr  # noqa: F401
