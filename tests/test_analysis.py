"""orca_ray.analysis on a hand-built Parquet fixture in the sink's layout (no Ray)."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from orca_ray import analysis, tables
from orca_ray.results import FILE_SCHEMA, RESULT_SCHEMA, final_scores, read_results

TASKS = {"satellite": "error", "darcy": "rel-l2"}
BODIES = {"random": 0.0, "nyu-mll/roberta-base-1B-2": 1e9}
DEFAULT = {"body": "nyu-mll/roberta-base-1B-2", "proxy": "text", "embedder_epochs": 4, "freeze": "none"}
REFINE_EPOCHS = 5
SEEDS = (0, 1, 2)


def settings() -> list[dict]:
    """The study's ablations around one default setting (as several sweeps pooled in one results dir)."""
    out = [{**DEFAULT, "proxy": p} for p in ("text", "noise")]
    out += [{**DEFAULT, "embedder_epochs": e} for e in (0, 2, 4)]
    out += [
        {**DEFAULT, "freeze": f, "embedder_epochs": e}
        for f in ("none", "body", "embedder+body")
        for e in (0, 4)
    ]
    out += [{**DEFAULT, "body": b} for b in BODIES]
    uniq = {json.dumps(s, sort_keys=True): s for s in out}
    return list(uniq.values())


def effect(s: dict) -> float:
    """A made-up effect of the setting on the score, so every figure has something to show."""
    return (
        0.1 * (s["proxy"] == "noise")
        - 0.02 * s["embedder_epochs"]
        + {"none": 0.0, "body": 0.15, "embedder+body": 0.3}[s["freeze"]]
        + 0.2 * (s["body"] == "random")
    )


VAL = {1: 0.9, 2: 0.7, 3: 0.5, 4: 0.6, 5: 0.65}  # best val: epoch 3
TEST = {1: 0.95, 2: 0.8, 3: 0.55, 4: 0.5, 5: 0.3}  # best test: epoch 5 (must not be picked)


def trial_rows(sweep: str, trial_id: str, task: str, s: dict, seed: int) -> list[dict]:
    base = {
        "sweep": sweep,
        "trial_id": trial_id,
        "config_hash": trial_id[-8:],
        "task": task,
        "body": s["body"],
        "proxy": s["proxy"],
        "embedder_epochs": s["embedder_epochs"],
        "freeze": s["freeze"],
        "seed": seed,
        "metric": TASKS[task],
        "node": "node-1",
        "lr": 1e-4,
        "pretraining_tokens": BODIES[s["body"]],
        "preset": "test",
        "config_json": json.dumps({**s, "task": task, "seed": seed}, sort_keys=True),
        "reported_at": datetime(2026, 1, 1, tzinfo=UTC),
        "train_loss": None,
    }
    rows = []
    for e in range(s["embedder_epochs"] + 1):
        rows.append({**base, "phase": "align", "epoch": e, "otdd": 50.0 - 5 * e + seed, "seconds": 1.0})
    jitter = 0.01 * seed
    for e in range(1, REFINE_EPOCHS + 1):
        rows.append(
            {
                **base,
                "phase": "refine",
                "epoch": e,
                "otdd": None,
                "train_loss": 1.0 / e,
                "val_score": VAL[e] + effect(s) + jitter,
                "test_score": TEST[e] + effect(s) + jitter,
                "seconds": 2.0,
            }
        )
    return rows


def write_sweep(root: Path, sweep: str, trials: dict[str, list[dict]]) -> None:
    part_dir = root / f"sweep={sweep}"
    part_dir.mkdir(parents=True)
    for trial_id, rows in trials.items():
        table = pa.Table.from_pylist(rows, schema=RESULT_SCHEMA).drop_columns(["sweep"])
        assert table.schema == FILE_SCHEMA
        pq.write_table(table, part_dir / f"{trial_id}.parquet")


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("results")
    trials = {}
    n = 0
    for task in TASKS:
        for s in settings():
            for seed in SEEDS:
                tid = f"t{n:05d}"
                trials[tid] = trial_rows("study", tid, task, s, seed)
                n += 1
    write_sweep(root, "study", trials)
    # a second sweep with one setting only: nothing but fig. 2 and the table can be drawn from it alone
    write_sweep(root, "proxy-only", {"p00000": trial_rows("proxy-only", "p00000", "satellite", DEFAULT, 0)})
    return root


def test_final_scores_select_on_val(results_dir):
    fs = final_scores(read_results(str(results_dir), sweep="study"))
    assert len(fs) == 2 * len(settings()) * len(SEEDS)
    assert (fs["best_epoch"] == 3).all()
    for _, r in fs.iterrows():
        s = {k: r[k] for k in DEFAULT}
        assert r["final_val"] == pytest.approx(VAL[3] + effect(s) + 0.01 * r["seed"])
        assert r["final_test"] == pytest.approx(TEST[3] + effect(s) + 0.01 * r["seed"])  # not TEST[5]
        assert r["final_otdd"] == pytest.approx(50.0 - 5 * r["embedder_epochs"] + r["seed"])


