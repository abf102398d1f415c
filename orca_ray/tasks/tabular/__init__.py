"""Tabular classification tasks: ORCA's OpenML suite, your own csv/parquet tables, two bundled tables.

    load_task("openml:31", data_root="/data")     # staged first: python -m orca_ray.data stage openml:31
    load_task("csv:/data/churn.csv#label=churned")
    load_task("parquet:s3://bucket/t.parquet")    # label column: label, else target, else class
    load_task("breast-cancer")                    # scikit-learn, 569 × 30, 2 classes
    load_task("wine", protocol="orca")            # scikit-learn, 178 × 13, 3 classes

Every table becomes a 1D task (`preprocess`: the honest protocol by default, ORCA's with protocol="orca"), with
ORCA's class-weighted cross-entropy and 1 − ROC AUC. `--tasks openml-cc18` stands for ORCA's 42 OpenML ids.
"""

from __future__ import annotations

from .. import OPENML_PREFIX, register_task
from ..base import Task
from ..specs import split_label
from . import openml
from .files import frame_table, read_table
from .preprocess import Table, table_task

SUITES = {"openml-cc18": "ORCA's 42 OpenML-CC18 datasets (src/configs/OPENML*.yaml)"}
BUNDLED_TABLES = ("breast-cancer", "wine")
TABLE_FORMATS = ("csv", "parquet")


def suite_tasks(name: str) -> list[str] | None:
    """The task specs a suite name stands for (``openml-cc18`` → ``openml:11`` … ``openml:40994``), else None.

    Args:
        name: a `--tasks` entry.
    """
    if name == "openml-cc18":
        from ...tabular_recipes import OPENML_CC18

        return list(OPENML_CC18)
    return None


def is_tabular(spec: str) -> bool:
    """Whether a task spec names a table (OpenML, csv, parquet or a bundled table), without reading it.

    Args:
        spec: a task spec.
    """
    return spec.startswith(OPENML_PREFIX) or spec in BUNDLED_TABLES or spec.partition(":")[0] in TABLE_FORMATS


@register_task("openml", modality="1d", description="an OpenML dataset staged to Parquet: openml:<ID>")
def load_openml_task(
    did: int, data_root=None, seed: int = 0, val_fraction: float = 0.1, protocol: str = "honest"
) -> Task:
    """A staged OpenML dataset (`openml.stage` first), verified against its meta.json.

    Args:
        did: the OpenML dataset id.
        data_root: the data root it was staged under (None: the cache folder).
        seed: the trial's seed (validation split; ORCA's test split).
        val_fraction: validation share of train (honest protocol).
        protocol: "honest" or "orca".
    """
    table, path = openml.load_table(did, data_root)
    task = table_task(
        table, name=f"{OPENML_PREFIX}{did}", protocol=protocol, seed=seed, val_fraction=val_fraction
    )
    return _with_files(task, path)


def _with_files(task: Task, path) -> Task:
    object.__setattr__(task, "files", (str(path),))  # its content fingerprint keys embedder snapshots
    return task


def _file_factory(fmt: str):
    def factory(
        path: str, data_root=None, seed: int = 0, val_fraction: float = 0.1, protocol: str = "honest"
    ) -> Task:
        local, label = split_label(path)
        spec = f"{fmt}:{path}"
        table = read_table(local, fmt=fmt, label=label, spec=spec)
        task = table_task(
            table, name=f"{fmt}:{local.name}", protocol=protocol, seed=seed, val_fraction=val_fraction
        )
        return _with_files(task, local)

    factory.__doc__ = f"""Your own {fmt} table (label column: #label=COL, else label / target / class).

    Args:
        path: the local file, with an optional #label=COL.
        data_root: unused (one factory signature).
        seed: the trial's seed.
        val_fraction: validation share of train (honest protocol).
        protocol: "honest" or "orca".
    """
    return factory


for _fmt in TABLE_FORMATS:
    register_task(_fmt, modality="1d", description=f"your table: {_fmt}:/path/file.{_fmt}#label=COL")(
        _file_factory(_fmt)
    )


def _bundled_factory(name: str):
    def factory(data_root=None, seed: int = 0, val_fraction: float = 0.1, protocol: str = "honest") -> Task:
        from sklearn import datasets

        loader = {"breast-cancer": datasets.load_breast_cancer, "wine": datasets.load_wine}[name]
        frame = loader(as_frame=True).frame
        table = frame_table(frame, label="target", spec=f"{name} (scikit-learn {loader.__name__})")
        return table_task(table, name=name, protocol=protocol, seed=seed, val_fraction=val_fraction)

    return factory


register_task(
    "breast-cancer", modality="1d", description="scikit-learn breast cancer table, 569x30, 2 classes"
)(_bundled_factory("breast-cancer"))
register_task("wine", modality="1d", description="scikit-learn wine table, 178x13, 3 classes")(
    _bundled_factory("wine")
)

__all__ = ["BUNDLED_TABLES", "SUITES", "Table", "is_tabular", "load_openml_task", "suite_tasks"]
