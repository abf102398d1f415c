"""Users' own data: the ucr: and imagefolder: formats, label conventions, the validation carve's fallback.

Series come from the real UCR/UEA files sktime ships (read from its package folder and written into the
archive layouts here); images are scikit-learn's real digits written as PNG files.
"""

import logging
from pathlib import Path

import numpy as np
import pytest

from orca_ray.tasks import Split, TaskDataError, carve_validation, load_task
from orca_ray.tasks.labels import LabelCoding, is_class_labels
from orca_ray.tasks.ucr import read_ts, read_tsv


def sktime_data() -> Path:
    import sktime

    return Path(sktime.__file__).parent / "datasets" / "data"


def sktime_arrays(name: str, split: str):
    from sktime.datasets import load_UCR_UEA_dataset

    return load_UCR_UEA_dataset(name, split=split, return_X_y=True, return_type="numpy3D")


def write_tsv(path: Path, x: np.ndarray, y) -> None:
    """UCR 2018 layout: label first, tab-separated, NaN for padding."""
    with open(path, "w") as f:
        for row, label in zip(x, y):
            f.write("\t".join([str(label), *("NaN" if np.isnan(v) else repr(float(v)) for v in row)]) + "\n")


# ---- labels ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("y", "names"),
    [
        (np.array([1, 2, 3, 2, 1]), ("1", "2", "3")),
        (np.array([-1, 1, 1, -1]), ("-1", "1")),
        (np.array([3, 10, 7, 3]), ("3", "7", "10")),
        (np.array([2.0, 1.0, 2.0]), ("1", "2")),
        (np.array(["cat", "dog", "ant", "dog"]), ("ant", "cat", "dog")),
        (np.array(["10", "9", "1"]), ("1", "9", "10")),  # numbers as text order numerically
        (np.array([True, False]), ("0", "1")),
    ],
)
def test_label_conventions_map_to_0_k_minus_1(y, names):
    coding = LabelCoding.fit(y, where="f: field y")
    assert coding.names == names
    codes = coding.encode(y, where="f: field y")
    assert codes.dtype == np.int64
    assert set(codes) == set(range(len(names)))
    as_text = [str(int(v)) if isinstance(v, bool | float) else str(v) for v in y.tolist()]
    assert [names[c] for c in codes] == as_text  # index k means the k-th class name, and it round-trips


def test_label_kinds():
    assert is_class_labels(np.array([1.0, 2.0]))
    assert is_class_labels(np.array(["a"]))
    assert not is_class_labels(np.array([1.5, 2.0]))
    assert not is_class_labels(np.zeros((3, 2)))


def test_unseen_test_label_names_file_field_and_label():
    coding = LabelCoding.fit(np.array([1, 2, 1, 2]), where="x.npz: field y_train")
    with pytest.raises(TaskDataError, match=r"x.npz: field y_test: label '5' never occurs in training"):
        coding.encode(np.array([1, 5]), where="x.npz: field y_test")


# ---- the validation carve ------------------------------------------------------------------------------
def test_carve_falls_back_to_unstratified_and_says_so(caplog):
    y = np.repeat(np.arange(52), 2)  # 52 classes, two samples each: a stratified 0.2 carve takes nothing
    split = Split(np.arange(104, dtype=np.float32)[:, None, None], y)
    with caplog.at_level(logging.WARNING, logger="orca_ray.tasks"):
        train, val = carve_validation(split, 0.2, seed=0, source="ucr/X_TRAIN.tsv")
    assert len(val) == round(0.2 * 104)
    assert len(train) + len(val) == 104
    assert set(train.y) == set(range(52))  # every class keeps a training sample
    assert not set(train.x.ravel()) & set(val.x.ravel())
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1
    assert "ucr/X_TRAIN.tsv" in lines[0]
    assert "unstratified" in lines[0]
    again = carve_validation(split, 0.2, seed=0)[1]
    assert np.array_equal(again.x, val.x)  # seeded
    assert not np.array_equal(carve_validation(split, 0.2, seed=1)[1].x, val.x)


