"""Record golden traces from ORCA's own code for `python -m orca_ray.parity`.

Runs ORCA's functions (sjunhongshen/ORCA at commit 19b8c1c, imported from a checkout, never copied) on fixed
seeded inputs with small seeded bodies, and writes inputs and outputs as npz + JSON into a golden folder:

    ORCA_SRC=/path/to/ORCA /path/to/orca-venv/bin/python benchmarks/orca_parity/make_golden.py \
        --out tests/data/orca_parity --seed 0

Run it with ORCA's own environment (see README.md here). It imports only numpy from this project
(`orca_ray.parity_spec`, the format). The harness patches exactly three things, all outside ORCA's
arithmetic: `from_pretrained` is pointed at local folders holding the seeded bodies; attrdict (imported by
ORCA's main.py) gets `collections.Mapping` back (removed in Python 3.10); ORCA's `get_data` returns in-memory
loaders of the seeded inputs (for the align epoch).
"""

from __future__ import annotations

import argparse
import collections
import collections.abc
import json
import os
import pickle
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from orca_ray.parity_spec import (  # noqa: E402
    FORMAT_VERSION,
    MANIFEST,
    ORCA_COMMIT,
    seeded_tensors,
    tensors_sha256,
)

TASKS = ("cifar100", "ninapro", "darcy", "satellite", "deepsea", "ecg")
ORCA_DATASET = {
    "cifar100": "CIFAR100",
    "ninapro": "NINAPRO",
    "darcy": "DARCY-FLOW-5",
    "satellite": "SATELLITE",
    "deepsea": "DEEPSEA",
    "ecg": "ECG",
}
# what ORCA's configs (src/configs/<task>.yaml) set for these tasks
TARGET_SEQ_LEN = {"satellite": 512, "deepsea": 512, "ecg": 64}  # satellite.yaml has none: get_config's 512
CONFIG_BATCH = {"cifar100": 32, "ninapro": 32, "darcy": 4, "satellite": 16, "deepsea": 16, "ecg": 4}
WARMUP_CONFIG = {  # scheduler.params (WarmupLR) of each config: warmup_epochs, decay_epochs
    "cifar100": (5, 200),
    "ninapro": (5, 60),
    "darcy": (5, 100),
    "satellite": (5, 60),
    "deepsea": (10, 25),
    "ecg": (5, 200),
}
STEP_CONFIG = {"sched": [20, 40, 60], "base": 0.2}  # no_warmup_scheduler (StepLR) of every config


# ---- ORCA import and the harness ---------------------------------------------------------------------------
def import_orca(src: Path) -> SimpleNamespace:
    """ORCA's modules from a checkout, with the harness patches described in the module docstring."""
    if not (src / "src" / "main.py").is_file():
        sys.exit(
            f"ORCA_SRC={src} is not an ORCA checkout (no src/main.py); clone sjunhongshen/ORCA at {ORCA_COMMIT}"
        )
    for name in ("Mapping", "MutableMapping", "Sequence"):
        setattr(collections, name, getattr(collections.abc, name))
    sys.path[:0] = [str(src / "src"), str(src / "src" / "otdd")]
    warnings.filterwarnings("ignore")
    import data_loaders
    import embedder
    import main
    import task_configs
    import transformers
    import utils
    from attrdict import AttrDict

    transformers.logging.set_verbosity_error()
    return SimpleNamespace(
        main=main,
        embedder=embedder,
        task_configs=task_configs,
        utils=utils,
        data_loaders=data_loaders,
        transformers=transformers,
        AttrDict=AttrDict,
    )


