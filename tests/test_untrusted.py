"""orca_ray.untrusted: data pickles admit numpy arrays and plain containers only; driver state in the sweep
storage is restored only when the head wrote it. Payloads here would create a canary file if they ran."""

from __future__ import annotations

import _codecs
import io
import json
import os
import pickle
import stat

import numpy as np
import pytest

from orca_ray import untrusted
from orca_ray.untrusted import UnsafePickleError, UntrustedStateError


class Payload:
    """Runs `touch <canary>` when unpickled by a plain unpickler (os.system pickles as posix.system)."""

    def __init__(self, canary):
        self.canary = str(canary)

    def __reduce__(self):
        return os.system, (f"touch {self.canary}",)


class ExecPayload(Payload):
    def __reduce__(self):
        return exec, (f"open({self.canary!r}, 'w').close()",)


def ecg_like(n=4):
    data = np.empty(n, dtype=object)
    data[:] = [np.arange(10 + i, dtype=np.int16) for i in range(n)]
    return {"data": data, "label": np.array(["N", "A", "O", "~"][:n])}


def test_plain_pickles_round_trip_in_every_protocol(tmp_path):
    d = {
        "data": np.arange(12, dtype=np.uint8).reshape(2, 6),
        "fine_labels": [3, 1],
        "batch_label": "training batch 1 of 1",
        "filenames": [b"a.png", b"b.png"],
        "scalar": np.float32(1.5),
        "nested": (None, True, 2.0, {"k": [np.int64(7)]}),
        "label": ecg_like()["label"],
    }
    for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):
        p = tmp_path / f"p{protocol}.pkl"
        p.write_bytes(pickle.dumps(d, protocol=protocol))
        got = untrusted.load_pickle(p)
        assert got.keys() == d.keys()
        np.testing.assert_array_equal(got["data"], d["data"])
        assert got["data"].dtype == np.uint8
        assert got["fine_labels"] == [3, 1]
        assert got["filenames"] == [b"a.png", b"b.png"]
        assert got["scalar"] == np.float32(1.5)
        assert got["scalar"].dtype == np.float32
        assert got["nested"] == d["nested"]
        assert got["label"].tolist() == ["N", "A", "O", "~"]


def test_python2_style_pickle_with_latin1(tmp_path):
    # protocol 2 as Python 2 wrote CIFAR: bytes in the array state are latin-1 text after decoding
    p = tmp_path / "data_batch_1"
    x = np.arange(3072 * 2, dtype=np.int64).astype(np.uint8).reshape(2, 3072)
    p.write_bytes(pickle.dumps({"data": x, "labels": [1, 2]}, protocol=2))
    got = untrusted.load_pickle(p, encoding="latin1")
    np.testing.assert_array_equal(got["data"], x)


def test_object_array_of_recordings_round_trips(tmp_path):
    d = ecg_like()
    p = tmp_path / "challenge2017.pkl"
    p.write_bytes(pickle.dumps(d))
    got = untrusted.load_pickle(p)
    assert got["data"].dtype == object
    assert len(got["data"]) == 4
    for a, b in zip(got["data"], d["data"]):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == np.int16
    assert got["label"].tolist() == ["N", "A", "O", "~"]


@pytest.mark.parametrize("payload_cls", [Payload, ExecPayload])
@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_payload_is_refused_naming_file_and_global(tmp_path, payload_cls, protocol):
    canary = tmp_path / "canary"
    p = tmp_path / "evil.pkl"
    p.write_bytes(pickle.dumps({"data": np.zeros(3), "label": [payload_cls(canary)]}, protocol=protocol))
    with pytest.raises(UnsafePickleError) as e:
        untrusted.load_pickle(p)
    # protocol 2 writes Python 2 module names (fix_imports): the message names what the file says
    name = (
        "posix.system"
        if payload_cls is Payload
        else ("__builtin__" if protocol < 3 else "builtins") + ".exec"
    )
    assert str(e.value) == (
        f"refusing to unpickle {p}: it references {name}; only numpy arrays and plain containers are allowed"
    )
    assert not canary.exists()