def test_carve_that_cannot_work_says_why():
    split = Split(np.zeros((5, 1, 2), np.float32), np.arange(5))
    with pytest.raises(TaskDataError, match=r"every class has a single training sample.*Fix"):
        carve_validation(split, 0.2, seed=0, source="one.npz")


def test_stratified_carve_unchanged_when_possible():
    y = np.array([0] * 20 + [1] * 10)
    _train, val = carve_validation(Split(np.zeros((30, 1, 2), np.float32), y), 0.2, seed=0)
    assert np.bincount(val.y).tolist() == [4, 2]


# ---- npz ------------------------------------------------------------------------------------------------
def test_npz_one_based_labels_two_per_class(tmp_path):
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(1, 27), 2)  # 26 classes 1..26, two samples each
    path = tmp_path / "two_per_class.npz"
    np.savez(
        path,
        x_train=rng.standard_normal((52, 1, 16)).astype(np.float32),
        y_train=y,
        x_test=rng.standard_normal((26, 1, 16)).astype(np.float32),
        y_test=np.arange(1, 27),
    )
    task = load_task(f"npz:{path}", val_fraction=0.2)
    assert task.num_outputs == 26
    assert task.class_names == tuple(str(i) for i in range(1, 27))
    assert set(task.train.y) == set(range(26))
    assert len(task.val) == round(0.2 * 52)
    assert task.files == (str(path),)


@pytest.mark.parametrize(
    "labels",
    [np.array(["walk", "run", "sit"]), np.array([1.0, 2.0, 3.0]), np.array([-1, 1, 7])],
)
def test_npz_label_conventions(tmp_path, labels):
    x = np.random.default_rng(0).standard_normal((30, 1, 8)).astype(np.float32)
    path = tmp_path / "d.npz"
    np.savez(path, x_train=x, y_train=np.tile(labels, 10), x_test=x[:6], y_test=np.tile(labels, 2))
    task = load_task(f"npz:{path}")
    assert task.kind == "classification"
    assert task.num_outputs == 3
    assert sorted(task.class_names) == sorted(LabelCoding.fit(labels, where="").names)


def test_npz_unseen_and_object_labels_are_clear_errors(tmp_path):
    x = np.zeros((8, 1, 4), np.float32)
    path = tmp_path / "d.npz"
    np.savez(path, x_train=x, y_train=np.array([1, 2] * 4), x_test=x[:2], y_test=np.array([1, 3]))
    with pytest.raises(TaskDataError, match=r"d.npz: field y_test: label '3' never occurs in training"):
        load_task(f"npz:{path}")
    np.savez(
        path, x_train=x, y_train=np.array(["a", None] * 4, dtype=object), x_test=x[:2], y_test=np.zeros(2)
    )
    with pytest.raises(TaskDataError, match=r"d.npz: field y_train is a Python-object array"):
        load_task(f"npz:{path}")


# ---- ucr: ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["BasicMotions", "GunPoint", "UnitTest"])
def test_ts_reader_matches_sktime(name):
    series, labels, declared, regression = read_ts(sktime_data() / name / f"{name}_TRAIN.ts")
    x, y = sktime_arrays(name, "train")
    assert np.allclose(np.stack(series), x)
    # the file's own spelling is kept (sktime lower-cases labels)
    coding = LabelCoding.fit(labels, where="")
    as_read = [coding.names[c].lower() for c in coding.encode(labels, where="")]
    assert as_read == [str(v).lower() for v in y]
    assert not regression
    assert {d.lower() for d in declared} == {str(v).lower() for v in y}


def test_tsv_reader_matches_sktime_on_the_shipped_tsv():
    series, labels, _, _ = read_tsv(sktime_data() / "ArrowHead" / "ArrowHead_TRAIN.tsv")
    x, y = sktime_arrays("ArrowHead", "train")
    assert np.allclose(np.stack(series), x, atol=1e-6)
    assert labels.astype(int).astype(str).tolist() == list(y)