def orca_commit(src: Path) -> str:
    try:
        return subprocess.run(
            ["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


REDIRECT: dict[str, str] = {}  # hub name ORCA asks for -> local folder of a seeded body


def patch_from_pretrained(tf) -> None:
    """Point ORCA's from_pretrained calls (hub names) at the local seeded bodies in REDIRECT."""
    for cls in (tf.AutoConfig, tf.AutoModel, tf.SwinForImageClassification, tf.SwinForMaskedImageModeling):
        original = cls.from_pretrained.__func__

        def from_pretrained(klass, name, *args, _original=original, **kwargs):
            if name not in REDIRECT:
                raise RuntimeError(
                    f"make_golden: ORCA asked for {name!r}, which the harness does not provide"
                )
            return _original(klass, REDIRECT[name], *args, **kwargs)

        cls.from_pretrained = classmethod(from_pretrained)


def write_body(orca, folder: Path, model, seed: int, first_index: int) -> dict:
    """Seeded weights into `model`, saved with save_pretrained; returns the spec stored in the manifest."""
    import torch

    specs = [[n, list(p.shape), first_index + i] for i, (n, p) in enumerate(model.named_parameters())]
    tensors = seeded_tensors(seed, specs)
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(torch.from_numpy(tensors[n]))
    model.save_pretrained(folder)
    return {"tensors": specs, "sha256": tensors_sha256(tensors)}


def make_bodies(orca, opts, tmp: Path, golden: Path) -> dict:
    """Tiny bodies at ORCA's hard-coded widths (RoBERTa 768; Swin-base 128 → 1024), seeded weights."""
    import torch

    tf = orca.transformers
    torch.manual_seed(opts.seed)
    rcfg = tf.RobertaConfig(
        vocab_size=8,
        hidden_size=768,
        num_hidden_layers=opts.roberta_layers,
        num_attention_heads=12,
        intermediate_size=opts.roberta_intermediate,
        max_position_embeddings=514,
        type_vocab_size=1,
        layer_norm_eps=1e-5,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    )
    depths = [int(d) for d in opts.swin_depths.split(",")]
    if len(depths) != 4:
        sys.exit("--swin-depths needs 4 stages: ORCA's Swin predictor expects 128·2³ = 1024 features")
    scfg = tf.SwinConfig(
        image_size=224,
        patch_size=4,
        num_channels=3,
        embed_dim=128,
        depths=depths,
        num_heads=[4, 8, 16, 32],
        window_size=7,
        mlp_ratio=opts.swin_mlp_ratio,
        drop_path_rate=0.1,  # microsoft/swin-base-patch4-window7-224-in22k's value
        encoder_stride=32,
    )
    bodies = {}
    roberta = tf.RobertaModel(rcfg)
    bodies["roberta"] = write_body(orca, tmp / "roberta", roberta, opts.seed, 0)
    swin = tf.SwinForMaskedImageModeling(scfg)
    bodies["swin"] = write_body(orca, tmp / "swin", swin, opts.seed, 100_000)
    # same weights, drop-path off: the training traces must be deterministic
    scfg0 = tf.SwinConfig.from_pretrained(tmp / "swin")
    scfg0.drop_path_rate = 0.0
    scfg0.save_pretrained(tmp / "swin_nodrop")
    for f in (tmp / "swin").iterdir():
        if f.name != "config.json":
            (tmp / "swin_nodrop" / f.name).symlink_to(f)
    for name in ("roberta", "swin"):
        (golden / f"body_{name}").mkdir(parents=True, exist_ok=True)
        cfg = json.loads((tmp / name / "config.json").read_text())
        cfg.pop("_name_or_path", None)
        cfg.pop("transformers_version", None)
        (golden / f"body_{name}" / "config.json").write_text(json.dumps(cfg, indent=1, sort_keys=True) + "\n")
        bodies[name]["config"] = f"body_{name}/config.json"
    return bodies


def use_bodies(tmp: Path, drop_path: bool) -> None:
    REDIRECT.clear()
    REDIRECT["roberta-base"] = str(tmp / "roberta")
    swin = str(tmp / ("swin" if drop_path else "swin_nodrop"))
    REDIRECT["microsoft/swin-base-patch4-window7-224-in22k"] = swin


def f16(a) -> np.ndarray:
    """Inputs are rounded to float16 and stored so: both sides then read the same float32 values."""
    return np.asarray(a, dtype=np.float32).astype(np.float16)


# ---- case helpers ------------------------------------------------------------------------------------------
class Golden:
    def __init__(self, out: Path):
        self.out = out
        self.cases: dict[str, dict] = {}

    def add(self, name: str, kind: str, meta: dict, arrays: dict) -> None:
        np.savez_compressed(self.out / f"{name}.npz", **{k: np.asarray(v) for k, v in arrays.items()})
        self.cases[name] = {"kind": kind, "file": f"{name}.npz", **meta}
        print(f"  {name}", flush=True)


def sample_shape_of(orca, task: str, opts):
    """ORCA's get_config for the task: (sample_shape, num_classes, loss), the shape overridable."""
    args = orca.AttrDict({"dataset": ORCA_DATASET[task]})
    if task in ("deepsea", "ecg"):
        args.target_seq_len = TARGET_SEQ_LEN[task]
    _, shape, num_classes, loss, _ = orca.task_configs.get_config("./datasets", args)
    override = opts.shapes.get(task)
    if override:
        shape = (1, *override)
    return tuple(shape), num_classes, loss


def build_orca_model(orca, task: str, shape, num_classes, embedder_epochs: int):
    E = orca.embedder
    if len(shape) == 4:
        return E.wrapper2D(
            shape,
            num_classes,
            use_embedder=True,
            weight="base",
            train_epoch=embedder_epochs,
            activation=None,
            drop_out=0.0,
        )
    return E.wrapper1D(
        shape,
        num_classes,
        weight="roberta",
        train_epoch=embedder_epochs,
        activation=None,
        target_seq_len=TARGET_SEQ_LEN[task],
        drop_out=0.0,
    )


def trainable_specs(model, first_index: int) -> list:
    """Specs of the task-specific weights (embedder conv + LayerNorm, predictor) by our attribute names."""
    specs = []
    for prefix, module in (
        ("embedder.projection", model.embedder.projection),
        ("embedder.norm", model.embedder.norm),
    ):
        for n, p in module.named_parameters():
            specs.append([f"{prefix}.{n}", list(p.shape)])
    if isinstance(model.predictor, orca_torch_linear()):
        for n, p in model.predictor.named_parameters():
            specs.append([f"predictor.{n}", list(p.shape)])
    return [[n, s, first_index + i] for i, (n, s) in enumerate(specs)]


def orca_torch_linear():
    import torch

    return torch.nn.Linear


def load_specs(model, seed: int, specs: list) -> None:
    """Seeded values into ORCA's embedder / predictor (names as in `trainable_specs`)."""
    import torch

    tensors = seeded_tensors(seed, specs)
    with torch.no_grad():
        for name, value in tensors.items():
            obj = model
            for part in name.split("."):
                obj = getattr(obj, part)
            obj.copy_(torch.from_numpy(value))


def stats(a) -> dict:
    a = np.asarray(a, dtype=np.float64)
    return {
        "std": float(a.std()),
        "mean": float(a.mean()),
        "maxabs": float(np.abs(a).max()),
        "n": int(a.size),
    }


# ---- the cases ---------------------------------------------------------------------------------------------
def case_init(orca, g: Golden, opts, tmp: Path) -> None:
    """Embedder construction and init for every task shape, at 0 and > 0 embedder epochs; forward of the
    embedder on a fixed batch with ORCA's initialised weights; Swin drop-path settings."""
    import torch

    use_bodies(tmp, drop_path=True)
    rng = np.random.default_rng([opts.seed, 1])
    for task in TASKS:
        shape, num_classes, _ = sample_shape_of(orca, task, opts)
        x = f16(rng.standard_normal((opts.init_batch, *shape[1:])))
        for epochs in (0, opts.embedder_epochs):
            torch.manual_seed(opts.seed)
            model = build_orca_model(orca, task, shape, num_classes, epochs)
            emb = model.embedder
            arrays = {"x": x}
            meta = {
                "task": task,
                "shape": list(shape[1:]),
                "num_classes": num_classes,
                "embedder_epochs": epochs,
            }
            for part in ("projection", "norm"):
                for n, p in getattr(emb, part).named_parameters():
                    arrays[f"{part}.{n}"] = p.detach().numpy()
            meta["projection_stats"] = stats(arrays["projection.weight"])
            with torch.no_grad():
                out = emb(torch.from_numpy(x.astype(np.float32)))
            tokens = out[0] if isinstance(out, tuple) else out
            arrays["tokens_mean"] = tokens.mean(1).numpy()
            meta["tokens_shape"] = list(tokens.shape[1:])
            if len(shape) == 3:
                meta["stride"] = int(emb.stack_num)
                used = emb.position_embeddings.weight[2 : 2 + tokens.shape[1]].detach().numpy()
                meta["positions_used"] = {"first_row": 2, "rows": int(tokens.shape[1]), **stats(used)}
                meta["target_seq_len"] = TARGET_SEQ_LEN[task]
                cfg = model.model.config
            else:
                meta["grid"] = list(out[1])
                cfg = model.model.config
                drop = [  # per block; a block built without drop-path holds an Identity
                    float(getattr(block.drop_path, "drop_prob", 0.0))
                    for layer in model.model.swin.encoder.layers
                    for block in layer.blocks
                ]
                meta["drop_path"] = {"config_drop_path_rate": float(cfg.drop_path_rate), "per_block": drop}
            meta["dropout"] = {
                "hidden_dropout_prob": float(cfg.hidden_dropout_prob),
                "attention_probs_dropout_prob": float(cfg.attention_probs_dropout_prob),
            }
            g.add(f"init_{task}_ep{epochs}", "init", meta, arrays)


def case_forward(orca, g: Golden, opts, tmp: Path) -> None:
    """The whole model (embedder → body → predictor) on a fixed batch, seeded task-specific weights, eval
    mode; for Darcy also the decoder's input and output (the dense head)."""

    use_bodies(tmp, drop_path=True)
    rng = np.random.default_rng([opts.seed, 2])
    for k, task in enumerate(TASKS):
        forward_one(orca, g, opts, rng, k, task)


def forward_one(orca, g: Golden, opts, rng, k: int, task: str) -> None:
    import torch

    shape, num_classes, _ = sample_shape_of(orca, task, opts)
    torch.manual_seed(opts.seed)
    model = build_orca_model(orca, task, shape, num_classes, opts.embedder_epochs)
    specs = trainable_specs(model, 1000 * (k + 1))
    load_specs(model, opts.seed, specs)
    model.output_raw = False
    model.eval()
    x = f16(rng.standard_normal((1 if task == "darcy" else opts.init_batch, *shape[1:])))
    arrays = {"x": x}
    captured = {}
    hook = None
    if task == "darcy":
        hook = model.model.decoder.register_forward_hook(
            lambda m, i, o: captured.update(decoder_in=i[0].detach().numpy())
        )
    with torch.no_grad():
        out = model(torch.from_numpy(x.astype(np.float32)))
    if hook is not None:
        hook.remove()
        arrays.update(captured)
    arrays["out"] = out.numpy()
    meta = {
        "task": task,
        "shape": list(shape[1:]),
        "num_classes": num_classes,
        "trainable": specs,
        "embedder_epochs": opts.embedder_epochs,
    }
    g.add(f"forward_{task}", "forward", meta, arrays)


REFINE_FAMILIES = {
    # name: task, optimizer (ORCA config form), accum, clip
    "sgd_accum": (
        "ecg",
        {"name": "SGD", "params": {"lr": 1e-3, "momentum": 0.99, "weight_decay": 0.1, "betas": [0.9, 0.98]}},
    ),
    "adam_clip": (
        "ninapro",
        {
            "name": "Adam",
            "params": {"lr": 1e-4, "betas": [0.9, 0.98], "weight_decay": 1e-5, "momentum": 0.999},
        },
    ),
    "adamw_warmup": (
        "satellite",
        {
            "name": "AdamW",
            "params": {"lr": 3e-4, "betas": [0.9, 0.98], "weight_decay": 3e-6, "momentum": 0.9},
        },
    ),
    "adamw_darcy": (
        "darcy",
        {
            "name": "AdamW",
            "params": {"lr": 1e-3, "betas": [0.9, 0.98], "weight_decay": 5e-3, "momentum": 0.9},
        },
    ),
}


def family_settings(name: str, opts) -> dict:
    return {
        "sgd_accum": {"accum": opts.accum, "clip": -1, "micro": opts.micro, "batch": opts.refine_batch},
        "adam_clip": {"accum": 1, "clip": opts.clip, "micro": max(2, opts.micro // 2), "batch": 2},
        "adamw_warmup": {
            "accum": opts.accum + 1,
            "clip": -1,
            "micro": opts.micro + 2,
            "batch": opts.refine_batch * 2,
        },
        "adamw_darcy": {"accum": 1, "clip": -1, "micro": 2, "batch": 2},
    }[name]


def darcy_normalizer(orca, rng, n: int, side: int):
    """ORCA's UnitGaussianNormalizer fitted on seeded positive fields (as Darcy's solutions)."""
    import torch

    y = torch.from_numpy(f16(np.abs(rng.standard_normal((n, side, side))) * 0.01 + 0.005).astype(np.float32))
    return orca.data_loaders.UnitGaussianNormalizer(y)


def case_refine(orca, g: Golden, opts, tmp: Path) -> None:
    """N refine micro-batches per optimiser family with ORCA's get_optimizer_scheduler + train_one_epoch,
    run for `refine_epochs` epochs over the same micro-batches; every micro-batch's lr and loss, every
    clip_grad_norm_ result, and the weights after every optimiser step."""

    use_bodies(tmp, drop_path=False)
    for k, (family, (task, optimizer)) in enumerate(REFINE_FAMILIES.items()):
        if opts.families and family not in opts.families:
            continue
        refine_one(orca, g, opts, k, family, task, optimizer)


def refine_one(orca, g: Golden, opts, k: int, family: str, task: str, optimizer: dict) -> None:
    import torch

    s = family_settings(family, opts)
    rng = np.random.default_rng([opts.seed, 3, k])
    shape, num_classes, loss = sample_shape_of(orca, task, opts)
    torch.manual_seed(opts.seed)
    model = build_orca_model(orca, task, shape, num_classes, opts.embedder_epochs)
    specs = trainable_specs(model, 5000 * (k + 1))
    load_specs(model, opts.seed, specs)
    model.output_raw = False
    xs = f16(rng.standard_normal((s["micro"], s["batch"], *shape[1:])))
    decoder = None
    arrays = {"x": xs}
    if task == "darcy":
        normalizer = darcy_normalizer(orca, rng, 8, shape[-1])
        decoder = normalizer
        ys = f16(rng.standard_normal((s["micro"], s["batch"], shape[-1], shape[-1])))
        arrays.update(y_mean=normalizer.mean.numpy(), y_std=normalizer.std.numpy())
    else:
        ys = rng.integers(0, num_classes, (s["micro"], s["batch"]))
    arrays["y"] = ys
    warmup, decay = opts.warmup_epochs, opts.decay_epochs
    args = orca.AttrDict(
        {
            "dataset": ORCA_DATASET[task],
            "device": "cpu",
            "accum": s["accum"],
            "clip": s["clip"],
            "epochs": opts.refine_epochs,
            "finetune_method": "all",
            "optimizer": optimizer,
            "scheduler": {"name": "WarmupLR", "params": {"warmup_epochs": warmup, "decay_epochs": decay}},
        }
    )
    n_train = s["micro"]
    args, model, opt, sched = orca.task_configs.get_optimizer_scheduler(
        args, model, module=None, n_train=n_train
    )
    names = {id(p): n for n, p in model.named_parameters()}
    params = [p for p in model.parameters() if p.requires_grad]

    def part_of(n: str) -> str:
        if n.startswith("predictor") or n.startswith("model.decoder"):
            return "predictor"
        if n.startswith("embedder") or n.startswith("model.swin.embeddings"):
            return "embedder"
        return "body"

    def norms() -> dict:
        out = {"embedder": 0.0, "body": 0.0, "predictor": 0.0}
        for p in params:
            out[part_of(names[id(p)])] += float(p.detach().double().pow(2).sum())
        return {k2: v**0.5 for k2, v in out.items()}

    rec = {
        "lr": [],
        "loss": [],
        "clip_norm": [],
        "step_grad_norm": [],
        "step_param_norms": [],
        "step_after_micro": [],
    }
    state = {"micro": 0}
    previous = [p.detach().clone() for p in params]
    rec["initial_param_norms"] = norms()

    def recording_loss(out, y):
        rec["lr"].append(float(opt.param_groups[0]["lr"]))
        value = loss(out, y)
        rec["loss"].append(float(value.detach()))
        state["micro"] += 1
        return value

    original_clip = torch.nn.utils.clip_grad_norm_

    def recording_clip(parameters, max_norm, *a, **kw):
        total = original_clip(parameters, max_norm, *a, **kw)
        rec["clip_norm"].append(float(total))
        return total

    original_step = opt.step

    def recording_step(*a, **kw):
        grad = sum(float(p.grad.detach().double().pow(2).sum()) for p in params if p.grad is not None) ** 0.5
        result = original_step(*a, **kw)
        rec["step_grad_norm"].append(grad)
        rec["step_param_norms"].append(norms())
        rec["step_after_micro"].append(state["micro"])
        return result

    opt.step = recording_step
    torch.nn.utils.clip_grad_norm_ = recording_clip
    try:
        train_losses = []
        for _ in range(opts.refine_epochs):
            loader = [
                (
                    torch.from_numpy(xs[i].astype(np.float32)),
                    torch.from_numpy(
                        np.asarray(ys[i]).astype(np.float32) if task == "darcy" else np.asarray(ys[i])
                    ),
                )
                for i in range(n_train)
            ]
            train_losses.append(
                float(
                    orca.main.train_one_epoch(
                        None, args, model, opt, sched, loader, recording_loss, n_train, decoder
                    )
                )
            )
    finally:
        torch.nn.utils.clip_grad_norm_ = original_clip
    delta = sum(float((p.detach() - q).double().pow(2).sum()) for p, q in zip(params, previous)) ** 0.5
    arrays["final_predictor"] = (
        model.predictor.weight.detach().numpy()
        if hasattr(model.predictor, "weight")
        else model.model.decoder[0].bias.detach().numpy()
    )
    arrays["final_embedder_norm_weight"] = model.embedder.norm.weight.detach().numpy()
    arrays["final_embedder_projection"] = model.embedder.projection.weight.detach().numpy()
    meta = {
        "task": task,
        "family": family,
        "shape": list(shape[1:]),
        "num_classes": num_classes,
        "trainable": specs,
        "embedder_epochs": opts.embedder_epochs,
        "optimizer": optimizer,
        "accum": s["accum"],
        "clip": s["clip"],
        "micro_per_epoch": n_train,
        "epochs": opts.refine_epochs,
        "batch": s["batch"],
        "warmup_epochs": warmup,
        "decay_epochs": decay,
        "lr_sched_iter": bool(args.lr_sched_iter),
        "train_loss": train_losses,
        "total_update_norm": delta,
        **rec,
    }
    g.add(f"refine_{family}", "refine", meta, arrays)


def case_align(orca, g: Golden, opts, tmp: Path) -> None:
    """One align epoch through ORCA's get_tgt_model (embedder_epochs = 1): the class-weighted OTDD loss and
    the embedder gradient, 1D (text proxy) and 2D (image proxy through the body's patch embedding)."""
    use_bodies(tmp, drop_path=True)
    for k, (task, proxy) in enumerate((("satellite", "text"), ("ninapro", "CIFAR10"))):
        align_one(orca, g, opts, k, task, proxy)


def align_one(orca, g: Golden, opts, k: int, task: str, proxy: str) -> None:
    import torch

    E = orca.embedder
    rng = np.random.default_rng([opts.seed, 4, k])
    shape, _num_classes_task, _ = sample_shape_of(orca, task, opts)
    n_cls = opts.align_classes
    sizes = [opts.align_per_class + c for c in range(n_cls)]
    ty = np.concatenate([np.full(n, c) for c, n in enumerate(sizes)])
    tx = f16(rng.standard_normal((len(ty), *shape[1:])))
    arrays = {"target_x": tx, "target_y": ty}
    if proxy == "text":
        px = f16(rng.standard_normal((opts.proxy_n, 1, 768)))
        src = torch.utils.data.TensorDataset(
            torch.from_numpy(px.astype(np.float32)), torch.from_numpy(rng.integers(0, 4, opts.proxy_n))
        )
        arrays["proxy_x"] = px[:, 0]
    else:
        px = f16(rng.uniform(-2, 2, (opts.proxy_n, 3, 32, 32)))
        src = torch.utils.data.TensorDataset(
            torch.from_numpy(px.astype(np.float32)), torch.from_numpy(rng.integers(0, 4, opts.proxy_n))
        )
        arrays["proxy_images"] = px
    arrays["proxy_y"] = src.tensors[1].numpy()
    tgt = torch.utils.data.TensorDataset(torch.from_numpy(tx.astype(np.float32)), torch.from_numpy(ty))
    batch = opts.align_batch

    def fake_get_data(root, dataset, batch_size, valid_split, maxsize=None, get_shape=False):
        ds = src if dataset == proxy else tgt
        loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=dataset != proxy)
        return loader, None, None, len(loader), 0, 0, None

    spec_box = {}
    grads = {}
    original_gos = E.get_optimizer_scheduler

    def patched_gos(args, model, module=None, n_train=1):
        if module == "embedder":
            specs = trainable_specs(model, 20000 * (k + 1))
            specs = [s for s in specs if s[0].startswith("embedder")]
            load_specs(model, opts.seed, specs)
            spec_box["specs"] = specs
            spec_box["model"] = model
        args, model, opt, sched = original_gos(args, model, module=module, n_train=n_train)
        if module == "embedder":
            step = opt.step

            def recording_step(*a, **kw):
                for n, p in model.embedder.named_parameters():
                    if p.grad is not None:
                        grads[n] = p.grad.detach().clone().numpy()
                spec_box["lr"] = float(opt.param_groups[0]["lr"])
                return step(*a, **kw)

            opt.step = recording_step
        return args, model, opt, sched

    original_tensor_dataset = torch.utils.data.TensorDataset
    E.get_data = fake_get_data
    E.get_optimizer_scheduler = patched_gos
    args = orca.AttrDict(
        {
            "dataset": ORCA_DATASET[task],
            "embedder_dataset": proxy,
            "objective": "otdd-exact",
            "weight": "roberta" if proxy == "text" else "base",
            "maxsamples": opts.align_maxsamples,
            "embedder_epochs": 1,
            "batch_size": batch,
            "activation": None,
            "target_seq_len": TARGET_SEQ_LEN.get(task, 512),
            "drop_out": 0.0,
            "infer_label": False,
            "device": "cpu",
            "optimizer": REFINE_FAMILIES["adamw_warmup"][1]
            if proxy == "text"
            else REFINE_FAMILIES["adam_clip"][1],
            "no_warmup_scheduler": {"name": "StepLR", "params": STEP_CONFIG},
        }
    )
    torch.manual_seed(opts.seed)
    np.random.seed(opts.seed)  # noqa: NPY002 -- ORCA draws from the global numpy RNG
    captured = []

    class CapturingTensorDataset(original_tensor_dataset):
        def __init__(self, *tensors):
            super().__init__(*tensors)
            if len(tensors) == 2 and tensors[0].dim() == 2 and not captured:
                captured.append(tensors[0].detach().clone())

    torch.utils.data.TensorDataset = CapturingTensorDataset
    try:
        model, embedder_stats = E.get_tgt_model(args, "./datasets", shape, n_cls, None)
    finally:
        torch.utils.data.TensorDataset = original_tensor_dataset
    if proxy == "CIFAR10":  # the body's patch embedding of the proxy images, mean over tokens
        arrays["proxy_features"] = captured[0].numpy()
    for n, v in grads.items():
        if n == "position_embeddings.weight":
            t = int(np.ceil(shape[-1] / model.embedder.stack_num))
            arrays["grad.positions"] = v[2 : 2 + t]
        else:
            arrays[f"grad.{n}"] = v
    meta = {
        "task": task,
        "proxy": proxy,
        "shape": list(shape[1:]),
        "classes": n_cls,
        "class_weights": [n / len(ty) for n in sizes],
        "maxsamples": opts.align_maxsamples,
        "batch": batch,
        "trainable": spec_box["specs"],
        "loss": float(embedder_stats[0][0]),
        "align_lr": spec_box.get("lr"),
        "embedder_epochs": 1,
    }
    g.add(f"align_{'1d' if proxy == 'text' else '2d'}", "align", meta, arrays)
    E.get_optimizer_scheduler = original_gos


def case_losses(orca, g: Golden, opts) -> None:
    """Each task's training loss (ORCA's get_config) on fixed outputs and targets; Darcy's through the
    target normaliser's decode, as train_one_epoch does."""
    import torch

    rng = np.random.default_rng([opts.seed, 5])
    for task in TASKS:
        shape, num_classes, loss = sample_shape_of(orca, task, opts)
        b = opts.loss_batch
        arrays = {}
        if task == "darcy":
            side = shape[-1]
            normalizer = darcy_normalizer(orca, rng, 8, side)
            out = f16(rng.standard_normal((b, side, side)))
            y = f16(rng.standard_normal((b, side, side)))
            o, t = torch.from_numpy(out.astype(np.float32)), torch.from_numpy(y.astype(np.float32))
            value = loss(normalizer.decode(o).view(b, -1), normalizer.decode(t).view(b, -1))
            arrays.update(y_mean=normalizer.mean.numpy(), y_std=normalizer.std.numpy())
        elif task == "deepsea":
            out = f16(rng.standard_normal((b, num_classes)) * 2)
            y = rng.integers(0, 2, (b, num_classes)).astype(np.float32)
            value = loss(torch.from_numpy(out.astype(np.float32)), torch.from_numpy(y))
        else:
            out = f16(rng.standard_normal((b, num_classes)) * 2)
            y = rng.integers(0, num_classes, b)
            value = loss(torch.from_numpy(out.astype(np.float32)), torch.from_numpy(y))
        arrays.update(out=out, y=y)
        g.add(
            f"loss_{task}",
            "loss",
            {"task": task, "loss_class": type(loss).__name__, "value": float(value)},
            arrays,
        )


def case_metrics(orca, g: Golden, opts) -> None:
    """Each task's metric in ORCA's chunked form: main.evaluate over loader batches of the config's batch
    size, scored per chunk of >= eval_batch_size samples and averaged."""
    import torch

    rng = np.random.default_rng([opts.seed, 6])

    class Identity(torch.nn.Module):
        def forward(self, x):
            return x

    for task in TASKS:
        shape, num_classes, loss = sample_shape_of(orca, task, opts)
        metric, _ = orca.task_configs.get_metric("./datasets", ORCA_DATASET[task])
        n = opts.metric_n_dense if task == "darcy" else opts.metric_n
        bs = CONFIG_BATCH[task]
        decoder = None
        arrays = {}
        if task == "darcy":
            side = shape[-1]
            decoder = darcy_normalizer(orca, rng, 8, side)
            out = f16(rng.standard_normal((n, side, side)))
            y = f16(rng.standard_normal((n, side, side)))
            arrays.update(y_mean=decoder.mean.numpy(), y_std=decoder.std.numpy())
        elif task == "deepsea":
            y = (rng.random((n, num_classes)) < 0.3).astype(np.float32)
            out = f16(rng.standard_normal((n, num_classes)) + y)
        else:
            y = rng.integers(0, num_classes, n)
            out = f16(rng.standard_normal((n, num_classes)) + 1.5 * np.eye(num_classes)[y])
        o = torch.from_numpy(out.astype(np.float32))
        t = torch.from_numpy(y)
        loader = [(o[i : i + bs], t[i : i + bs]) for i in range(0, n, bs)]
        args = orca.AttrDict(
            {"device": "cpu", "eval_batch_size": opts.eval_chunk, "dataset": ORCA_DATASET[task]}
        )
        eval_loss, eval_score = orca.main.evaluate(
            None, args, Identity(), loader, loss, metric, len(loader), decoder
        )
        arrays.update(out=out, y=y)
        meta = {
            "task": task,
            "metric_class": type(metric).__name__,
            "batch": bs,
            "eval_batch_size": opts.eval_chunk,
            "n": n,
            "score": float(eval_score),
            "loss": float(eval_loss),
        }
        g.add(f"metric_{task}", "metric", meta, arrays)


def case_ecg_split(orca, g: Golden, opts, tmp: Path) -> None:
    """ORCA's load_ecg (valid_split False) on seeded recordings: z-score, 90/10 split of recordings
    (random_state 0), windows of 1000 with class-dependent strides. Windows are identified by (recording,
    start), found by matching each of ORCA's windows against the z-scored recordings."""
    rng = np.random.default_rng([opts.seed, 7])
    n = opts.ecg_recordings
    lengths = rng.integers(opts.ecg_min_len, opts.ecg_max_len + 1, n)
    letters = np.array(["N", "A", "O", "~"])
    labels = rng.integers(0, 4, n)
    recs = [f16(rng.standard_normal(L) * 50 + rng.normal(0, 20)).astype(np.float32) for L in lengths]
    data = np.empty(n, dtype=object)
    for i, r in enumerate(recs):
        data[i] = r.astype(np.float64)
    root = tmp / "ecg"
    root.mkdir()
    with open(root / "challenge2017.pkl", "wb") as f:
        pickle.dump({"data": data, "label": letters[labels]}, f)
    np.random.seed(opts.seed)  # noqa: NPY002 -- ORCA draws from the global numpy RNG
    train_loader, _, test_loader = orca.data_loaders.load_ecg(str(root), 4, valid_split=False)
    z = [(r.astype(np.float64) - r.astype(np.float64).mean()) / r.astype(np.float64).std() for r in recs]

    def identify(x, y):
        x = x[:, 0].numpy().astype(np.float64)
        found = []
        for w, lab in zip(x, y.numpy()):
            hit = None
            for ri, zr in enumerate(z):
                if labels[ri] != lab:
                    continue
                for start in np.flatnonzero(np.abs(zr[: len(zr) - 999] - w[0]) < 1e-5):
                    if np.allclose(zr[start : start + 1000], w, atol=1e-5):
                        hit = (ri, int(start))
                        break
                if hit:
                    break
            if hit is None:
                raise RuntimeError("an ORCA ECG window matches no recording")
            found.append((hit[0], hit[1], int(lab)))
        return np.array(sorted(found), dtype=np.int64), float(x.sum())

    train, train_sum = identify(*train_loader.dataset.tensors)
    test, test_sum = identify(*test_loader.dataset.tensors)
    arrays = {
        "recordings": np.concatenate(recs),
        "lengths": lengths,
        "labels": labels,
        "train_windows": train,
        "test_windows": test,
    }
    meta = {
        "recordings": n,
        "label_letters": "".join(letters),
        "window": 1000,
        "train_sum": train_sum,
        "test_sum": test_sum,
        "n_train": len(train),
        "n_test": len(test),
    }
    g.add("ecg_split", "ecg_split", meta, arrays)


def case_satellite(orca, g: Golden, opts, tmp: Path) -> None:
    """ORCA's load_satellite on seeded raw arrays (pickled dicts, as the real files): inputs used raw."""
    rng = np.random.default_rng([opts.seed, 8])
    root = tmp / "satellite"
    root.mkdir()
    raw = {}
    for split, n in (("train", opts.satellite_n), ("test", max(4, opts.satellite_n // 4))):
        data = f16(rng.gamma(2.0, 900.0, (n, 46))).astype(np.float32)  # reflectance-like, far from unit scale
        # every class in the training file (as the real one; our loader requires it), then random labels
        label = rng.permutation(np.concatenate([np.arange(1, 25), rng.integers(1, 25, max(0, n - 24))]))[:n]
        np.save(root / f"satellite_{split}.npy", {"data": data, "label": label}, allow_pickle=True)
        raw[split] = (data, label)
    train_loader, _, test_loader = orca.data_loaders.load_satellite(str(root), 4, valid_split=False)
    arrays = {
        "raw_train": raw["train"][0],
        "label_train": raw["train"][1],
        "raw_test": raw["test"][0],
        "label_test": raw["test"][1],
        "orca_x_train": train_loader.dataset.tensors[0].numpy(),
        "orca_y_train": train_loader.dataset.tensors[1].numpy(),
        "orca_x_test": test_loader.dataset.tensors[0].numpy(),
        "orca_y_test": test_loader.dataset.tensors[1].numpy(),
    }
    g.add("satellite_raw", "satellite", {}, arrays)


def case_pseudo_labels(orca, g: Golden, opts) -> None:
    """ORCA's k-means pseudo-classes for tasks without classes (infer_labels: k = 10 on the flattened
    targets), on targets drawn around 10 well-separated centres, where any k-means run finds the same
    partition; k-means's own random restarts make the labels' numbering arbitrary."""
    import torch

    rng = np.random.default_rng([opts.seed, 9])
    centres = rng.normal(0, 10, (10, 6, 6))
    members = rng.permutation(np.arange(opts.pseudo_n) % 10)
    y = f16(centres[members] + rng.normal(0, 0.1, (opts.pseudo_n, 6, 6)))
    x = torch.zeros(opts.pseudo_n, 1)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, torch.from_numpy(y.astype(np.float32))), batch_size=8
    )
    labelled, k = orca.embedder.infer_labels(loader)
    labels = labelled.dataset.tensors[1].numpy().ravel()
    g.add("pseudo_labels", "pseudo_labels", {"k": int(k)}, {"y": y, "labels": labels})


def case_schedules(orca, g: Golden, opts) -> None:
    """ORCA's WarmupLR lambda (per micro-batch) for each task's config and n_train, and the align
    StepLR lambda (per epoch)."""
    arrays = {}
    meta = {"n_train": opts.schedule_n_train, "warmup": {}}
    for task, (warmup, decay) in WARMUP_CONFIG.items():
        fn, it = orca.task_configs.get_scheduler(
            "WarmupLR", {"warmup_epochs": warmup, "decay_epochs": decay}, 0, opts.schedule_n_train
        )
        steps = np.arange(0, int(decay * opts.schedule_n_train))
        arrays[f"warmup_{task}"] = np.array([fn(int(s)) for s in steps], dtype=np.float64)
        meta["warmup"][task] = {"warmup_epochs": warmup, "decay_epochs": decay, "lr_sched_iter": bool(it)}
    fn, it = orca.task_configs.get_scheduler("StepLR", STEP_CONFIG, 0, 1)
    arrays["step_align"] = np.array([fn(e) for e in range(0, 101)], dtype=np.float64)
    meta["step"] = {**STEP_CONFIG, "lr_sched_iter": bool(it)}
    g.add("schedules", "schedules", meta, arrays)


# ---- main --------------------------------------------------------------------------------------------------
def parse_shapes(items: list[str]) -> dict:
    shapes = {}
    for item in items or []:
        task, _, dims = item.partition("=")
        if task not in TASKS or not dims:
            sys.exit(f"--shape {item!r}: use TASK=C,L (1D) or TASK=C,H,W (2D) with TASK in {TASKS}")
        shapes[task] = tuple(int(d) for d in dims.split(","))
    return shapes


def main(argv=None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--out",
        type=Path,
        default=REPO / "tests" / "data" / "orca_parity",
        help="golden folder (emptied of old cases)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of every input, weight and split")
    p.add_argument(
        "--orca-src", type=Path, default=os.environ.get("ORCA_SRC"), help="ORCA checkout (default $ORCA_SRC)"
    )
    p.add_argument(
        "--only",
        nargs="*",
        default=None,
        help="case groups: init forward refine align losses metrics ecg satellite schedules pseudo",
    )
    p.add_argument(
        "--shape",
        action="append",
        dest="shape_items",
        help="override a task's sample shape, e.g. ecg=1,2000 or darcy=3,64,64",
    )
    p.add_argument("--roberta-layers", type=int, default=1)
    p.add_argument("--roberta-intermediate", type=int, default=64)
    p.add_argument("--swin-depths", default="1,1,1,1")
    p.add_argument("--swin-mlp-ratio", type=float, default=0.25)
    p.add_argument("--embedder-epochs", type=int, default=60, help="the '> 0 embedder epochs' init case")
    p.add_argument("--init-batch", type=int, default=2)
    p.add_argument(
        "--families", nargs="*", default=None, help=f"refine families (default all: {list(REFINE_FAMILIES)})"
    )
    p.add_argument(
        "--micro",
        type=int,
        default=8,
        help="micro-batches per epoch of the SGD trace (others derive from it)",
    )
    p.add_argument(
        "--accum", type=int, default=3, help="accumulation of the SGD trace (AdamW+warmup uses accum + 1)"
    )
    p.add_argument("--clip", type=float, default=0.5, help="clip of the Adam trace")
    p.add_argument("--refine-batch", type=int, default=4)
    p.add_argument("--refine-epochs", type=int, default=2)
    p.add_argument("--warmup-epochs", type=float, default=1.0)
    p.add_argument("--decay-epochs", type=float, default=4.0)
    p.add_argument("--align-classes", type=int, default=3)
    p.add_argument(
        "--align-per-class", type=int, default=5, help="target points of class 0 (class c has this + c)"
    )
    p.add_argument("--align-maxsamples", type=int, default=64)
    p.add_argument("--align-batch", type=int, default=4)
    p.add_argument("--proxy-n", type=int, default=24)
    p.add_argument("--loss-batch", type=int, default=6)
    p.add_argument("--metric-n", type=int, default=330)
    p.add_argument("--metric-n-dense", type=int, default=10)
    p.add_argument("--eval-chunk", type=int, default=100, help="ORCA's eval_batch_size (1000 in its configs)")
    p.add_argument("--ecg-recordings", type=int, default=30)
    p.add_argument("--ecg-min-len", type=int, default=1050)
    p.add_argument("--ecg-max-len", type=int, default=2600)
    p.add_argument("--satellite-n", type=int, default=40, help="training rows (>= 24: every class)")
    p.add_argument("--pseudo-n", type=int, default=120, help="targets of the k-means pseudo-class case")
    p.add_argument("--schedule-n-train", type=int, default=7)
    opts = p.parse_args(argv)
    if opts.orca_src is None:
        sys.exit("set ORCA_SRC (or --orca-src) to a checkout of sjunhongshen/ORCA at commit 19b8c1c")
    opts.shapes = parse_shapes(opts.shape_items)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    src = Path(opts.orca_src).resolve()
    orca = import_orca(src)
    import torch
    import transformers

    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    patch_from_pretrained(orca.transformers)
    out = opts.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    for old in [*out.glob("*.npz"), out / MANIFEST]:
        old.unlink(missing_ok=True)
    g = Golden(out)
    groups = opts.only or [
        "init",
        "forward",
        "refine",
        "align",
        "losses",
        "metrics",
        "ecg",
        "satellite",
        "schedules",
        "pseudo",
    ]
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        print(f"ORCA {orca_commit(src)} from {src}; golden -> {out}")
        bodies = make_bodies(orca, opts, tmp, out)
        for group in groups:
            fn = {
                "init": case_init,
                "forward": case_forward,
                "refine": case_refine,
                "align": case_align,
                "ecg": case_ecg_split,
                "satellite": case_satellite,
            }.get(group)
            if fn is not None:
                fn(orca, g, opts, tmp)
            elif group in ("losses", "metrics", "schedules", "pseudo"):
                {
                    "losses": case_losses,
                    "metrics": case_metrics,
                    "schedules": case_schedules,
                    "pseudo": case_pseudo_labels,
                }[group](orca, g, opts)
            else:
                sys.exit(f"unknown case group {group!r}")
    manifest = {
        "format": FORMAT_VERSION,
        "orca_commit": orca_commit(src),
        "seed": opts.seed,
        "options": {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in vars(opts).items()
            if k not in ("orca_src", "out")
        },
        "versions": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "numpy": np.__version__,
        },
        "bodies": bodies,
        "cases": g.cases,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"{len(g.cases)} cases, {total / 1e6:.2f} MB in {out}")


if __name__ == "__main__":
    main()
