"""The study's figures and final-score table, from the Parquet results alone.

    python -m orca_ray.analysis RESULTS_DIR [--out DIR] [--sweep NAME]
    orca-ray-analysis RESULTS_DIR ...

RESULTS_DIR is the root a `ParquetSink` wrote to (a local path or an s3:// / gs:// / file:// URI). Writes, each
only when the data has what it needs (otherwise a note is printed):

- fig2_finetune_curves_by_proxy.png  refine epoch vs val score (solid) and test score (dashed), per proxy
- fig3_otdd_vs_score.png             final OTDD and final test score vs embedder epochs; align OTDD curve
- fig4_freeze_masks.png              final test score per freeze mask, without / with embedder training
- fig5_pretraining_scale.png         final test score vs the body's pretraining tokens
- stage_one_embedders.png, transfer_trainable_params.png   beyond the study (`orca_ray.figures_beyond`)
- final_scores.md                    mean ± std over seeds of the final test score and final OTDD
                                     (`orca_ray.tables`, which needs neither matplotlib nor Ray)

Every figure is faceted by task and shows the mean over seeds with ± 1 std (sample std) as a band or error
bar. The "final" score of a trial is the test score at its best-validation refine epoch (`final_scores`).

Baselines (`orca_ray.baselines`: a linear model on the raw inputs, the same body from random init) are rows
in the same Parquet, marked in `config_json`. They are kept out of the factor slices and drawn as horizontal
lines (mean, ± std band) in every figure that shows test scores, and as marked rows in the table, which also
says per task how large the seed-to-seed noise is next to the differences between settings.

Each figure studies one factor. When a task's trials also vary in other factors (a results dir holding
several sweeps), the figure fixes those to one slice — the one in which the studied factor takes the most
values, then the one with the most trials — and prints which slice it used. Use --sweep to pick one sweep.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from orca_ray.baselines import GBDT, LINEAR, RANDOM_BODY
from orca_ray.baselines import KINDS as BASELINE_KINDS
from orca_ray.results import final_scores, read_results
from orca_ray.tables import (
    FACTORS,
    TABLE,
    keyed,
    mean_std,
    split_baselines,
    task_names,
    tasks_varying,
    write_final_scores,
)

METRIC_LABELS = {
    "error": "0-1 error",
    "1-auroc": "1 − mean AUROC",
    "1-macro-f1": "1 − macro F1",
    "rel-l2": "relative L2",
}
FREEZE_ORDER = ("none", "embedder", "body", "embedder+body")
# Warstadt et al. (2020) pretraining-scale series, smallest first: the fallback order when tokens are unknown
BODY_ORDER = (
    "nyu-mll/roberta-base-10M-3",
    "nyu-mll/roberta-base-100M-3",
    "nyu-mll/roberta-base-1B-2",
    "roberta-base",
    "FacebookAI/roberta-base",
)
# horizontal baseline lines: (colour, line style), outside the C0..C9 cycle the factor plots use
BASELINE_STYLE = {LINEAR: ("black", ":"), GBDT: ("black", "--"), RANDOM_BODY: ("black", "-.")}

FIG2 = "fig2_finetune_curves_by_proxy.png"
FIG3 = "fig3_otdd_vs_score.png"
FIG4 = "fig4_freeze_masks.png"
FIG5 = "fig5_pretraining_scale.png"


# ---------------------------------------------------------------------------------------------------------
# helpers


def metric_label(metrics: Sequence) -> str:
    """The axis label for the metrics in a plot ("0-1 error", "1 − mean AUROC / relative L2", ...).

    Args:
        metrics: the metric names of the rows plotted.
    """
    names = sorted({str(m) for m in metrics if isinstance(m, str)})
    return " / ".join(METRIC_LABELS.get(m, m) for m in names) or "score"


def _choose_slice(
    trials: pd.DataFrame, studied: Sequence[str], studied_key=None
) -> tuple[pd.DataFrame, dict]:
    """Trials of one task restricted to one combination of the non-studied factors: the one where the studied
    factor(s) take the most distinct values, then the one with the most trials, then the first in order."""
    others = ["_" + c for c in FACTORS if c not in studied]
    if not others:
        return trials, {}
    key = studied_key or (lambda g: g[["_" + c for c in studied]].drop_duplicates().shape[0])
    best, best_score = None, None
    for combo, g in trials.groupby(others, sort=True, dropna=False):
        score = (key(g), len(g))
        if best_score is None or score > best_score:
            best, best_score = combo, score
    combo = best if isinstance(best, tuple) else (best,)
    mask = np.ones(len(trials), dtype=bool)
    for c, v in zip(others, combo):
        mask &= (trials[c] == v).to_numpy()
    # name only the factors that had other values in this task (the slice left something out)
    fixed = {c[1:]: v for c, v in zip(others, combo) if trials[c].nunique() > 1}
    return trials[mask], fixed


def task_label(task: str, fs: pd.DataFrame, shown: int = 4) -> str:
    """A task's name in a figure: a path spec shortened to its format and file name (`npz:data.npz`), and
    the classes in the data's own labels when they are not already 0..K-1 (from the `classes` column).

    Args:
        task: the task spec as in the `task` column.
        fs: rows with `task` and (optionally) `classes` columns.
        shown: at most this many labels are named.
    """
    from .tasks import split_spec

    prefix, path = split_spec(task)
    name = task if path is None else f"{prefix}:{Path(path.split('?', 1)[0].rstrip('/')).name}"
    values = fs.loc[fs["task"] == task, "classes"].dropna() if "classes" in fs else []
    if len(values):
        labels = json.loads(values.iloc[0])
        if labels != [str(i) for i in range(len(labels))]:
            more = ", …" if len(labels) > shown else ""
            name += f" ({len(labels)} classes: {', '.join(labels[:shown])}{more})"
    return name


def _title(task: str, fixed: dict, figure: str) -> str:
    if not fixed:
        return task
    desc = ", ".join(f"{k}={v}" for k, v in fixed.items())
    _note(f"{figure} {task}: showing the slice {desc}")
    return f"{task}\n{desc}"


def _facets(n: int, rows: int = 1, width: float = 4.6, height: float = 3.4):
    fig, axes = plt.subplots(rows, n, figsize=(width * n, height * rows), squeeze=False, layout="constrained")
    return fig, axes


def _suptitle(fig, text: str, fontsize: float = 11) -> None:
    """A figure title wrapped to the canvas width (a one-facet figure is narrower than most titles)."""
    chars = max(20, int(fig.get_figwidth() * 72 / (0.55 * fontsize)))
    fig.suptitle(textwrap.fill(text, chars), fontsize=fontsize)


def _legend_below(fig, axes) -> None:
    """One legend for the figure, below the facets (never over the data), each label once."""
    handles, labels = {}, []
    for ax in np.ravel(axes):
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in handles and not lab.startswith("_"):
                handles[lab] = h
                labels.append(lab)
    if labels:
        ncols = max(1, min(len(labels), int(fig.get_figwidth() // 2.3)))
        fig.legend(
            [handles[lab] for lab in labels], labels, loc="outside lower center", ncols=ncols, fontsize=7
        )


def _draw_baselines(ax, baselines: pd.DataFrame | None, task: str) -> None:
    """The task's baselines as horizontal lines at their mean final test score, with a ± std band."""
    if baselines is None or baselines.empty:
        return
    rows = baselines[baselines["task"] == task]
    for kind in BASELINE_KINDS:
        mean, std, n = mean_std(rows.loc[rows["baseline"] == kind, "final_test"])
        if n == 0 or math.isnan(mean):
            continue
        color, style = BASELINE_STYLE[kind]
        ax.axhline(mean, color=color, linestyle=style, linewidth=1.2, label=f"baseline: {kind} (n={n})")
        if std > 0:
            ax.axhspan(mean - std, mean + std, color=color, alpha=0.06, linewidth=0)