def test_final_scores_ties_and_gaps():
    rows = trial_rows("s", "a", "satellite", DEFAULT, 0)
    for r in rows:
        if r["phase"] == "refine" and r["epoch"] in (2, 4):
            r["val_score"] = 0.1  # tie: the earlier epoch wins
        if r["phase"] == "align" and r["epoch"] == DEFAULT["embedder_epochs"]:
            r["otdd"] = None  # no OTDD at the last epoch: the last align row with one
    no_refine = [r for r in trial_rows("s", "b", "satellite", DEFAULT, 1) if r["phase"] == "align"]
    df = pa.Table.from_pylist(rows + no_refine, schema=RESULT_SCHEMA).to_pandas()
    fs = final_scores(df).set_index("trial_id")
    assert fs.loc["a", "best_epoch"] == 2
    assert fs.loc["a", "final_test"] == pytest.approx(TEST[2] + effect(DEFAULT))
    assert fs.loc["a", "final_otdd"] == pytest.approx(50.0 - 5 * 3)
    assert math.isnan(fs.loc["b", "final_test"])
    assert pd.isna(fs.loc["b", "best_epoch"])
    assert final_scores(df.iloc[:0]).empty


def test_figures_and_table(results_dir, tmp_path, capsys):
    out = tmp_path / "out"
    written = analysis.run(str(results_dir), str(out), sweep="study")
    names = sorted(Path(p).name for p in written)
    assert names == sorted([analysis.FIG2, analysis.FIG3, analysis.FIG4, analysis.FIG5, tables.TABLE])
    for p in written:
        assert Path(p).stat().st_size > 1000
    for fig in (analysis.FIG2, analysis.FIG3, analysis.FIG4, analysis.FIG5):
        assert (out / fig).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    md = (out / tables.TABLE).read_text()
    scores, noise = md.split("## Seed-to-seed noise")
    lines = [ln for ln in scores.splitlines() if ln.startswith("| ") and "n_seeds" not in ln]
    assert len(lines) == 2 * len(settings())
    # every setting has seeds 0, 1, 2 at +0.01 per seed: pooled std 0.01, s.e. of a difference 0.01·√(2/3)
    noise_row = next(ln for ln in noise.splitlines() if ln.startswith("| satellite |"))
    assert noise_row.split(" | ")[1:5] == [str(len(settings())), "3", "0.01", f"{0.01 * np.sqrt(2 / 3):.3g}"]
    head = md.splitlines()[4]
    assert head.split(" | ")[:5] == ["| task", "body", "proxy", "embedder_epochs", "freeze"]
    # the default setting on satellite: mean over seeds of TEST[3] + 0.01 * seed, std 0.01
    default_line = next(
        ln for ln in lines if ln.startswith("| satellite | nyu-mll/roberta-base-1B-2 | text | 4 | none |")
    )
    cells = [c.strip() for c in default_line.strip("|").split("|")]
    assert cells[5] == "error"
    assert cells[6] == "3"
    mean = np.mean([TEST[3] - 0.08 + 0.01 * s for s in SEEDS])
    assert cells[7] == f"{mean:.4g} ± 0.01"
    assert cells[8] == f"{np.mean([30.0 + s for s in SEEDS]):.4g} ± 1"
    printed = capsys.readouterr().out
    assert "showing the slice" in printed  # pooled ablations: each figure names its slice


