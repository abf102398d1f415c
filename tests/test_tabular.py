"""Tables (orca_ray.tasks.tabular): ORCA's preprocessing and the honest one recomputed independently with
pandas / scikit-learn, the 1 − ROC AUC metric and the weighted loss against scikit-learn and torch, staging
OpenML from a local cache (no network), csv/parquet errors, and a real tiny sweep with the tables' baselines."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from openml_cache import write_openml_cache
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from orca_ray.metrics import compute_metric
from orca_ray.refine import TaskLoss
from orca_ray.tasks import TaskDataError, load_task
from orca_ray.tasks.tabular import files
from orca_ray.tasks.tabular.preprocess import Table, orca_features, orca_task


def hand_frame() -> tuple[pd.DataFrame, pd.Series]:
    """12 rows: a numeric column with a missing value, a categorical with "?" and a missing value, a clean
    numeric, a 3-way categorical; labels with one missing and one "?"."""
    x = pd.DataFrame(
        {
            "n1": [1.0, 2.0, np.nan, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0],
            "c1": pd.Categorical(["a", "b", "?", "a", None, "b", "a", "b", "a", "b", "a", "a"]),
            "n2": [3.0, -1.0, 0.5, 2.0, 8.0, 1.0, 0.0, 4.0, 2.5, 7.0, 1.5, 9.0],
            "c2": pd.Categorical(["u", "v", "w", "u", "v", "w", "u", "v", "w", "u", "v", "w"]),
        }
    )
    y = pd.Series(pd.Categorical(["p", "q", "p", "q", None, "p", "q", "p", "q", "?", "p", "q"]), name="y")
    return pd.concat([x, x], ignore_index=True), pd.concat([y, y], ignore_index=True)  # 24 rows, 20 labelled


def test_orca_layout_with_categoricals_recomputed_with_sklearn():
    x, y = hand_frame()
    keep = ~y.isna() & (y.astype(str) != "?")  # rows whose label is missing or "?" go
    xk = x[keep.to_numpy()].reset_index(drop=True)
    got = orca_features(xk.replace("?", np.nan), (False, True, False, True))
    n = len(xk)
    assert got.shape == (n, 4, 3)  # (N, F, widest one-hot): c1 has a, b, NaN; c2 has u, v, w
    # independently: each categorical one-hot by scikit-learn (missing and "?" as the category "NaN")
    c1 = xk["c1"].astype(object).replace("?", None).fillna("NaN").to_frame()
    c2 = xk["c2"].astype(object).to_frame()
    oh1 = OneHotEncoder().fit_transform(c1).toarray()
    oh2 = OneHotEncoder().fit_transform(c2).toarray()
    nums = StandardScaler().fit_transform(
        xk[["n1", "n2"]].fillna(0.0)
    )  # filled with 0, then scaled, all rows
    want = np.zeros((n, 4, 3))
    want[:, 0, : oh1.shape[1]] = oh1
    want[:, 1, : oh2.shape[1]] = oh2
    want[:, 2, 0], want[:, 3, 0] = nums[:, 0], nums[:, 1]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)

    task = orca_task(Table(x, y, (False, True, False, True), "hand"), name="hand", seed=0)
    assert task.input_shape == (3, 4)  # ORCA's permute: channels = one-hot width, length = features
    assert task.val is task.test  # ORCA selects on test
    assert len(task.train) + len(task.test) == n
    assert len(task.test) == 2
    assert task.class_names == ("p", "q")
    assert (task.metric, task.loss) == (
        "1-roc-auc",
        "weighted_cross_entropy",
    )


def test_orca_numeric_only_drops_missing_columns_and_scales_all_rows():
    x, y = hand_frame()
    xn, keep = x[["n1", "n2"]], y.notna().to_numpy() & (y.astype(str) != "?").to_numpy()
    got = orca_features(xn[keep], (False, False))
    want = StandardScaler().fit_transform(xn[keep][["n2"]])  # n1 has a missing value: dropped
    assert got.shape == (keep.sum(), 1, 1)
    np.testing.assert_allclose(got[:, :, 0], want, rtol=1e-6)


def test_orca_extras_for_dataset_54_and_1464():
    rng = np.random.default_rng(0)
    x = pd.DataFrame(rng.normal(size=(60, 4)) * [1, 5, 10, 2], columns=list("abcd"))
    y = pd.Series(np.repeat([0, 1], 30), name="y")
    t54 = orca_task(Table(x, y, (False,) * 4, "t", 54), name="t", seed=0)
    plain = orca_task(Table(x, y, (False,) * 4, "t", None), name="t", seed=0)
    dev = plain.train.x.astype(np.float64)
    mean, std = dev.mean(0), dev.std(0, ddof=1)  # per element, the dev split only, unbiased
    np.testing.assert_allclose(t54.train.x, (dev - mean) / (std + 1e-5), rtol=1e-5, atol=1e-6)
    t1464 = orca_task(Table(x, y, (False,) * 4, "t", 1464), name="t", seed=0)
    assert t1464.input_shape == (3, 1)
    np.testing.assert_array_equal(t1464.train.x, plain.train.x[:, [0, 1, 3]])


def test_honest_fits_on_train_only():
    x, y = hand_frame()
    x = pd.concat([x] * 3, ignore_index=True)
    x["n1"] = np.arange(len(x), dtype=float)
    y = pd.Series(pd.Categorical(["p", "q"] * 36), name="y")
    task = load_task_from(x, y, seed=3)
    assert task.input_shape == (1, 8)  # two numerics, c1 a/b/NaN, c2 u/v/w: one position each (8 of 8)
    # n1 is the row number: recover the encoding's offset and scale from all rows, then check they are the
    # training rows' own mean and (population) std, i.e. nothing was fitted on validation or test rows
    enc = np.sort(
        np.concatenate([sp.x[:, 0, 0] for sp in (task.train, task.val, task.test)]).astype(np.float64)
    )
    scale = 1 / np.diff(enc).mean()
    offset = -enc[0] * scale
    rows = np.rint(task.train.x[:, 0, 0] * scale + offset)
    assert offset == pytest.approx(rows.mean(), rel=1e-4)
    assert scale == pytest.approx(rows.std(), rel=1e-4)
    assert len(task.val) > 0
    assert not np.isin(rows, np.rint(task.val.x[:, 0, 0] * scale + offset)).any()
    assert len(task.test) == 15
    assert task.val is not task.test


def load_task_from(x, y, seed):
    from orca_ray.tasks.tabular.preprocess import honest_task

    return honest_task(
        Table(x, y, (False, True, False, True), "hand"), name="hand", seed=seed, val_fraction=0.2
    )


def test_one_minus_roc_auc_against_sklearn():
    rng = np.random.default_rng(0)
    y2 = rng.integers(0, 2, 200)
    logits2 = rng.normal(size=(200, 2)) + y2[:, None] * [0, 0.8]
    p2 = torch.softmax(torch.tensor(logits2), 1).numpy()
    assert compute_metric("1-roc-auc", y2, logits2) == pytest.approx(
        1 - roc_auc_score(y2, p2[:, 1]), abs=1e-12
    )
    y3 = rng.integers(0, 3, 300)
    logits3 = rng.normal(size=(300, 3)) + np.eye(3)[y3]
    p3 = torch.softmax(torch.tensor(logits3), 1).numpy()
    want = 1 - roc_auc_score(y3, p3, multi_class="ovo", average="macro")
    assert compute_metric("1-roc-auc", y3, logits3) == pytest.approx(want, abs=1e-12)
    assert np.isnan(compute_metric("1-roc-auc", np.zeros(5, int), logits3[:5]))


def test_weighted_cross_entropy_is_one_over_frequency():
    task = load_task("wine", seed=0)
    counts = np.bincount(task.train.y)
    loss = TaskLoss.for_task(task)
    out, y = torch.randn(7, 3), torch.tensor([0, 1, 2, 2, 1, 0, 2])
    want = F.cross_entropy(out, y, weight=torch.tensor(len(task.train.y) / counts, dtype=torch.float32))
    torch.testing.assert_close(loss(out, y), want)


def _stage_toy(tmp_path, did=77):
    rng = np.random.default_rng(1)
    cols = [("a", "numeric", None), ("b", "nominal", ["x", "y", "z"]), ("c", "numeric", None)]
    cols.append(("cls", "nominal", ["neg", "pos"]))
    rows = [
        [
            None if i % 7 == 0 else round(float(rng.normal()), 3),
            [None, "x", "y", "z"][i % 4],
            i,
            "pos" if i % 3 else "neg",
        ]
        for i in range(60)
    ]
    write_openml_cache(tmp_path / "home", did, cols, rows, "cls")
    from orca_ray.data import main

    assert (
        main(
            [
                "stage",
                f"openml:{did}",
                "--data-root",
                str(tmp_path / "root"),
                "--data-home",
                str(tmp_path / "home"),
            ]
        )
        == 0
    )
    return rows


def test_stage_openml_from_a_local_cache_and_verify(tmp_path, capsys):
    rows = _stage_toy(tmp_path)
    folder = tmp_path / "root" / "openml" / "77"
    meta = json.loads((folder / "meta.json").read_text())
    assert (meta["label"], meta["features"], meta["categorical"]) == (
        "cls",
        ["a", "b", "c"],
        [False, True, False],
    )
    honest = load_task("openml:77", data_root=tmp_path / "root")
    orca = load_task("openml:77", data_root=tmp_path / "root", protocol="orca")
    assert honest.input_shape == (1, 8)  # a, c scaled; b one-hot x/y/z + NaN; zero-padded to 8
    assert orca.input_shape == (4, 3)  # ORCA: channels = one-hot width (x, y, z, NaN), length = 3 features
    assert len(orca.train) + len(orca.test) == len(rows)
    assert honest.fingerprint
    assert sorted(np.unique(honest.train.y)) == [0, 1]
    assert honest.class_names == ("neg", "pos")

    with open(folder / "data.parquet", "ab") as f:  # tampered after staging
        f.write(b"\0")
    with pytest.raises(
        TaskDataError, match=r"CHECKSUM .*stage it again: python -m orca_ray.data stage openml:77"
    ):
        load_task("openml:77", data_root=tmp_path / "root")
    with pytest.raises(
        TaskDataError, match=r"openml:78 is not staged .*Fix: python -m orca_ray.data stage openml:78"
    ):
        load_task("openml:78", data_root=tmp_path / "root")


def _csv(tmp_path, text, name="t.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


GOOD = "f1,f2,colour,label\n" + "".join(f"{i},{i % 5}.5,{'rgb'[i % 3]},{'ab'[i % 2]}\n" for i in range(40))


@pytest.mark.parametrize(
    ("text", "suffix", "problem"),
    [
        (GOOD, "#label=nope", r"no label column 'nope'; columns: f1, f2, colour, label"),
        (
            GOOD.replace("label\n", "y\n", 1),
            "",
            r"no column named label, target or class; columns: .*#label=y",
        ),
        (GOOD.replace(",b\n", ",a\n"), "", r"one class only"),
        (GOOD.replace("39,4.5,r,b", "39,4.5,r,c"), "", r"class 'c' .* has a single row"),
        (GOOD.replace("7,2.5", "7,abc"), "", r"column 'f2' is numeric but row 7 holds 'abc'"),
        ("", "", r"the file is empty"),
        ("f1,f1,label\n1,2,a\n", "", r"duplicate column name\(s\) \['f1'\]"),
        (GOOD, "#label=f2", r"non-integer numbers \(a regression target\)"),
        ("f1,label\n", "", r"a header but no rows"),
        (
            "id,label\n" + "".join(f"u{i},{'ab'[i % 2]}\n" for i in range(1002)),
            "",
            r"column 'id' has 1002 distinct",
        ),
    ],
)
def test_csv_errors_are_one_line(tmp_path, text, suffix, problem):
    p = _csv(tmp_path, text)
    with pytest.raises(TaskDataError, match=problem) as e:
        load_task(f"csv:{p}{suffix}")
    assert "\n" not in str(e.value)
    assert str(p) in str(e.value)


def test_parquet_tables_and_their_errors(tmp_path, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    frame = pd.read_csv(_csv(tmp_path, GOOD))
    frame.to_parquet(tmp_path / "t.parquet")
    task = load_task(f"parquet:{tmp_path / 't.parquet'}#label=label")
    assert task.input_shape == (1, 8)  # 2 numerics + 3 colours, zero-padded to 8
    assert task.num_outputs == 2
    # duplicate names are legal in Parquet, not in a table here
    pq.write_table(pa.table([pa.array([1, 2]), pa.array([3, 4])], names=["a", "a"]), tmp_path / "dup.parquet")
    with pytest.raises(TaskDataError, match=r"duplicate column name"):
        load_task(f"parquet:{tmp_path / 'dup.parquet'}")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(TaskDataError, match=r"not a readable Parquet file"):
        load_task(f"parquet:{tmp_path / 'junk.parquet'}")
    monkeypatch.setattr(files, "MAX_TABLE_BYTES", 100)
    with pytest.raises(TaskDataError, match=r"over the 100-byte limit"):
        load_task(f"parquet:{tmp_path / 't.parquet'}")


def SPACE(args):
    return {"task": args.tasks, "seed": args.seeds, "body": "tiny-text", "proxy": "fake-text"}


def test_a_sweep_on_a_bad_table_exits_2_and_writes_nothing(tmp_path, capsys):
    from orca_ray.sweep.cli import main

    p = _csv(tmp_path, GOOD.replace("7,2.5", "7,abc"))
    store = tmp_path / "store"
    argv = ["--tasks", f"csv:{p}", "--storage", str(store)]
    assert main(default_name="t", description="t", space=SPACE, argv=argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "column 'f2' is numeric but row 7" in err[0]
    assert not store.exists()
    argv = ["--tasks", "openml:31", "--storage", str(store), "--data-root", str(tmp_path)]
    assert main(default_name="t", description="t", space=SPACE, argv=argv) == 2
    assert "python -m orca_ray.data stage openml:31 --data-root" in capsys.readouterr().err
    assert not store.exists()


def test_openml_cc18_dry_run_lists_orcas_42_with_recipes(capsys):
    from orca_ray.sweep.cli import main

    argv = ["--dry-run", "--preset", "paper", "--tasks", "openml-cc18", "--seeds", "0"]
    assert main(default_name="t", description="t", space=SPACE, argv=argv) == 0
    out = capsys.readouterr().out
    assert "42 trials" in out
    assert "openml:31  adam lr 1e-05 wd 0.001, 20 epochs, batch 64×1, clip 1.0" in out
    assert "target_seq_len 8, embedder epochs 20, align batch/class 192, dropout 0.05" in out


@pytest.mark.slow
def test_a_real_sweep_on_a_bundled_table_with_gbdt_baselines(
    ray_local, tmp_path, tiny_sweep_space, own_tiny_body
):
    """breast-cancer through a tiny body of one's own: trials, the linear, gradient-boosted-trees and
    random-body baselines land in Parquet and the final-score table."""
    from orca_ray import tables
    from orca_ray.baselines import GBDT, LINEAR, RANDOM_BODY
    from orca_ray.results import final_scores, read_results
    from orca_ray.sweep import SweepSpec, run_sweep

    space = {
        **tiny_sweep_space,
        "task": "breast-cancer",
        "body": own_tiny_body,
        "embedder_epochs": [2],
        "refine_epochs": 1,
        "target_seq_len": 6,
    }
    spec = SweepSpec(name="tab", space=space, storage=str(tmp_path / "store"), baselines=True)
    grid = run_sweep(spec)
    assert not any(r.error for r in grid)
    df = read_results(spec.results_root, sweep="tab")
    trials, baselines = tables.split_baselines(df, final_scores(df))
    assert len(trials) == 1
    assert set(df["metric"].dropna()) == {"1-roc-auc"}
    assert sorted(baselines["baseline"]) == sorted([LINEAR, GBDT, RANDOM_BODY])
    gbdt = baselines[baselines["baseline"] == GBDT]
    assert gbdt["body"].tolist() == ["gbdt"]
    assert 0 <= gbdt["final_test"].iloc[0] < 0.1
    table = (tmp_path / "store" / "tab" / "figures" / tables.TABLE).read_text()
    assert "**baseline: gradient-boosted trees**" in table


@pytest.mark.slow
def test_own_csv_and_parquet_tables_sweep_end_to_end(ray_local, tmp_path, tiny_sweep_space):
    """Your own tables through a real Ray sweep: a CSV with a categorical column and the label named in the spec,
    and a Parquet file whose label is found as `target`; both land in Parquet with the tables' metric and the
    data's own class labels."""
    from sklearn.datasets import load_wine

    from orca_ray.results import read_results
    from orca_ray.sweep import SweepSpec, run_sweep

    x, y = load_wine(return_X_y=True, as_frame=True)
    frame = x.iloc[:, :6].assign(
        region=pd.Categorical(np.where(x["alcohol"] > 13, "north", "south")), cultivar=y.map("c{}".format)
    )
    frame.to_csv(tmp_path / "wine.csv", index=False)
    frame.rename(columns={"cultivar": "target"}).to_parquet(tmp_path / "wine.parquet")
    tasks = [f"csv:{tmp_path / 'wine.csv'}#label=cultivar", f"parquet:{tmp_path / 'wine.parquet'}"]
    space = {**tiny_sweep_space, "task": tasks, "embedder_epochs": 1, "refine_epochs": 1, "target_seq_len": 8}
    spec = SweepSpec(name="own-tables", space=space, storage=str(tmp_path / "store"), analysis=False)
    grid = run_sweep(spec)
    assert not any(r.error for r in grid)
    df = read_results(spec.results_root, sweep="own-tables")
    assert sorted(df["task"].unique()) == sorted(tasks)
    refine = df[df["phase"] == "refine"]
    assert len(refine) == 2
    assert refine["test_score"].between(0, 1).all()
    assert set(refine["metric"]) == {"1-roc-auc"}
    assert {json.dumps(["c0", "c1", "c2"])} == set(refine["classes"])