def test_payload_inside_an_object_array_is_refused(tmp_path):
    canary = tmp_path / "canary"
    data = np.empty(2, dtype=object)
    data[:] = [np.arange(3), Payload(canary)]
    p = tmp_path / "challenge2017.pkl"
    p.write_bytes(pickle.dumps({"data": data, "label": np.array(["N", "A"])}))
    with pytest.raises(UnsafePickleError, match=r"posix\.system"):
        untrusted.load_pickle(p)
    assert not canary.exists()


def test_other_numpy_and_library_globals_are_refused(tmp_path):
    # a real numpy function that could load a pickle itself, and a class with side effects on construction
    for obj, name in ((np.load, "numpy.load"), (io.FileIO, "_io.FileIO")):
        with pytest.raises(UnsafePickleError, match=name.replace(".", r"\.")):
            untrusted.load_pickle(io.BytesIO(pickle.dumps(obj)))


def test_codecs_encode_admits_latin1_only():
    class OtherCodec:
        def __reduce__(self):
            return _codecs.encode, (b"x" * 10, "zlib_codec")

    with pytest.raises(UnsafePickleError, match="zlib_codec"):
        untrusted.load_pickle(io.BytesIO(pickle.dumps(OtherCodec(), protocol=2)))
    assert untrusted.load_pickle(io.BytesIO(pickle.dumps(b"\xff\x00", protocol=2))) == b"\xff\x00"


def test_load_npy_plain_arrays_memory_map_and_object_arrays_are_restricted(tmp_path):
    plain = tmp_path / "ninapro_train.npy"
    np.save(plain, np.arange(6.0).reshape(2, 3))
    m = untrusted.load_npy(plain, mmap_mode="r")
    assert isinstance(m, np.memmap)
    assert m.tolist() == [[0, 1, 2], [3, 4, 5]]

    sat = tmp_path / "satellite_train.npy"
    np.save(sat, {"data": np.ones((2, 46)), "label": np.array([1, 24])}, allow_pickle=True)
    d = untrusted.load_npy(sat)[()]
    assert d["data"].shape == (2, 46)
    assert d["label"].tolist() == [1, 24]

    canary = tmp_path / "canary"
    evil = tmp_path / "satellite_test.npy"
    np.save(evil, {"data": np.ones((2, 46)), "label": Payload(canary)}, allow_pickle=True)
    with pytest.raises(UnsafePickleError) as e:
        untrusted.load_npy(evil)
    assert str(e.value).startswith(f"refusing to unpickle {evil}: it references posix.system;")
    assert not canary.exists()


def test_load_npy_rejects_non_npy(tmp_path):
    p = tmp_path / "x.npy"
    p.write_bytes(b"not numpy")
    with pytest.raises(untrusted.UntrustedDataError, match=r"x\.npy: not a readable \.npy array"):
        untrusted.load_npy(p)


# ---- driver state ------------------------------------------------------------------------------------------------
def make_experiment(root):
    """A Tune experiment folder's shape: driver state at the top and per trial, checkpoints from workers."""
    exp = root / "sweep"
    (exp / "trial_a" / "checkpoint_000001").mkdir(parents=True)
    (exp / "tuner.pkl").write_bytes(pickle.dumps({"tuner": 1}))
    (exp / "experiment_state-2026.json").write_text(json.dumps({"trial_data": []}))
    (exp / "callback-states-2026.pkl").write_bytes(pickle.dumps({0: "sink"}))
    (exp / ".validate_storage_marker").write_bytes(b"")
    (exp / "trial_a" / "error.pkl").write_bytes(pickle.dumps("err"))
    (exp / "trial_a" / "result.json").write_text("{}\n")
    (exp / "trial_a" / "checkpoint_000001" / "checkpoint.pt").write_bytes(b"weights")
    (exp / "parquet" / "sweep=s").mkdir(parents=True)
    (exp / "parquet" / "sweep=s" / "t.parquet").write_bytes(b"PAR1")
    return exp


@pytest.fixture
def ledgers(tmp_path, monkeypatch):
    d = tmp_path / "head-state"
    monkeypatch.setenv(untrusted.LEDGER_ENV, str(d))
    return d


def test_driver_state_is_the_files_tune_unpickles(tmp_path):
    exp = make_experiment(tmp_path)
    assert sorted(untrusted.driver_state_digests(str(exp))) == [
        "callback-states-2026.pkl",
        "experiment_state-2026.json",
        "trial_a/error.pkl",
        "tuner.pkl",
    ]
    assert untrusted.driver_state_digests(str(tmp_path / "absent")) == {}


