import copy
import multiprocessing as mp

import numpy as np
import pytest
import torch

from orca_ray.align import Aligner, AlignHParams, EmbedderSnapshots, align_labels
from orca_ray.bodies import load_body
from orca_ray.embedders import build_embedder
from orca_ray.proxies import proxy_features
from orca_ray.tasks import load_task

HP = AlignHParams(optimizer="adamw", lr=1e-3, batch_per_class=16)


def make_aligner(task, body, px, py, snapshots=None, seed=0, hp=HP):
    torch.manual_seed(seed)
    embedder = build_embedder(task, body, aligned=True)
    return Aligner(embedder, task, px, py, hp, seed=seed, snapshots=snapshots, device="cpu")


@pytest.mark.slow
def test_alignment_lowers_otdd_on_a_bundled_real_task(minilm):
    """The real MiniLM, the real WNUT-16 text proxy, the real BasicMotions series."""
    task = load_task("basicmotions", seed=0)
    px, py = proxy_features("wnut16", "minilm", minilm, size=1000, seed=0)
    body = copy.deepcopy(minilm)
    aligner = make_aligner(task, body, px, py, hp=AlignHParams(lr=1e-3, batch_per_class=16))
    otdd = aligner.run(8)
    assert len(otdd) == 9
    assert all(np.isfinite(otdd))
    assert otdd[-1] < otdd[0] * 0.97, otdd


def test_lr_rule_and_batch_per_class():
    from orca_ray.recipes import hparams_for

    ecg = AlignHParams.from_refine(hparams_for("ecg"), "ecg")
    assert ecg.lr == pytest.approx(1e-5)
    assert ecg.batch_per_class == 132
    assert ecg.optimizer == "sgd"
    darcy = AlignHParams.from_refine(hparams_for("darcy"), "synthetic-darcy")
    assert darcy.lr == pytest.approx(1e-2)
    assert darcy.batch_per_class == 132


def test_pseudo_labels_for_tasks_without_classes():
    deepsea = load_task("synthetic-deepsea", seed=0)
    labels = align_labels(deepsea, seed=0)
    assert labels.shape == (len(deepsea.train),)
    assert len(np.unique(labels)) == 10
    assert np.array_equal(labels, align_labels(deepsea, seed=0))
    darcy = load_task("synthetic-darcy", seed=0)
    assert len(np.unique(align_labels(darcy, seed=0))) == 10


def test_gradient_reaches_embedder_only(tiny):
    task, body, px, py = tiny
    aligner = make_aligner(task, body, px, py)
    loss = aligner.loss(0)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in aligner.embedder.parameters())
    assert not px.requires_grad


def test_snapshots_reuse_and_continue_bit_identically(tiny, tmp_path):
    task, body, px, py = tiny
    straight = make_aligner(task, body, px, py)
    want = straight.run(4)
    want_state = {k: v.clone() for k, v in straight.embedder.state_dict().items()}

    snaps = EmbedderSnapshots(tmp_path / "key")
    first = make_aligner(task, body, px, py, snapshots=snaps)
    assert first.run(2) == want[:3]
    assert snaps.epochs() == [0, 1, 2]
    # a trial asking for fewer epochs loads the snapshot: nothing is trained again
    seen = []
    again = make_aligner(task, body, px, py, snapshots=snaps)
    again.run(1, lambda k, v, s, restored: seen.append((k, restored)))
    assert seen == [(0, True), (1, True)]
    assert all(torch.equal(v, snaps.load(1)["embedder"][k]) for k, v in again.embedder.state_dict().items())
    # one asking for more continues from the latest snapshot, exactly as if trained straight through
    longer = make_aligner(task, body, px, py, snapshots=snaps)
    got = longer.run(4)
    assert got == want
    assert all(torch.equal(v, want_state[k]) for k, v in longer.embedder.state_dict().items())
    assert snaps.epochs() == [0, 1, 2, 3, 4]


def _race(root, out, seed):
    torch.set_num_threads(1)
    task = load_task("synthetic-satellite", seed=0, n_train=120)
    body = load_body("tiny-text")
    px, py = proxy_features("fake-text", "tiny-text", body, size=300, seed=0)
    aligner = make_aligner(task, body, px, py, snapshots=EmbedderSnapshots(root), seed=seed)
    out.put(aligner.run(3))


