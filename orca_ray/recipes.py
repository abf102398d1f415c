"""The ORCA recipe in one place: what each task trains with, and what each preset defaults to.

Like timm's ``default_cfgs``: a table per task (`TASK_RECIPES`) and per preset (`PRESETS`); code asks
`recipe_for(task)` and `PRESETS[preset]` instead of keeping its own copy. The NAS-Bench-360 rows are ORCA's
configs (sjunhongshen/ORCA, its per-task configs), the ``openml:<ID>`` rows its 42 OpenML configs (the table
is data in `tabular_recipes`); a seeded stand-in ``synthetic-X`` uses the recipe of ``X``
(`base_task`); bundled and user tasks get the CPU demo recipe.

    recipe_for("synthetic-ecg").refine.accum      # 16 (ORCA's ECG config)
    PRESETS["paper"].body["2d"]                   # "swin-base"
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .refine import RefineHParams
from .tabular_recipes import OPENML_ALIGN_EPOCHS, ORCA_OPENML, align_batch_per_class, openml_row

SYNTHETIC_PREFIX = "synthetic-"
DEFAULT_BATCH_PER_CLASS = 64  # align batch per class for tasks without an ORCA config
DEFAULT_ALIGN_EPOCHS = 60  # ORCA's embedder epochs unless a task says otherwise
DEFAULT_TRAIN_SIZE = 1_000  # training samples assumed by the cost estimate for an unknown task


def base_task(task: str) -> str:
    """The task whose recipe `task` uses: ``synthetic-X`` → ``X`` (a stand-in shares its original's recipe).

    Args:
        task: a task name as given to `load_task`.
    """
    return task.removeprefix(SYNTHETIC_PREFIX)


@dataclass(frozen=True)
class TaskRecipe:
    """How ORCA trains one task.

    Args:
        refine: the fine-tuning hyperparameters (optimiser, lr, epochs, batch, accumulation, schedule).
        align_epochs: ORCA's embedder (align) epochs, the paper preset's default.
        target_seq_len: token budget behind the 1D embedder's stride (None: the model's default, 64).
        align_batch_per_class: target points per class in each align step (Algorithm 1's b).
        train_size: training samples of the real task, for the `--dry-run` cost estimate.
        dropout: ORCA's ``drop_out`` for the body's hidden and attention dropout (the OpenML configs set it);
            a trial's own non-zero `dropout` overrides it.
    """

    refine: RefineHParams
    align_epochs: int = DEFAULT_ALIGN_EPOCHS
    target_seq_len: int | None = None
    align_batch_per_class: int = DEFAULT_BATCH_PER_CLASS
    train_size: int = DEFAULT_TRAIN_SIZE
    dropout: float = 0.0


# small real tasks run on a laptop CPU: short, and a learning rate that moves a pretrained body in few epochs
DEMO_HPARAMS = RefineHParams(
    "adamw",
    1e-4,
    weight_decay=1e-5,
    epochs=8,
    batch_size=8,
    accum=1,
    clip=1.0,
    warmup_epochs=1,
    decay_epochs=8,
)
DEMO_RECIPE = TaskRecipe(refine=DEMO_HPARAMS)

# ORCA's configs for the NAS-Bench-360 tasks; train sizes after the validation split
NB360_RECIPES: dict[str, TaskRecipe] = {
    "satellite": TaskRecipe(
        RefineHParams(
            "adamw",
            3e-5,
            weight_decay=3e-6,
            epochs=60,
            batch_size=16,
            accum=4,
            warmup_epochs=5,
            decay_epochs=60,
        ),
        align_epochs=60,
        # satellite.yaml sets none: ORCA's get_config default, 512 (46 values give stride 1 under 64 or 512)
        target_seq_len=512,
        align_batch_per_class=144,
        train_size=800_000,
    ),
    "deepsea": TaskRecipe(
        RefineHParams(
            "adam",
            1e-5,
            weight_decay=0.0,
            epochs=13,
            batch_size=16,
            accum=1,
            clip=1.0,
            warmup_epochs=10,
            decay_epochs=25,
        ),
        align_epochs=60,
        target_seq_len=512,
        align_batch_per_class=80,
        train_size=71_753,
    ),
    "ecg": TaskRecipe(
        RefineHParams(
            "sgd",
            1e-6,
            momentum=0.99,
            weight_decay=0.1,
            epochs=15,
            batch_size=4,
            accum=16,
            warmup_epochs=5,
            decay_epochs=200,
        ),
        align_epochs=60,
        target_seq_len=64,
        align_batch_per_class=132,
        train_size=90_000,
    ),
    "ninapro": TaskRecipe(
        RefineHParams(
            "adam",
            1e-4,
            weight_decay=1e-5,
            epochs=60,
            batch_size=32,
            accum=1,
            clip=1.0,
            warmup_epochs=5,
            decay_epochs=60,
        ),
        align_epochs=100,
        align_batch_per_class=160,
        train_size=2_638,
    ),
    "cifar100": TaskRecipe(
        RefineHParams(
            "sgd",
            1e-4,
            momentum=0.9,
            weight_decay=1e-3,
            epochs=60,
            batch_size=32,
            accum=32,
            warmup_epochs=5,
            decay_epochs=200,
        ),
        align_epochs=60,
        align_batch_per_class=160,
        train_size=45_000,
    ),
    "darcy": TaskRecipe(
        RefineHParams(
            "adamw",
            1e-3,
            weight_decay=5e-3,
            epochs=100,
            batch_size=4,
            accum=1,
            warmup_epochs=5,
            decay_epochs=100,
        ),
        align_epochs=60,
        align_batch_per_class=132,
        train_size=900,
    ),
}
# The batch sizes the follow-up study states (García-de-Herreros et al. 2024, Satellite 64, ECG 32) where they
# differ from ORCA's configs (Satellite 16 × accum 4, ECG 4 × accum 16); an option (`--batch-sizes
# seed-paper`): one micro-batch of this size per optimiser step. ORCA's stay the default.
SEED_PAPER_BATCH_SIZES = {"satellite": 64, "ecg": 32}


def seed_paper_batch_sizes(grid: dict) -> list[dict]:
    """A sweep grid with the seed paper's batch sizes: the tasks of `SEED_PAPER_BATCH_SIZES` split out into
    their own grids with `batch_size` set and `accum` 1 (unless the grid sets them already).

    Args:
        grid: a grid dict whose "task" is a name or a list of names.
    """
    many = isinstance(grid.get("task"), list | tuple)
    tasks = list(grid["task"]) if many else [grid["task"]]
    plain = [t for t in tasks if base_task(t) not in SEED_PAPER_BATCH_SIZES]
    out = [{**grid, "task": plain if many else plain[0]}] if plain else []
    for t in tasks:
        if base_task(t) in SEED_PAPER_BATCH_SIZES:
            size = {"batch_size": SEED_PAPER_BATCH_SIZES[base_task(t)], "accum": 1}
            out.append({**grid, "task": t, **{k: v for k, v in size.items() if grid.get(k) is None}})
    return out


# the bundled real tasks: the demo recipe, with their training-set sizes for the cost estimate
BUNDLED_TRAIN_SIZES = {
    "digits": 1_295,
    "basicmotions": 36,
    "gunpoint": 45,
    "arrowhead": 33,
    "osuleaf": 180,
    "acsf1": 90,
    "italypowerdemand": 61,
    "italypowerdemand-pooled": 575,
}
# the bundled tables (scikit-learn's breast cancer and wine): training rows after the test and validation splits
BUNDLED_TABLE_TRAIN_SIZES = {"breast-cancer": 410, "wine": 127}


def _openml_recipe(did: int) -> TaskRecipe:
    r = openml_row(did)
    hp = RefineHParams(
        r["optimizer"],
        r["lr"],
        momentum=r["momentum"] if r["momentum"] is not None else 0.9,
        weight_decay=float(r["weight_decay"]),
        epochs=r["epochs"],
        batch_size=r["batch_size"],
        accum=1,
        clip=r["clip"],
        warmup_epochs=r["warmup_epochs"],
        decay_epochs=r["decay_epochs"],
    )
    return TaskRecipe(
        refine=hp,
        align_epochs=OPENML_ALIGN_EPOCHS,
        target_seq_len=r["target_seq_len"],
        align_batch_per_class=align_batch_per_class(r["maxsamples"], r["batch_size"]),
        dropout=r["dropout"],
    )


TASK_RECIPES: dict[str, TaskRecipe] = {
    **NB360_RECIPES,
    **{name: TaskRecipe(refine=DEMO_HPARAMS, train_size=n) for name, n in BUNDLED_TRAIN_SIZES.items()},
    **{name: TaskRecipe(refine=DEMO_HPARAMS, train_size=n) for name, n in BUNDLED_TABLE_TRAIN_SIZES.items()},
    **{f"openml:{did}": _openml_recipe(did) for did in ORCA_OPENML},
}

# the tasks whose recipe is one of ORCA's configs (the dry run lists them)
ORCA_RECIPE_TASKS = frozenset(NB360_RECIPES) | {f"openml:{did}" for did in ORCA_OPENML}


def recipe_for(task: str) -> TaskRecipe:
    """ORCA's recipe for a NAS-Bench-360 task or its synthetic stand-in; the demo recipe for anything else.

    Args:
        task: a task name as given to `load_task`.
    """
    return TASK_RECIPES.get(base_task(task), DEMO_RECIPE)


def hparams_for(task: str) -> RefineHParams:
    """The task's fine-tuning hyperparameters (`recipe_for(task).refine`).

    Args:
        task: a task name as given to `load_task`.
    """
    return recipe_for(task).refine


# ---- presets ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PresetDefaults:
    """What a `--preset` means: default tasks, seeds, resources, bodies, proxies and trial settings.

    Args:
        tasks: tasks a sweep runs when `--tasks` is not given.
        seeds: seeds when `--seeds` is not given.
        cpus: CPUs per trial.
        gpus: GPUs per trial.
        body: body per task modality ("1d", "2d").
        proxy: the proxy `proxy="auto"` means, per body modality.
        align_epochs: embedder epochs of the aligned arm in the sweeps; None: each task's recipe.
        extra: TrialConfig fields every trial of the preset gets.
    """

    tasks: tuple[str, ...]
    seeds: tuple[int, ...]
    cpus: float
    gpus: float
    body: dict[str, str]
    proxy: dict[str, str]
    align_epochs: int | None = None
    extra: dict = field(default_factory=dict)


# CPU laptop demo (the README's first command, ~10 minutes on 2 cores; benchmarks/demo.py measures it): real
# data that packages ship — scikit-learn's digits (images) and sktime's ItalyPowerDemand with UCR's train and
# test pooled (series; UCR's own 67-series train split is too small to select on) — through the bundled MiniLM
# with the bundled WNUT-16 text proxy. Chosen by measurement: 4 tokens per sample (4×4-pixel patches, 6-step
# strides) are cheaper *and* far better than 16 (a 2×2 patch is nearly erased by LayerNorm); batch 32 at lr 2e-4
# reaches a stable score in 5 epochs; the full training sets and a 25% validation split (359 / 192 samples)
# make the best-validation epoch a real choice; 3 seeds give a seed-to-seed std.
DEMO = PresetDefaults(
    tasks=("digits", "italypowerdemand-pooled"),
    seeds=(0, 1, 2),
    cpus=1,
    gpus=0,
    # 2D inputs become patch tokens with learned positions in the text body
    body={"1d": "minilm", "2d": "minilm"},
    proxy={"1d": "wnut16", "2d": "digits"},
    align_epochs=30,
    extra={
        "refine_epochs": 5,
        "batch_size": 32,
        "lr": 2e-4,
        "val_fraction": 0.25,
        "target_seq_len": 4,
        "proxy_size": 2000,
        "align_batch_per_class": 32,
    },
)
# Paper: the NAS-Bench-360 tasks with ORCA's bodies (RoBERTa-base for 1D, Swin-base for 2D), proxies and recipes
PAPER = PresetDefaults(
    tasks=("cifar100", "ninapro", "darcy", "satellite", "deepsea", "ecg"),
    seeds=(0, 1, 2),
    cpus=4,
    gpus=1,
    body={"1d": "roberta-base", "2d": "swin-base"},
    proxy={"1d": "conll", "2d": "cifar10"},
)
PRESETS: dict[str, PresetDefaults] = {"demo": DEMO, "paper": PAPER}


def preset(name: str) -> PresetDefaults:
    """The defaults of preset `name`; fails naming the presets there are.

    Args:
        name: "demo" or "paper".
    """
    if name not in PRESETS:
        raise ValueError(f"preset must be one of {tuple(PRESETS)}, got {name!r}")
    return PRESETS[name]


def body_for(task: str, preset_name: str) -> str:
    """The preset's body for a task, by the task's modality.

    Args:
        task: a task name as given to `load_task`.
        preset_name: "demo" or "paper".
    """
    from .tasks import task_modality

    return preset(preset_name).body[task_modality(task)]


def default_proxy(modality: str, preset_name: str) -> str:
    """The proxy `proxy="auto"` stands for: it follows the *body's* modality, as in ORCA.

    Args:
        modality: the body's modality, "1d" (text) or "2d" (image).
        preset_name: "demo" or "paper".
    """
    return preset(preset_name).proxy[modality]


def align_epochs_for(task: str, preset_name: str) -> int:
    """Embedder epochs of a sweep's aligned arm: the preset's fixed count, else the task's recipe.

    Args:
        task: a task name as given to `load_task`.
        preset_name: "demo" or "paper".
    """
    return preset(preset_name).align_epochs or recipe_for(task).align_epochs