def restored(exp, **kw):
    """What Tune reads through the filesystem `restore_filesystem` gives it: every driver-state file."""
    fs, path = untrusted.restore_filesystem(str(exp), **kw)
    return {
        rel: fs.open_input_stream(f"{path}/{rel}").read()
        for rel in untrusted.driver_state_digests(path, filesystem=fs)
    }


def test_restore_reads_the_heads_private_copy_never_the_storage(tmp_path, ledgers):
    exp = make_experiment(tmp_path)
    own = {rel: (exp / rel).read_bytes() for rel in untrusted.driver_state_digests(str(exp))}
    untrusted.record_driver_state(str(exp))
    ledger, copy = untrusted.ledger_path(str(exp)), untrusted.private_copy(str(exp))
    assert ledger.parent == ledgers
    assert stat.S_IMODE(ledger.stat().st_mode) == 0o600
    assert stat.S_IMODE(copy.stat().st_mode) == 0o700
    assert restored(exp) == own

    # anything planted or replaced in the storage -- before or after any check -- is never what Tune reads
    canary = tmp_path / "canary"
    for rel in ("tuner.pkl", "trial_a/error.pkl", "searcher-state-2099.pkl", "trial_b/params.pkl"):
        target = exp / rel
        target.parent.mkdir(exist_ok=True)
        target.write_bytes(pickle.dumps(Payload(canary)))
    fs, path = untrusted.restore_filesystem(str(exp))
    (exp / "experiment_state-2026.json").write_bytes(pickle.dumps(Payload(canary)))  # after the check
    got = {
        rel: fs.open_input_stream(f"{path}/{rel}").read()
        for rel in untrusted.driver_state_digests(path, filesystem=fs)
    }
    assert got == own
    import pyarrow.fs as pafs

    listed = {i.base_name for i in fs.get_file_info(pafs.FileSelector(path))}
    assert "searcher-state-2099.pkl" not in listed
    assert "tuner.pkl" in listed
    with pytest.raises(FileNotFoundError):
        fs.open_input_stream(f"{path}/searcher-state-2099.pkl")
    # checkpoints and results still come from the storage
    assert fs.open_input_stream(f"{path}/trial_a/result.json").read() == b"{}\n"
    assert not canary.exists()


def test_only_the_current_version_is_restored(tmp_path, ledgers):
    exp = make_experiment(tmp_path)
    untrusted.record_driver_state(str(exp))
    (exp / "experiment_state-2026.json").write_text(json.dumps({"trial_data": [1]}))
    untrusted.record_driver_state(str(exp), only=["experiment_state-2026.json"])
    (exp / "experiment_state-2026.json").write_text(
        json.dumps({"trial_data": []})
    )  # an older version replayed
    assert restored(exp)["experiment_state-2026.json"] == json.dumps({"trial_data": [1]}).encode()


def test_a_tampered_private_copy_is_refused(tmp_path, ledgers):
    exp = make_experiment(tmp_path)
    untrusted.record_driver_state(str(exp))
    (untrusted.private_copy(str(exp)) / "tuner.pkl").write_bytes(b"other")
    with pytest.raises(UntrustedStateError, match=r"tuner\.pkl differs from its ledger"):
        untrusted.restore_filesystem(str(exp))


def test_staging_under_a_world_writable_folder_is_secured_before_it_is_read(tmp_path, ledgers):
    """Ray makes its session folder mode 0777: another user could rename the staging folder and plant files
    in its place. The recorder sets the sticky bit on such folders of its own, and the ledger no longer trusts
    the staging folder on resume."""
    session = tmp_path / "session"
    staging = session / "artifacts" / "exp" / "driver_artifacts"
    staging.mkdir(parents=True)
    os.chmod(session, 0o777)
    (staging / "tuner.pkl").write_bytes(pickle.dumps({"tuner": 1}))
    exp = make_experiment(tmp_path)
    untrusted.record_driver_state(str(exp), source=str(staging), staging=str(staging))
    assert session.stat().st_mode & stat.S_ISVTX
    (staging / "evil.pkl").symlink_to(tmp_path / "elsewhere.pkl")
    (tmp_path / "elsewhere.pkl").write_bytes(b"x")
    with pytest.raises(OSError, match=r"evil\.pkl"):  # a symlink in the staging folder is never followed
        untrusted.record_driver_state(str(exp), source=str(staging))
    (staging / "evil.pkl").unlink()
    # the staging folder no longer vouches for anything at resume: the private copy does
    (staging / "callback-states-2026.pkl").write_bytes(pickle.dumps(Payload(tmp_path / "canary")))
    assert restored(exp)["tuner.pkl"] == pickle.dumps({"tuner": 1})
    assert "callback-states-2026.pkl" not in untrusted.verified_copy(str(exp))


