"""Caches know their data: corrupt cache files are moved aside and rebuilt, changed data gets new keys, and a
damaged trial checkpoint falls back to the one before."""

import os

import numpy as np
import torch

from orca_ray.align import Aligner, AlignHParams, EmbedderSnapshots
from orca_ray.bodies import load_body
from orca_ray.embedders import build_embedder
from orca_ray.proxies import proxy_features

HP = AlignHParams(optimizer="adamw", lr=1e-3, batch_per_class=16)


def aligner(task, body, px, py, snapshots=None):
    torch.manual_seed(0)
    emb = build_embedder(task, body, aligned=True)
    return Aligner(emb, task, px, py, HP, seed=0, snapshots=snapshots, device="cpu")


def test_corrupt_snapshot_is_moved_aside_and_retrained_identically(tiny, tmp_path, caplog):
    task, body, px, py = tiny
    want = aligner(task, body, px, py).run(3)
    snaps = EmbedderSnapshots(tmp_path / "key")
    aligner(task, body, px, py, snaps).run(3)
    good = snaps.load(2)["embedder"]
    snaps.path(3).write_bytes(snaps.path(3).read_bytes()[:100])  # a write cut short
    snaps.path(2).write_bytes(b"garbage")
    again = aligner(task, body, px, py, snaps)
    assert again.run(3) == want  # restored from epoch 1, epochs 2 and 3 trained again, same values
    assert snaps.epochs() == [0, 1, 2, 3]
    assert all(torch.equal(v, good[k]) for k, v in snaps.load(2)["embedder"].items())
    aside = sorted(p.name for p in (tmp_path / "key").glob("*.corrupt-*"))
    assert len(aside) == 2
    assert aside[0].startswith("epoch_0002.pt.corrupt-")
    assert sum("unreadable" in r.getMessage() for r in caplog.records) == 2


def test_corrupt_proxy_features_are_rebuilt(tmp_path):
    body = load_body("tiny-text")
    x, y = (
        t.clone() for t in proxy_features("fake-text", "tiny-text", body, size=64, seed=0, cache_dir=tmp_path)
    )
    (cached,) = (tmp_path / "proxies").glob("*.safetensors")
    # a damaged file under the cache name (replaced, not rewritten in place: the tensors above map the old one)
    damaged = tmp_path / "damaged"
    damaged.write_bytes(cached.read_bytes()[:50])
    os.replace(damaged, cached)
    x2, y2 = proxy_features("fake-text", "tiny-text", body, size=64, seed=0, cache_dir=tmp_path)
    assert torch.equal(x, x2)
    assert torch.equal(y, y2)
    assert len(list((tmp_path / "proxies").glob("*.corrupt-*"))) == 1


def test_proxy_key_follows_the_proxy_files(tmp_path):
    from orca_ray.proxies import proxy_cache_key, proxy_files

    root = tmp_path / "root"
    (root / "text").mkdir(parents=True)
    np.save(root / "text" / "text_xs.npy", np.zeros((4, 8), np.float32))
    np.save(root / "text" / "text_ys.npy", np.zeros(4, np.int64))
    from orca_ray.io import content_fingerprint

    files = proxy_files("conll", root)
    assert [f.name for f in files] == ["text_xs.npy", "text_ys.npy"]
    before = proxy_cache_key("conll", "roberta-base", 4, 0, content_fingerprint(files, tmp_path))
    np.save(root / "text" / "text_ys.npy", np.ones(4, np.int64))
    os.utime(root / "text" / "text_ys.npy", ns=(5, 5))
    assert proxy_cache_key("conll", "roberta-base", 4, 0, content_fingerprint(files, tmp_path)) != before


def test_changed_data_file_gets_a_new_embedder_snapshot(tmp_path, monkeypatch):
    """Same spec `npz:PATH`, new content: the trial aligns afresh instead of reusing the old embedder."""
    from orca_ray.config import TrialConfig
    from orca_ray.trainable import TrialRun

    monkeypatch.setenv("ORCA_RAY_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "d.npz"
    rng = np.random.default_rng(0)

    def write(scale):
        x = (scale * rng.standard_normal((40, 1, 16))).astype(np.float32)
        np.savez(path, x_train=x, y_train=np.arange(40) % 2 + 1, x_test=x[:8], y_test=np.arange(8) % 2 + 1)

    cfg = TrialConfig(
        task=f"npz:{path}",
        body="tiny-text",
        proxy="fake-text",
        embedder_epochs=1,
        proxy_size=64,
        align_batch_per_class=8,
        cache_dir=str(tmp_path / "cache"),
    )
    rows = []
    write(1.0)
    TrialRun(cfg).align(lambda row, state: rows.append(row))
    write(5.0)
    TrialRun(cfg).align(lambda row, state: rows.append(row))
    keys = sorted(p.name for p in (tmp_path / "cache" / "embedders").iterdir())
    assert len(keys) == 2
    assert all(k.startswith(cfg.align_key) for k in keys)
    assert rows[0]["otdd"] != rows[2]["otdd"]  # the second trial measured its own data


def test_damaged_checkpoint_falls_back_to_the_one_before(tmp_path):
    from ray import tune

    from orca_ray.trainable import CHECKPOINT_FILE, load_trial_state

    for i, payload in enumerate([{"epoch": 1}, {"epoch": 2}]):
        d = tmp_path / "trial" / f"checkpoint_{i:06d}"
        d.mkdir(parents=True)
        torch.save(payload, d / CHECKPOINT_FILE)
    latest = tmp_path / "trial" / "checkpoint_000001"
    assert load_trial_state(tune.Checkpoint(str(latest)))["epoch"] == 2
    (latest / CHECKPOINT_FILE).write_bytes(b"\x00" * 10)
    assert load_trial_state(tune.Checkpoint(str(latest)))["epoch"] == 1
    (tmp_path / "trial" / "checkpoint_000000" / CHECKPOINT_FILE).unlink()
    assert load_trial_state(tune.Checkpoint(str(latest))) is None


def test_nas_bench_360_tasks_carry_a_content_fingerprint(tmp_path):
    from test_nb360 import write_ninapro

    from orca_ray.tasks import load_task

    write_ninapro(tmp_path)
    task = load_task("ninapro", data_root=tmp_path)
    assert len(task.files) == 6
    assert len(task.fingerprint) == 24
    label = tmp_path / "label_test.npy"
    np.save(label, np.load(label)[::-1].copy())  # same size, new content, new mtime
    os.utime(label, ns=(7, 7))
    assert load_task("ninapro", data_root=tmp_path).fingerprint != task.fingerprint
