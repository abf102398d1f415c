"""NAS-Bench-360 CIFAR-100 from torchvision's python-version folder.

Format: ``cifar-100-python/{train,test,meta}`` pickles ('data' uint8 (N, 3072) in CHW order, 'fine_labels';
'fine_label_names' in meta). Scaled to [0, 1] and normalised with mean (0.5071, 0.4867, 0.4408), std (0.2675,
0.2565, 0.2761) as ORCA's ``load_cifar``. Validation: a seeded stratified ``val_fraction`` of train
(NAS-Bench-360 used 10,000 images, i.e. ``val_fraction=0.2``); protocol "orca": all 50,000 train, val = test.
Training batches get ORCA's RandomCrop(32, padding=4) + RandomHorizontalFlip (`Task.augment`; the padding is
the normalised value of a black pixel, as torchvision pads the uint8 image). Checked against ORCA (sjunhongshen/ORCA, src/data_loaders.py) and NAS-Bench-360 (rtu715/NAS-Bench-360, its
download script and per-task loaders).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...augment import CropFlip
from .. import register_task
from ..base import Split, Task, carve_validation
from .files import _bad_file, _field, _read_pickle, _redownload, require

CIFAR100_MEAN = np.array([0.5071, 0.4867, 0.4408], dtype=np.float32)
CIFAR100_STD = np.array([0.2675, 0.2565, 0.2761], dtype=np.float32)


def _cifar_part(path: Path) -> tuple[np.ndarray, np.ndarray]:
    d = _read_pickle(path, "cifar100")
    data = np.asarray(_field(d, "data", path, "cifar100"))
    labels = np.asarray(_field(d, "fine_labels", path, "cifar100"))
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise _bad_file(
            path,
            f"'data' must be uint8 (N, 3072), got {data.dtype} {data.shape}",
            "use the CIFAR-100 python version (cifar-100-python.tar.gz)",
        )
    if labels.shape != (len(data),) or not np.issubdtype(labels.dtype, np.integer):
        raise _bad_file(
            path,
            f"'fine_labels' must be {len(data)} integers, got {labels.dtype} {labels.shape}",
            _redownload(path, "cifar100"),
        )
    if len(labels) and (labels.min() < 0 or labels.max() > 99):
        raise _bad_file(
            path,
            f"'fine_labels' span [{labels.min()}, {labels.max()}] outside [0, 99]",
            _redownload(path, "cifar100"),
        )
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _cifar_normalise(x_u8: np.ndarray) -> np.ndarray:
    x = x_u8.astype(np.float32)
    x *= np.float32(1 / 255)
    x -= CIFAR100_MEAN[:, None, None]
    x /= CIFAR100_STD[:, None, None]
    return x


@register_task(
    "cifar100",
    modality="2d",
    needs_data_root=True,
    description="NAS-Bench-360 CIFAR-100 (torchvision folder), 3x32x32, 100 classes, 0-1 error",
)
def cifar100(data_root: Path, seed: int = 0, val_fraction: float = 0.1, protocol: str = "honest") -> Task:
    """NAS-Bench-360 CIFAR-100: 3x32x32 normalised images, 100 classes, 0-1 error (format: module docstring).

    Args:
        data_root: the folder holding the task's files (see `files.TASK_FILES`).
        seed: seed of the validation split.
        val_fraction: fraction of train held out for validation.
        protocol: "honest" (the split above) or "orca" (all 50,000 training images train, val = test).
    """
    root = Path(data_root)
    paths = {n: require(root, "cifar100", f"cifar-100-python/{n}") for n in ("train", "test", "meta")}
    x_tr, y_tr = _cifar_part(paths["train"])
    x_te, y_te = _cifar_part(paths["test"])
    names = _field(_read_pickle(paths["meta"], "cifar100"), "fine_label_names", paths["meta"], "cifar100")
    names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
    # carve on the uint8 images, then convert each part once: no float32 copy of the whole training set
    if protocol == "orca":
        train = Split(_cifar_normalise(x_tr), y_tr)
        test = Split(_cifar_normalise(x_te), y_te)
        val, how = test, "none: all 50,000 train, val = test (ORCA)"
    else:
        train_u8, val_u8 = carve_validation(Split(x_tr, y_tr), val_fraction, seed)
        train = Split(_cifar_normalise(train_u8.x), train_u8.y)
        val = Split(_cifar_normalise(val_u8.x), val_u8.y)
        test = Split(_cifar_normalise(x_te), y_te)
        how = f"seeded stratified {val_fraction:g} of train (seed {seed})"
    return Task(
        name="cifar100",
        modality="2d",
        kind="classification",
        input_shape=(3, 32, 32),
        num_outputs=100,
        train=train,
        val=val,
        test=test,
        source=str(paths["train"].parent),
        files=tuple(str(p) for p in paths.values()),
        metric="error",
        class_names=names if len(names) == 100 else None,
        augment=CropFlip(pad=4, fill=tuple(float(v) for v in -CIFAR100_MEAN / CIFAR100_STD)),
        notes={
            "val_split": how,
            "normalisation": "x/255, mean (0.5071, 0.4867, 0.4408), std (0.2675, 0.2565, 0.2761) (ORCA)",
        },
    )
