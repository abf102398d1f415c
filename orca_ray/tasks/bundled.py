"""Real tasks that ship inside installed packages, so the demo and the tests need no download.

- "digits": scikit-learn's 8×8 handwritten digits (1,797 images, 10 classes), 2D.
- UCR/UEA series bundled with sktime, 1D: "basicmotions" (6×100, 4 classes), "gunpoint" (1×150, 2),
  "arrowhead" (1×251, 3), "osuleaf" (1×427, 6), "acsf1" (1×1460, 10), "italypowerdemand" (1×24, 2).
- "italypowerdemand-pooled": the same 1,096 ItalyPowerDemand series with UCR's train and test pooled and a
  fixed stratified 30% test split drawn with seed 0 (UCR's own train split has 67 series, too few to carve
  a validation split that can select an epoch).
"""

from __future__ import annotations

import numpy as np

from . import register_task
from .base import Split, Task, carve_validation

# registry name -> sktime dataset name
SKTIME_SETS = {
    "basicmotions": "BasicMotions",
    "gunpoint": "GunPoint",
    "arrowhead": "ArrowHead",
    "osuleaf": "OSULeaf",
    "acsf1": "ACSF1",
    "italypowerdemand": "ItalyPowerDemand",
}


@register_task("digits", modality="2d", description="scikit-learn digits, 1x8x8, 10 classes (bundled)")
def load_digits_task(
    data_root=None, seed: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.2
) -> Task:
    """scikit-learn's handwritten digits as a 2D task: 1x8x8 images scaled to [-1, 1], 10 classes.

    Args:
        data_root: unused (bundled with scikit-learn).
        seed: seed of the train/test and validation splits.
        val_fraction: fraction of train held out for validation.
        test_fraction: fraction of all digits held out for test.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images[:, None].astype(np.float32) / 16.0 - 0.5) / 0.5  # pixel values 0..16 → [-1, 1]
    y = d.target.astype(np.int64)
    # a fixed test split (seed 0) so every trial of a sweep scores on the same images; val follows `seed`
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_fraction, stratify=y, random_state=0)
    train, val = carve_validation(Split(x_tr, y_tr), val_fraction, seed)
    return Task(
        name="digits",
        modality="2d",
        kind="classification",
        input_shape=(1, 8, 8),
        num_outputs=10,
        train=train,
        val=val,
        test=Split(x_te, y_te),
        source="sklearn.datasets.load_digits",
        class_names=tuple(str(i) for i in range(10)),
    )


def _sktime_factory(name: str, dataset: str, pooled_test_fraction: float | None = None):
    def factory(data_root=None, seed: int = 0, val_fraction: float = 0.1) -> Task:
        from sktime.datasets import load_UCR_UEA_dataset

        source = f"sktime bundled UCR/UEA dataset {dataset}"
        x_tr, y_tr = load_UCR_UEA_dataset(dataset, split="train", return_X_y=True, return_type="numpy3D")
        x_te, y_te = load_UCR_UEA_dataset(dataset, split="test", return_X_y=True, return_type="numpy3D")
        classes = np.unique(np.concatenate([y_tr, y_te]))
        to_index = {c: i for i, c in enumerate(classes)}
        y_tr = np.array([to_index[c] for c in y_tr], dtype=np.int64)
        y_te = np.array([to_index[c] for c in y_te], dtype=np.int64)
        if pooled_test_fraction is not None:
            from sklearn.model_selection import train_test_split

            source += f" (train+test pooled, fixed {pooled_test_fraction:.0%} test split)"
            # like digits: one fixed test split (seed 0) for every trial; the validation split follows `seed`
            x_tr, x_te, y_tr, y_te = train_test_split(
                np.concatenate([x_tr, x_te]),
                np.concatenate([y_tr, y_te]),
                test_size=pooled_test_fraction,
                stratify=np.concatenate([y_tr, y_te]),
                random_state=0,
            )
        # per-channel standardisation with training statistics only
        mean = x_tr.mean(axis=(0, 2), keepdims=True)
        std = x_tr.std(axis=(0, 2), keepdims=True) + 1e-8
        x_tr = ((x_tr - mean) / std).astype(np.float32)
        x_te = ((x_te - mean) / std).astype(np.float32)
        train, val = carve_validation(Split(x_tr, y_tr), val_fraction, seed)
        return Task(
            name=name,
            modality="1d",
            kind="classification",
            input_shape=x_tr.shape[1:],
            num_outputs=len(classes),
            train=train,
            val=val,
            test=Split(x_te, y_te),
            source=source,
            class_names=tuple(str(c) for c in classes),
        )

    return factory


for _name, _dataset in SKTIME_SETS.items():
    register_task(_name, modality="1d", description=f"UCR/UEA {_dataset} (bundled with sktime)")(
        _sktime_factory(_name, _dataset)
    )
register_task(
    "italypowerdemand-pooled",
    modality="1d",
    description="UCR ItalyPowerDemand, train+test pooled, fixed 30% test split (bundled with sktime)",
)(_sktime_factory("italypowerdemand-pooled", "ItalyPowerDemand", pooled_test_fraction=0.3))
