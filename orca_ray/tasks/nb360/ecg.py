"""NAS-Bench-360 ECG (PhysioNet/CinC Challenge 2017 atrial fibrillation, 4 classes).

Format: ``challenge2017.pkl`` {'data': recordings (1-D), 'label': 'N'/'A'/'O'/'~'} -> 0..3 (a Python pickle,
read through `orca_ray.untrusted`: numpy arrays and plain containers only); every recording z-scored on its own; recordings split 80/10/10 with
``sklearn.model_selection.train_test_split`` (test_size=0.2 then 0.5, random_state=0) as NAS-Bench-360's
``read_data_physionet_4_with_val`` (the split is the benchmark's, fixed, not the trial seed); windows of 1,000
cut by ``slide_and_cut``: starts ``range(0, len - 1000, stride)`` with a class-dependent stride -- N 500,
A 500//6 = 83, O 250, ~ 25 -- for every split (NAS-Bench-360 and ORCA do this for train, val and test alike;
``eval_class_strides=False`` cuts val/test with the plain 500 so the windowing does not depend on the label).
Recordings shorter than 1,001 samples give no window and drop out (as in the reference). ``groups`` =
recording index, so the "1-macro-f1" metric votes per recording. Checked against ORCA (sjunhongshen/ORCA, src/data_loaders.py) and NAS-Bench-360 (rtu715/NAS-Bench-360, its
download script and per-task loaders).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import register_task
from ..base import Split, Task
from .cache import _check_space, _new_npy, cached_arrays
from .files import _bad_file, _field, _read_pickle, _redownload, require

ECG_CLASSES = ("N", "A", "O", "~")
ECG_STRIDE_DIVISOR = {
    0: 1,
    1: 6,
    2: 2,
    3: 20,
}  # slide_and_cut: N stride, A stride//6, O stride//2, ~ stride//20


def ecg_split_indices(n: int, split_seed: int = 0) -> dict[str, np.ndarray]:
    """Recording indices of NAS-Bench-360's split: train_test_split(test_size=0.2, random_state=0) and the
    held-out fifth halved again (test_size=0.5, random_state=0). Index arrays give the same permutation the
    reference draws when it splits the recordings themselves.

    Args:
        n: number of recordings.
        split_seed: random_state of both splits (NAS-Bench-360: 0).
    """
    from sklearn.model_selection import train_test_split

    idx = np.arange(n)
    tr, rest = train_test_split(idx, test_size=0.2, random_state=split_seed)
    va, te = train_test_split(rest, test_size=0.5, random_state=split_seed)
    return {"train": np.asarray(tr), "val": np.asarray(va), "test": np.asarray(te)}


def ecg_window_starts(
    length: int, label: int, window: int = 1000, stride: int = 500, class_strides: bool = True
) -> range:
    """Start indices of the windows `slide_and_cut` cuts from one recording (the end is exclusive).

    Args:
        length: the recording's length in samples.
        label: its class (0..3: N, A, O, ~), which sets the stride when `class_strides`.
        window: window length.
        stride: the base stride (N's); A, O, ~ divide it by 6, 2, 20.
        class_strides: use the class-dependent strides (NAS-Bench-360); False: the base stride for all.
    """
    step = max(1, stride // ECG_STRIDE_DIVISOR[label] if class_strides else stride)
    return range(0, length - window, step)  # as slide_and_cut: the end is exclusive


def _ecg_records(path: Path) -> tuple[list[np.ndarray], np.ndarray]:
    d = _read_pickle(path, "ecg")
    data, labels = _field(d, "data", path, "ecg"), _field(d, "label", path, "ecg")
    if len(data) != len(labels):
        raise _bad_file(path, f"{len(data)} recordings but {len(labels)} labels", _redownload(path, "ecg"))
    if len(data) < 10:
        raise _bad_file(
            path,
            f"only {len(data)} recordings; the 80/10/10 split needs at least 10",
            _redownload(path, "ecg"),
        )
    code = {c: i for i, c in enumerate(ECG_CLASSES)}
    y = np.empty(len(labels), dtype=np.int64)
    for i, lab in enumerate(labels):
        lab = lab.decode() if isinstance(lab, bytes) else str(lab)
        if lab not in code:
            raise _bad_file(
                path, f"recording {i} has label {lab!r}; expected one of N, A, O, ~", _redownload(path, "ecg")
            )
        y[i] = code[lab]
    recs = []
    for i, r in enumerate(data):
        r = np.asarray(r)
        if (
            r.ndim > 2
            or (r.ndim == 2 and min(r.shape) != 1)
            or r.size == 0
            or not np.issubdtype(r.dtype, np.number)
        ):
            raise _bad_file(
                path,
                f"recording {i} must be a non-empty 1-D numeric series, got {r.dtype} {r.shape}",
                _redownload(path, "ecg"),
            )
        r = r.ravel().astype(np.float64)
        if not np.isfinite(r).all():
            raise _bad_file(path, f"recording {i} contains NaN or inf", "clean or re-download the file")
        std = r.std()
        recs.append(((r - r.mean()) / (std if std > 0 else 1.0)).astype(np.float32))  # per-recording z-score
    return recs, y


def _convert_ecg(tmp: Path, path: Path, opts: dict) -> None:
    recs, y = _ecg_records(path)
    window, stride = opts["window"], opts["stride"]
    for part, idx in ecg_split_indices(len(recs), opts["split_seed"]).items():
        cs = opts["class_strides"] if part == "train" else opts["eval_class_strides"]
        starts = [ecg_window_starts(len(recs[i]), int(y[i]), window, stride, cs) for i in idx]
        n = sum(len(s) for s in starts)
        if n == 0:
            raise _bad_file(
                path,
                f"no {part} recording is longer than the {window}-sample window",
                _redownload(path, "ecg"),
            )
        _check_space(tmp, n * window * 4)
        x = _new_npy(tmp, f"x_{part}", np.float32, (n, 1, window))
        labels, groups = np.empty(n, np.int64), np.empty(n, np.int64)
        k = 0
        for i, st in zip(idx, starts):
            r = recs[i]
            for j in st:
                x[k, 0] = r[j : j + window]
                k += 1
            labels[k - len(st) : k], groups[k - len(st) : k] = y[i], i
        x.flush()
        del x
        np.save(tmp / f"y_{part}.npy", labels)
        np.save(tmp / f"g_{part}.npy", groups)


@register_task(
    "ecg",
    modality="1d",
    needs_data_root=True,
    description="NAS-Bench-360 ECG (PhysioNet 2017 .pkl), 1x1000 windows, 4 classes, 1-macro-F1 per recording",
)
def ecg(
    data_root: Path,
    seed: int = 0,
    val_fraction: float = 0.1,
    window: int = 1000,
    stride: int = 500,
    class_strides: bool = True,
    eval_class_strides: bool = True,
    split_seed: int = 0,
    cache_dir: str | Path | None = None,
) -> Task:
    """NAS-Bench-360 ECG: 1x1000 windows of z-scored recordings, 4 classes, 1-macro-F1 voted per recording;
    the benchmark's fixed recording split; memory-mapped.

    Args:
        data_root: the folder holding the task's files (see `files.TASK_FILES`).
        seed: unused (the file's validation split is used).
        val_fraction: unused (the file's validation split is used).
        window: window length in samples.
        stride: the base stride (class N's); see `ecg_window_starts`.
        class_strides: class-dependent strides for the training windows (NAS-Bench-360).
        eval_class_strides: the same for val/test (NAS-Bench-360); False cuts them with the plain stride.
        split_seed: random_state of the recording split (NAS-Bench-360: 0).
        cache_dir: folder for the converted arrays (default `$ORCA_RAY_CACHE/nb360`).
    """
    path = require(Path(data_root), "ecg", "challenge2017.pkl")
    opts = {
        "window": int(window),
        "stride": int(stride),
        "class_strides": bool(class_strides),
        "eval_class_strides": bool(eval_class_strides),
        "split_seed": int(split_seed),
    }
    a = cached_arrays("ecg", [path], opts, lambda tmp: _convert_ecg(tmp, path, opts), cache_dir)
    sp = {
        p: Split(a[f"x_{p}"], np.asarray(a[f"y_{p}"]), np.asarray(a[f"g_{p}"]))
        for p in ("train", "val", "test")
    }
    return Task(
        name="ecg",
        modality="1d",
        kind="classification",
        input_shape=(1, window),
        num_outputs=4,
        train=sp["train"],
        val=sp["val"],
        test=sp["test"],
        metric="1-macro-f1",
        source=str(path),
        files=(str(path),),
        class_names=ECG_CLASSES,
        notes={
            "val_split": f"NAS-Bench-360 recording split 80/10/10 (random_state={split_seed}); "
            "val_fraction and seed unused",
            "windows": f"{window} long; strides N {stride}, A {stride // 6}, O {stride // 2}, "
            f"~ {stride // 20} (train{', val, test' if eval_class_strides else ''}); "
            "groups = recording index",
        },
    )