# two of ORCA's OPENML configs as its yaml files hold them (src/configs/OPENML31.yaml, OPENML1049.yaml at 19b8c1c)
ORCA_YAML = {
    31: "hyperparameters:\n  dataset: OPENML31\n  embedder_dataset: text\n  objective: otdd-exact\n  weight: roberta\n"
    "  maxsamples: 128\n  epochs: 20\n  embedder_epochs: 20\n  finetune_method: all\n  target_seq_len: 8\n"
    "  drop_out: 0.05\n  batch_size: 64\n  accum: 1\n  clip: 1\n  optimizer:\n    name: Adam\n    params:\n"
    "      lr: 0.00001\n      betas: [0.9, 0.98]\n      weight_decay: 0.001\n      momentum: 0.999\n"
    "  scheduler:\n    name: WarmupLR\n    params:\n      warmup_epochs: 5\n      decay_epochs: 20\n",
    1049: "hyperparameters:\n  dataset: OPENML1049\n  embedder_dataset: text\n  objective: otdd-exact\n"
    "  weight: roberta\n  maxsamples: 512\n  epochs: 60\n  embedder_epochs: 20\n  finetune_method: all\n"
    "  target_seq_len: 512\n  drop_out: 0\n  batch_size: 32\n  accum: 1\n  clip: -1\n  optimizer:\n    name: SGD\n"
    "    params:\n      lr: 0.0001\n      betas: [0.9, 0.98]\n      weight_decay: 0.1\n      momentum: 0.99\n"
    "  scheduler:\n    name: WarmupLR\n    params:\n      warmup_epochs: 10\n      decay_epochs: 60\n",
}


def test_openml_recipes_against_orcas_yaml(tmp_path):
    from orca_ray.parity.openml_recipes import check_folder

    for did, text in ORCA_YAML.items():
        (tmp_path / f"OPENML{did}.yaml").write_text(text)
    rows = check_folder(tmp_path)
    assert not rows[0].ok  # the folder holds 2 of the 42 ids
    assert all(r.ok for r in rows[1:]), [r.item for r in rows[1:] if not r.ok]
    assert len(rows) > 30
    (tmp_path / "OPENML31.yaml").write_text(ORCA_YAML[31].replace("lr: 0.00001", "lr: 0.0001"))
    bad = [r.item for r in check_folder(tmp_path)[1:] if not r.ok]
    assert bad == ["openml:31 lr"]
