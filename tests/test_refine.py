import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from orca_ray.bodies import load_body
from orca_ray.model import apply_freeze, build_model
from orca_ray.recipes import DEMO_HPARAMS, NB360_RECIPES, hparams_for
from orca_ray.refine import RefineHParams, Refiner, TaskLoss, make_optimizer, train_epoch
from orca_ray.tasks import load_task


def test_orca_hyperparameters_per_task():
    assert hparams_for("ecg") == NB360_RECIPES["ecg"].refine
    assert hparams_for("ecg").optimizer == "sgd"
    assert hparams_for("synthetic-cifar100").accum == 32
    assert hparams_for("osuleaf") == DEMO_HPARAMS
    with pytest.raises(ValueError, match="optimizer"):
        RefineHParams(optimizer="lamb")


def test_orca_warmup_lr_counts_micro_batches_from_zero():
    """ORCA's WarmupLR: t / W for t < W = int(warmup · n), then (T − t) / (T − W), T = int(decay · n)."""
    hp = RefineHParams(warmup_epochs=2, decay_epochs=4)
    f = hp.lr_lambda(steps_per_epoch=3)  # W = 6, T = 12
    assert [f(t) for t in range(14)] == pytest.approx(
        [0, 1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6, 1, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6, 0, 0]
    )
    assert RefineHParams(warmup_epochs=0.5, decay_epochs=1).lr_lambda(5)(1) == pytest.approx(1 / 2)  # W = 2


def _linear(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(6, 3)).double()


def _micro_batches(n, bs=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(bs, 2, 3, generator=g, dtype=torch.float64), torch.randint(0, 3, (bs,), generator=g))
        for _ in range(n)
    ]


def _run(model, micro, *, accum, clip=None, lr=0.1, lam=lambda t: 1.0, opt="sgd"):
    hp = RefineHParams(opt, lr, momentum=0.0)
    optimizer = make_optimizer(model.parameters(), hp)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lam)
    records = []
    loss = train_epoch(
        model,
        micro,
        TaskLoss("cross_entropy"),
        optimizer,
        scheduler,
        accum=accum,
        clip=clip,
        on_micro_batch=records.append,
    )
    return loss, records


def test_accumulated_step_is_the_sum_of_undivided_micro_batch_gradients():
    """accum micro-batches of equal size: one SGD step by lr · Σ g_i = lr · accum · (big batch's gradient)."""
    micro = _micro_batches(4)
    model = _linear()
    before = [p.detach().clone() for p in model.parameters()]
    big = _linear()
    x = torch.cat([m[0] for m in micro])
    y = torch.cat([m[1] for m in micro])
    nn.functional.cross_entropy(big(x), y).backward()
    loss, records = _run(model, micro, accum=4, lr=0.1)
    for p, p0, q in zip(model.parameters(), before, big.parameters()):
        assert torch.allclose(p, p0 - 0.1 * 4 * q.grad, atol=1e-12)
    assert [r.stepped for r in records] == [False, False, False, True]
    assert loss == pytest.approx(np.mean([r.loss for r in records]))  # ORCA's train loss


def test_trailing_partial_accumulation_group_is_dropped():
    micro = _micro_batches(5)
    full, dropped = _linear(), _linear()
    _run(full, micro[:4], accum=2)
    _, records = _run(dropped, micro, accum=2)
    assert [r.stepped for r in records] == [False, True, False, True, False]
    assert all(torch.equal(p, q) for p, q in zip(full.parameters(), dropped.parameters()))
    assert all(p.grad is None for p in dropped.parameters())  # nothing carried into the next epoch


