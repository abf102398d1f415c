"""The comparisons, one function per golden case kind (`CHECKS`): each recomputes the case with the functions
the trainer itself uses and yields one `Check` row per item."""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from ..parity_spec import seeded_tensors
from .golden import TASK_MODALITY, Golden, _body, _build_embedder, _golden_model, _target_seq_len, _task
from .table import EXACT, FWD, OTDD, TRAIN, Check, Missing, _norm, compare


def _need(module: str, name: str):
    """`module.name`, or `Missing` naming it (a function our code lacks is a failing row, not a crash)."""
    import importlib

    try:
        obj = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise Missing(f"missing: {module}.{name}") from e
    return obj


def check_init(golden: Golden, name: str, case: dict) -> Iterator[Check]:
    """Embedder construction and init (0 vs > 0 embedder epochs), its forward, dropout and drop-path.

    Args:
        golden: the golden folder.
        name: the case's name in the manifest.
        case: the case's manifest entry (its inputs are in `golden.arrays(case)`).
    """
    import torch

    a = golden.arrays(case)
    tag = f"init {case['task']} ep{case['embedder_epochs']}"
    task = _task(case["task"], case)
    body = _body(golden, case["task"])
    aligned = case["embedder_epochs"] > 0
    emb = _build_embedder(task, body, aligned, _target_seq_len(case))
    sd = {k: v.detach().numpy() for k, v in emb.state_dict().items()}
    yield compare(f"{tag}: LayerNorm weight", a["norm.weight"], sd["norm.weight"], EXACT)
    yield compare(f"{tag}: LayerNorm bias", a["norm.bias"], sd["norm.bias"], EXACT)
    yield compare(f"{tag}: conv bias", a["projection.bias"], sd["projection.bias"], EXACT)
    w_orca, w_ours = a["projection.weight"], sd["projection.weight"]
    deterministic = TASK_MODALITY[case["task"]] == "2d" and aligned  # the body's patch conv, tiled
    if deterministic or w_orca.shape != w_ours.shape:
        yield compare(f"{tag}: conv weight (body's patch conv, tiled)", w_orca, w_ours, EXACT)
    else:  # a random init: same distribution (std within sampling error, same support)
        tol = max(0.05, 4.0 / math.sqrt(w_orca.size))
        kind = "Xavier-uniform gain sqrt 2" if TASK_MODALITY[case["task"]] == "1d" else "trunc-normal 0.02"
        yield compare(f"{tag}: conv weight std ({kind})", float(w_orca.std()), float(w_ours.std()), tol)
        # mean |w| / std tells the family apart: 0.866 for a uniform, 0.798 for a normal
        shape_orca = float(np.abs(w_orca).mean() / w_orca.std())
        shape_ours = float(np.abs(w_ours).mean() / w_ours.std())
        yield compare(f"{tag}: conv weight mean|w|/std ({kind})", shape_orca, shape_ours, tol / 2)
    if TASK_MODALITY[case["task"]] == "1d":
        yield compare(f"{tag}: stride", case["stride"], getattr(emb, "stride", -1), EXACT)
        if case.get("target_seq_len") is not None:  # recipes.py against the value ORCA's config gave
            from ..recipes import recipe_for

            ours = recipe_for(case["task"]).target_seq_len
            yield compare(f"{tag}: recipe target_seq_len", case["target_seq_len"], ours or -1, EXACT)
        pos = sd.get("positions")
        used = case["positions_used"]
        if pos is None:
            yield Check(f"{tag}: positions from the body", used["std"], None, math.inf, EXACT, "no positions")
        else:
            yield compare(f"{tag}: positions from the body (std)", used["std"], float(pos.std()), EXACT)
            yield compare(f"{tag}: positions from the body (mean)", used["mean"], float(pos.mean()), 1e-4)
    # forward of the embedder with ORCA's initialised weights
    with torch.no_grad():
        for k in ("projection.weight", "projection.bias", "norm.weight", "norm.bias"):
            emb.state_dict()[k].copy_(torch.from_numpy(a[k]).reshape(emb.state_dict()[k].shape))
        tokens, _grid = emb(torch.from_numpy(a["x"]))
    yield compare(f"{tag}: embedder output (token mean)", a["tokens_mean"], tokens.mean(1).numpy(), FWD)
    cfg = body.model.config
    for key, value in case["dropout"].items():
        yield compare(f"{tag}: body {key}", value, float(getattr(cfg, key, math.nan)), EXACT)
    if "drop_path" in case:
        dp = case["drop_path"]
        ours = [  # a block built without drop-path (rate 0) holds an Identity
            float(getattr(block.drop_path, "drop_prob", 0.0))
            for layer in body.model.encoder.layers
            for block in layer.blocks
        ]
        yield compare(
            f"{tag}: Swin drop_path_rate", dp["config_drop_path_rate"], float(cfg.drop_path_rate), EXACT
        )
        yield compare(
            f"{tag}: Swin drop-path per block", dp["per_block"], ours[: len(dp["per_block"])], EXACT
        )