def test_no_ledger_is_refused_and_the_override_copies_once(tmp_path, ledgers):
    exp = make_experiment(tmp_path)
    with pytest.raises(UntrustedStateError) as e:
        untrusted.restore_filesystem(str(exp))
    assert "has no record of writing its driver state" in str(e.value)
    assert "--trust-storage" in str(e.value)
    own = (exp / "tuner.pkl").read_bytes()
    untrusted.restore_filesystem(str(exp), trust=True)
    (exp / "tuner.pkl").write_bytes(b"later")
    assert restored(exp)["tuner.pkl"] == own  # recorded by the override, once


def test_ledger_of_another_experiment_is_not_used(tmp_path, ledgers):
    a, b = make_experiment(tmp_path / "a"), make_experiment(tmp_path / "b")
    untrusted.record_driver_state(str(a))
    with pytest.raises(UntrustedStateError, match="no record"):
        untrusted.restore_filesystem(str(b))


# ---- weights --------------------------------------------------------------------------------------------------
def test_local_weights_are_loaded_weights_only(tmp_path):
    """`timm:<arch>@file` and a local model folder with a pickled `.bin`: both loaders refuse a payload
    (timm >= 1.0.26 and transformers load torch files with weights_only=True)."""
    torch = pytest.importorskip("torch")
    from orca_ray.bodies import load_body

    canary = tmp_path / "canary"
    torch.save({"patch_embed.proj.weight": Payload(canary)}, tmp_path / "evil.pth")
    with pytest.raises(Exception, match=r"posix\.system|Weights only load failed|weights_only"):
        load_body(f"timm:test_vit@{tmp_path}/evil.pth")
    folder = tmp_path / "bert"
    folder.mkdir()
    config = {"model_type": "bert", "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2}
    config |= {"intermediate_size": 16, "vocab_size": 30, "max_position_embeddings": 16}
    (folder / "config.json").write_text(json.dumps(config))
    torch.save({"embeddings.word_embeddings.weight": Payload(canary)}, folder / "pytorch_model.bin")
    with pytest.raises(Exception, match=r"posix\.system|Weights only load failed|weights_only"):
        load_body(str(folder))
    assert not canary.exists()


def test_restore_check_on_an_object_store(tmp_path, ledgers, monkeypatch):
    """The same check against S3 (moto on loopback): implicit directories, a URI as the ledger's key."""
    pytest.importorskip("moto")
    import pyarrow.fs as pafs
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        for k, v in {
            "AWS_ACCESS_KEY_ID": "t",
            "AWS_SECRET_ACCESS_KEY": "t",
            "AWS_REGION": "us-east-1",
        }.items():
            monkeypatch.setenv(k, v)
        uri = f"s3://sweeps/orca/sweep-1?endpoint_override={host}:{port}&scheme=http"
        fs = pafs.S3FileSystem(endpoint_override=f"{host}:{port}", scheme="http", allow_bucket_creation=True)
        fs.create_dir("sweeps")
        local = make_experiment(tmp_path)
        pafs.copy_files(str(local), "sweeps/orca/sweep-1", pafs.LocalFileSystem(), fs)
        untrusted.record_driver_state(uri)
        with fs.open_output_stream("sweeps/orca/sweep-1/trial_a/error.pkl") as f:
            f.write(pickle.dumps(Payload(tmp_path / "canary")))
        vfs, path = untrusted.restore_filesystem(uri)
        assert path == "sweeps/orca/sweep-1"
        assert vfs.open_input_stream(f"{path}/trial_a/error.pkl").read() == pickle.dumps("err")
        assert vfs.open_input_stream(f"{path}/trial_a/result.json").read() == b"{}\n"
    finally:
        server.stop()
