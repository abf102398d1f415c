"""The second security pass (issue 19): each attack that once worked, reproduced against what landed. Every one
must now fail with one line, run no code, write nothing outside its folder and allocate next to nothing."""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
import tracemalloc
import zipfile

import numpy as np
import pytest

from orca_ray import untrusted
from orca_ray.tasks import TaskDataError, load_task
from orca_ray.tasks.nb360 import staging

_core = "numpy._core.multiarray"


class Reduce:
    """Pickles as `fn(*args)` with an optional BUILD `state`."""

    def __init__(self, fn, args, state=None):
        self.fn, self.args, self.state = fn, args, state

    def __reduce__(self):
        return (self.fn, self.args) if self.state is None else (self.fn, self.args, self.state)


def forged_array(dtype_state, data=b"A" * 8):
    """A float64 array whose dtype carries a forged state (object flags: numpy would read bytes as pointers)."""
    from numpy._core.multiarray import _reconstruct

    dtype = Reduce(np.dtype, ("f8", False, True), dtype_state)
    return Reduce(_reconstruct, (np.ndarray, (0,), b"b"), (1, (1,), dtype, False, data))


# ---- C: the restricted unpickler ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "state",
    [
        (3, "|", None, None, None, 8, 8, 63),  # object flags on a float
        (3, "|", None, ("p",), {"p": (np.dtype("O"), 0)}, 8, 8, 63),  # an object field at offset 0
    ],
)
def test_forged_dtype_state_is_refused(state):
    data = pickle.dumps({"data": forged_array(state)}, protocol=2)
    with pytest.raises(untrusted.UnsafePickleError, match="forged state"):
        untrusted.load_pickle(io.BytesIO(data))


def test_structured_void_and_datetime_dtypes_are_refused():
    for spec in ("V8", "M8[s]", [("a", "f8")]):
        data = pickle.dumps(np.zeros(2, dtype=spec))
        with pytest.raises(untrusted.UnsafePickleError, match="builds"):
            untrusted.load_pickle(io.BytesIO(data))


@pytest.mark.slow  # a fresh interpreter (the crash would take the test process with it)
def test_forged_satellite_npy_is_one_line_from_data_check_not_a_segfault(tmp_path):
    root = tmp_path / "nb360"
    (root / "satellite").mkdir(parents=True)
    for split in ("train", "test"):
        with open(root / "satellite" / f"satellite_{split}.npy", "wb") as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "|O", "fortran_order": False, "shape": ()})
            f.write(
                pickle.dumps({"data": forged_array((3, "|", None, None, None, 8, 8, 63)), "label": [1]}, 2)
            )
    r = subprocess.run(
        [sys.executable, "-m", "orca_ray.data", "check", str(root), "--tasks", "satellite", "--no-hash"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 1, r.stderr  # not -11 (SIGSEGV)
    assert "forged state" in r.stdout
    assert "Traceback" not in r.stdout + r.stderr


@pytest.mark.parametrize(
    "payload",
    [
        # 42 bytes asking numpy for a 1 GiB array: _reconstruct with a real shape, ndarray.__new__ directly
        lambda: Reduce(
            __import__(_core, fromlist=["_reconstruct"])._reconstruct, (np.ndarray, (2**30,), b"b")
        ),
        lambda: Reduce(np.ndarray, ((2**30,),)),
        # an array state declaring far more data than it holds
        lambda: Reduce(
            __import__(_core, fromlist=["_reconstruct"])._reconstruct,
            (np.ndarray, (0,), b"b"),
            (1, (2**30,), np.dtype("u1"), False, b"x"),
        ),
    ],
)
def test_small_pickles_cannot_allocate_much(payload):
    data = pickle.dumps(payload(), protocol=2)
    assert len(data) < 300
    tracemalloc.start()
    try:
        with pytest.raises(pickle.UnpicklingError):
            untrusted.load_pickle(io.BytesIO(data))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, peak


# ---- the npz/npy readers: declared sizes bound memory ------------------------------------------------------------
def _npz(path, members: dict[str, bytes]):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def _npy(a=None, *, header_shape=None, dtype="<f4") -> bytes:
    buf = io.BytesIO()
    shape = header_shape if header_shape is not None else a.shape
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    if a is not None:
        buf.write(a.tobytes())
    return buf.getvalue()


def good_members(n=8):
    x, y = np.zeros((n, 1, 4), np.float32), np.arange(n) % 2
    return {
        f"{k}.npy": _npy(v, dtype=v.dtype.str)
        for k, v in {"x_train": x, "y_train": y, "x_test": x, "y_test": y}.items()
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"x_train.npy": _npy(header_shape=(10**9, 1, 1000))}, r"declares \(1000000000, 1, 1000\)"),
        ({"x_train": _npy(np.zeros((8, 1, 4), np.float32))}, r"member 'x_train' is not an array"),
        (
            {"x_train.npy": _npy(np.zeros(8, dtype=[("a", "<f4")]), dtype=[("a", "<f4")])},
            r"not plain numbers",
        ),
        ({"x_train.npy": _npy(np.zeros((0, 1, 4), np.float32))}, r"field x_train has no samples"),
        ({"x_train.npy": _npy(np.zeros((8, 1, 0), np.float32))}, r"empty axis"),
        (
            {"x_train.npy": _npy(np.zeros((8, 1, 4), np.complex64), dtype="<c8")},
            r"inputs must be real numbers",
        ),
    ],
)
def test_bad_npz_is_one_line_before_memory_is_spent(tmp_path, monkeypatch, change, message):
    monkeypatch.setenv(untrusted.arrays.LIMIT_ENV, str(1 << 30))
    members = good_members()
    if "x_train" in change:
        del members["x_train.npy"]
    members.update(change)
    path = tmp_path / "d.npz"
    _npz(path, members)
    tracemalloc.start()
    try:
        with pytest.raises(TaskDataError, match=message) as e:
            load_task(f"npz:{path}")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "\n" not in str(e.value)
    assert peak < 64 << 20, peak