def check_forward(golden: Golden, name: str, case: dict) -> Iterator[Check]:
    """The whole model on a fixed batch; Darcy's dense head on the decoder input ORCA saw.

    Args:
        golden: the golden folder.
        name: the case's name in the manifest.
        case: the case's manifest entry (its inputs are in `golden.arrays(case)`).
    """
    import torch

    a = golden.arrays(case)
    _, model = _golden_model(golden, case)
    model.eval()
    with torch.no_grad():
        out = model(torch.from_numpy(a["x"]))
        yield compare(f"forward {case['task']}: model output", a["out"], out.numpy(), FWD)
        if "decoder_in" in a:
            d = torch.from_numpy(a["decoder_in"])
            tokens = d.flatten(2).transpose(1, 2)
            head = model.predictor(tokens, (d.shape[-2], d.shape[-1]))
            yield compare("Darcy head: decoder + channel mean + pool to 85x85", a["out"], head.numpy(), FWD)


def _hparams(case: dict):
    from ..refine import RefineHParams

    o = case["optimizer"]
    p = o["params"]
    return RefineHParams(
        optimizer=o["name"].lower(),
        lr=p["lr"],
        betas=tuple(p.get("betas", (0.9, 0.98))),
        momentum=p.get("momentum", 0.9),
        weight_decay=p["weight_decay"],
        epochs=case["epochs"],
        batch_size=case["batch"],
        accum=case["accum"],
        clip=None if case["clip"] <= 0 else case["clip"],
        warmup_epochs=case["warmup_epochs"],
        decay_epochs=case["decay_epochs"],
    )


def _loss_fn(task_ns, y_mean=None, y_std=None):
    from .. import refine
    from ..tasks import UnitGaussianNormalizer

    if y_mean is not None:
        task_ns.y_normalizer = UnitGaussianNormalizer(mean=y_mean, std=y_std)
    if hasattr(refine.TaskLoss, "for_task"):
        return refine.TaskLoss.for_task(task_ns)
    return refine.TaskLoss(task_ns)


