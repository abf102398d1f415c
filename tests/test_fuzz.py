"""A bounded property-based corpus over the untrusted readers (hypothesis): the restricted unpickler, the
npy/npz readers, the UCR and image-folder readers and the MANIFEST parser. Whatever the bytes, each reader
returns or raises its own one-line error -- never another exception, a crash or an allocation beyond what the
input declares (tracemalloc's peak is bounded). Examples per reader are capped so the file runs in seconds."""

from __future__ import annotations

import io
import pickle
import tempfile
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from orca_ray import untrusted  # noqa: E402
from orca_ray.tasks import TaskDataError, load_task  # noqa: E402
from orca_ray.tasks.nb360 import staging  # noqa: E402

FUZZ = settings(max_examples=80, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
PEAK = 64 << 20  # bytes any single example may allocate (inputs here are a few kilobytes)

SEEDS = [
    pickle.dumps(obj, protocol=p)
    for p in (2, 4, 5)
    for obj in (
        {"data": np.arange(12, dtype=np.uint8).reshape(3, 4), "labels": [1, 2, 3]},
        {
            "data": np.array(["a", "bc"]),
            "x": np.float32(1.5),
            "o": np.array([np.arange(3), None], dtype=object),
        },
    )
]


def bounded(fn, *args):
    """Run fn, return (result or exception, peak bytes allocated)."""
    tracemalloc.start()
    try:
        try:
            out = fn(*args)
        except Exception as e:  # the property checks its type
            out = e
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def mutated(seeds):
    """A seed with a few bytes flipped, inserted or cut: close enough to valid that parsing gets deep."""
    return st.tuples(
        st.sampled_from(seeds), st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=6)
    ).map(_apply)


def _apply(args):
    data, edits = bytearray(args[0]), args[1]
    for pos, val in edits:
        pos %= max(1, len(data))
        if val % 3 == 0:
            data[pos] = val
        elif val % 3 == 1:
            data.insert(pos, val)
        else:
            del data[pos : pos + val % 7]
    return bytes(data)


@FUZZ
@given(st.one_of(mutated(SEEDS), st.binary(max_size=300)))
def test_restricted_unpickler(data):
    out, peak = bounded(untrusted.load_pickle, io.BytesIO(data))
    assert not isinstance(out, Exception) or isinstance(out, pickle.UnpicklingError), repr(out)
    assert "\n" not in str(out) if isinstance(out, Exception) else True
    assert peak < PEAK


def _npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=True)
    return buf.getvalue()


NPY_SEEDS = [
    _npy_bytes(np.arange(24, dtype=np.float32).reshape(2, 3, 4)),
    _npy_bytes(np.array({"data": np.ones((2, 46)), "label": np.array([1, 2])}, dtype=object)),
]


@FUZZ
@given(mutated(NPY_SEEDS))
def test_npy_reader(data):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "x.npy"
        p.write_bytes(data)
        out, peak = bounded(untrusted.load_npy, p)
    ok = (untrusted.UntrustedDataError, pickle.UnpicklingError)
    assert not isinstance(out, Exception) or isinstance(out, ok), repr(out)
    assert peak < PEAK


def _npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


NPZ_SEEDS = [
    _npz_bytes(
        x_train=np.zeros((6, 1, 8), np.float32),
        y_train=np.arange(6) % 2,
        x_test=np.zeros((4, 1, 8), np.float32),
        y_test=np.arange(4) % 2,
    )
]


@FUZZ
@given(mutated(NPZ_SEEDS))
def test_npz_task_reader(data):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "x.npz"
        p.write_bytes(data)
        out, peak = bounded(lambda: load_task(f"npz:{p}"))
    assert not isinstance(out, Exception) or isinstance(out, TaskDataError), repr(out)
    assert peak < PEAK


@FUZZ
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["x_train.npy", "y_train.npy", "x_test", "a/b.npy", "y_test.npy"]),
            mutated([_npy_bytes(np.zeros((3, 1, 4), np.float32)), _npy_bytes(np.arange(3))]),
        ),
        max_size=5,
    )
)
def test_npz_members(members):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members:
            zf.writestr(name, data)
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "x.npz"
        p.write_bytes(buf.getvalue())
        out, peak = bounded(untrusted.read_npz, p)
    assert not isinstance(out, Exception) or isinstance(out, untrusted.UntrustedDataError), repr(out)
    assert peak < PEAK


TS = "@problemName x\n@classLabel true a b\n@data\n1,2,3:4,5,6:a\n1,2:3,4,5:b\n2,3,4:5,6,7:a\n1,1,1:2,2,2:b\n"
TSV = "1\t1.0\t2.0\t3.0\n2\t4.0\t5.0\t6.0\n1\t1.5\t2.5\n2\t3\t2\t1\n"


@FUZZ
@given(
    st.sampled_from([(".ts", TS), (".tsv", TSV)]),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=8),
)
def test_ucr_reader(kind, edits):
    suffix, text = kind
    data = _apply((text.encode(), edits))
    with tempfile.TemporaryDirectory() as d:
        for split in ("TRAIN", "TEST"):
            (Path(d) / f"X_{split}{suffix}").write_bytes(data)
        out, peak = bounded(lambda: load_task(f"ucr:{d}"))
    assert not isinstance(out, Exception) or isinstance(out, TaskDataError), repr(out)
    assert peak < PEAK


def _png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (6, 5), (10, 200, 30)).save(buf, format="PNG")
    return buf.getvalue()


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(mutated([_png()]))
def test_imagefolder_reader(data):
    with tempfile.TemporaryDirectory() as d:
        for split in ("train", "test"):
            for c in ("a", "b"):
                (Path(d) / split / c).mkdir(parents=True)
                (Path(d) / split / c / "0.png").write_bytes(_png())
        (Path(d) / "train" / "a" / "1.png").write_bytes(data)
        out, peak = bounded(lambda: load_task(f"imagefolder:{d}"))
    assert not isinstance(out, Exception) or isinstance(out, TaskDataError), repr(out)
    assert peak < PEAK


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=12), kids, max_size=4),
    max_leaves=20,
)
ENTRY = st.fixed_dictionaries(
    {"size": st.integers(-2, 10) | JSON, "sha256": st.sampled_from(["0" * 64, "z" * 64, "ab"]) | JSON}
)


@FUZZ
@given(
    st.one_of(
        JSON,
        st.fixed_dictionaries({"files": st.dictionaries(st.text(max_size=30), ENTRY | JSON, max_size=4)}),
    )
)
def test_manifest_parser(doc):
    try:
        files = staging.parse_manifest(doc, "MANIFEST.json")
    except staging.StageError as e:
        files, error = {}, str(e)
    else:
        error = ""
    assert "\n" not in error
    for rel in files:
        assert ".." not in rel.split("/")
        assert not rel.startswith("/")
