"""ORCA's per-dataset recipes for its 42 OpenML tasks (sjunhongshen/ORCA, ``src/configs/OPENML<ID>.yaml`` at commit
19b8c1c), as data. `recipes.py` turns each row into a `TaskRecipe` keyed ``openml:<ID>``;
``python -m orca_ray.parity.openml_recipes ORCA/src/configs`` compares every field with the yaml files again.

Every one of these configs also has: body roberta, text proxy, objective otdd-exact, 20 embedder epochs,
``finetune_method: all``, accum 1, betas (0.9, 0.98), WarmupLR, ``valid_split: False``, ``eval_batch_size`` 1000.
A missing ``target_seq_len`` is kept as None: ORCA's ``main.py`` reads its hyperparameters into an ``AttrDict``,
which has no default for a missing key; we use the model's default there (it only matters for tables with
categorical columns, whose ORCA layout has one position per feature).
"""

from __future__ import annotations

# id: (target_seq_len, epochs, optimizer, lr, weight_decay, sgd momentum, batch_size, clip (None: -1 in the
#      yaml, no clipping), drop_out, maxsamples, warmup_epochs, decay_epochs)
OPENML_FIELDS = (
    "target_seq_len",
    "epochs",
    "optimizer",
    "lr",
    "weight_decay",
    "momentum",
    "batch_size",
    "clip",
    "dropout",
    "maxsamples",
    "warmup_epochs",
    "decay_epochs",
)
ORCA_OPENML = {
    11: (16, 60, "adamw", 1e-06, 1e-05, None, 4, 1.0, 0.0, 128, 5, 60),
    12: (8, 60, "adamw", 1e-05, 1e-05, None, 64, 1.0, 0.05, 128, 5, 60),
    14: (None, 25, "adam", 1e-05, 1e-05, None, 4, None, 0.05, 128, 5, 60),
    15: (None, 20, "sgd", 0.0001, 0.1, 0.99, 4, 1.0, 0.05, 128, 5, 60),
    16: (None, 60, "adamw", 1e-05, 1e-05, None, 64, None, 0.05, 128, 5, 60),
    18: (None, 60, "adam", 1e-05, 0.001, None, 4, None, 0.05, 128, 5, 60),
    22: (None, 60, "sgd", 0.0001, 0.1, 0.99, 32, None, 0.0, 128, 5, 60),
    23: (4, 25, "adam", 1e-05, 0, None, 64, 1.0, 0.1, 64, 5, 60),
    28: (None, 60, "sgd", 0.0001, 0, 0.999, 4, 1.0, 0.0, 128, 5, 60),
    29: (4, 12, "adamw", 1e-05, 1e-05, None, 64, 1.0, 0.05, 128, 5, 60),
    31: (8, 20, "adam", 1e-05, 0.001, None, 64, 1.0, 0.05, 128, 5, 20),
    37: (None, 20, "adam", 1e-05, 0, None, 64, 1.0, 0.1, 128, 5, 60),
    44: (None, 40, "adamw", 1e-06, 1e-05, None, 4, 1.0, 0.05, 128, 10, 100),
    48: (4, 60, "adamw", 1e-05, 1e-05, None, 64, 1.0, 0.05, 128, 5, 60),
    50: (512, 30, "adam", 1e-06, 0, None, 64, 1.0, 0.05, 128, 5, 60),
    54: (None, 60, "adam", 0.001, 0.001, None, 4, 1.0, 0.05, 128, 5, 60),
    61: (None, 60, "adam", 0.001, 0.001, None, 4, 1.0, 0.05, 128, 5, 60),
    187: (None, 20, "adamw", 1e-06, 1e-05, None, 4, 1.0, 0.05, 128, 5, 60),
    188: (16, 60, "adam", 0.0001, 0.1, None, 64, 1.0, 0.05, 128, 5, 60),
    458: (None, 60, "sgd", 0.0001, 1e-05, 0.99, 32, None, 0.0, 128, 10, 60),
    469: (512, 10, "adam", 1e-06, 0, None, 64, 1.0, 0.05, 128, 5, 60),
    882: (None, 60, "sgd", 0.001, 0.001, 0.99, 4, 1.0, 0.0, 128, 5, 60),
    1049: (512, 60, "sgd", 0.0001, 0.1, 0.99, 32, None, 0.0, 512, 10, 60),
    1050: (512, 60, "adam", 1e-05, 0, None, 64, 1.0, 0.05, 128, 5, 60),
    1063: (16, 40, "adam", 0.0001, 0.1, None, 64, 1.0, 0.1, 128, 5, 60),
    1068: (None, 44, "sgd", 0.0001, 1e-05, 0.99, 32, None, 0.0, 128, 5, 60),
    1462: (None, 60, "sgd", 0.0001, 1e-05, 0.99, 32, None, 0.0, 128, 5, 60),
    1464: (16, 60, "adamw", 1e-05, 0.001, None, 64, 0.1, 0.05, 128, 5, 60),
    1479: (16, 60, "adamw", 1e-06, 1e-05, None, 4, 1.0, 0.0, 128, 5, 60),
    1480: (None, 60, "adamw", 1e-06, 1e-05, None, 64, 1.0, 0.05, 128, 5, 60),
    1491: (None, 30, "adam", 0.0001, 0.001, None, 16, 1.0, 0.0, 128, 5, 60),
    1493: (None, 30, "adam", 0.0001, 0.001, None, 16, 1.0, 0.0, 128, 5, 60),
    1494: (None, 60, "adam", 1e-06, 0.001, None, 4, None, 0.05, 128, 5, 60),
    1510: (16, 60, "adamw", 1e-05, 1e-05, None, 64, 0.1, 0.0, 128, 5, 60),
    1511: (None, 60, "adamw", 1e-06, 1e-05, None, 4, 1.0, 0.05, 128, 5, 60),
    6332: (16, 60, "adamw", 1e-05, 0.001, None, 64, 1.0, 0.05, 128, 5, 60),
    23381: (16, 25, "sgd", 1e-05, 0.001, 0.99, 32, 1.0, 0.05, 128, 5, 60),
    40496: (None, 30, "adamw", 1e-06, 1e-05, None, 4, 1.0, 0.05, 128, 5, 60),
    40966: (8, 60, "adamw", 0.0001, 0, None, 64, 1.0, 0.05, 128, 5, 60),
    40975: (16, 60, "adamw", 0.0001, 0, None, 64, 1.0, 0.05, 128, 5, 60),
    40982: (512, 60, "sgd", 0.0001, 1e-05, 0.999, 16, 1.0, 0.05, 128, 5, 60),
    40994: (512, 60, "sgd", 0.0001, 0.1, 0.99, 32, None, 0.0, 128, 5, 60),
}
OPENML_ALIGN_EPOCHS = 20  # embedder_epochs in every OPENML config
# ORCA's own 42 (the configs it ships), in id order: what `--tasks openml-cc18` expands to
OPENML_CC18 = tuple(f"openml:{i}" for i in sorted(ORCA_OPENML))


def openml_row(did: int) -> dict:
    """One dataset's yaml values as a dict of `OPENML_FIELDS`.

    Args:
        did: the OpenML dataset id (one of ORCA's 42).
    """
    return dict(zip(OPENML_FIELDS, ORCA_OPENML[did], strict=True))


def align_batch_per_class(maxsamples: int, batch_size: int) -> int:
    """Target points per class in one align step as ORCA draws them: its per-class loader yields batches of
    `batch_size` until more than `maxsamples` points are gathered (src/embedder.py), so
    (maxsamples // batch_size + 1) · batch_size (Satellite 128/16 → 144, as its recipe has).

    Args:
        maxsamples: the config's `maxsamples`.
        batch_size: the config's `batch_size`.
    """
    return (maxsamples // batch_size + 1) * batch_size