def test_clipping_runs_after_every_micro_batch_backward():
    micro = _micro_batches(2)
    model, ref = _linear(), _linear()
    _, records = _run(model, micro, accum=2, clip=0.05, lr=1.0)
    # by hand: g = clip(g1); g = clip(g + g2); w -= lr · g
    grads = []
    for x, y in micro:
        ref.zero_grad()
        nn.functional.cross_entropy(ref(x), y).backward()
        grads.append([p.grad.clone() for p in ref.parameters()])

    def clipped(gs, c=0.05):
        norm = torch.sqrt(sum((g**2).sum() for g in gs))
        return [g * min(1.0, c / (float(norm) + 1e-6)) for g in gs], float(norm)

    g, n1 = clipped(grads[0])
    g, n2 = clipped([a + b for a, b in zip(g, grads[1])])
    for p, p0, gi in zip(model.parameters(), ref.parameters(), g):
        assert torch.allclose(p, p0 - gi, atol=1e-12)
    assert [r.grad_norm for r in records] == pytest.approx([n1, n2])


def test_lr_per_micro_batch_starts_at_zero_and_steps_use_it():
    """The schedule steps after every micro-batch; the first micro-batch trains at lr 0."""
    hp = RefineHParams("sgd", 0.5, momentum=0.0, warmup_epochs=1, decay_epochs=2)
    micro = _micro_batches(6)
    model = _linear()
    lam = hp.lr_lambda(steps_per_epoch=6)
    before = [p.detach().clone() for p in model.parameters()]
    _, records = _run(model, micro[:1], accum=1, lr=0.5, lam=lam)
    assert records[0].lr == 0.0
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))
    model = _linear()
    _, records = _run(model, micro, accum=2, lr=0.5, lam=lam)
    assert [r.lr for r in records] == pytest.approx([0.5 * t / 6 for t in range(6)])


def test_focal_loss_is_orcas():
    out, y = torch.randn(5, 18), torch.randint(0, 18, (5,))
    want = -torch.log(torch.softmax(out, 1)[torch.arange(5), y] + 1e-9).mean()
    assert torch.allclose(TaskLoss("focal")(out, y), want)


def test_refiner_schedule_counts_orcas_n_train(ecg):
    r = _tiny_run(ecg, epochs=1, warmup_epochs=1)
    n = math.ceil(len(ecg.train) / 16)
    assert r.steps_per_epoch == n
    assert r.optimizer.param_groups[0]["lr"] == 0.0
    seen = []
    r.train_batches(
        [(ecg.train.x[i : i + 16], ecg.train.y[i : i + 16]) for i in range(0, 64, 16)], seen.append
    )
    assert [s.lr for s in seen] == pytest.approx([3e-3 * r.hp.lr_lambda(n)(t) for t in range(4)])
    assert r.scheduler.last_epoch == 4


def test_frozen_parts_stay_bit_identical_through_the_refiner(ecg):
    r = _tiny_run(ecg, epochs=1)
    apply_freeze(r.model, {"body"})
    r = Refiner(r.model, ecg, r.hp, seed=0)
    before = {n: p.detach().clone() for n, p in r.model.named_parameters()}
    r.run_epoch()
    for n, p in r.model.named_parameters():
        assert torch.equal(p, before[n]) == n.startswith("body."), n


def _tiny_run(task, epochs=3, seed=0, **kw):
    model = build_model(task, load_body("tiny-text"), aligned=True, seed=seed)
    hp = RefineHParams(
        "adamw", 3e-3, epochs=epochs, decay_epochs=epochs, batch_size=16, accum=2, clip=1.0, **kw
    )
    return Refiner(model, task, hp, seed=seed)


@pytest.fixture(scope="module")
def ecg():
    return load_task("synthetic-ecg", seed=0)


def test_deterministic_under_a_seed(ecg):
    a = [r.train_loss for r in _tiny_run(ecg).fit()]
    b = [r.train_loss for r in _tiny_run(ecg).fit()]
    assert a == b
    c = [r.train_loss for r in _tiny_run(ecg, seed=1).fit()]
    assert a != c


def test_resume_from_state_dict_is_exact(ecg):
    straight = _tiny_run(ecg)
    want = [(r.train_loss, r.val_score) for r in straight.fit()]
    first = _tiny_run(ecg)
    got = [(first.run_epoch().train_loss, None)]
    state = copy.deepcopy(first.state_dict())
    resumed = _tiny_run(ecg)  # a fresh process would rebuild the model the same way
    resumed.load_state_dict(state)
    got += [(r.train_loss, r.val_score) for r in resumed.fit()]
    assert [g[0] for g in got] == [w[0] for w in want]
    assert got[-1][1] == want[-1][1]


