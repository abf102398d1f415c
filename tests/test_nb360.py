"""NAS-Bench-360 loaders on tiny files written in each task's real format, plus `orca_ray.data` check/stage."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import shutil
import socket
from contextlib import redirect_stdout
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io

from orca_ray import data as nbdata
from orca_ray.metrics import compute_metric
from orca_ray.tasks import TaskDataError, load_task, nb360
from orca_ray.tasks.nb360 import staging

GRID = 421


# ---- writers: one per real format ------------------------------------------------------------------------------
def write_cifar(root: Path, per_class: int = 10, n_test: int = 100, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    out = {}
    for part, n in (("train", per_class * 100), ("test", n_test)):
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = (np.arange(n) % 100).tolist()
        d = {
            "filenames": [f"img{i}.png" for i in range(n)],
            "batch_label": part,
            "fine_labels": labels,
            "coarse_labels": [c // 5 for c in labels],
            "data": data,
        }
        with open(folder / part, "wb") as f:
            pickle.dump(d, f, protocol=2)
        out[part] = (data, np.asarray(labels))
    with open(folder / "meta", "wb") as f:
        pickle.dump(
            {
                "fine_label_names": [f"class{i}" for i in range(100)],
                "coarse_label_names": [f"super{i}" for i in range(20)],
            },
            f,
            protocol=2,
        )
    return out


def write_ninapro(folder: Path, sizes=(54, 18, 18), seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for part, n in zip(("train", "val", "test"), sizes):
        x = rng.standard_normal((n, 52, 16)).astype(np.float32)
        y = (np.arange(n) % 18).astype(np.int8)
        np.save(folder / f"ninapro_{part}.npy", x)
        np.save(folder / f"label_{part}.npy", y)
        out[part] = (x, y)
    return out


def darcy_fields(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    coeff = np.where(rng.standard_normal((n, GRID, GRID)) > 0, 12.0, 3.0)
    sol = rng.random((n, GRID, GRID)) * 0.01 + 0.001
    return {"coeff": coeff, "sol": sol}


def write_mat73(path: Path, fields: dict) -> None:
    """MATLAB v7.3: HDF5 with a 512-byte userblock holding the MATLAB header; arrays stored column-major, i.e.
    an (N, H, W) MATLAB array appears to HDF5 as (W, H, N)."""
    with h5py.File(path, "w", userblock_size=512) as f:
        for k, a in fields.items():
            f.create_dataset(k, data=np.ascontiguousarray(np.asarray(a).transpose(2, 1, 0)))
    text = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
    header = text.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM"
    with open(path, "r+b") as f:
        f.write(header)


def write_darcy(folder: Path, n_train: int = 8, n_test: int = 4, v73: bool = False) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for part, n, seed, fname in (
        ("train", n_train, 2, "piececonst_r421_N1024_smooth1.mat"),
        ("test", n_test, 3, "piececonst_r421_N1024_smooth2.mat"),
    ):
        fields = darcy_fields(n, seed)
        if v73:
            write_mat73(folder / fname, fields)
        else:
            scipy.io.savemat(folder / fname, fields)
        out[part] = fields
    return out


def write_satellite(folder: Path, n_train: int = 144, n_test: int = 48, seed: int = 4) -> dict:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for part, n in (("train", n_train), ("test", n_test)):
        data = rng.integers(0, 4000, (n, 46)).astype(np.float64)
        label = (np.arange(n) % 24 + 1).astype(np.int64)  # 1..24 as stored by NAS-Bench-360
        np.save(folder / f"satellite_{part}.npy", {"data": data, "label": label}, allow_pickle=True)
        out[part] = (data, label)
    return out


def write_deepsea(folder: Path, sizes=(40, 10, 10), seed: int = 5, compressed: bool = False) -> dict:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for part, n in zip(("train", "val", "test"), sizes):
        arrays[f"x_{part}"] = np.eye(4, dtype=np.uint8)[rng.integers(0, 4, (n, 1000))]  # (N, 1000, 4) one-hot
        y = (rng.random((n, 36)) < 0.3).astype(np.uint8)
        y[0], y[1] = 1, 0  # every label has both classes in every split
        arrays[f"y_{part}"] = y
    (np.savez_compressed if compressed else np.savez)(folder / "deepsea_filtered.npz", **arrays)
    return arrays


def write_ecg(folder: Path, n_rec: int = 60, seed: int = 6) -> dict:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    recs = [rng.integers(-500, 500, rng.integers(1200, 4000)).astype(np.int16) for _ in range(n_rec)]
    labels = np.array([("N", "A", "O", "~")[i % 4] for i in range(n_rec)])
    data = np.empty(n_rec, dtype=object)
    data[:] = recs
    with open(folder / "challenge2017.pkl", "wb") as f:
        pickle.dump({"data": data, "label": labels}, f)
    return {"data": recs, "label": labels}


def make_root(root: Path) -> dict:
    """All six tasks; some files directly in ROOT, some in ROOT/<task>/ (both layouts are accepted)."""
    root.mkdir(parents=True, exist_ok=True)
    return {
        "cifar100": write_cifar(root),  # ROOT/cifar-100-python/...
        "ninapro": write_ninapro(root / "ninapro"),
        "darcy": write_darcy(root),
        "satellite": write_satellite(root / "satellite"),
        "deepsea": write_deepsea(root),
        "ecg": write_ecg(root / "ecg"),
    }


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ORCA_RAY_CACHE", str(tmp_path / "node-cache"))


@pytest.fixture(scope="module")
def full_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("nb360") / "root"
    return root, make_root(root)


def _md5(p: Path) -> str:
    return hashlib.md5(p.read_bytes(), usedforsecurity=False).hexdigest()


@pytest.fixture
def our_cifar_md5(full_root, monkeypatch):
    """The published torchvision md5s do not match generated files; point the table at ours."""
    root, _ = full_root
    table = {
        f"cifar-100-python/{n}": {"md5": _md5(root / "cifar-100-python" / n), "by": "test"}
        for n in ("train", "test", "meta")
    }
    monkeypatch.setattr(staging, "KNOWN_CHECKSUMS", table)


# ---- loaders ---------------------------------------------------------------------------------------------------
def test_cifar100(full_root):
    root, raw = full_root
    t = load_task("cifar100", data_root=root, seed=3)
    assert t.input_shape == (3, 32, 32)
    assert t.num_outputs == 100
    assert t.metric == "error"
    assert len(t.train) + len(t.val) == 1000
    assert len(t.val) == 100
    assert len(t.test) == 100
    assert t.train.x.dtype == np.float32
    assert t.class_names[7] == "class7"
    assert set(np.unique(t.val.y)) == set(range(100))  # stratified: one per class
    x_te, y_te = raw["cifar100"]["test"]
    want = (
        x_te.reshape(-1, 3, 32, 32) / 255.0 - nb360.cifar100.CIFAR100_MEAN[:, None, None]
    ) / nb360.cifar100.CIFAR100_STD[:, None, None]
    np.testing.assert_allclose(t.test.x, want, atol=1e-5)
    np.testing.assert_array_equal(t.test.y, y_te)
    # val carved from train and disjoint from it (images are random, so rows identify samples)
    tr_rows = {r.tobytes() for r in t.train.x.reshape(len(t.train), -1)}
    assert not any(r.tobytes() in tr_rows for r in t.val.x.reshape(len(t.val), -1))


def test_ninapro_transposition_and_given_split(full_root):
    root, raw = full_root
    t = load_task("ninapro", data_root=root)
    assert t.input_shape == (1, 16, 52)
    assert t.num_outputs == 18
    assert (len(t.train), len(t.val), len(t.test)) == (54, 18, 18)
    x, y = raw["ninapro"]["val"]
    np.testing.assert_array_equal(t.val.x[:, 0], x.transpose(0, 2, 1))  # ORCA: permute(0, 2, 1), unsqueeze(1)
    assert t.val.y.dtype == np.int64
    assert np.array_equal(t.val.y, y)


@pytest.mark.parametrize("v73", [False, True], ids=["matlab-v5", "matlab-v7.3"])
def test_darcy(tmp_path, v73):
    raw = write_darcy(tmp_path / "root" / "darcyflow", v73=v73)
    if v73:
        with pytest.raises(NotImplementedError):  # a real v7.3 file: scipy refuses it, h5py reads it
            scipy.io.loadmat(tmp_path / "root" / "darcyflow" / "piececonst_r421_N1024_smooth1.mat")
    t = load_task("darcy", data_root=tmp_path / "root", seed=1)
    assert t.input_shape == (3, 85, 85)
    assert t.output_shape == (85, 85)
    assert t.num_outputs == 1
    assert (t.kind, t.loss, t.metric) == ("regression", "rel_l2", "rel-l2")
    assert (len(t.train), len(t.val), len(t.test)) == (7, 1, 4)
    tr_rows, val_rows = t.notes["train_rows"], t.notes["val_rows"]
    assert not set(tr_rows) & set(val_rows)
    assert len(tr_rows) + len(val_rows) == 8
    sol_tr = raw["train"]["sol"][:, ::5, ::5]
    coeff_tr = raw["train"]["coeff"][:, ::5, ::5]
    # the y normaliser is fitted on the training part only
    np.testing.assert_allclose(t.y_normalizer.mean, sol_tr[tr_rows].mean(0), rtol=1e-5)
    # x channel 0: coeff normalised per pixel with training statistics; 1, 2: ORCA's meshgrid ('xy') grid
    c = coeff_tr[tr_rows]  # unbiased std, as ORCA
    np.testing.assert_allclose(
        t.train.x[:, 0], (c - c.mean(0)) / (c.std(0, ddof=1) + 1e-5), rtol=1e-4, atol=1e-4
    )
    lin = np.linspace(0, 1, 85)
    np.testing.assert_allclose(t.test.x[0, 1], np.broadcast_to(lin[None, :], (85, 85)), atol=1e-6)
    np.testing.assert_allclose(t.test.x[0, 2], np.broadcast_to(lin[:, None], (85, 85)), atol=1e-6)
    # decoding recovers the raw solution, so the metric after de-normalising is the metric on raw data
    raw_test = raw["test"]["sol"][:, ::5, ::5]
    np.testing.assert_allclose(t.y_normalizer.decode(t.test.y), raw_test, rtol=1e-4)
    pred_norm = t.test.y + 0.1 * np.random.default_rng(0).standard_normal(t.test.y.shape).astype(np.float32)
    pred = t.y_normalizer.decode(pred_norm)
    assert compute_metric("rel-l2", t.y_normalizer.decode(t.test.y), pred) == pytest.approx(
        compute_metric("rel-l2", raw_test, pred), rel=1e-4
    )


def test_darcy_v5_and_v73_agree(tmp_path):
    write_darcy(tmp_path / "a")
    write_darcy(tmp_path / "b", v73=True)
    ta, tb = load_task("darcy", data_root=tmp_path / "a"), load_task("darcy", data_root=tmp_path / "b")
    np.testing.assert_allclose(ta.train.x, tb.train.x, rtol=1e-6)
    np.testing.assert_allclose(ta.test.y, tb.test.y, rtol=1e-6)


def test_satellite_memmap_zscore_and_last_block_val(full_root, monkeypatch):
    root, raw = full_root
    t = load_task("satellite", data_root=root, zscore=True)  # NAS-Bench-360's per-series z-score
    assert t.input_shape == (1, 46)
    assert t.num_outputs == 24
    assert (len(t.train), len(t.val), len(t.test)) == (
        96,
        48,
        48,
    )  # val = last len(test) rows (NAS-Bench-360)
    assert isinstance(t.train.x, np.memmap)  # views, no copy
    assert isinstance(t.val.x, np.memmap)
    data, label = raw["satellite"]["train"]
    z = (data - data.mean(1, keepdims=True)) / data.std(1, keepdims=True)
    np.testing.assert_allclose(t.val.x[:, 0], z[96:], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(t.train.y, label[:96] - 1)
    assert t.train.y.min() == 0
    assert t.train.y.max() == 23
    raw_t = load_task("satellite", data_root=root)  # the default: raw values, as ORCA feeds them
    np.testing.assert_allclose(raw_t.test.x[:, 0], raw["satellite"]["test"][0], rtol=1e-6)
    # second load: memory map of the cached conversion, no reconversion
    monkeypatch.setattr(nb360.satellite, "_convert_satellite", lambda *a, **k: pytest.fail("converted twice"))
    again = load_task("satellite", data_root=root, zscore=True)
    assert isinstance(again.test.x, np.memmap)
    r = load_task("satellite", data_root=root, val="random", seed=2)
    assert len(r.val) > 0
    assert len(r.train) + len(r.val) == 144


def test_deepsea_memmap_no_reconversion(tmp_path, monkeypatch):
    raw = write_deepsea(tmp_path / "root" / "deepsea", compressed=True)
    t = load_task("deepsea", data_root=tmp_path / "root")
    assert (t.input_shape, t.num_outputs, t.kind) == ((4, 1000), 36, "multilabel")
    assert (t.loss, t.pos_weight, t.metric) == ("bce", 4.0, "1-auroc")
    assert (len(t.train), len(t.val), len(t.test)) == (40, 10, 10)
    assert isinstance(t.train.x, np.memmap)
    assert t.train.x.dtype == np.float32
    np.testing.assert_array_equal(t.val.x, raw["x_val"].transpose(0, 2, 1))  # ORCA: transpose(-1, -2)
    np.testing.assert_array_equal(t.test.y, raw["y_test"])
    cache = Path(t.train.x.filename).parent
    assert (cache / "meta.json").is_file()
    assert not list(cache.parent.glob("*.tmp-*"))
    monkeypatch.setattr(nb360.deepsea, "_convert_deepsea", lambda *a, **k: pytest.fail("converted twice"))
    again = load_task("deepsea", data_root=tmp_path / "root")
    assert isinstance(again.test.x, np.memmap)
    assert Path(again.test.x.filename).parent == cache
    score = compute_metric("1-auroc", again.test.y, np.random.default_rng(0).random((10, 36)))
    assert 0 <= score <= 1


def test_converted_arrays_follow_the_files_content_not_its_size_and_mtime(tmp_path):
    """A file replaced by another of the same size and modification time (`cp -p`) is converted again: the
    cache is keyed by content (io.file_sha256), as every other cache of the project."""
    folder = tmp_path / "root" / "deepsea"
    write_deepsea(folder, seed=5)
    path = folder / "deepsea_filtered.npz"
    st = path.stat()
    first = load_task("deepsea", data_root=tmp_path / "root")
    other = write_deepsea(folder, seed=7)  # uncompressed: the same size, other values
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size
    assert path.stat().st_mtime_ns == st.st_mtime_ns
    second = load_task("deepsea", data_root=tmp_path / "root")
    np.testing.assert_array_equal(second.test.y, other["y_test"])
    assert Path(second.test.x.filename).parent != Path(first.test.x.filename).parent


def test_ecg_split_windows_groups_and_vote(full_root):
    from sklearn.model_selection import train_test_split

    root, raw = full_root
    t = load_task("ecg", data_root=root)
    assert t.input_shape == (1, 1000)
    assert t.num_outputs == 4
    assert t.metric == "1-macro-f1"
    assert t.class_names == ("N", "A", "O", "~")
    g = {k: set(np.unique(s.groups).tolist()) for k, s in t.splits().items()}
    assert not (g["train"] & g["val"])
    assert not (g["train"] & g["test"])
    assert not (g["val"] & g["test"])
    assert (len(g["train"]), len(g["val"]), len(g["test"])) == (48, 6, 6)
    # the reference splits the recordings themselves with random_state=0; index arrays give the same split
    recs, labels = raw["ecg"]["data"], raw["ecg"]["label"]
    _x_tr, x_rest, _, _ = train_test_split(list(recs), labels, test_size=0.2, random_state=0)
    x_val, x_te, _, _ = train_test_split(x_rest, labels[: len(x_rest)], test_size=0.5, random_state=0)
    ids = {id(r): i for i, r in enumerate(recs)}
    assert g["val"] == {ids[id(r)] for r in x_val}
    assert g["test"] == {ids[id(r)] for r in x_te}
    # windows: class-dependent strides (N 500, A 83, O 250, ~ 25), starts range(0, len - 1000, stride)
    code = {"N": 0, "A": 1, "O": 2, "~": 3}
    for name, s in t.splits().items():
        for rid in list(g[name])[:6]:
            r = recs[rid].astype(np.float64)
            z = ((r - r.mean()) / r.std()).astype(np.float32)
            step = 500 // {0: 1, 1: 6, 2: 2, 3: 20}[code[labels[rid]]]
            starts = list(range(0, len(r) - 1000, step))
            rows = np.flatnonzero(s.groups == rid)
            assert len(rows) == len(starts)
            assert (s.y[rows] == code[labels[rid]]).all()
            np.testing.assert_allclose(
                s.x[rows[-1], 0], z[starts[-1] : starts[-1] + 1000], rtol=1e-5, atol=1e-5
            )
    # the metric votes per recording: a minority of wrong windows per recording does not count
    s = t.test
    logits = np.eye(4)[s.y] * 5.0
    for rid in np.unique(s.groups):
        rows = np.flatnonzero(s.groups == rid)
        if len(rows) >= 3:
            logits[rows[-1]] = np.eye(4)[(s.y[rows[-1]] + 1) % 4] * 5.0
    assert compute_metric(t.metric, s.y, logits, s.groups) == 0.0
    assert compute_metric(t.metric, s.y, logits) > 0.0
    uniform = load_task("ecg", data_root=root, eval_class_strides=False)
    assert len(uniform.test) < len(t.test)
    assert len(uniform.train) == len(t.train)


def test_orca_protocol_compositions(full_root):
    """protocol="orca": ORCA's own splits (its loaders with valid_split=False): the validation data trains,
    the split called val is the test split itself."""
    root, raw = full_root
    for name in ("cifar100", "ninapro", "darcy", "satellite", "deepsea", "ecg"):
        honest = load_task(name, data_root=root)
        orca = load_task(name, data_root=root, protocol="orca")
        assert orca.val is orca.test, name
        assert len(orca.test) == len(honest.test) or name == "ecg", name
        if name in ("cifar100", "ninapro", "satellite", "deepsea", "darcy"):
            assert len(orca.train) == len(honest.train) + len(honest.val), name
    # NinaPro: train + val in order, ORCA's focal loss; CIFAR-100: all training images, crop/flip on train
    nina = load_task("ninapro", data_root=root, protocol="orca")
    x_val = raw["ninapro"]["val"][0]
    assert nina.loss == "focal"
    assert load_task("ninapro", data_root=root).loss == "focal"
    np.testing.assert_allclose(nina.train.x[-len(x_val) :, 0], x_val.transpose(0, 2, 1), rtol=1e-6)
    cifar = load_task("cifar100", data_root=root, protocol="orca")
    assert cifar.augment is not None
    assert cifar.augment.pad == 4
    black = (0 - np.array([0.5071, 0.4867, 0.4408])) / np.array([0.2675, 0.2565, 0.2761])
    np.testing.assert_allclose(cifar.augment.fill, black, rtol=1e-5)
    # Satellite: the whole training file trains, raw values (the array function the loader converts with)
    from orca_ray.tasks.nb360.satellite import satellite_arrays

    sat = load_task("satellite", data_root=root, protocol="orca")
    x, y = satellite_arrays(*raw["satellite"]["train"])
    np.testing.assert_array_equal(sat.train.x, x)
    np.testing.assert_array_equal(sat.train.y, y)
    # Darcy: the normalisers are fitted on every training sample
    darcy = load_task("darcy", data_root=root, protocol="orca")
    sol = raw["darcy"]["train"]["sol"][:, ::5, ::5].astype(np.float64)
    np.testing.assert_allclose(darcy.y_normalizer.mean, sol.mean(0), rtol=1e-4, atol=1e-6)
    # DeepSEA: x_val appended to x_train in one memory map; evaluated in a fresh order per epoch
    deep = load_task("deepsea", data_root=root, protocol="orca")
    assert isinstance(deep.train.x, np.memmap)
    assert deep.shuffle_eval
    np.testing.assert_array_equal(deep.train.y[-10:], raw["deepsea"]["y_val"])


def test_ecg_orca_split_is_orcas_90_10(full_root):
    from sklearn.model_selection import train_test_split

    from orca_ray.tasks.nb360.ecg import orca_ecg_split

    root, raw = full_root
    recs, labels = raw["ecg"]["data"], raw["ecg"]["label"]
    t = load_task("ecg", data_root=root, protocol="orca")
    g_tr, g_te = set(np.unique(t.train.groups).tolist()), set(np.unique(t.test.groups).tolist())
    _, x_te = train_test_split(list(recs), test_size=0.1, random_state=0)
    ids = {id(r): i for i, r in enumerate(recs)}
    assert g_te == {ids[id(r)] for r in x_te}
    assert not (g_tr & g_te)
    assert len(g_tr) + len(g_te) == len(recs)
    code = np.array([{"N": 0, "A": 1, "O": 2, "~": 3}[c] for c in labels])
    split = orca_ecg_split(list(recs), code)
    for part, s in (("train", t.train), ("test", t.test)):
        rec, _, y = split[f"{part}_windows"].T
        np.testing.assert_array_equal(rec, s.groups)
        np.testing.assert_array_equal(y, s.y)
        np.testing.assert_allclose(split[f"{part}_x"], s.x[:, 0], rtol=1e-6, atol=1e-6)
    # test windows are shuffled (ORCA permutes them once); each recording's windows are those of slide_and_cut
    assert (np.diff(t.test.groups) != 0).sum() > len(g_te)
    rid = t.test.groups[0]
    step = 500 // {0: 1, 1: 6, 2: 2, 3: 20}[code[rid]]
    assert (t.test.groups == rid).sum() == len(range(0, len(recs[rid]) - 1000, step))


# ---- errors name the file ----------------------------------------------------------------------------------------
def _copy_task(full_root, tmp_path, task: str) -> Path:
    root, _ = full_root
    dst = tmp_path / "root"
    dst.mkdir()
    for df in nb360.TASK_FILES[task]:
        src = df.find(root)
        target = dst / src.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, target)
    return dst


def _truncate(p: Path, keep: float = 0.5) -> None:
    b = p.read_bytes()
    p.write_bytes(b[: int(len(b) * keep)])


@pytest.mark.parametrize(
    ("task", "name"),
    [
        ("ninapro", "ninapro_train.npy"),
        ("ecg", "challenge2017.pkl"),
        ("deepsea", "deepsea_filtered.npz"),
        ("satellite", "satellite_test.npy"),
        ("cifar100", "cifar-100-python/test"),
        ("darcy", "piececonst_r421_N1024_smooth2.mat"),
    ],
)
def test_truncated_file_names_the_file(full_root, tmp_path, task, name):
    root = _copy_task(full_root, tmp_path, task)
    path = next(p for p in root.rglob(Path(name).name) if p.is_file() and p.as_posix().endswith(name))
    _truncate(path)
    with pytest.raises(TaskDataError, match=str(path).replace(".", r"\.")) as e:
        load_task(task, data_root=root)
    assert "re-download" in str(e.value)


def test_not_a_mat_file(full_root, tmp_path):
    root = _copy_task(full_root, tmp_path, "darcy")
    (root / "piececonst_r421_N1024_smooth1.mat").write_bytes(b"this is not MATLAB data" * 100)
    with pytest.raises(TaskDataError, match=r"smooth1\.mat.*not a readable MATLAB"):
        load_task("darcy", data_root=root)


def test_wrong_shapes_name_the_file(full_root, tmp_path):
    root = _copy_task(full_root, tmp_path, "ninapro")
    np.save(root / "ninapro" / "ninapro_test.npy", np.zeros((18, 16, 52), np.float32))  # already transposed
    with pytest.raises(TaskDataError, match=r"ninapro_test\.npy.*\(N, 52, 16\)"):
        load_task("ninapro", data_root=root)
    ds = tmp_path / "ds"
    raw = write_deepsea(ds)
    np.savez(ds / "deepsea_filtered.npz", **{**raw, "x_test": raw["x_test"].transpose(0, 2, 1)})
    with pytest.raises(TaskDataError, match=r"deepsea_filtered\.npz.*x_test.*\(N, 1000, 4\)"):
        load_task("deepsea", data_root=ds)


def test_bad_labels_and_nans_name_the_file(full_root, tmp_path):
    root = _copy_task(full_root, tmp_path, "satellite")
    p = root / "satellite" / "satellite_test.npy"
    d = np.load(p, allow_pickle=True)[()]
    np.save(p, {"data": d["data"], "label": d["label"] - 1}, allow_pickle=True)  # 0..23: already shifted
    with pytest.raises(TaskDataError, match=r"satellite_test\.npy.*1\.\.24"):
        load_task("satellite", data_root=root)
    (tmp_path / "b").mkdir()
    root2 = _copy_task(full_root, tmp_path / "b", "ninapro")
    x = np.load(root2 / "ninapro" / "ninapro_val.npy")
    x[3, 5, 2] = np.nan
    np.save(root2 / "ninapro" / "ninapro_val.npy", x)
    with pytest.raises(TaskDataError, match=r"ninapro_val\.npy.*NaN.*row 3"):
        load_task("ninapro", data_root=root2)
    np.save(root2 / "ninapro" / "ninapro_val.npy", np.nan_to_num(x))
    np.save(root2 / "ninapro" / "label_val.npy", np.full(18, 18, np.int8))  # out of 0..17
    with pytest.raises(TaskDataError, match=r"label_val\.npy.*val\.y.*outside \[0, 17\]"):
        load_task("ninapro", data_root=root2)


def test_missing_file_says_where_it_goes(tmp_path):
    with pytest.raises(TaskDataError) as e:
        load_task("ecg", data_root=tmp_path)
    msg = str(e.value)
    assert str(tmp_path / "challenge2017.pkl") in msg
    assert str(tmp_path / "ecg" / "challenge2017.pkl") in msg
    assert "pde-xd.s3.amazonaws.com/ECG/challenge2017.pkl" in msg
    assert nb360.NB360_PAGE in msg


# ---- orca_ray.data check / stage / fetch -------------------------------------------------------------------------------
def _run(argv) -> tuple[int, str]:
    buf = io.StringIO()
    with redirect_stdout(buf):
        rc = nbdata.main(argv)
    return rc, buf.getvalue()


def test_check_complete_root(full_root, our_cifar_md5):
    root, _ = full_root
    rc, out = _run(["check", str(root), "--json"])
    assert rc == 0, out
    rep = json.loads(out)
    assert rep["ok"]
    assert set(rep["tasks"]) == set(nb360.NB360_TASKS)
    ds = rep["tasks"]["deepsea"]
    assert ds["files"][0]["status"] == "present"
    assert ds["files"][0]["checksum"] == staging.NO_PUBLISHED
    assert len(ds["files"][0]["sha256"]) == 64
    assert ds["load"]["memory_mapped"]
    assert ds["load"]["splits"]["train"]["x"] == [40, 4, 1000]
    assert rep["tasks"]["cifar100"]["files"][0]["checksum"] == "md5 matches test"
    assert rep["tasks"]["ninapro"]["load"]["splits"]["train"]["class_counts"] == [3] * 18
    assert rep["tasks"]["ecg"]["load"]["splits"]["test"]["groups"] == 6
    rc, text = _run(["check", str(root), "--tasks", "satellite", "ninapro"])
    assert rc == 0
    assert "satellite: OK" in text
    assert "ninapro: OK" in text
    assert "ecg" not in text


def test_check_published_md5_mismatch(full_root):
    root, _ = full_root  # generated CIFAR files cannot match torchvision's published md5
    rc, out = _run(["check", str(root), "--tasks", "cifar100", "--no-load"])
    assert rc == 1
    assert "CHECKSUM" in out
    assert "published by torchvision" in out


def test_check_incomplete_root(full_root, tmp_path):
    root = tmp_path / "partial"
    shutil.copytree(full_root[0], root)
    (root / "ecg" / "challenge2017.pkl").unlink()
    (root / "ninapro" / "label_test.npy").unlink()
    rc, out = _run(["check", str(root), "--tasks", "ecg", "ninapro", "satellite", "--json"])
    assert rc == 1
    rep = json.loads(out)
    assert not rep["tasks"]["ecg"]["ok"]
    assert not rep["tasks"]["ninapro"]["ok"]
    assert rep["tasks"]["satellite"]["ok"]
    missing = [f for f in rep["tasks"]["ninapro"]["files"] if f["status"] == "missing"]
    assert [f["name"] for f in missing] == ["label_test.npy"]
    assert missing[0]["places"] == [str(root / "label_test.npy"), str(root / "ninapro" / "label_test.npy")]
    rc, text = _run(["check", str(root), "--tasks", "ecg", "--no-hash"])
    assert rc == 1
    assert (
        f"MISSING challenge2017.pkl: put it at {root / 'challenge2017.pkl'} or {root / 'ecg' / 'challenge2017.pkl'}"
        in text
    )


def test_stage_local_then_check_and_rerun_skips(full_root, tmp_path, our_cifar_md5):
    root, _ = full_root
    dest = tmp_path / "shared" / "nb360"
    rc, out = _run(["stage", str(root), str(dest), "--no-load"])
    assert rc == 0, out
    man = json.loads((dest / "MANIFEST.json").read_text())
    assert (
        man["files"]["ecg/challenge2017.pkl"]["sha256"]
        == staging.digests(root / "ecg" / "challenge2017.pkl")["sha256"]
    )
    assert (dest / "deepsea_filtered.npz").is_file()
    assert (dest / "satellite" / "satellite_train.npy").is_file()
    assert not list(dest.rglob("*.part-*"))
    rc, out = _run(["stage", str(root), str(dest), "--no-load"])
    assert rc == 0
    assert out.count("skipped") >= len(man["files"])
    rc, out = _run(["check", str(dest), "--json"])
    rep = json.loads(out)
    assert rc == 0
    assert rep["tasks"]["satellite"]["files"][0]["checksum"] == "matches MANIFEST.json"
    with open(dest / "satellite" / "satellite_train.npy", "ab") as f:
        f.write(b"\0")  # the staged copy no longer matches its manifest
    rc, out = _run(["check", str(dest), "--tasks", "satellite", "--no-load"])
    assert rc == 1
    assert "MISMATCH" in out


def test_stage_refuses_a_failing_root(full_root, tmp_path):
    root = tmp_path / "partial"
    shutil.copytree(full_root[0], root)
    (root / "deepsea_filtered.npz").unlink()
    rc, _ = _run(["stage", str(root), str(tmp_path / "dest"), "--tasks", "deepsea"])
    assert rc == 1
    assert not (tmp_path / "dest").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_stage_to_s3_and_fetch_back(full_root, tmp_path, monkeypatch):
    boto3 = pytest.importorskip("boto3")
    from moto.server import ThreadedMotoServer

    root, _ = full_root
    for k, v in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        monkeypatch.setenv(k, v)
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}").create_bucket(Bucket="nb360")
        uri = f"s3://nb360/staged?endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1"
        tasks = ["ninapro", "satellite", "ecg"]
        rc, out = _run(["stage", str(root), uri, "--tasks", *tasks, "--no-load"])
        assert rc == 0, out
        keys = {
            o["Key"]
            for o in boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}").list_objects_v2(
                Bucket="nb360"
            )["Contents"]
        }
        assert "staged/MANIFEST.json" in keys
        assert "staged/ecg/challenge2017.pkl" in keys
        rc, out = _run(["stage", str(root), uri, "--tasks", *tasks, "--no-load"])
        assert rc == 0
        assert "copying" not in out  # same size + sha256 per the remote manifest
        local = tmp_path / "fetched"
        rc, out = _run(["fetch", uri, str(local), "--tasks", "ninapro", "ecg"])
        assert rc == 0, out
        assert (local / "ecg" / "challenge2017.pkl").read_bytes() == (
            root / "ecg" / "challenge2017.pkl"
        ).read_bytes()
        rc, out = _run(["check", str(local), "--tasks", "ninapro", "ecg"])
        assert rc == 0, out
        assert out.count("matches MANIFEST.json") == 7, out
    finally:
        server.stop()