def check_refine(golden: Golden, name: str, case: dict) -> Iterator[Check]:
    """N refine micro-batches through our training loop: lr per micro-batch, losses, clipping, which
    micro-batches step, and the weights after each step and at the end.

    Args:
        golden: the golden folder.
        name: the case's name in the manifest.
        case: the case's manifest entry (its inputs are in `golden.arrays(case)`).
    """
    import torch

    train_epoch = _need("orca_ray.refine", "train_epoch")
    make_scheduler = _need("orca_ray.refine", "make_scheduler")
    from ..model import trainable_parameters
    from ..refine import make_optimizer

    a = golden.arrays(case)
    fam = f"refine {case['family']}"
    task, model = _golden_model(golden, case, drop_path=0.0)
    hp = _hparams(case)
    params = trainable_parameters(model)
    opt = make_optimizer(params, hp)
    sched = make_scheduler(opt, hp, case["micro_per_epoch"])
    loss_fn = _loss_fn(task, a.get("y_mean"), a.get("y_std"))
    parts = {"embedder": model.embedder, "body": model.body, "predictor": model.predictor}

    def part_norms():
        return {
            k: math.sqrt(sum(float(p.detach().double().pow(2).sum()) for p in m.parameters()))
            for k, m in parts.items()
        }

    initial_norms = part_norms()
    rec = {"lr": [], "loss": [], "clip": [], "stepped": [], "norms": []}
    counter = {"i": 0}

    def on_micro(mb):
        counter["i"] += 1
        rec["lr"].append(mb.lr)
        rec["loss"].append(mb.loss)
        if mb.grad_norm is not None:
            rec["clip"].append(mb.grad_norm)
        if mb.stepped:
            rec["stepped"].append(counter["i"])
            rec["norms"].append(part_norms())

    y = a["y"]
    losses = []
    for _ in range(case["epochs"]):
        batches = [
            (torch.from_numpy(a["x"][i]), torch.from_numpy(y[i])) for i in range(case["micro_per_epoch"])
        ]
        losses.append(
            train_epoch(
                model, batches, loss_fn, opt, sched, accum=hp.accum, clip=hp.clip, on_micro_batch=on_micro
            )
        )
    yield compare(f"{fam}: scheduler lr per micro-batch", case["lr"], rec["lr"], EXACT)
    yield compare(f"{fam}: loss per micro-batch", case["loss"], rec["loss"], TRAIN)
    orca_steps, ours_steps = case["step_after_micro"], rec["stepped"]
    yield Check(
        f"{fam}: accumulation: optimiser steps, after micro-batches {orca_steps}",
        float(len(orca_steps)),
        float(len(ours_steps)),
        0.0 if ours_steps == orca_steps else 1.0,
        EXACT,
        "" if ours_steps == orca_steps else f"ours stepped after micro-batches {ours_steps}",
    )
    if case["clip_norm"]:
        yield compare(
            f"{fam}: clipping: grad norm before clip, per micro-batch", case["clip_norm"], rec["clip"], TRAIN
        )
    for part in ("embedder", "body", "predictor"):
        if part == "embedder" and TASK_MODALITY[case["task"]] == "1d":
            continue  # ORCA's 1D embedder holds the body's whole 514-row position table: see the final tensors
        orca_d = [s[part] - case["initial_param_norms"][part] for s in case["step_param_norms"]]
        ours_d = [s[part] - initial_norms[part] for s in rec["norms"]]
        yield compare(f"{fam}: {part} weight-norm change after each step", orca_d, ours_d, 5 * TRAIN)
    yield compare(f"{fam}: train loss per epoch", case["train_loss"], losses, TRAIN)
    start = seeded_tensors(golden.seed, case["trainable"])
    for key, ours_t, start_key in (
        ("final_embedder_projection", model.embedder.projection.weight, "embedder.projection.weight"),
        ("final_embedder_norm_weight", model.embedder.norm.weight, "embedder.norm.weight"),
    ):
        o = a[key].reshape(-1)
        update = _norm(o - start[start_key].reshape(-1))
        yield compare(
            f"{fam}: {key[6:]} after training (error / update)",
            o,
            ours_t.detach().numpy().reshape(-1),
            5 * TRAIN,
            scale=update,
        )


def check_align(golden: Golden, name: str, case: dict) -> Iterator[Check]:
    """One align epoch: the class-weighted OTDD and the embedder gradient; 2D: the proxy features.

    Args:
        golden: the golden folder.
        name: the case's name in the manifest.
        case: the case's manifest entry (its inputs are in `golden.arrays(case)`).
    """
    import torch

    a = golden.arrays(case)
    tag = f"align {case['task']} ({case['proxy']} proxy)"
    task = _task(case["task"], case)
    body = _body(golden, case["task"])
    if "proxy_images" in a:
        from .. import proxies

        features = getattr(proxies, "patch_embedding_features", None) or proxies._patch_embedding_features
        feats = features(body, a["proxy_images"], torch.device("cpu"))
        yield compare(
            f"{tag}: proxy features (body patch embedding, token mean)",
            a["proxy_features"],
            feats.numpy(),
            FWD,
        )
        proxy_x = a["proxy_features"]
    else:
        proxy_x = a["proxy_x"]
    from ..align import AlignHParams
    from ..refine import RefineHParams

    o = {"satellite": ("adamw", 3e-4), "ninapro": ("adam", 1e-4)}[case["task"]]
    hp = AlignHParams.from_refine(RefineHParams(optimizer=o[0], lr=o[1]), case["task"])
    yield compare(f"{tag}: align lr (x10 when lr <= 1e-3)", case["align_lr"], hp.lr, EXACT)
    class_weighted_otdd = _need("orca_ray.align", "class_weighted_otdd")
    from ..otdd import ProxyDistance

    emb = _build_embedder(task, body, True, _target_seq_len(case))
    values = seeded_tensors(golden.seed, case["trainable"])
    with torch.no_grad():
        sd = dict(emb.named_parameters())
        for k, v in values.items():
            sd[k.removeprefix("embedder.")].copy_(torch.from_numpy(v))
    distance = ProxyDistance(torch.from_numpy(proxy_x), torch.from_numpy(a["proxy_y"]))
    labels = torch.from_numpy(a["target_y"])
    weights = torch.tensor(case["class_weights"], dtype=torch.float32)
    loss = class_weighted_otdd(emb, distance, torch.from_numpy(a["target_x"]), labels, weights)
    loss.backward()
    yield compare(f"{tag}: class-weighted OTDD loss", case["loss"], float(loss.detach()), OTDD)
    grads = {n: p.grad.numpy() for n, p in emb.named_parameters() if p.grad is not None}
    for key in ("projection.weight", "projection.bias", "norm.weight", "norm.bias"):
        yield compare(
            f"{tag}: embedder gradient {key}", a[f"grad.{key}"], grads.get(key, np.zeros(0)), OTDD * 10
        )
    if "grad.positions" in a:
        yield compare(
            f"{tag}: embedder gradient positions",
            a["grad.positions"],
            grads.get("positions", np.zeros(0)),
            OTDD * 10,
        )