def test_every_ucr_set_sktime_ships_loads():
    """Whatever sktime ships in the archive's .ts layout (ArrowHead also has a lone _TRAIN.tsv beside them)."""
    for folder in sorted(p for p in sktime_data().iterdir() if list(p.glob("*_TRAIN.ts"))):
        task = load_task(f"ucr:{folder}")
        assert task.name == f"ucr:{folder.name}"
        assert task.kind in ("classification", "regression")


def test_ucr_tsv_layout_with_nan_padding_equals_the_ts_file(tmp_path):
    """PLAID has unequal lengths: written NaN-padded as the 2018 archive does, it loads like its .ts file."""
    folder = tmp_path / "PLAID"
    folder.mkdir()
    for split in ("TRAIN", "TEST"):
        series, labels, _, _ = read_ts(sktime_data() / "PLAID" / f"PLAID_{split}.ts")
        width = max(s.shape[1] for s in series)
        padded = np.full((len(series), width), np.nan)
        for i, s in enumerate(series):
            padded[i, : s.shape[1]] = s[0]
        write_tsv(folder / f"PLAID_{split}.tsv", padded, [int(v) + 1 for v in labels])  # 1-based
    tsv = load_task(f"ucr:{folder}", seed=2)
    ts = load_task(f"ucr:{sktime_data() / 'PLAID'}", seed=2)
    assert tsv.input_shape == ts.input_shape == (1, 1344)
    assert "resampled" in tsv.notes
    assert np.allclose(tsv.test.x, ts.test.x, atol=1e-5)
    assert tsv.class_names == tuple(str(i) for i in range(1, 12))
    assert np.array_equal(tsv.test.y, ts.test.y)


def test_ucr_folder_with_several_sets_or_a_missing_file(tmp_path):
    x, y = sktime_arrays("GunPoint", "train")
    for name in ("A", "B"):
        write_tsv(tmp_path / f"{name}_TRAIN.tsv", x[:, 0], y)
    with pytest.raises(TaskDataError, match=r"holds 2 data sets \(A, B\); pick one with 'ucr:.*/<Name>'"):
        load_task(f"ucr:{tmp_path}")
    with pytest.raises(TaskDataError, match=r"A_TEST.tsv: missing"):
        load_task(f"ucr:{tmp_path}/A")
    write_tsv(tmp_path / "A_TEST.tsv", x[:3, 0], ["1", "2", "3"])
    with pytest.raises(TaskDataError, match=r"A_TEST.tsv: field label: label '3' never occurs in training"):
        load_task(f"ucr:{tmp_path}/A")
    (tmp_path / "A_TEST.tsv").write_text("1\t0.5\tabc\n")
    with pytest.raises(TaskDataError, match=r"A_TEST.tsv: line 1: value 'abc' is not a number"):
        load_task(f"ucr:{tmp_path}/A")


# ---- imagefolder: ----------------------------------------------------------------------------------------
NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def write_digits(root: Path, n_train: int = 200, n_test: int = 60, rgb: bool = False) -> np.ndarray:
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    img = (d.images * (255 / 16)).round().astype(np.uint8)
    for split, idx in (("train", range(n_train)), ("test", range(n_train, n_train + n_test))):
        for i in idx:
            folder = root / split / NAMES[d.target[i]]
            folder.mkdir(parents=True, exist_ok=True)
            im = Image.fromarray(img[i])
            (im.convert("RGB") if rgb else im).save(folder / f"{i:05d}.png")
    return img