def test_cli_main(results_dir, tmp_path, capsys):
    # every sweep at once (the default): both sweeps pooled, every figure drawn
    out = tmp_path / "cli"
    assert analysis.main([str(results_dir), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for name in (analysis.FIG2, analysis.FIG3, analysis.FIG4, analysis.FIG5, tables.TABLE):
        assert str(out / name) in printed
        assert (out / name).exists()
    assert "all sweeps: proxy-only, study" in (out / tables.TABLE).read_text()

    # a sweep with one setting: fig. 2 and the table only, the others skipped with a note
    out1 = tmp_path / "one"
    assert analysis.main([str(results_dir), "--out", str(out1), "--sweep", "proxy-only"]) == 0
    printed = capsys.readouterr().out
    assert sorted(p.name for p in out1.iterdir()) == [analysis.FIG2, tables.TABLE]
    assert printed.count("skipped") == 5  # figs. 3-5, the stage-one and the transfer figure

    # no data: exit status 1, nothing written
    assert analysis.main([str(tmp_path / "empty"), "--out", str(tmp_path / "none")]) == 1
    assert not (tmp_path / "none").exists()


def test_fig5_without_token_counts(tmp_path, capsys):
    """Unknown pretraining scale: bodies on a categorical axis in a fixed order, not dropped."""
    trials = {}
    for i, body in enumerate(("nyu-mll/roberta-base-1B-2", "nyu-mll/roberta-base-10M-3", "some-other-body")):
        for seed in SEEDS:
            rows = trial_rows("scale", f"b{i}{seed}", "satellite", {**DEFAULT, "body": "random"}, seed)
            for r in rows:
                r["body"], r["pretraining_tokens"] = body, None
            trials[f"b{i}{seed}"] = rows
    write_sweep(tmp_path / "res", "scale", trials)
    written = analysis.run(str(tmp_path / "res"), str(tmp_path / "out"))
    assert str(tmp_path / "out" / analysis.FIG5) in written
    key = analysis._body_sort_key
    nan = float("nan")
    bodies = ["some-other-body", "nyu-mll/roberta-base-1B-2", "nyu-mll/roberta-base-10M-3"]
    order = sorted(bodies, key=lambda b: key(b, nan))
    assert order == ["nyu-mll/roberta-base-10M-3", "nyu-mll/roberta-base-1B-2", "some-other-body"]


def test_sweep_stopped_before_any_trial_refined(tmp_path, capsys):
    """Only a baseline's rows and a trial still aligning (a sweep stopped early): the analysis skips the
    figures it cannot draw and still writes the table, instead of failing on a figure with no panels."""
    from orca_ray.baselines import BASELINE_KEY, LINEAR

    baseline = trial_rows("early", "base0", "satellite", DEFAULT, 0)
    for r in baseline:
        r["config_json"] = json.dumps({**json.loads(r["config_json"]), BASELINE_KEY: LINEAR})
    aligning = [r for r in trial_rows("early", "t0", "satellite", DEFAULT, 0) if r["phase"] == "align"][:2]
    write_sweep(tmp_path / "res", "early", {"base0": baseline, "t0": aligning})
    written = analysis.run(str(tmp_path / "res"), str(tmp_path / "out"))
    assert written == [str(tmp_path / "out" / analysis.TABLE)]
    assert f"{analysis.FIG2} skipped" in capsys.readouterr().out


def test_metric_labels():
    assert analysis.metric_label(["error"]) == "0-1 error"
    assert analysis.metric_label(["1-auroc"]) == "1 − mean AUROC"
    assert analysis.metric_label(["1-macro-f1"]) == "1 − macro F1"
    assert analysis.metric_label(["rel-l2", None]) == "relative L2"


def test_baselines_drawn_and_figures_fit_their_canvas(results_dir, tmp_path):
    """Baseline rows become horizontal lines and table rows; one-panel figures keep their title and legend
    inside the canvas, and the legend off the plotted data (the old Fig. 4 lost its title's left edge)."""
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from orca_ray.baselines import LINEAR, RANDOM_BODY

    df = read_results(str(results_dir), sweep="study")
    fs = final_scores(df)
    one = fs[fs["task"] == "satellite"]
    base = one.head(4).assign(
        baseline=[LINEAR, LINEAR, RANDOM_BODY, RANDOM_BODY], final_test=[0.2, 0.3, 0.6, 0.7]
    )
    drawn = []
    real_save = analysis._save
    analysis._save = lambda fig, path, written: drawn.append(fig) or real_save(fig, path, written)
    try:
        for figure in (
            analysis.fig3_otdd_vs_score,
            analysis.fig4_freeze_masks,
            analysis.fig5_pretraining_scale,
        ):
            figure(df[df["task"] == "satellite"], one, str(tmp_path), [], base)
    finally:
        analysis._save = real_save
    assert len(drawn) == 3
    for fig in drawn:
        FigureCanvasAgg(fig)  # the saved (closed) figure gets a canvas again, to measure it
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        canvas = fig.bbox
        title = fig._suptitle.get_window_extent(renderer)
        assert title.x0 >= canvas.x0
        assert title.x1 <= canvas.x1
        assert title.y1 <= canvas.y1
        legend = fig.legends[0].get_window_extent(renderer)
        assert legend.x0 >= canvas.x0
        assert legend.x1 <= canvas.x1
        assert legend.y0 >= canvas.y0
        assert not any(legend.overlaps(ax.get_window_extent(renderer)) for ax in fig.axes)
        labels = fig.legends[0].get_texts()
        assert {f"baseline: {LINEAR} (n=2)", f"baseline: {RANDOM_BODY} (n=2)"} <= {
            t.get_text() for t in labels
        }
        # the baselines are horizontal lines at their means
        levels = {
            round(line.get_ydata()[0], 6)
            for ax in fig.axes
            for line in ax.get_lines()
            if "baseline" in line.get_label()
        }
        assert levels == {0.25, 0.65}
        plt.close(fig)


def test_tables_import_neither_ray_nor_matplotlib():
    """The final-score tables are read from Parquet alone: importing them pulls in no Ray and no plotting."""
    import subprocess
    import sys

    code = "import sys, orca_ray.tables; print(sorted({'ray', 'matplotlib'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
