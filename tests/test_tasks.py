import numpy as np
import pytest

from orca_ray.tasks import Split, Task, TaskDataError, available_tasks, carve_validation, load_task
from orca_ray.tasks.synthetic import synthetic_darcy


@pytest.mark.parametrize(
    ("name", "shape", "classes"),
    [
        ("digits", (1, 8, 8), 10),
        ("basicmotions", (6, 100), 4),
        ("gunpoint", (1, 150), 2),
        ("osuleaf", (1, 427), 6),
        ("italypowerdemand-pooled", (1, 24), 2),
    ],
)
def test_bundled_real_tasks(name, shape, classes):
    task = load_task(name, seed=3)
    assert task.input_shape == shape
    assert task.num_outputs == classes
    assert task.kind == "classification"
    assert task.train.x.dtype == np.float32
    assert task.train.y.dtype == np.int64
    assert set(np.unique(task.train.y)) == set(range(classes))
    # the validation split is carved from train with the seed: disjoint, and the same for the same seed
    again = load_task(name, seed=3)
    assert np.array_equal(task.val.x, again.val.x)
    assert not np.array_equal(load_task(name, seed=4).val.x, task.val.x)
    rows = {r.tobytes() for r in task.train.x}
    assert not any(r.tobytes() in rows for r in task.val.x)


@pytest.mark.parametrize(
    ("name", "modality", "kind", "shape", "outputs", "metric"),
    [
        ("synthetic-cifar100", "2d", "classification", (3, 32, 32), 100, "error"),
        ("synthetic-ninapro", "2d", "classification", (1, 16, 52), 18, "error"),
        ("synthetic-darcy", "2d", "regression", (3, 85, 85), 1, "rel-l2"),
        ("synthetic-satellite", "1d", "classification", (1, 46), 24, "error"),
        ("synthetic-deepsea", "1d", "multilabel", (4, 1000), 36, "1-auroc"),
        ("synthetic-ecg", "1d", "classification", (1, 1000), 4, "1-macro-f1"),
    ],
)
def test_synthetic_nb360_shapes(name, modality, kind, shape, outputs, metric):
    task = load_task(name, seed=1)
    assert (task.modality, task.kind, task.input_shape, task.num_outputs, task.metric) == (
        modality,
        kind,
        shape,
        outputs,
        metric,
    )
    assert np.array_equal(load_task(name, seed=1).train.x, task.train.x)  # seeded


def test_darcy_targets_normalised_and_decodable():
    task = synthetic_darcy(seed=0)
    assert task.output_shape == (85, 85)
    assert task.y_normalizer is not None
    assert abs(float(task.train.y.mean())) < 0.2
    raw = task.y_normalizer.decode(task.test.y)
    assert np.allclose(task.y_normalizer.encode(raw), task.test.y, atol=1e-5)


def test_ecg_groups_do_not_straddle_splits():
    task = load_task("synthetic-ecg", seed=0)
    assert not set(task.train.groups) & set(task.val.groups)
    assert not set(task.train.groups) & set(task.test.groups)


def test_registry_lists_everything():
    names = {t.name for t in available_tasks()}
    assert {"digits", "basicmotions", "synthetic-darcy", "npz"} <= names
    with pytest.raises(KeyError, match="unknown task 'nope'"):
        load_task("nope")


def _save(tmp_path, **arrays):
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    return f"npz:{path}"


def test_npz_loader_kinds(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 2, 30)).astype(np.float32)
    cls = load_task(
        _save(tmp_path, x_train=x, y_train=np.arange(60) % 3, x_test=x[:10], y_test=np.arange(10) % 3)
    )
    assert cls.kind == "classification"
    assert cls.num_outputs == 3
    assert cls.modality == "1d"
    multi = load_task(
        _save(
            tmp_path,
            x_train=x,
            y_train=(rng.random((60, 5)) > 0.5).astype(np.float32),
            x_test=x[:10],
            y_test=np.zeros((10, 5), np.float32),
        )
    )
    assert multi.kind == "multilabel"
    assert multi.num_outputs == 5
    img = rng.standard_normal((40, 1, 12, 12)).astype(np.float32)
    reg = load_task(_save(tmp_path, x_train=img, y_train=img[:, 0] * 2, x_test=img[:5], y_test=img[:5, 0]))
    assert reg.kind == "regression"
    assert reg.output_shape == (12, 12)
    assert reg.modality == "2d"