def test_imagefolder_reads_real_digits(tmp_path):
    img = write_digits(tmp_path)
    task = load_task(f"imagefolder:{tmp_path}", seed=1)
    assert task.input_shape == (1, 8, 8)
    assert task.num_outputs == 10
    assert task.modality == "2d"
    assert task.class_names == tuple(sorted(NAMES))
    assert len(task.train) + len(task.val) == 200
    assert len(task.test) == 60
    from sklearn.datasets import load_digits

    # files are read class folder by class folder: the labels are each image's folder name
    truth = sorted((NAMES[t], i) for i, t in enumerate(load_digits().target[200:260]))
    assert [task.class_names[c] for c in task.test.y] == [name for name, _ in truth]
    # pixels survive the PNG round trip: standardised images correlate perfectly with the originals
    for row, (_, i) in enumerate(truth[:5]):
        assert np.corrcoef(task.test.x[row, 0].ravel(), img[200 + i].ravel())[0, 1] > 0.9999


def test_imagefolder_val_folder_rgb_and_mixed_sizes(tmp_path):
    from PIL import Image

    write_digits(tmp_path, n_train=100, n_test=20, rgb=True)
    Image.new("RGB", (16, 12), (255, 0, 0)).save(tmp_path / "train" / "one" / "big.jpg")
    (tmp_path / "val" / "one").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "val" / "one" / "v.png")
    task = load_task(f"imagefolder:{tmp_path}")
    assert task.input_shape == (3, 8, 8)
    assert len(task.val) == 1
    assert len(task.train) == 101
    assert "resized" in task.notes


def test_imagefolder_bad_input(tmp_path):
    write_digits(tmp_path, n_train=60, n_test=10)
    (tmp_path / "test" / "eleven").mkdir()
    from PIL import Image

    Image.new("L", (8, 8)).save(tmp_path / "test" / "eleven" / "x.png")
    with pytest.raises(TaskDataError, match=r"test: class folders: label 'eleven' never occurs in training"):
        load_task(f"imagefolder:{tmp_path}")
    (tmp_path / "test" / "eleven" / "x.png").unlink()
    (tmp_path / "train" / "one" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(TaskDataError, match=r"broken.png: not a readable image"):
        load_task(f"imagefolder:{tmp_path}")
    with pytest.raises(TaskDataError, match=r"nowhere: no such folder"):
        load_task(f"imagefolder:{tmp_path}/nowhere")


# ---- paths: any form, s3:// staged once per node, content fingerprints -------------------------------------
def test_task_slug_is_short_safe_and_distinct():
    from orca_ray.tasks import task_slug

    a, b = task_slug("npz:/data/run 1/my.data.npz"), task_slug("npz:/other/run 1/my.data.npz")
    assert a.startswith("npz-my.data-")
    assert "/" not in a
    assert " " not in a
    assert a != b
    assert task_slug("ucr:s3://bucket/UCR/GunPoint?endpoint_override=x:1").startswith("ucr-GunPoint-")
    assert task_slug("digits") == "digits"


def test_relative_and_home_paths_become_absolute(tmp_path, monkeypatch):
    from orca_ray.tasks import absolute_spec

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert absolute_spec("npz:data/x.npz") == f"npz:{tmp_path}/data/x.npz"
    assert absolute_spec("ucr:~/UCR/GunPoint") == f"ucr:{tmp_path}/home/UCR/GunPoint"
    assert absolute_spec("npz:s3://b/x.npz") == "npz:s3://b/x.npz"
    assert absolute_spec("digits") == "digits"


def test_content_fingerprint_follows_content_and_survives_a_corrupt_memo(tmp_path):
    import os

    from orca_ray.io import FINGERPRINT_SUBDIR, content_fingerprint

    f = tmp_path / "x.npz"
    f.write_bytes(b"a" * 100)
    cache = tmp_path / "cache"
    first = content_fingerprint([f], cache_dir=cache)
    assert content_fingerprint([f], cache_dir=cache) == first
    (memo,) = (p for p in (cache / FINGERPRINT_SUBDIR).iterdir() if p.suffix != ".lock")
    memo.write_text("garbage")
    assert content_fingerprint([f], cache_dir=cache) == first
    f.write_bytes(b"b" * 100)
    os.utime(f, ns=(1, 1))
    assert content_fingerprint([f], cache_dir=cache) != first


@pytest.fixture
def s3(monkeypatch):
    """A local S3 (moto's server on loopback); yields (boto3 client, URI query for pyarrow)."""
    import socket

    boto3 = pytest.importorskip("boto3")
    from moto.server import ThreadedMotoServer

    for k, v in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        monkeypatch.setenv(k, v)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}")
    client.create_bucket(Bucket="data")
    yield client, f"?endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1"
    server.stop()