def test_npz_declaring_more_than_the_memory_limit_is_refused_unread(tmp_path, monkeypatch):
    path = tmp_path / "d.npz"
    _npz(path, good_members())
    monkeypatch.setenv(untrusted.arrays.LIMIT_ENV, "200")
    with pytest.raises(
        TaskDataError, match=r"d\.npz: its arrays declare \d+ bytes uncompressed, more than this"
    ):
        load_task(f"npz:{path}")


def test_npz_array_stored_twice_is_ambiguous(tmp_path):
    path = tmp_path / "d.npz"
    members = good_members()
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        with pytest.warns(UserWarning, match="Duplicate name"):
            zf.writestr("x_train.npy", _npy(np.ones((8, 1, 4), np.float32)))
    with pytest.raises(TaskDataError, match="field x_train is stored twice"):
        load_task(f"npz:{path}")


def test_npy_header_larger_than_the_file_is_refused(tmp_path):
    p = tmp_path / "ninapro_train.npy"
    p.write_bytes(_npy(header_shape=(10**9, 52, 16)))
    with pytest.raises(untrusted.UntrustedDataError, match="truncated or forged"):
        untrusted.load_npy(p)


# ---- B: fetch writes only inside DEST ----------------------------------------------------------------------------
def _staged(tmp_path, rel: str, data=b"planted") -> tuple[str, str]:
    src = tmp_path / "staged"
    (src / os.path.dirname(rel.lstrip("/"))).mkdir(parents=True, exist_ok=True)
    import hashlib

    entry = {"task": "ecg", "size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "md5": ""}
    (src / "challenge2017.pkl").write_bytes(data)
    doc = {"format": staging.MANIFEST_FORMAT, "files": {rel: entry}}
    (src / staging.MANIFEST).write_text(json.dumps(doc))
    return str(src), str(tmp_path / "dest")


@pytest.mark.parametrize("rel", ["../outside.pth", "ecg/../../outside.pth", "/tmp/outside.pth", "a\\..\\b"])
def test_fetch_refuses_relpaths_that_leave_dest(tmp_path, rel, capsys):
    from orca_ray.data import main

    src, dest = _staged(tmp_path, "challenge2017.pkl")
    doc = json.loads((tmp_path / "staged" / staging.MANIFEST).read_text())
    doc["files"] = {rel: doc["files"]["challenge2017.pkl"]}
    (tmp_path / "staged" / staging.MANIFEST).write_text(json.dumps(doc))
    assert main(["fetch", src, dest, "--tasks", "ecg"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "refusing" in err, err
    assert not (tmp_path / "outside.pth").exists()
    assert not os.path.exists("/tmp/outside.pth")


def test_fetch_refuses_a_symlink_in_dest(tmp_path):
    src, dest = _staged(tmp_path, "ecg/challenge2017.pkl")
    os.replace(tmp_path / "staged" / "challenge2017.pkl", tmp_path / "staged" / "ecg" / "challenge2017.pkl")
    elsewhere = tmp_path / "site-packages"
    elsewhere.mkdir()
    os.makedirs(dest)
    os.symlink(elsewhere, os.path.join(dest, "ecg"))
    with pytest.raises(staging.StageError, match="symlink"):
        staging.fetch(src, dest, ["ecg"], log=lambda _: None)
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize("files", [[], {"x": "not an entry"}, {"x": {"size": -1, "sha256": "0" * 64}}])
def test_malformed_manifest_is_one_line(tmp_path, files):
    (tmp_path / staging.MANIFEST).write_text(json.dumps({"files": files}))
    with pytest.raises(staging.StageError, match=r"MANIFEST\.json"):
        staging.read_manifest_local(tmp_path)


# ---- D: image folders open only the formats they document, by content --------------------------------------------
def _imagefolder(tmp_path):
    from PIL import Image

    for split in ("train", "test"):
        for c in ("a", "b"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(3):
                Image.new("L", (8, 8), color=i * 40).save(tmp_path / split / c / f"{i}.png")
    return tmp_path / "train" / "a" / "0.png"


def test_postscript_named_png_never_reaches_ghostscript(tmp_path, monkeypatch):
    target = _imagefolder(tmp_path)
    canary = tmp_path / "gs-ran"
    # a fake `gs` first on PATH: PIL's EPS plugin would run it to rasterise the file
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "gs").write_text(f"#!/bin/sh\ntouch {canary}\nexit 1\n")
    (bin_dir / "gs").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    target.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n")
    with pytest.raises(TaskDataError, match=r"0\.png: not a readable image \(its content is none of png"):
        load_task(f"imagefolder:{tmp_path}")
    assert not canary.exists()


def test_ppm_content_named_png_is_refused(tmp_path):
    target = _imagefolder(tmp_path)
    target.write_bytes(b"P5 8 8 255\n" + bytes(64))
    with pytest.raises(TaskDataError, match=r"0\.png: not a readable image"):
        load_task(f"imagefolder:{tmp_path}")


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    from PIL import Image

    target = _imagefolder(tmp_path)
    Image.new("1", (20_000, 20_000)).save(target)  # 400 M pixels in a ~50 kB PNG
    assert target.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(TaskDataError, match=r"0\.png: declares .*pixels"):
            load_task(f"imagefolder:{tmp_path}")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20


# ---- the sweep CLI: flags and names are one line, exit 2 ---------------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--name", "a\nb"], "is not a sweep name"),
        (["--name", "x" * 300], "is not a sweep name"),
        (["--cpus-per-trial", "inf"], "must be a finite number"),
        (["--gpus-per-trial", "nan"], "must be a finite number"),
    ],
)
def test_bad_flags_are_one_line_and_exit_2(argv, message, capsys, tmp_path):
    from orca_ray.sweep.cli import main

    with pytest.raises(SystemExit) as e:
        main(default_name="t", description="", space=lambda a: {"task": "digits"}, argv=[*argv, "--dry-run"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1, err


def test_body_names_with_control_characters_or_huge_length_are_refused(capsys, tmp_path):
    from orca_ray.sweep.cli import main

    for body in ("minilm\nx", "b" * 5000):
        argv = ["--dry-run", "--storage", str(tmp_path / "s"), "--tasks", "digits", "--no-baselines"]
        code = main(
            default_name="t", description="", space=lambda a, b=body: {"task": a.tasks, "body": b}, argv=argv
        )
        assert code == 2
        err = capsys.readouterr().err
        assert "may not hold control characters" in err, err
        assert err.count("\n") == 1, err
    assert not (tmp_path / "s").exists()


def test_dry_run_checks_own_files_and_lists_cluster_data_as_not_staged(capsys, tmp_path):
    from orca_ray.sweep.cli import main

    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    argv = ["--dry-run", "--storage", str(tmp_path / "s"), "--tasks", f"npz:{bad}", "--no-baselines"]
    assert (
        main(default_name="t", description="", space=lambda a: {"task": a.tasks, "body": "minilm"}, argv=argv)
        == 2
    )
    assert "bad.npz: not a readable .npz file" in capsys.readouterr().err
    argv = ["--dry-run", "--storage", str(tmp_path / "s"), "--tasks", "satellite", "--no-baselines"]
    argv += ["--data-root", str(tmp_path / "absent")]
    assert (
        main(default_name="t", description="", space=lambda a: {"task": a.tasks, "body": "minilm"}, argv=argv)
        == 0
    )
    assert "satellite: not staged here" in capsys.readouterr().out
    argv[argv.index("satellite")] = "openml:31"
    assert (
        main(default_name="t", description="", space=lambda a: {"task": a.tasks, "body": "minilm"}, argv=argv)
        == 0
    )
    assert "openml:31: not staged here" in capsys.readouterr().out
    assert not (tmp_path / "s").exists()


def test_resources_no_node_can_provide_stop_the_sweep(capsys):
    from orca_ray.sweep import SweepSpec
    from orca_ray.sweep.runner import check_resources_providable

    spec = SweepSpec(
        name="r",
        space={"task": "digits", "body": "minilm"},
        storage="/tmp/x",
        gpus_per_trial=1.0,
        cpus_per_trial=1,
    )
    with pytest.raises(SystemExit) as e:
        check_resources_providable(spec, [{"CPU": 2.0, "memory": 1e9}])
    assert e.value.code == 2
    assert "no node of this Ray cluster can ever provide that" in capsys.readouterr().err
    check_resources_providable(spec, [{"CPU": 2.0}, {"CPU": 8.0, "GPU": 1.0}])  # an autoscaler node type


# ---- staged roots: a deleted MANIFEST or a forged fingerprint memo does not let a tampered file load -----------
def test_deleted_manifest_and_forged_memo_do_not_vouch_for_a_tampered_file(tmp_path, monkeypatch):
    from orca_ray import io as orca_io
    from orca_ray.tasks.nb360.files import require

    monkeypatch.setenv(orca_io.CACHE_ENV, str(tmp_path / "cache"))
    root = tmp_path / "nb360"
    (root / "ecg").mkdir(parents=True)
    path = root / "ecg" / "challenge2017.pkl"
    path.write_bytes(b"original")
    import hashlib

    sha = hashlib.sha256(b"original").hexdigest()
    doc = {"files": {"ecg/challenge2017.pkl": {"task": "ecg", "size": 8, "sha256": sha, "md5": ""}}}
    (root / staging.MANIFEST).write_text(json.dumps(doc))
    assert require(root, "ecg", "challenge2017.pkl") == path  # verified, and the root remembered as staged

    path.write_bytes(b"tampere!")  # same size: the memo's key changes with the file's ctime
    with pytest.raises(TaskDataError, match="CHECKSUM"):
        require(root, "ecg", "challenge2017.pkl")
    # a memo forged by someone who can write the cache folder is not believed
    fp = tmp_path / "cache" / orca_io.FINGERPRINT_SUBDIR
    for memo in fp.iterdir():
        if not memo.name.endswith(".lock"):
            memo.write_text(sha)
    os.chmod(fp, 0o777)
    with pytest.raises(TaskDataError, match="CHECKSUM"):
        require(root, "ecg", "challenge2017.pkl")
    (root / staging.MANIFEST).unlink()
    with pytest.raises(TaskDataError, match=r"MANIFEST\.json: missing, but this node has read"):
        require(root, "ecg", "challenge2017.pkl")