@pytest.mark.parametrize(
    ("arrays", "field", "problem"),
    [
        ({"x_train": np.zeros((20, 2, 2, 2, 2))}, "x_train", "expected"),
        ({"x_train": np.full((20, 1, 8), np.nan, np.float32)}, "train.x", "NaN"),
        ({"y_test": np.array([0, 1, -1, 0])}, "y_test", "label '-1' never occurs in training"),
        ({"y_train": np.zeros(19, int)}, "y_train", "19 rows"),
        ({"x_test": np.zeros((4, 1, 9), np.float32)}, "test.x", "sample shape"),
    ],
)
def test_npz_bad_input_names_file_and_field(tmp_path, arrays, field, problem):
    base = {
        "x_train": np.random.default_rng(0).standard_normal((20, 1, 8)).astype(np.float32),
        "y_train": np.arange(20) % 2,
        "x_test": np.zeros((4, 1, 8), np.float32),
        "y_test": np.zeros(4, int),
    }
    base.update(arrays)
    name = _save(tmp_path, **base)
    with pytest.raises(TaskDataError) as err:
        load_task(name, kind="classification")
    assert "data.npz" in str(err.value)
    assert field in str(err.value)
    assert problem in str(err.value)


def test_npz_missing_field_and_file(tmp_path):
    with pytest.raises(TaskDataError, match="missing field"):
        load_task(_save(tmp_path, x_train=np.zeros((4, 1, 3)), y_train=np.zeros(4, int)))
    with pytest.raises(TaskDataError, match="no such file"):
        load_task(f"npz:{tmp_path}/absent.npz")


def test_empty_class_in_train_is_an_error():
    x = np.zeros((6, 1, 4), np.float32)
    with pytest.raises(TaskDataError, match=r"class\(es\) \[2\] have no training sample"):
        Task(
            name="t",
            modality="1d",
            kind="classification",
            input_shape=(1, 4),
            num_outputs=3,
            train=Split(x, np.array([0, 1, 0, 1, 0, 1])),
            val=Split(x, np.zeros(6, np.int64)),
            test=Split(x, np.zeros(6, np.int64)),
            source="unit-test",
        )


def test_carve_validation_keeps_every_class():
    y = np.array([0] * 20 + [1] * 2 + [2])
    train, val = carve_validation(Split(np.zeros((23, 1, 2), np.float32), y), 0.2, seed=0)
    assert set(train.y) == {0, 1, 2}
    assert len(train) + len(val) == 23


def test_pooled_italypowerdemand_keeps_a_fixed_test_split():
    """UCR's train (67) and test (1,029) pooled; a stratified 30% test split fixed for every seed, and a
    validation split large enough to select on, carved from the rest with the seed."""
    a, b = (
        load_task("italypowerdemand-pooled", seed=0, val_fraction=0.25),
        load_task("italypowerdemand-pooled", seed=1, val_fraction=0.25),
    )
    assert len(a.train) + len(a.val) + len(a.test) == 1096
    assert len(a.test) == 329
    assert len(a.val) == 192
    assert np.array_equal(a.test.x, b.test.x)
    assert not np.array_equal(a.val.x, b.val.x)
    test_rows = {r.tobytes() for r in a.test.x}
    assert not any(r.tobytes() in test_rows for r in np.concatenate([a.train.x, a.val.x]))
    assert abs(a.test.y.mean() - 0.5) < 0.01  # stratified (513 / 516 + 34 / 33 per class)
