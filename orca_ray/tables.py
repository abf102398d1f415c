"""The study's final-score tables as markdown, from the Parquet results alone (no Ray, no matplotlib).

`write_final_scores` writes final_scores.md: mean ± std over seeds of the final test score and final OTDD per
setting (baselines as marked rows after each task's settings), the seed-to-seed noise next to the differences
between settings, and the data's own class labels. The "final" score of a trial is the test score at its
best-validation refine epoch (`orca_ray.results.final_scores`). `orca_ray.analysis` draws the figures from the
same helpers (`keyed`, `mean_std`, `split_baselines`).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from .baselines import KINDS as BASELINE_KINDS
from .baselines import baseline_kind

# the settings a trial differs in besides its seed (pretraining_tokens follows the body)
FACTORS = (
    "body",
    "proxy",
    "embedder_epochs",
    "freeze",
    "embedder",
    "lora_rank",
    "lr",
    "preset",
    "protocol",
    "precision",
)
# what a trial written before a factor existed ran with (its column is null there)
FACTOR_DEFAULTS = {"embedder": "orca", "lora_rank": 0}
MISSING = "–"
TABLE = "final_scores.md"


def mean_std(values) -> tuple[float, float, int]:
    """(mean, sample std, count) of the numeric values (NaN and non-numbers dropped; std 0 for one value).

    Args:
        values: a sequence or Series of scores.
    """
    v = np.asarray(pd.to_numeric(pd.Series(values), errors="coerce").dropna(), dtype=np.float64)
    if len(v) == 0:
        return math.nan, math.nan, 0
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0, len(v)


def keyed(fs: pd.DataFrame) -> pd.DataFrame:
    """A copy of the final scores with each factor also as a plain hashable column `_<factor>` (NaN → MISSING,
    or the value a trial written before the factor existed ran with, `FACTOR_DEFAULTS`), for grouping.

    Args:
        fs: final scores (`final_scores`).
    """
    out = fs.copy()
    for c in FACTORS:
        col = (
            out[c].astype(object) if c in out else pd.Series([None] * len(out), index=out.index, dtype=object)
        )
        missing = FACTOR_DEFAULTS.get(c, MISSING)
        out["_" + c] = [
            missing if (v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA) else v
            for v in col
        ]
    return out


def task_names(fs: pd.DataFrame) -> list[str]:
    """The tasks in the rows, sorted.

    Args:
        fs: rows with a `task` column.
    """
    return sorted(fs["task"].dropna().astype(str).unique())


def tasks_varying(fs: pd.DataFrame, column: str) -> list[str]:
    """The tasks (sorted) whose rows hold two or more values of `column` (nulls not counted): those a figure
    comparing that factor has something to draw for.

    Args:
        fs: rows with a `task` column and `column`.
        column: the factor compared.
    """
    return [t for t in task_names(fs) if fs.loc[fs["task"] == t, column].nunique() >= 2]


def split_baselines(df: pd.DataFrame, fs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(trials, baselines): the final scores of ordinary trials, and those of the baselines with a
    "baseline" column naming their kind (read from each trial's `config_json`).

    Args:
        df: the rows (`read_results`).
        fs: their final scores (`final_scores(df)`).
    """
    first = df.drop_duplicates("trial_id")[["trial_id", "config_json"]]
    kinds = dict(zip(first["trial_id"], (baseline_kind(c) for c in first["config_json"])))
    kind = fs["trial_id"].map(kinds)
    return fs[kind.isna()], fs[kind.notna()].assign(baseline=kind[kind.notna()])


def _fmt(mean: float, std: float, n: int) -> str:
    if n == 0 or math.isnan(mean):
        return MISSING
    return f"{mean:.4g} ± {std:.2g}" if n > 1 else f"{mean:.4g} ± {MISSING}"


def classes_table(fs: pd.DataFrame, shown: int = 30) -> str:
    """Markdown: for each classification task, its class indices and the labels the data itself uses
    (the `classes` column; "" when no task has one).

    Args:
        fs: `final_scores` output.
        shown: at most this many classes are listed per task.
    """
    if "classes" not in fs:
        return ""
    lines = []
    for task, names in sorted(fs.dropna(subset=["classes"]).groupby("task")["classes"].first().items()):
        labels = json.loads(names)
        if labels == [str(i) for i in range(len(labels))]:
            continue  # already 0..K-1: nothing to translate
        pairs = ", ".join(f"{i} = {name}" for i, name in enumerate(labels[:shown]))
        lines.append(f"| {task} | {len(labels)} | {pairs}{', ...' if len(labels) > shown else ''} |")
    if not lines:
        return ""
    head = ["", "## Classes", "", "Class index → the label in the data's own files.", ""]
    return "\n".join([*head, "| task | classes | index = label |", "|---|---|---|", *lines]) + "\n"