def _save(fig, path: str, written: list[str]) -> None:
    fig.savefig(path, dpi=120)
    plt.close(fig)
    written.append(path)


def _finish(fig, legend_axes, title: str, path: str, written: list[str]) -> None:
    """The end every figure shares: one legend below the facets, the wrapped title, saved and closed."""
    _legend_below(fig, legend_axes)
    _suptitle(fig, title)
    _save(fig, path, written)


def _note(msg: str) -> None:
    print(f"note: {msg}")


# ---------------------------------------------------------------------------------------------------------
# figures


def fig2_finetune_curves(
    df: pd.DataFrame, fs: pd.DataFrame, out: str, written: list[str], baselines: pd.DataFrame | None = None
) -> None:
    """Fig. 2: val and test score per refine epoch, one line per proxy (mean ± std over seeds), a panel per task.

    Args:
        df: all rows (`read_results`).
        fs: one row per trial (`final_scores(df)`).
        out: folder for the PNG.
        written: paths of the files written so far; this figure's is appended when drawn.
        baselines: final scores of the baselines (`split_baselines`), drawn as horizontal lines.
    """
    refine = df[(df["phase"] == "refine") & df["val_score"].notna()]
    if refine.empty:
        _note(f"{FIG2} skipped: no refine rows with a val score")
        return
    kfs = keyed(fs[fs["trial_id"].isin(refine["trial_id"])])
    tasks = task_names(kfs)
    if not tasks:  # e.g. a sweep stopped before its first trial refined: only the baselines' rows so far
        _note(f"{FIG2} skipped: no trial (other than baselines) has refine rows")
        return
    fig, axes = _facets(len(tasks))
    for ax, task in zip(axes[0], tasks):
        trials, fixed = _choose_slice(kfs[kfs["task"] == task], ["proxy"])
        rows = refine[refine["trial_id"].isin(trials["trial_id"])]
        proxy_of = dict(zip(trials["trial_id"], trials["_proxy"]))
        rows = rows.assign(_proxy=rows["trial_id"].map(proxy_of))
        for i, (proxy, g) in enumerate(rows.groupby("_proxy", sort=True)):
            color = f"C{i % 10}"
            n = g["trial_id"].nunique()
            for col, style, alpha, label in (
                ("val_score", "-", 0.25, f"{proxy} val (n={n})"),
                ("test_score", "--", 0.12, f"{proxy} test"),
            ):
                stats = g.groupby("epoch")[col].agg(["mean", "std", "count"]).dropna(subset=["mean"])
                if stats.empty:
                    continue
                x = stats.index.to_numpy()
                m = stats["mean"].to_numpy()
                s = stats["std"].fillna(0.0).to_numpy()
                ax.plot(x, m, style, color=color, label=label, marker="o" if len(x) < 12 else None, ms=3)
                ax.fill_between(x, m - s, m + s, color=color, alpha=alpha, linewidth=0)
        ax.set_title(_title(task_label(task, kfs), fixed, FIG2), fontsize=8)
        ax.set_xlabel("refine epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(metric_label(rows["metric"].unique()))
        _draw_baselines(ax, baselines, task)
    _finish(
        fig,
        axes,
        "Fine-tuning curves by proxy dataset (mean ± std over seeds; dashed: test)",
        os.path.join(out, FIG2),
        written,
    )


def fig3_otdd_vs_score(
    df: pd.DataFrame, fs: pd.DataFrame, out: str, written: list[str], baselines: pd.DataFrame | None = None
) -> None:
    """Fig. 3: final OTDD and final test score against embedder epochs, one panel per task.

    Args:
        df: all rows (`read_results`).
        fs: one row per trial (`final_scores(df)`).
        out: folder for the PNG.
        written: paths of the files written so far; this figure's is appended when drawn.
        baselines: final scores of the baselines (`split_baselines`), drawn as horizontal lines.
    """
    kfs = keyed(fs[fs["final_otdd"].notna() | fs["final_test"].notna()])
    tasks = tasks_varying(kfs, "embedder_epochs")
    if not tasks:
        _note(f"{FIG3} skipped: no task has trials with two or more embedder-epoch settings")
        return
    fig, axes = _facets(len(tasks), rows=2)
    legend_axes = []
    for j, task in enumerate(tasks):
        trials, fixed = _choose_slice(kfs[kfs["task"] == task], ["embedder_epochs"])
        trials = trials[trials["embedder_epochs"].notna()]
        ax = axes[0, j]
        settings = sorted(int(e) for e in trials["embedder_epochs"].unique())
        otdd = [mean_std(trials.loc[trials["embedder_epochs"] == e, "final_otdd"]) for e in settings]
        test = [mean_std(trials.loc[trials["embedder_epochs"] == e, "final_test"]) for e in settings]
        x = np.asarray(settings, dtype=float)
        om, osd = np.array([o[0] for o in otdd]), np.array([o[1] for o in otdd])
        tm, tsd = np.array([t[0] for t in test]), np.array([t[1] for t in test])
        ax.errorbar(x, om, yerr=osd, color="C0", marker="o", capsize=3, label="final OTDD")
        ax.fill_between(x, om - osd, om + osd, color="C0", alpha=0.15, linewidth=0)
        ax.set_xlabel("embedder epochs")
        ax.set_ylabel("final OTDD", color="C0")
        ax2 = ax.twinx()
        legend_axes += [ax, ax2]  # the twin (test-score) axis carries the test curve and the baselines
        ax2.errorbar(x, tm, yerr=tsd, color="C3", marker="s", capsize=3, linestyle="--", label="final test")
        ax2.fill_between(x, tm - tsd, tm + tsd, color="C3", alpha=0.12, linewidth=0)
        ax2.set_ylabel(f"final test {metric_label(trials['metric'].unique())}", color="C3")
        _draw_baselines(ax2, baselines, task)
        n = trials.groupby("embedder_epochs")["trial_id"].nunique().min()
        ax.set_title(_title(f"{task_label(task, kfs)} (n≥{n} seeds)", fixed, FIG3), fontsize=8)
        ax.set_xticks(x)

        # the align-phase OTDD curve of the longest setting
        ax = axes[1, j]
        longest = max(settings)
        ids = trials.loc[trials["embedder_epochs"] == longest, "trial_id"]
        align = df[(df["phase"] == "align") & df["trial_id"].isin(ids) & df["otdd"].notna()]
        if align.empty:
            ax.text(0.5, 0.5, "no align OTDD rows", ha="center", va="center", transform=ax.transAxes)
        else:
            stats = align.groupby("epoch")["otdd"].agg(["mean", "std"])
            xe = stats.index.to_numpy()
            m, s = stats["mean"].to_numpy(), stats["std"].fillna(0.0).to_numpy()
            ax.plot(xe, m, color="C0")
            ax.fill_between(xe, m - s, m + s, color="C0", alpha=0.2, linewidth=0)
        ax.set_title(f"align OTDD per epoch (embedder epochs = {longest})", fontsize=8)
        ax.set_xlabel("align epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("OTDD")
    _finish(
        fig,
        legend_axes,
        "OTDD after embedder training vs final score (mean ± std over seeds)",
        os.path.join(out, FIG3),
        written,
    )


def _freeze_sort_key(mask: str):
    return (FREEZE_ORDER.index(mask) if mask in FREEZE_ORDER else len(FREEZE_ORDER), str(mask))


def training_arms(trials: pd.DataFrame, without: str, with_: str) -> list[tuple[str, pd.DataFrame, str]]:
    """(label, trials, colour) of the arm without embedder training and, when there is one, the arm with the
    longest embedder training (several nonzero settings in one bar group would mix two factors).

    Args:
        trials: keyed final scores with `_trained` (embedder epochs > 0).
        without: the label of the 0-epoch arm.
        with_: the label of the trained arm, `{e}` standing for its embedder epochs.
    """
    arms = [(without, trials[~trials["_trained"]], "C7")]
    trained = trials.loc[trials["_trained"], "embedder_epochs"]
    if len(trained):
        e = int(trained.max())
        arms.append((with_.format(e=e), trials[trials["embedder_epochs"] == e], "C0"))
    return arms


def fig4_freeze_masks(
    df: pd.DataFrame, fs: pd.DataFrame, out: str, written: list[str], baselines: pd.DataFrame | None = None
) -> None:
    """Fig. 4: final test score per freeze mask, with and without alignment, one panel per task.

    Args:
        df: all rows (`read_results`).
        fs: one row per trial (`final_scores(df)`).
        out: folder for the PNG.
        written: paths of the files written so far; this figure's is appended when drawn.
        baselines: final scores of the baselines (`split_baselines`), drawn as horizontal lines.
    """
    kfs = keyed(fs[fs["final_test"].notna()])
    kfs["_trained"] = kfs["embedder_epochs"].fillna(0).astype(int) > 0
    tasks = tasks_varying(kfs, "_freeze")
    if not tasks:
        _note(f"{FIG4} skipped: no task has trials with two or more freeze masks")
        return
    fig, axes = _facets(len(tasks), width=5.2)
    for ax, task in zip(axes[0], tasks):
        trials, fixed = _choose_slice(
            kfs[kfs["task"] == task],
            ["freeze", "embedder_epochs"],
            studied_key=lambda g: g[["_freeze", "_trained"]].drop_duplicates().shape[0],
        )
        masks = sorted(trials["_freeze"].unique(), key=_freeze_sort_key)
        groups = training_arms(trials, "without embedder training (E=0)", "with embedder training (E={e})")
        width = 0.8 / len(groups)
        x = np.arange(len(masks))
        for i, (label, g, color) in enumerate(groups):
            stats = [mean_std(g.loc[g["_freeze"] == m, "final_test"]) for m in masks]
            means = np.array([s[0] for s in stats])
            stds = np.array([s[1] for s in stats])
            pos = x - 0.4 + width * (i + 0.5)
            ax.bar(pos, means, width, yerr=stds, capsize=3, color=color, alpha=0.8, label=label)
            for p, m in zip(pos, masks):  # the seeds themselves
                pts = g.loc[g["_freeze"] == m, "final_test"].to_numpy(dtype=float)
                ax.scatter(np.full(len(pts), p), pts, s=8, color="k", zorder=3)
        ax.set_xticks(x, [str(m) for m in masks], rotation=20)
        ax.set_xlabel("frozen")
        ax.set_ylabel(f"final test {metric_label(trials['metric'].unique())}")
        ax.set_title(_title(task_label(task, kfs), fixed, FIG4), fontsize=8)
        _draw_baselines(ax, baselines, task)
    _finish(
        fig,
        axes,
        "Freezing parts of the model (mean ± std over seeds; dots: seeds)",
        os.path.join(out, FIG4),
        written,
    )


def _body_sort_key(body: str, tokens: float):
    known = not (tokens is None or math.isnan(tokens))
    rank = BODY_ORDER.index(body) if body in BODY_ORDER else len(BODY_ORDER)
    return (0 if known else 1, tokens if known else 0.0, rank, str(body))


def fig5_pretraining_scale(
    df: pd.DataFrame, fs: pd.DataFrame, out: str, written: list[str], baselines: pd.DataFrame | None = None
) -> None:
    """Fig. 5: final test score against the body's pretraining tokens (or a fixed body order when unknown).

    Args:
        df: all rows (`read_results`).
        fs: one row per trial (`final_scores(df)`).
        out: folder for the PNG.
        written: paths of the files written so far; this figure's is appended when drawn.
        baselines: final scores of the baselines (`split_baselines`), drawn as horizontal lines.
    """
    kfs = keyed(fs[fs["final_test"].notna()])
    tasks = tasks_varying(kfs, "_body")
    if not tasks:
        _note(f"{FIG5} skipped: no task has trials with two or more bodies")
        return
    fig, axes = _facets(len(tasks))
    for ax, task in zip(axes[0], tasks):
        trials, fixed = _choose_slice(kfs[kfs["task"] == task], ["body"])
        bodies = []
        for body, g in trials.groupby("_body", sort=True):
            tok = pd.to_numeric(g["pretraining_tokens"], errors="coerce").dropna()
            tokens = float(tok.iloc[0]) if len(tok) else math.nan
            bodies.append((body, tokens, *mean_std(g["final_test"])))
        bodies.sort(key=lambda b: _body_sort_key(b[0], b[1]))
        m = np.array([b[2] for b in bodies])
        s = np.array([b[3] for b in bodies])
        numeric = all(not math.isnan(b[1]) for b in bodies)
        if numeric:
            x = np.array([b[1] for b in bodies])
            positive = x[x > 0]
            # linear below a tenth of the smallest nonzero scale, so 0 (random init) sits one decade left of it
            ax.set_xscale("symlog", linthresh=float(positive.min()) / 10 if len(positive) else 1.0)
            ax.set_xlabel("pretraining tokens (symlog; 0 = random init)")
            for xi, mi, b in zip(x, m, bodies):
                ax.annotate(
                    str(b[0]).split("/")[-1], (xi, mi), fontsize=6, xytext=(3, 3), textcoords="offset points"
                )
        else:
            x = np.arange(len(bodies), dtype=float)
            ax.set_xticks(x, [str(b[0]).split("/")[-1] for b in bodies], rotation=20)
            ax.set_xlabel("body (by pretraining scale)")
        ax.errorbar(x, m, yerr=s, marker="o", capsize=3, color="C2", label="final test")
        ax.fill_between(x, m - s, m + s, color="C2", alpha=0.15, linewidth=0)
        ax.set_ylabel(f"final test {metric_label(trials['metric'].unique())}")
        ax.set_title(_title(task_label(task, kfs), fixed, FIG5), fontsize=8)
        _draw_baselines(ax, baselines, task)
    _finish(
        fig, axes, "Pretraining scale of the body (mean ± std over seeds)", os.path.join(out, FIG5), written
    )


# ---------------------------------------------------------------------------------------------------------
# CLI


def run(results: str, out: str, sweep: str | None = None) -> list[str]:
    """Draw every figure the results support and write the final-score table.

    Args:
        results: the Parquet root (local path, s3://, gs://).
        out: folder for the PNGs and final_scores.md.
        sweep: only this sweep; None: every sweep under `results`.

    Returns:
        The paths written.
    """
    df = read_results(results, sweep=sweep)
    if df.empty:
        _note(f"no results under {results}" + (f" for sweep {sweep!r}" if sweep else ""))
        return []
    os.makedirs(out, exist_ok=True)
    fs, baselines = split_baselines(df, final_scores(df))
    written: list[str] = []
    from .figures_beyond import fig_stage_one, fig_transfer  # they draw with this module's helpers

    for fig in (
        fig2_finetune_curves,
        fig3_otdd_vs_score,
        fig4_freeze_masks,
        fig5_pretraining_scale,
        fig_stage_one,
        fig_transfer,
    ):
        fig(df, fs, out, written, baselines)
    table = os.path.join(out, TABLE)
    sweeps = ", ".join(sorted(df["sweep"].astype(str).unique()))
    write_final_scores(table, fs, baselines, f"sweep {sweep}" if sweep else f"all sweeps: {sweeps}")
    written.append(table)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """The `python -m orca_ray.analysis` / `orca-ray-analysis` command.

    Args:
        argv: the arguments (default: sys.argv[1:]).

    Returns:
        The exit code.
    """
    parser = argparse.ArgumentParser(
        prog="orca-ray-analysis",
        description="Figures and final-score table from ORCA sweep results (Parquet).",
    )
    parser.add_argument("results", metavar="RESULTS_DIR", help="root the ParquetSink wrote to (path or URI)")
    parser.add_argument(
        "--out", default="analysis", help="directory for the PNGs and final_scores.md (default: ./analysis)"
    )
    parser.add_argument(
        "--sweep", default=None, help="only this sweep (default: every sweep under RESULTS_DIR)"
    )
    args = parser.parse_args(argv)
    written = run(args.results, args.out, args.sweep)
    for path in written:
        print(path)
    return 0 if written else 1


if __name__ == "__main__":
    sys.exit(main())