def check_loss(golden: Golden, name: str, case: dict) -> Iterator[Check]:
    """A task's training loss on fixed outputs and targets.

    Args:
        golden: the golden folder.
        name: the case's name in the manifest.
        case: the case's manifest entry (its inputs are in `golden.arrays(case)`).
    """
    import torch

    a = golden.arrays(case)
    task = _task(case["task"], {"task": case["task"]})
    fn = _loss_fn(task, a.get("y_mean"), a.get("y_std"))
    y = torch.from_numpy(a["y"])
    value = float(fn(torch.from_numpy(a["out"]), y))
    yield compare(f"loss {case['task']} ({case['loss_class']})", case["value"], value, FWD)


def check_metric(golden: Golden, name: str, case: dict) -> Iterator[Check]:
    """A task's metric in ORCA's chunked form (chunks of >= eval_batch_size samples, averaged).

    Args:
        golden: the golden folder.
        name: the case's name in the manifest.
        case: the case's manifest entry (its inputs are in `golden.arrays(case)`).
    """
    a = golden.arrays(case)
    task = _task(case["task"], {"task": case["task"]})
    out, y = a["out"], a["y"]
    if task.kind == "multilabel":
        out = 1.0 / (1.0 + np.exp(-out.astype(np.float64)))
    if "y_mean" in a:
        from ..tasks import UnitGaussianNormalizer

        norm = UnitGaussianNormalizer(mean=a["y_mean"], std=a["y_std"])
        out, y = norm.decode(out), norm.decode(y)
    orca_chunks = _need("orca_ray.metrics", "orca_chunks")
    chunked_metric = _need("orca_ray.metrics", "chunked_metric")
    chunks = orca_chunks(len(y), case["batch"], case["eval_batch_size"])
    value = chunked_metric(task.metric, y, out, chunks)
    yield compare(f"metric {case['task']} ({task.metric}, chunked as ORCA)", case["score"], value, FWD)