def final_scores_table(fs: pd.DataFrame, baselines: pd.DataFrame | None = None) -> str:
    """Markdown: one line per setting (task, body, proxy, embedder_epochs, freeze; lr, preset, protocol and
    precision when they vary) with the number of seeds n and mean ± std over seeds of the final test score and the final OTDD;
    after each task's settings, its baselines, marked as such.

    Args:
        fs: final scores of the sweep's trials (`final_scores`), baselines excluded.
        baselines: final scores of the baselines with a "baseline" column naming their kind, or None.
    """
    kfs = keyed(fs)
    extra = [
        c
        for c in ("embedder", "lora_rank", "lr", "preset", "protocol", "precision")
        if kfs["_" + c].nunique() > 1
    ]
    keys = ["task", "body", "proxy", "embedder_epochs", "freeze", *extra]
    head = [*keys, "metric", "n_seeds", "final test (mean ± std)", "final OTDD (mean ± std)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    kfs["task"] = kfs["task"].fillna(MISSING)
    group_cols = ["task", *("_" + k for k in keys[1:])]
    base = baselines if baselines is not None else pd.DataFrame(columns=["task", "baseline"])
    tasks = sorted(set(kfs["task"].astype(str)) | set(base["task"].dropna().astype(str)))
    for task in tasks:
        for combo, g in kfs[kfs["task"] == task].groupby(group_cols, sort=True, dropna=False):
            cells = [str(v) for v in combo] + _score_cells(g)
            lines.append("| " + " | ".join(cells) + " |")
        for kind in BASELINE_KINDS:
            g = base[(base["task"] == task) & (base["baseline"] == kind)]
            if len(g):
                body = str(g["body"].iloc[0])
                label = f"**baseline: {kind}**" + ("" if body in ("linear", "gbdt") else f" ({body})")
                cells = [task, label, *([MISSING] * (len(keys) - 2)), *_score_cells(g)]
                lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def update_arm(freeze: str, lora_rank: int) -> str | None:
    """How much of the body refine may change: "frozen body", "LoRA r=<r>", "full fine-tuning", or None for a
    mask that is none of these (e.g. a frozen embedder).

    Args:
        freeze: the trial's freeze mask.
        lora_rank: its LoRA rank (0: none).
    """
    if lora_rank:
        return f"LoRA r={int(lora_rank)}" if "body" not in freeze else None
    return {"body": "frozen body", "none": "full fine-tuning"}.get(freeze)


def stage_one_table(fs: pd.DataFrame, baselines: pd.DataFrame | None = None) -> str:
    """Markdown: per task where the embedder kind varies, final test and OTDD per body, kind and embedder epochs
    (the whole model fine-tuned, no LoRA: the stage-one sweep's setting), baselines after each task; "" when no
    task varies the kind.

    Args:
        fs: final scores of the trials (`final_scores`), baselines excluded.
        baselines: final scores of the baselines with their "baseline" kind, or None.
    """
    kfs = keyed(fs)
    kfs = kfs[(kfs["_freeze"] == "none") & (kfs["_lora_rank"] == 0)]
    tasks = [t for t in task_names(kfs) if kfs.loc[kfs["task"] == t, "_embedder"].nunique() > 1]
    return _question_table(
        kfs[kfs["task"].isin(tasks)], ["body", "proxy", "embedder", "embedder_epochs"], baselines, tasks
    )


def transfer_table(fs: pd.DataFrame, baselines: pd.DataFrame | None = None) -> str:
    """Markdown: per task with LoRA trials, final test score and trainable parameters per body and body update
    (frozen body, LoRA per rank, full fine-tuning; ORCA's embedder), baselines after each task; "" when no
    task has LoRA trials.

    Args:
        fs: final scores of the trials (`final_scores`), baselines excluded.
        baselines: final scores of the baselines with their "baseline" kind, or None.
    """
    kfs = keyed(fs)
    kfs = kfs[kfs["_embedder"] == "orca"].copy()
    kfs["_update"] = [update_arm(f, r) for f, r in zip(kfs["_freeze"], kfs["_lora_rank"])]
    kfs = kfs[kfs["_update"].notna()]
    tasks = [t for t in task_names(kfs) if (kfs.loc[kfs["task"] == t, "_lora_rank"] > 0).any()]
    kfs = kfs[kfs["task"].isin(tasks)]
    kfs["_update_order"] = kfs["_lora_rank"].where(kfs["_update"] != "frozen body", -1)
    kfs.loc[kfs["_update"] == "full fine-tuning", "_update_order"] = 1 << 30
    return _question_table(
        kfs, ["body", "embedder_epochs", "update_order", "update"], baselines, tasks, params=True
    )


def _question_table(
    kfs: pd.DataFrame,
    keys: list[str],
    baselines: pd.DataFrame | None,
    tasks: list[str],
    *,
    params: bool = False,
) -> str:
    """One line per setting of `keys` (keyed columns `_<key>`) per task, the task's baselines after it;
    `params` adds the trainable parameters; keys ending in `_order` sort the lines and are not shown."""
    if not tasks:
        return ""
    shown = [k for k in keys if not k.endswith("_order")]
    head = [
        "task",
        *shown,
        *(["trainable params"] if params else []),
        "metric",
        "n_seeds",
        "final test (mean ± std)",
    ]
    head.append("final OTDD (mean ± std)")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    base = baselines if baselines is not None else pd.DataFrame(columns=["task", "baseline"])
    for task in tasks:
        for combo, g in kfs[kfs["task"] == task].groupby(["_" + k for k in keys], sort=True, dropna=False):
            cells = [task, *(str(v) for k, v in zip(keys, combo) if not k.endswith("_order"))]
            if params:
                tp = g["trainable_params"].dropna()
                cells.append(f"{int(tp.iloc[0]):,}" if len(tp) else MISSING)
            lines.append("| " + " | ".join(cells + _score_cells(g)) + " |")
        for kind in BASELINE_KINDS:
            g = base[(base["task"] == task) & (base["baseline"] == kind)]
            if len(g):
                cells = [task, f"**baseline: {kind}**", *([MISSING] * (len(head) - 6)), *_score_cells(g)]
                lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _score_cells(g: pd.DataFrame) -> list[str]:
    n_seeds = g.loc[g["final_test"].notna(), "seed"].nunique()
    metrics = sorted({str(m) for m in g["metric"].dropna()})
    return [
        ", ".join(metrics) or MISSING,
        str(n_seeds),
        _fmt(*mean_std(g["final_test"])),
        _fmt(*mean_std(g["final_otdd"])),
    ]


def noise_table(fs: pd.DataFrame) -> str:
    """Markdown: per task, how the seed-to-seed noise compares with the differences between settings.

    The pooled seed std s (root mean square of the per-setting sample stds) and the smallest number of
    seeds n give the standard error of a difference between two settings, s·√(2/n); the spread is the
    largest minus the smallest setting mean. A difference below about twice that standard error is noise.

    Args:
        fs: final scores of the sweep's trials (`final_scores`), baselines excluded.
    """
    kfs = keyed(fs[fs["final_test"].notna()])
    head = [
        "task",
        "settings",
        "n (seeds, min)",
        "seed std (pooled)",
        "s.e. of a difference",
        "spread of means",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for task in task_names(kfs):
        groups = [g for _, g in kfs[kfs["task"] == task].groupby(["_" + c for c in FACTORS], dropna=False)]
        stats = [mean_std(g["final_test"]) for g in groups]
        ns = [n for _, _, n in stats]
        multi = [sd for _, sd, n in stats if n > 1]
        if not multi:
            lines.append(f"| {task} | {len(groups)} | {min(ns)} | {MISSING} | {MISSING} | {MISSING} |")
            continue
        pooled = float(np.sqrt(np.mean(np.square(multi))))
        se = pooled * math.sqrt(2.0 / min(ns))
        means = [m for m, _, _ in stats]
        spread = max(means) - min(means)
        lines.append(f"| {task} | {len(groups)} | {min(ns)} | {pooled:.3g} | {se:.3g} | {spread:.3g} |")
    return "\n".join(lines) + "\n"


def write_final_scores(path: str, fs: pd.DataFrame, baselines: pd.DataFrame | None, title: str) -> None:
    """Write final_scores.md: the final-score table, the seed-noise table and the classes table.

    Args:
        path: the markdown file to write.
        fs: final scores of the trials (`split_baselines`), baselines excluded.
        baselines: final scores of the baselines with their "baseline" kind, or None.
        title: what the results are, in the heading ("sweep NAME", "all sweeps: ...").
    """
    with open(path, "w") as f:
        f.write(f"# Final scores ({title})\n\n")
        f.write("Final test score: the test score at the refine epoch with the best validation score; ")
        f.write(
            "final OTDD: after the last embedder epoch. Mean ± sample std over seeds; lower is better.\n\n"
        )
        f.write(final_scores_table(fs, baselines))
        for heading, table in (
            ("Stage one: embedder kinds", stage_one_table(fs, baselines)),
            ("What is transferred: test score against trainable parameters", transfer_table(fs, baselines)),
        ):
            if table:
                f.write(f"\n## {heading}\n\n{table}")
        f.write(
            "\n## Seed-to-seed noise next to the differences between settings\n\n"
            "Pooled seed std of the final test score, the standard error of a difference between two "
            "settings (std·√(2/n)) and the spread of the setting means (largest − smallest). A spread "
            "below about twice the standard error cannot be told from noise at this number of seeds.\n\n"
        )
        f.write(noise_table(fs))
        f.write(classes_table(fs))
