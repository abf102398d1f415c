"""A real tiny Ray sweep of each "beyond the study" script: its own grid (sweeps/stage_one.py,
sweeps/lora_rank.py) on the tiny text body, Parquet with the new columns, its figure and table."""

import argparse
import runpy
from pathlib import Path

import pytest

from orca_ray.results import final_scores, read_results
from orca_ray.sweep import SweepSpec, expand_grid

SWEEPS = Path(__file__).resolve().parents[1] / "sweeps"


def script_space(script: str, tiny: dict, **flags) -> list[dict]:
    """The script's own grids for one tiny task and seed, made tiny (body, sizes, caches) like the shared space."""
    space = runpy.run_path(str(SWEEPS / script))["space"]
    args = argparse.Namespace(preset="demo", tasks=[tiny["task"]], seeds=[0], **flags)
    keep = ("refine_epochs", "batch_size", "proxy_size", "align_batch_per_class", "max_train_samples")
    small = {k: tiny[k] for k in (*keep, "max_eval_samples", "target_seq_len", "cache_dir")}
    return [{**g, "body": _tiny(g["body"]), "proxy": tiny["proxy"], **small} for g in space(args)]


def _tiny(body):
    if isinstance(body, list):
        return [_tiny(b) for b in body]
    return "random:tiny-text" if body.startswith("random:") else "tiny-text"


@pytest.mark.slow
def test_stage_one_sweep_writes_kinds_and_its_figure(ray_local, tmp_path, tiny_sweep_space):
    space = script_space("stage_one.py", tiny_sweep_space, embedders=["orca", "linear"], embedder_epochs=2)
    spec = SweepSpec(name="stage-one", space=space, storage=str(tmp_path / "store"))
    from orca_ray.sweep import run_sweep

    assert len(expand_grid(space)) == 4  # 2 kinds × {0, 2} embedder epochs
    grid = run_sweep(spec)
    assert not any(r.error for r in grid)
    fs = final_scores(read_results(spec.results_root))
    assert sorted(fs["embedder"]) == ["linear", "linear", "orca", "orca"]
    assert (fs["lora_rank"] == 0).all()
    assert (fs["trainable_params"] > 0).all()
    figures = tmp_path / "store" / "stage-one" / "figures"
    assert (figures / "stage_one_embedders.png").stat().st_size > 0
    assert "## Stage one: embedder kinds" in (figures / "final_scores.md").read_text()


@pytest.mark.slow
def test_lora_rank_sweep_writes_ranks_params_and_its_figure(ray_local, tmp_path, tiny_sweep_space):
    space = script_space("lora_rank.py", tiny_sweep_space, ranks=[1, 4], body=None, embedder_epochs=None)
    spec = SweepSpec(name="lora", space=space, storage=str(tmp_path / "store"))
    from orca_ray.sweep import run_sweep

    grid = run_sweep(spec)
    assert not any(r.error for r in grid)
    fs = final_scores(read_results(spec.results_root))
    assert len(fs) == 8  # {frozen, r1, r4, full} × {tiny-text, random:tiny-text}
    pre = fs[fs["body"] == "tiny-text"].set_index(["freeze", "lora_rank"])["trainable_params"]
    # the parameters refine updates grow from the frozen body over the ranks to full fine-tuning
    assert pre[("body", 0)] < pre[("none", 1)] < pre[("none", 4)] < pre[("none", 0)]
    assert pre[("none", 4)] - pre[("body", 0)] == 4 * (pre[("none", 1)] - pre[("body", 0)])
    assert set(fs["lora_alpha"]) == {16.0}
    figures = tmp_path / "store" / "lora" / "figures"
    assert (figures / "transfer_trainable_params.png").stat().st_size > 0
    assert "## What is transferred" in (figures / "final_scores.md").read_text()
