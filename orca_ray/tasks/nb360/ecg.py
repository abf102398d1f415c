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


def ecg_split_indices(n: int, split_seed: int = 0, protocol: str = "honest") -> dict[str, np.ndarray]:
    """Recording indices of a split. "honest": NAS-Bench-360's, train_test_split(test_size=0.2,
    random_state=0) and the held-out fifth halved again (test_size=0.5, random_state=0). "orca": ORCA's
    load_ecg with valid_split=False, train_test_split(test_size=0.1, random_state=0), no val part. Index arrays
    give the same permutation the references draw when they split the recordings themselves.

    Args:
        n: number of recordings.
        split_seed: random_state (0 in both references).
        protocol: "honest" or "orca".
    """
    from sklearn.model_selection import train_test_split

    idx = np.arange(n)
    if protocol == "orca":
        tr, te = train_test_split(idx, test_size=0.1, random_state=split_seed)
        return {"train": np.asarray(tr), "test": np.asarray(te)}
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


def zscore_recording(r: np.ndarray) -> np.ndarray:
    """One recording z-scored on its own (population std, as the references' np.std), float32.

    Args:
        r: the recording's samples (any shape; flattened).
    """
    r = np.asarray(r, dtype=np.float64).ravel()
    std = r.std()
    return ((r - r.mean()) / (std if std > 0 else 1.0)).astype(np.float32)


def ecg_windows(
    lengths: list[int] | np.ndarray,
    labels: np.ndarray,
    *,
    protocol: str = "honest",
    split_seed: int = 0,
    window: int = 1000,
    stride: int = 500,
    class_strides: bool = True,
    eval_class_strides: bool = True,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Which windows each split holds: part → (recording index, window start), recordings in split order.
    Under protocol "orca" the test windows come in a seeded random order (ORCA shuffles them once with
    np.random.permutation; its chunked metric depends on the order, not on which order).

    Args:
        lengths: samples per recording.
        labels: class per recording (0..3).
        protocol: "honest" (NAS-Bench-360's 80/10/10) or "orca" (ORCA's 90/10).
        split_seed: the splits' random_state.
        window, stride: window length and base stride of slide_and_cut.
        class_strides, eval_class_strides: class-dependent strides on train / on val and test.
    """
    out = {}
    for part, idx in ecg_split_indices(len(lengths), split_seed, protocol).items():
        cs = class_strides if part == "train" else eval_class_strides
        starts = [
            np.asarray(ecg_window_starts(int(lengths[i]), int(labels[i]), window, stride, cs)) for i in idx
        ]
        rec = np.repeat(np.asarray(idx, dtype=np.int64), [len(st) for st in starts])
        start = np.concatenate(starts) if starts else np.zeros(0, np.int64)
        if protocol == "orca" and part == "test":
            perm = np.random.default_rng(split_seed).permutation(len(rec))
            rec, start = rec[perm], start[perm]
        out[part] = (rec.astype(np.int64), start.astype(np.int64))
    return out


def orca_ecg_split(
    recordings: list[np.ndarray], labels: np.ndarray, window: int = 1000, stride: int = 500
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """ORCA's load_ecg (valid_split=False) on plain arrays: every recording z-scored, recordings split 90/10
    (random_state 0), windows cut with the class-dependent strides on train and test alike.

    Args:
        recordings: raw 1-D recordings.
        labels: class per recording (0 N, 1 A, 2 O, 3 ~).
        window, stride: as slide_and_cut (1000, 500).

    Returns:
        for part in ("train", "test"): f"{part}_windows" (n, 3) int64 rows (recording index, window start,
        label) and f"{part}_x" (n, window) float32, in the loader's order.
    """
    recs = [zscore_recording(r) for r in recordings]
    labels = np.asarray(labels, dtype=np.int64)
    parts = ecg_windows([len(r) for r in recs], labels, protocol="orca", window=window, stride=stride)
    out = {}
    for part, (rec, start) in parts.items():
        x = np.zeros((len(rec), window), np.float32)
        for k, (i, j) in enumerate(zip(rec, start)):
            x[k] = recs[i][j : j + window]
        out[f"{part}_windows"] = np.stack([rec, start, labels[rec]], axis=1)
        out[f"{part}_x"] = x
    return out


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
        recs.append(zscore_recording(r))
    return recs, y


def _convert_ecg(tmp: Path, path: Path, opts: dict) -> None:
    recs, y = _ecg_records(path)
    window = opts["window"]
    parts = ecg_windows(
        [len(r) for r in recs],
        y,
        protocol=opts.get("protocol", "honest"),
        split_seed=opts["split_seed"],
        window=window,
        stride=opts["stride"],
        class_strides=opts["class_strides"],
        eval_class_strides=opts["eval_class_strides"],
    )
    for part, (rec, start) in parts.items():
        n = len(rec)
        if n == 0:
            raise _bad_file(
                path,
                f"no {part} recording is longer than the {window}-sample window",
                _redownload(path, "ecg"),
            )
        _check_space(tmp, n * window * 4)
        x = _new_npy(tmp, f"x_{part}", np.float32, (n, 1, window))
        for k, (i, j) in enumerate(zip(rec, start)):
            x[k, 0] = recs[i][j : j + window]
        x.flush()
        del x
        np.save(tmp / f"y_{part}.npy", y[rec])
        np.save(tmp / f"g_{part}.npy", rec)


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
    protocol: str = "honest",
) -> Task:
    """NAS-Bench-360 ECG: 1x1000 windows of z-scored recordings, 4 classes, 1-macro-F1 voted per recording
    (protocol orca: per window, chunked); a fixed recording split; memory-mapped.

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
        protocol: "honest" (the split above) or "orca" (ORCA's 90/10 split, val = test, test windows in a
            seeded random order).
    """
    path = require(Path(data_root), "ecg", "challenge2017.pkl")
    opts = {
        "window": int(window),
        "stride": int(stride),
        "class_strides": bool(class_strides),
        "eval_class_strides": bool(eval_class_strides),
        "split_seed": int(split_seed),
    }
    if protocol == "orca":
        opts["protocol"] = "orca"  # the honest layout keeps its existing cache key
    a = cached_arrays("ecg", [path], opts, lambda tmp: _convert_ecg(tmp, path, opts), cache_dir)
    parts = ("train", "test") if protocol == "orca" else ("train", "val", "test")
    sp = {p: Split(a[f"x_{p}"], np.asarray(a[f"y_{p}"]), np.asarray(a[f"g_{p}"])) for p in parts}
    if protocol == "orca":
        sp["val"] = sp["test"]
    how = (
        f"ORCA's recording split 90/10 (random_state={split_seed}), val = test"
        if protocol == "orca"
        else f"NAS-Bench-360 recording split 80/10/10 (random_state={split_seed})"
    )
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
            "val_split": how + "; val_fraction and seed unused",
            "windows": f"{window} long; strides N {stride}, A {stride // 6}, O {stride // 2}, "
            f"~ {stride // 20} (train{', val, test' if eval_class_strides else ''}); "
            "groups = recording index",
        },
    )