def test_s3_npz_and_ucr_prefix_are_staged_once(s3, tmp_path, monkeypatch):
    client, query = s3
    monkeypatch.setenv("ORCA_RAY_CACHE", str(tmp_path / "cache"))
    x, y = sktime_arrays("GunPoint", "train")
    buf = tmp_path / "g.npz"
    np.savez(
        buf, x_train=x.astype(np.float32), y_train=y.astype(int), x_test=x[:10], y_test=y[:10].astype(int)
    )
    client.upload_file(str(buf), "data", "sets/g.npz")
    for split in ("TRAIN", "TEST"):
        write_tsv(tmp_path / f"GunPoint_{split}.tsv", x[:, 0], y)
        client.upload_file(
            str(tmp_path / f"GunPoint_{split}.tsv"), "data", f"UCR/GunPoint/GunPoint_{split}.tsv"
        )
    task = load_task(f"npz:s3://data/sets/g.npz{query}")
    assert task.num_outputs == 2
    assert task.fingerprint
    staged = Path(task.files[0])
    assert staged.is_relative_to(tmp_path / "cache" / "staged")
    assert load_task(f"npz:s3://data/sets/g.npz{query}").files == task.files  # staged once, reused
    own = load_task(f"npz:s3://data/sets/g.npz{query}", cache_dir=tmp_path / "trial-cache")  # --cache-dir
    assert Path(own.files[0]).is_relative_to(tmp_path / "trial-cache" / "staged")
    assert own.fingerprint == task.fingerprint
    assert staged.stat().st_mtime_ns == Path(task.files[0]).stat().st_mtime_ns
    ucr = load_task(f"ucr:s3://data/UCR/GunPoint/GunPoint{query}")
    whole = load_task(f"ucr:s3://data/UCR/GunPoint{query}")
    assert ucr.input_shape == whole.input_shape == (1, 150)
    assert np.array_equal(ucr.test.y, whole.test.y)
    with pytest.raises(TaskDataError, match="no such file or folder"):
        load_task(f"npz:s3://data/sets/absent.npz{query}")


def test_classes_table_lists_original_labels():
    import json

    import pandas as pd

    from orca_ray.tables import classes_table

    fs = pd.DataFrame(
        {
            "task": ["npz:/a/x.npz", "npz:/a/x.npz", "digits", "synthetic-darcy"],
            "classes": [
                json.dumps(["-1", "1"]),
                json.dumps(["-1", "1"]),
                json.dumps(list("0123456789")),
                None,
            ],
        }
    )
    from orca_ray.analysis import task_label

    assert task_label("npz:/a/x.npz", fs) == "npz:x.npz (2 classes: -1, 1)"
    assert task_label("digits", fs) == "digits"
    assert task_label("synthetic-darcy", fs) == "synthetic-darcy"
    table = classes_table(fs)
    assert "| npz:/a/x.npz | 2 | 0 = -1, 1 = 1 |" in table
    assert "digits" not in table
    assert classes_table(fs[fs["task"] == "digits"]) == ""