def test_checkpoint_holds_only_trainable_weights(ecg):
    r = _tiny_run(ecg, epochs=1)
    apply_freeze(r.model, {"body"})
    names = set(r.state_dict()["model"])
    assert names
    assert not any(n.startswith("body.") for n in names)


@pytest.mark.parametrize("name", ["synthetic-darcy", "synthetic-deepsea"])
def test_dense_and_multilabel_losses_train(name):
    task = load_task(name, seed=0)
    body = load_body("tiny-swin") if name == "synthetic-darcy" else load_body("tiny-text")
    model = build_model(task, body, aligned=True, target_seq_len=64, seed=0)
    hp = RefineHParams("adamw", 1e-3, epochs=2, decay_epochs=2, batch_size=8)
    results = list(Refiner(model, task, hp, seed=0, max_steps_per_epoch=4).fit())
    assert all(np.isfinite([r.train_loss, r.val_score, r.test_score]).all() for r in results)


@pytest.mark.slow
def test_real_minilm_beats_chance_on_bundled_real_task(minilm):
    """Fine-tuning the real pretrained MiniLM on BasicMotions (4 activities from 6 sensor channels)."""
    task = load_task("basicmotions", seed=0)
    model = build_model(task, copy.deepcopy(minilm), aligned=True, seed=0)
    hp = DEMO_HPARAMS.with_overrides(epochs=4, decay_epochs=4)
    results = list(Refiner(model, task, hp, seed=0).fit())
    chance = 1 - np.bincount(task.test.y).max() / len(task.test.y)  # 0.75: majority-class error
    assert results[-1].train_loss < results[0].train_loss
    assert results[-1].test_score < chance - 0.4, (results[-1], chance)


def test_orca_protocol_selects_on_test_and_scores_in_chunks():
    """protocol "orca": the validation data trains, "val" is the test split (scored once), metrics are
    ORCA's chunk averages over loader batches."""
    from orca_ray.metrics import chunked_metric, orca_chunks

    honest = load_task("synthetic-ecg", seed=0)
    task = load_task("synthetic-ecg", seed=0, protocol="orca")
    assert task.val is task.test
    assert len(task.train) == len(honest.train) + len(honest.val)
    model = build_model(task, load_body("tiny-text"), aligned=False, seed=0)
    hp = RefineHParams("adamw", 1e-3, epochs=1, decay_epochs=1, batch_size=4, eval_batch_size=64)
    r = Refiner(model, task, hp, seed=0, protocol="orca", max_steps_per_epoch=2)
    res = r.run_epoch()
    assert res.val_score == res.test_score
    out, y = r.predict(task.test)
    assert res.test_score == pytest.approx(chunked_metric(task.metric, y, out, orca_chunks(len(y), 4)))
    with pytest.raises(ValueError, match="protocol"):
        load_task("synthetic-ecg", protocol="ORCA")


def test_task_augmentation_reaches_the_training_batches():
    """A task's `augment` (ORCA's CIFAR-100 crop/flip) transforms every training batch, never evaluation."""
    from dataclasses import replace

    from orca_ray.augment import CropFlip

    task = load_task("synthetic-cifar100", seed=0, max_train_samples=64, max_eval_samples=8)
    seen = []

    class Probe(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(3 * 32 * 32, 100)

        def forward(self, x):
            seen.append((self.training, x.clone()))
            return self.linear(x.flatten(1))

    hp = RefineHParams("sgd", 1e-3, epochs=1, batch_size=16)
    for t, padded in ((task, False), (replace(task, augment=CropFlip(pad=4, fill=(-9.0,) * 3)), True)):
        seen.clear()
        Refiner(Probe(), t, hp, seed=0).run_epoch()
        train_x = torch.cat([x for training, x in seen if training])
        eval_x = torch.cat([x for training, x in seen if not training])
        assert len(train_x) == len(t.train)
        assert bool((train_x == -9.0).any()) == padded
        assert not (eval_x == -9.0).any()
