"""NAS-Bench-360 NinaPro DB5 (sEMG gestures).

Format: ``ninapro_{train,val,test}.npy`` (N, 52, 16) (time x electrodes) and ``label_{train,val,test}.npy``
(0..17). ORCA permutes to (N, 16, 52) and adds a channel: 1x16x52. The given validation split is used
(2,638/659/659); protocol "orca": train + val merged (3,297), val = test. Loss: ORCA's FocalLoss(alpha 1,
gamma 0), i.e. cross-entropy with 1e-9 added to the softmax. Checked against ORCA (sjunhongshen/ORCA, src/data_loaders.py) and NAS-Bench-360 (rtu715/NAS-Bench-360, its
download script and per-task loaders).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import register_task
from ..base import Split, Task
from .files import _bad_file, _finite_or_fail, _int_labels, _load_npy, require


@register_task(
    "ninapro",
    modality="2d",
    needs_data_root=True,
    description="NAS-Bench-360 NinaPro DB5 (.npy), 1x16x52 sEMG, 18 classes, 0-1 error",
)
def ninapro(data_root: Path, seed: int = 0, val_fraction: float = 0.1, protocol: str = "honest") -> Task:
    """NAS-Bench-360 NinaPro DB5: 1x16x52 sEMG windows, 18 gestures, 0-1 error, the file's validation split.

    Args:
        data_root: the folder holding the task's files (see `files.TASK_FILES`).
        seed: unused (the file's validation split is used).
        val_fraction: unused (the file's validation split is used).
        protocol: "honest" (the split above) or "orca" (ninapro_val.npy joins train, val = test).
    """
    root = Path(data_root)
    splits, used = {}, []
    for s in ("train", "val", "test"):
        xp, yp = require(root, "ninapro", f"ninapro_{s}.npy"), require(root, "ninapro", f"label_{s}.npy")
        used += [xp, yp]
        x = _load_npy(xp, "ninapro")
        if x.ndim != 3 or x.shape[1:] != (52, 16) or not np.issubdtype(x.dtype, np.number):
            raise _bad_file(
                xp,
                f"expected numeric (N, 52, 16) (time x electrodes), got {x.dtype} {x.shape}",
                "use NAS-Bench-360's processed NinaPro DB5 files",
            )
        x = np.ascontiguousarray(x.transpose(0, 2, 1)[:, None], dtype=np.float32)  # ORCA: permute(0, 2, 1)
        _finite_or_fail(xp, "data", x)
        splits[s] = Split(x, _int_labels(yp, _load_npy(yp, "ninapro"), len(x)))
    how = "NAS-Bench-360's ninapro_val.npy (val_fraction unused)"
    if protocol == "orca":
        tr, va = splits["train"], splits["val"]
        splits["train"] = Split(np.concatenate([tr.x, va.x]), np.concatenate([tr.y, va.y]))
        splits["val"] = splits["test"]
        how = "none: ninapro_val.npy joins train, val = test (ORCA)"
    return Task(
        name="ninapro",
        modality="2d",
        kind="classification",
        input_shape=(1, 16, 52),
        num_outputs=18,
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        metric="error",
        loss="focal",
        source=", ".join(map(str, used)),
        files=tuple(map(str, used)),
        notes={"val_split": how},
    )
