"""Figures for the questions the study left open (README, "Beyond the study"), from the Parquet results alone;
`orca_ray.analysis.run` draws them beside the study's figures.

- stage_one_embedders.png      final test score and final OTDD per embedder kind, unaligned vs aligned
- transfer_trainable_params.png  final test score against the parameters refine updates (log x): frozen body,
                               LoRA per rank, full fine-tuning, pretrained vs random-init body

Both are faceted by task, mean ± std over seeds (dots: the seeds), baselines as horizontal lines.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from .analysis import (
    _choose_slice,
    _draw_baselines,
    _facets,
    _finish,
    _note,
    _title,
    metric_label,
    task_label,
    training_arms,
)
from .embedders import EMBEDDERS
from .tables import keyed, mean_std, task_names, tasks_varying, update_arm

FIG_STAGE_ONE = "stage_one_embedders.png"
FIG_TRANSFER = "transfer_trainable_params.png"


def _kind_order(kind: str) -> tuple[int, str]:
    kinds = list(EMBEDDERS)
    return (kinds.index(kind) if kind in kinds else len(kinds), str(kind))


def fig_stage_one(
    df: pd.DataFrame, fs: pd.DataFrame, out: str, written: list[str], baselines: pd.DataFrame | None = None
) -> None:
    """Final test score (top) and final OTDD (bottom) per embedder kind, without and with embedder training,
    one column per task where the kind varies.

    Args:
        df: all rows (`read_results`).
        fs: one row per trial (`final_scores(df)`), baselines excluded.
        out: folder for the PNG.
        written: paths of the files written so far; this figure's is appended when drawn.
        baselines: final scores of the baselines (`split_baselines`), drawn as horizontal lines.
    """
    kfs = keyed(fs[fs["final_test"].notna()])
    kfs["_trained"] = kfs["embedder_epochs"].fillna(0).astype(int) > 0
    tasks = tasks_varying(kfs, "_embedder")
    if not tasks:
        _note(f"{FIG_STAGE_ONE} skipped: no task has trials with two or more embedder kinds")
        return
    fig, axes = _facets(len(tasks), rows=2, width=5.2)
    for j, task in enumerate(tasks):
        trials, fixed = _choose_slice(
            kfs[kfs["task"] == task],
            ["embedder", "embedder_epochs"],
            studied_key=lambda g: g[["_embedder", "_trained"]].drop_duplicates().shape[0],
        )
        groups = training_arms(trials, "no embedder training (E=0)", "aligned (E={e})")
        kinds = sorted(trials["_embedder"].unique(), key=_kind_order)
        x = np.arange(len(kinds))
        width = 0.8 / len(groups)
        for row, column in ((0, "final_test"), (1, "final_otdd")):
            ax = axes[row, j]
            for i, (label, g, color) in enumerate(groups):
                stats = [mean_std(g.loc[g["_embedder"] == k, column]) for k in kinds]
                pos = x - 0.4 + width * (i + 0.5)
                means, stds = np.array([s[0] for s in stats]), np.array([s[1] for s in stats])
                ax.bar(pos, means, width, yerr=stds, capsize=3, color=color, alpha=0.8, label=label)
                for p, k in zip(pos, kinds):  # the seeds themselves
                    pts = g.loc[g["_embedder"] == k, column].to_numpy(dtype=float)
                    ax.scatter(np.full(len(pts), p), pts, s=8, color="k", zorder=3)
            ax.set_xticks(x, [str(k) for k in kinds], rotation=15)
            if row == 0:
                ax.set_ylabel(f"final test {metric_label(trials['metric'].unique())}")
                n = trials.groupby(["_embedder", "_trained"])["trial_id"].nunique().min()
                ax.set_title(
                    _title(f"{task_label(task, kfs)} (n≥{n} seeds)", fixed, FIG_STAGE_ONE), fontsize=8
                )
                _draw_baselines(ax, baselines, task)
            else:
                ax.set_ylabel("final OTDD (embedder output vs proxy)")
                ax.set_xlabel("embedder kind")
    _finish(
        fig,
        axes,
        "Stage one: embedder kinds, unaligned and aligned (mean ± std over seeds; dots: seeds)",
        os.path.join(out, FIG_STAGE_ONE),
        written,
    )


def fig_transfer(
    df: pd.DataFrame, fs: pd.DataFrame, out: str, written: list[str], baselines: pd.DataFrame | None = None
) -> None:
    """Final test score against the number of parameters refine updates (log x), one line per body (pretrained
    solid, random init dashed) through frozen body → LoRA ranks → full fine-tuning, a panel per task with LoRA
    trials.

    Args:
        df: all rows (`read_results`).
        fs: one row per trial (`final_scores(df)`), baselines excluded.
        out: folder for the PNG.
        written: paths of the files written so far; this figure's is appended when drawn.
        baselines: final scores of the baselines (`split_baselines`), drawn as horizontal lines.
    """
    kfs = keyed(fs[fs["final_test"].notna() & fs["trainable_params"].notna()])
    kfs = kfs[kfs["_embedder"] == "orca"].copy()
    kfs["_update"] = [update_arm(f, r) for f, r in zip(kfs["_freeze"], kfs["_lora_rank"])]
    kfs = kfs[kfs["_update"].notna()]
    tasks = [t for t in task_names(kfs) if (kfs.loc[kfs["task"] == t, "_lora_rank"] > 0).any()]
    if not tasks:
        _note(f"{FIG_TRANSFER} skipped: no task has LoRA trials (lora_rank > 0) with trainable_params")
        return
    fig, axes = _facets(len(tasks), width=5.6, height=3.8)
    for ax, task in zip(axes[0], tasks):
        trials, fixed = _choose_slice(
            kfs[kfs["task"] == task],
            ["body", "freeze", "lora_rank"],
            studied_key=lambda g: g[["_body", "_update"]].drop_duplicates().shape[0],
        )
        for i, (body, g) in enumerate(sorted(trials.groupby("_body"), key=lambda bg: str(bg[0]))):
            random_init = str(body).startswith("random:")
            points = []
            for update, h in g.groupby("_update"):
                m, s, _ = mean_std(h["final_test"])
                points.append((float(h["trainable_params"].median()), m, s, update, h))
            points.sort(key=lambda p: p[0])
            xs, ms, ss = (np.array([p[k] for p in points]) for k in range(3))
            color = f"C{i}"
            ax.errorbar(
                xs,
                ms,
                yerr=ss,
                marker="o",
                capsize=3,
                color=color,
                linestyle="--" if random_init else "-",
                label=f"{body} ({'random init' if random_init else 'pretrained'})",
            )
            for x, _, _, update, h in points:
                ax.scatter(np.full(len(h), x), h["final_test"], s=8, color="k", zorder=3)
                if i == 0:  # the arm's name once, along the bottom of the panel
                    ax.annotate(
                        update,
                        (x, 0),
                        xycoords=("data", "axes fraction"),
                        xytext=(3, 3),
                        textcoords="offset points",
                        rotation=90,
                        fontsize=6,
                        color="0.3",
                    )
        ax.set_xscale("log")
        ax.set_xlabel("parameters refine updates (log)")
        ax.set_ylabel(f"final test {metric_label(trials['metric'].unique())}")
        ax.set_title(_title(task_label(task, kfs), fixed, FIG_TRANSFER), fontsize=8)
        _draw_baselines(ax, baselines, task)
    _finish(
        fig,
        axes,
        "What is transferred: score against trainable parameters, pretrained vs random-init body "
        "(frozen body → LoRA ranks → full fine-tuning; mean ± std over seeds; dots: seeds)",
        os.path.join(out, FIG_TRANSFER),
        written,
    )