def check_schedules(golden: Golden, name: str, case: dict) -> Iterator[Check]:
    """ORCA's WarmupLR per micro-batch (from lr 0) for each task's config; the align StepLR per epoch.

    Args:
        golden: the golden folder.
        name: the case's name in the manifest.
        case: the case's manifest entry (its inputs are in `golden.arrays(case)`).
    """
    import torch

    from ..refine import RefineHParams

    a = golden.arrays(case)
    n = case["n_train"]
    for task, w in case["warmup"].items():
        hp = RefineHParams(warmup_epochs=w["warmup_epochs"], decay_epochs=w["decay_epochs"])
        steps = np.arange(len(a[f"warmup_{task}"]))
        if hasattr(hp, "lr_lambda"):
            fn = hp.lr_lambda(n)
            ours = [fn(int(s)) for s in steps]
        else:  # a per-epoch schedule: what our trainer applies to each micro-batch
            ours = [hp.lr_factor(int(s) // n) for s in steps]
        yield compare(
            f"schedule {task}: warmup/decay factor per micro-batch", a[f"warmup_{task}"], ours, EXACT
        )
    make_align_scheduler = _need("orca_ray.align", "make_align_scheduler")
    from ..align import AlignHParams

    hp = AlignHParams(milestones=tuple(case["step"]["sched"]), gamma=case["step"]["base"])
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = make_align_scheduler(opt, hp)
    ours = []
    for _ in range(len(a["step_align"])):
        ours.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    yield compare("schedule align: StepLR factor per embedder epoch", a["step_align"], ours, EXACT)


def check_ecg(golden: Golden, name: str, case: dict) -> Iterator[Check]:
    """ORCA's ECG protocol: z-score per recording, 90/10 split of recordings, class-dependent window strides
    on train and test. Windows are compared as sets of (recording, start, label) (ORCA shuffles them with the
    global numpy RNG), their values by their sum.

    Args:
        golden: the golden folder.
        name: the case's name in the manifest.
        case: the case's manifest entry (its inputs are in `golden.arrays(case)`).
    """
    a = golden.arrays(case)
    split = _need("orca_ray.tasks.nb360.ecg", "orca_ecg_split")
    offsets = np.concatenate([[0], np.cumsum(a["lengths"])])
    recs = [a["recordings"][offsets[i] : offsets[i + 1]] for i in range(len(a["lengths"]))]
    got = split(recs, a["labels"])
    for key in ("train", "test"):
        orca = a[f"{key}_windows"]
        ours = np.array(sorted(map(tuple, np.asarray(got[f"{key}_windows"]).tolist())), dtype=np.int64)
        same = ours.shape == orca.shape and bool(np.all(ours == orca))
        differ = len(set(map(tuple, ours.tolist())) ^ set(map(tuple, orca.tolist())))
        note = "" if same else f"{differ} windows differ"
        yield Check(
            f"ECG split: {key} windows (recording, start, label)",
            len(orca),
            len(ours),
            float(not same),
            EXACT,
            note,
        )
        total = float(np.sum(got[f"{key}_x"], dtype=np.float64))
        yield compare(f"ECG split: {key} window values (sum)", case[f"{key}_sum"], total, FWD)


def check_satellite(golden: Golden, name: str, case: dict) -> Iterator[Check]:
    """Satellite under protocol orca: raw values (no per-series z-scoring), labels − 1, the whole training
    file trains. The golden arrays are written as the real files' pickled dicts and read by our loader.

    Args:
        golden: the golden folder.
        name: the case's name in the manifest.
        case: the case's manifest entry (its inputs are in `golden.arrays(case)`).
    """
    from ..tasks import load_task

    a = golden.arrays(case)
    with tempfile.TemporaryDirectory(prefix="orca_parity_satellite_") as tmp:
        for split in ("train", "test"):
            data = {"data": a[f"raw_{split}"], "label": a[f"label_{split}"]}
            np.save(Path(tmp) / f"satellite_{split}.npy", data, allow_pickle=True)  # written here: trusted
        task = load_task("satellite", data_root=tmp, protocol="orca", cache_dir=Path(tmp) / "cache")
        for split, ours in (("train", task.train), ("test", task.test)):
            x = np.asarray(ours.x, dtype=np.float32)
            yield compare(f"Satellite {split} inputs (raw, protocol orca)", a[f"orca_x_{split}"], x, EXACT)
            yield compare(f"Satellite {split} labels", a[f"orca_y_{split}"], np.asarray(ours.y), EXACT)


def check_pseudo_labels(golden: Golden, name: str, case: dict) -> Iterator[Check]:
    """k-means pseudo-classes of targets without classes: ORCA's k (10) and the same partition of targets
    drawn around 10 well-separated centres (numbering is arbitrary, so compared by adjusted Rand index).

    Args:
        golden: the golden folder.
        name: the case's name in the manifest.
        case: the case's manifest entry (its inputs are in `golden.arrays(case)`).
    """
    from sklearn.metrics import adjusted_rand_score

    a = golden.arrays(case)
    pseudo_labels = _need("orca_ray.align", "pseudo_labels")
    ours = np.asarray(pseudo_labels(a["y"], 0))
    yield compare(
        "align pseudo-classes: k (k-means on flattened targets)", case["k"], len(np.unique(ours)), EXACT
    )
    ari = float(adjusted_rand_score(a["labels"], ours))
    yield compare("align pseudo-classes: same partition (adjusted Rand index)", 1.0, ari, EXACT)


CHECKS: dict[str, Callable[[Golden, str, dict], Iterator[Check]]] = {
    "init": check_init,
    "forward": check_forward,
    "refine": check_refine,
    "align": check_align,
    "loss": check_loss,
    "metric": check_metric,
    "schedules": check_schedules,
    "ecg_split": check_ecg,
    "satellite": check_satellite,
    "pseudo_labels": check_pseudo_labels,
}