def test_two_trials_racing_for_one_snapshot_do_not_corrupt_it(tmp_path):
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_race, args=(tmp_path / "key", out, 0)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [out.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert results[0] == results[1]
    snaps = EmbedderSnapshots(tmp_path / "key")
    assert snaps.epochs() == [0, 1, 2, 3]
    assert not list((tmp_path / "key").glob(".*.tmp"))  # no half-written files left
    for k in range(4):
        snaps.load(k)  # every snapshot is a whole, loadable file


class Arbitrary:
    """Not a tensor, not a plain container: a weights-only load must refuse to unpickle it."""


def test_snapshot_loading_is_weights_only(tmp_path):
    snaps = EmbedderSnapshots(tmp_path)
    torch.save({"embedder": {}, "payload": Arbitrary()}, tmp_path / "epoch_0000.pt")
    with pytest.raises(RuntimeError, match="unreadable"):
        snaps.load(0)


def test_orcas_step_schedule_decays_one_epoch_after_each_milestone():
    """ORCA's StepLR lambda: ×0.2 once the epoch index exceeds 20, 40, 60 (torch's MultiStepLR would decay at
    20, 40, 60 themselves)."""
    from orca_ray.align import make_align_scheduler
    from orca_ray.refine import make_optimizer

    hp = AlignHParams(optimizer="sgd", lr=1.0)
    assert [hp.lr_factor(e) for e in (0, 20, 21, 40, 41, 60, 61)] == pytest.approx(
        [1, 1, 0.2, 0.2, 0.04, 0.04, 0.008]
    )
    opt = make_optimizer([torch.nn.Parameter(torch.zeros(1))], hp)
    sched = make_align_scheduler(opt, hp)
    lrs = []
    for _ in range(23):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[20] == pytest.approx(1.0)
    assert lrs[21] == pytest.approx(0.2)


def test_align_loss_weights_classes_by_share_of_the_whole_split(tiny):
    """Σ_c (n_c / n) · OTDD(proxy, class c) over classes with ≥ 2 rows; a 1-row class is skipped, the others'
    weights are not renormalised (ORCA)."""
    from orca_ray.align import class_weighted_otdd
    from orca_ray.otdd import ProxyDistance

    task, body, px, py = tiny
    torch.manual_seed(0)
    emb = build_embedder(task, body, aligned=True)
    dist = ProxyDistance(px, py)
    x = torch.from_numpy(np.asarray(task.train.x[:21]))
    labels = torch.tensor([0] * 10 + [1] * 10 + [2])
    weights = torch.tensor([0.2, 0.3, 0.5])
    got = class_weighted_otdd(emb, dist, x, labels, weights)
    feats = emb(x)[0].mean(1)
    want = sum(
        w * dist(feats[labels == c], torch.zeros(10, dtype=torch.long)) for c, w in [(0, 0.2), (1, 0.3)]
    )
    assert torch.allclose(got, want, rtol=1e-5)
    got.backward()
    assert all(p.grad is not None for p in emb.parameters())


def test_pseudo_labels_as_orcas_kmeans():
    from sklearn.cluster import KMeans

    from orca_ray.align import pseudo_labels

    y = np.random.default_rng(0).standard_normal((300, 2, 3)).astype(np.float32)
    want = KMeans(n_clusters=10, n_init=10, random_state=4).fit(y.reshape(300, -1)).labels_
    assert np.array_equal(pseudo_labels(y, seed=4), want)


def test_a_proxy_class_of_one_point_is_left_out_with_a_warning(tiny, caplog):
    """ORCA's OTDD drops classes below two points (microsoft/otdd's min_labelcount=2): a one-point proxy class
    no longer stops alignment; the OTDD is the one without that point, and the drop is said and counted."""
    task, body, px, py = tiny
    lonely = py.clone()
    lonely[0] = int(py.max()) + 1  # a class of its own
    with caplog.at_level("WARNING", logger="orca_ray.align"):
        aligner = make_aligner(task, body, px, lonely)
    assert (aligner.dropped_proxy_classes, aligner.dropped_proxy_points) == (1, 1)
    assert "1 proxy class(es) with fewer than 2 points" in caplog.text
    without = make_aligner(task, body, px[1:], py[1:])
    assert (without.dropped_proxy_classes, without.dropped_proxy_points) == (0, 0)
    assert aligner.loss(0).item() == without.loss(0).item()