def test_real_valued_labels_stay_regression(tmp_path):
    x = np.random.default_rng(0).standard_normal((30, 1, 8)).astype(np.float32)
    path = tmp_path / "r.npz"
    np.savez(path, x_train=x, y_train=x[:, 0, 0] * 1.5 + 0.25, x_test=x[:5], y_test=x[:5, 0, 0])
    task = load_task(f"npz:{path}")
    assert task.kind == "regression"
    assert task.output_shape == (1,)
    assert task.train.y.shape == (len(task.train), 1)
    tecator = load_task(f"ucr:{sktime_data() / 'Tecator'}")  # a .ts file with @targetLabel true
    assert tecator.kind == "regression"
    assert tecator.metric == "rel-l2"
    assert tecator.output_shape == (1,)


def test_ucr_2015_layout_and_a_file_of_the_pair(tmp_path):
    """The 2015 archive: <Name>_TRAIN / <Name>_TEST without a suffix, comma-separated, labels like 1.0."""
    x, y = sktime_arrays("GunPoint", "train")
    xt, yt = sktime_arrays("GunPoint", "test")
    for name, xs, ys in (("GunPoint_TRAIN", x, y), ("GunPoint_TEST", xt, yt)):
        rows = [
            ",".join([f"{float(label):.7e}", *map(repr, row.tolist())]) for row, label in zip(xs[:, 0], ys)
        ]
        (tmp_path / name).write_text("\n".join(rows) + "\n")
    old = load_task(f"ucr:{tmp_path}")
    assert old.input_shape == (1, 150)
    assert old.class_names == ("1", "2")
    assert len(old.test) == 150
    one = load_task(f"ucr:{tmp_path}/GunPoint_TRAIN")
    assert np.array_equal(one.test.x, old.test.x)


def test_npz_channels_last_images_and_imagefolder_subfolders(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    img = rng.random((20, 12, 10, 3)).astype(np.float32)
    np.savez(
        tmp_path / "i.npz", x_train=img, y_train=np.arange(20) % 2, x_test=img[:4], y_test=np.arange(4) % 2
    )
    task = load_task(f"npz:{tmp_path / 'i.npz'}")
    assert task.input_shape == (3, 12, 10)
    assert np.array_equal(task.test.x[1, 2], img[1, :, :, 2])
    for split in ("train", "test"):
        for c in ("a", "b"):
            (tmp_path / "imgs" / split / c / "deeper").mkdir(parents=True)
            for i in range(3):
                Image.new("L", (6, 6), 40 * i).save(tmp_path / "imgs" / split / c / "deeper" / f"{i}.png")
    (tmp_path / "imgs" / "train" / "a" / ".hidden").mkdir()
    Image.new("L", (6, 6)).save(tmp_path / "imgs" / "train" / "a" / ".hidden" / "x.png")
    task = load_task(f"imagefolder:{tmp_path / 'imgs'}")
    assert len(task.train) + len(task.val) == 6
    assert len(task.test) == 6


def test_npz_label_columns_and_one_hot_rows_are_classes(tmp_path):
    x = np.random.default_rng(0).standard_normal((30, 1, 8)).astype(np.float32)
    y = np.arange(30) % 3 + 1
    np.savez(tmp_path / "c.npz", x_train=x, y_train=y[:, None], x_test=x[:6], y_test=y[:6, None])
    column = load_task(f"npz:{tmp_path / 'c.npz'}")
    assert column.kind == "classification"
    assert column.class_names == ("1", "2", "3")
    eye = np.eye(3, dtype=np.float32)
    np.savez(tmp_path / "h.npz", x_train=x, y_train=eye[y - 1], x_test=x[:6], y_test=eye[y[:6] - 1])
    hot = load_task(f"npz:{tmp_path / 'h.npz'}")
    assert hot.kind == "classification"
    assert hot.num_outputs == 3
    assert np.array_equal(hot.test.y, y[:6] - 1)
    multi = (np.random.default_rng(1).random((30, 4)) > 0.5).astype(np.float32)
    np.savez(tmp_path / "m.npz", x_train=x, y_train=multi, x_test=x[:6], y_test=multi[:6])
    assert load_task(f"npz:{tmp_path / 'm.npz'}").kind == "multilabel"
