"""Time series in the UCR/UEA archive's own layout: `load_task("ucr:/data/UCRArchive_2018/GunPoint")`.

The spec names a folder holding one data set (`<Name>_TRAIN.tsv` + `<Name>_TEST.tsv`, or `<Name>_TRAIN.ts` +
`<Name>_TEST.ts`), or a file prefix `DIR/<Name>` when the folder holds several.

- `.tsv` (UCR 2018 univariate archive): one series per line, the label first, tab-separated values; series
  shorter than the longest are padded with NaN at the end. The 2015 archive's files (`<Name>_TRAIN` without a
  suffix, `.txt`, `.csv`: comma- or space-separated) read the same way.
- `.ts` (sktime / UEA multivariate archive): `@` header lines (`@classLabel true a b c` declares the classes,
  `@targetLabel true` makes the labels regression targets, `@timeStamps true` is not supported), then after
  `@data` one series per line: dimensions separated by `:`, values by `,`, the label last; `?` is missing.

Unequal lengths (NaN padding, or `@equalLength false`) are resampled per series and channel to the longest
length by linear interpolation, and missing values inside a series are interpolated from their neighbours; the
task's `notes` say how many series were touched. Inputs are standardised per channel with training statistics
(as for the bundled UCR sets). Labels in any convention become classes 0..K-1 (tasks.labels); real-valued
labels make a regression task with one output.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..untrusted.arrays import LIMIT_ENV, memory_limit
from . import register_task
from .base import Split, Task, TaskDataError, UnitGaussianNormalizer, carve_validation
from .labels import LabelCoding, is_class_labels

# .tsv: the 2018 archive; .txt / .csv / no suffix: the 2015 archive's comma- or space-separated files
SUFFIXES = (".tsv", ".ts", ".txt", ".csv", "")


def find_ucr_files(spec_path: str | Path) -> tuple[str, Path, Path]:
    """(name, train file, test file) of the data set a `ucr:` spec points at.

    Args:
        spec_path: a folder holding one `<Name>_TRAIN.<tsv|ts>` / `<Name>_TEST.<tsv|ts>` pair, `DIR/<Name>`,
            or one file of the pair.
    """
    p = Path(spec_path).expanduser()
    if p.is_file():  # one of the pair given: DIR/<Name>_TRAIN.tsv
        stem = p.name[: -len(p.suffix)] if p.suffix in SUFFIXES and p.suffix else p.name
        for part in ("_TRAIN", "_TEST"):
            if stem.endswith(part):
                p = p.parent / stem[: -len(part)]
    if p.is_dir():
        folder, names = p, None
    elif p.parent.is_dir():
        folder, names = p.parent, [p.name]
    else:
        raise TaskDataError(
            f"{p}: no such folder. Give 'ucr:DIR' with DIR/<Name>_TRAIN.tsv and DIR/<Name>_TEST.tsv (or .ts)"
        )
    if names is None:
        names = sorted({f.name[: -len("_TRAIN" + f.suffix)] for f in folder.iterdir() if _is_train_file(f)})
        if not names:
            raise TaskDataError(
                f"{folder}: no <Name>_TRAIN.tsv or <Name>_TRAIN.ts file here (found: "
                f"{', '.join(sorted(f.name for f in folder.iterdir())[:8]) or 'nothing'})"
            )
        if len(names) > 1:
            raise TaskDataError(
                f"{folder}: holds {len(names)} data sets ({', '.join(names[:8])}); pick one with "
                f"'ucr:{folder}/<Name>'"
            )
    name = names[0]
    pairs = [(folder / f"{name}_TRAIN{s}", folder / f"{name}_TEST{s}") for s in SUFFIXES]
    for train, test in pairs:  # the first format with both files (a folder may hold .tsv and .ts)
        if train.is_file() and test.is_file():
            return name, train, test
    for train, test in pairs:
        if train.is_file():
            raise TaskDataError(f"{test}: missing; the UCR/UEA layout needs it next to {train.name}")
    raise TaskDataError(f"{folder}: no {name}_TRAIN.tsv or {name}_TRAIN.ts file")


def _is_train_file(f: Path) -> bool:
    return f.is_file() and f.suffix in SUFFIXES and f.stem.endswith("_TRAIN")


# ---- parsers: (list of per-series (C, L_i) float arrays, labels, declared classes or None, is_regression)
def read_tsv(path: Path) -> tuple[list[np.ndarray], np.ndarray, None, bool]:
    """A UCR 2018 `.tsv` file: label, then the values, tab-separated (NaN pads unequal lengths).

    Args:
        path: the file.
    """
    series, labels = [], []
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            parts = line.split("\t") if "\t" in line else line.replace(",", " ").split()
            labels.append(parts[0].strip())
            series.append(_floats(parts[1:], path, lineno)[None, :])
    if not series:
        raise TaskDataError(f"{path}: no series in the file")
    return series, _label_array(labels), None, False


def read_ts(path: Path) -> tuple[list[np.ndarray], np.ndarray, list[str] | None, bool]:
    """A `.ts` file (sktime's format of the UEA/UCR archives): @ headers, then one series per line.

    Args:
        path: the file.
    """
    header: dict[str, str] = {}
    series, labels = [], []
    in_data = False
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, raw in enumerate(f, 1):
            line = raw.strip()
            if not line or line.startswith(("#", "%")):  # comments, as in sktime's and ARFF files
                continue
            if not in_data:
                if not line.startswith("@"):
                    raise TaskDataError(
                        f"{path}: line {lineno}: expected an @ header or @data, got {line[:40]!r}"
                    )
                key, _, value = line[1:].partition(" ")
                key = key.lower()
                if key == "data":
                    in_data = True
                    if header.get("timestamps", "false").lower() == "true":
                        raise TaskDataError(
                            f"{path}: field @timeStamps is true; time-stamped .ts series are not supported. "
                            f"Fix: export the values only (sktime: write_dataframe_to_tsfile)"
                        )
                else:
                    header[key] = value.strip()
                continue
            has_label = _true(header.get("classlabel")) or _true(header.get("targetlabel"))
            dims = line.split(":")
            if has_label:
                labels.append(dims.pop().strip())
            values = [_floats(d.split(","), path, lineno) for d in dims]
            if len(values) * max(len(v) for v in values) > 4 * len(line) + 64:  # NaN padding without bound
                raise TaskDataError(
                    f"{path}: line {lineno}: {len(values)} dimensions of very different lengths (up to "
                    f"{max(len(v) for v in values)} values); give every dimension of a series about the same length"
                )
            series.append(_stack_dims(values))
    if not in_data:
        raise TaskDataError(f"{path}: no @data line; not a .ts file")
    if not series:
        raise TaskDataError(f"{path}: no series after @data")
    if not labels:
        raise TaskDataError(f"{path}: field @classLabel: the series carry no labels (@classLabel false)")
    declared = None
    if _true(header.get("classlabel")):
        declared = header["classlabel"].split()[1:] or None
    regression = _true(header.get("targetlabel"))
    n_dims = {s.shape[0] for s in series}
    if len(n_dims) > 1:
        raise TaskDataError(f"{path}: series have different numbers of dimensions {sorted(n_dims)}")
    return series, _label_array(labels), declared, regression


def _true(v: str | None) -> bool:
    return bool(v) and v.split()[0].lower() == "true"


def _floats(parts: list[str], path: Path, lineno: int) -> np.ndarray:
    vals = [("nan" if p.strip() in ("?", "") else p) for p in parts]
    try:
        return np.array(vals, dtype=np.float64)
    except ValueError:
        bad = next(v for v in vals if not _is_float(v))
        raise TaskDataError(
            f"{path}: line {lineno}: value {bad.strip()[:30]!r} is not a number (missing values: NaN or ?)"
        ) from None


def _is_float(v: str) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return False


def _stack_dims(dims: list[np.ndarray]) -> np.ndarray:
    # dimensions of one series may differ in length: NaN-pad to the longest (resampled later)
    length = max(len(d) for d in dims)
    out = np.full((len(dims), length), np.nan)
    for i, d in enumerate(dims):
        out[i, : len(d)] = d
    return out


def _label_array(labels: list[str]) -> np.ndarray:
    """Labels as numbers when they all parse as numbers (so "1.0" and "1" agree), else as text."""
    try:
        return np.array([float(v) for v in labels])
    except ValueError:
        return np.array(labels, dtype=str)


# ---- unequal lengths and missing values --------------------------------------------------------------
def to_equal_length(series: list[np.ndarray], length: int, path: Path) -> tuple[np.ndarray, int, int]:
    """(N, C, length) float32 from per-series (C, L_i) arrays with NaN padding / missing values.

    Trailing NaNs are padding and dropped; NaNs inside are interpolated; each channel is then resampled
    linearly to `length`. Returns the array, the number of series resampled, and the number with gaps filled.

    Args:
        series: per-series (C, L_i) arrays, NaN-padded.
        length: the common length wanted.
        path: the file they came from (named in errors).
    """
    n, c = len(series), series[0].shape[0]
    out = np.empty((n, c, length), dtype=np.float32)
    resampled = filled = 0
    grid = np.linspace(0.0, 1.0, length)
    for i, s in enumerate(series):
        for ch in range(c):
            v = s[ch]
            ok = np.isfinite(v)
            if not ok.any():
                raise TaskDataError(
                    f"{path}: series {i + 1} (data row {i + 1}), channel {ch}: no values at all; drop it"
                )
            v = v[: np.flatnonzero(ok)[-1] + 1]  # trailing NaN = padding
            ok = np.isfinite(v)
            if not ok.all():
                filled += 1
                idx = np.arange(len(v))
                v = np.interp(idx, idx[ok], v[ok])
            if len(v) != length:
                resampled += 1
                v = np.interp(grid, np.linspace(0.0, 1.0, len(v)), v) if len(v) > 1 else np.full(length, v[0])
            out[i, ch] = v
    return out, resampled, filled


def _lengths(series: list[np.ndarray]) -> int:
    best = 0
    for s in series:
        ok = np.isfinite(s).any(0)
        best = max(best, int(np.flatnonzero(ok)[-1]) + 1 if ok.any() else 0)
    return best


@register_task(
    "ucr",
    modality="1d",
    description="UCR/UEA archive layout: ucr:DIR with <Name>_TRAIN.tsv/_TEST.tsv or .ts files",
)
def load_ucr_task(path: str, data_root=None, seed: int = 0, val_fraction: float = 0.1) -> Task:
    """A UCR/UEA data set from its archive files (see the module docstring).

    Args:
        path: the folder (or `DIR/<Name>` prefix) of the data set.
        data_root: unused (the path is the data).
        seed: seeds the validation carve.
        val_fraction: share of the training series carved off for validation.
    """
    name, train_file, test_file = find_ucr_files(path)
    read = read_ts if train_file.suffix == ".ts" else read_tsv
    s_tr, y_tr, declared, regression = read(train_file)
    s_te, y_te, _, _ = read(test_file)
    if s_tr[0].shape[0] != s_te[0].shape[0]:
        raise TaskDataError(
            f"{test_file}: {s_te[0].shape[0]} dimension(s) per series, but {train_file.name} has {s_tr[0].shape[0]}"
        )
    length = max(_lengths(s_tr), _lengths(s_te))
    # every series is resampled to the longest: one long line among many short ones would allocate N x L
    need = (len(s_tr) + len(s_te)) * s_tr[0].shape[0] * length * 4
    if need > memory_limit():
        raise TaskDataError(
            f"{train_file}: {len(s_tr) + len(s_te)} series resampled to the longest ({length} values) need "
            f"{need / 1e9:.1f} GB, more than this machine allows ({memory_limit() / 1e9:.1f} GB, "
            f"${LIMIT_ENV}). Fix: trim the long series or split the data set"
        )
    x_tr, rs_tr, fill_tr = to_equal_length(s_tr, length, train_file)
    x_te, rs_te, fill_te = to_equal_length(s_te, length, test_file)
    # per-channel standardisation with training statistics only (as the bundled UCR sets)
    mean = x_tr.mean(axis=(0, 2), keepdims=True)
    std = x_tr.std(axis=(0, 2), keepdims=True) + 1e-8
    x_tr = ((x_tr - mean) / std).astype(np.float32)
    x_te = ((x_te - mean) / std).astype(np.float32)
    notes = {}
    if rs_tr + rs_te:
        notes["resampled"] = f"{rs_tr + rs_te} series channels resampled to length {length}"
    if fill_tr + fill_te:
        notes["missing"] = f"{fill_tr + fill_te} series channels had missing values interpolated"
    common = {
        "name": f"ucr:{name}",
        "modality": "1d",
        "input_shape": x_tr.shape[1:],
        "source": str(train_file.parent / f"{name}_{{TRAIN,TEST}}{train_file.suffix}"),
        "notes": notes,
        "files": (str(train_file), str(test_file)),
    }
    if regression or (y_tr.dtype.kind == "f" and not is_class_labels(y_tr)):
        if y_tr.dtype.kind != "f" or y_te.dtype.kind != "f":
            raise TaskDataError(f"{train_file}: field label: regression targets must all be numbers")
        norm = UnitGaussianNormalizer.fit(y_tr[:, None])
        y_tr, y_te = norm.encode(y_tr[:, None]), norm.encode(y_te[:, None])
        train, val = carve_validation(
            Split(x_tr, y_tr), val_fraction, seed, stratify=False, source=str(train_file)
        )
        return Task(
            kind="regression",
            num_outputs=1,
            output_shape=(1,),
            y_normalizer=norm,
            train=train,
            val=val,
            test=Split(x_te, y_te),
            **common,
        )
    coding = LabelCoding.fit(y_tr, where=f"{train_file}: field label", declared=declared)
    train = Split(x_tr, coding.encode(y_tr, where=f"{train_file}: field label"))
    test = Split(x_te, coding.encode(y_te, where=f"{test_file}: field label"))
    train, val = carve_validation(train, val_fraction, seed, source=str(train_file))
    return Task(
        kind="classification",
        num_outputs=coding.num_classes,
        class_names=coding.names,
        train=train,
        val=val,
        test=test,
        **common,
    )
