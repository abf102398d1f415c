"""The OpenML recipes (`recipes.recipe_for("openml:<ID>")`) against ORCA's own yaml files, field by field.

    python -m orca_ray.parity.openml_recipes ORCA/src/configs     # a checkout of sjunhongshen/ORCA

One parity-table row per dataset and field (exact match: tolerance 1e-6, strings compared as equal / not equal),
plus one row saying whether the folder holds the same 42 ids as `tabular_recipes.ORCA_OPENML`. The yaml files
are parsed with ``yaml.safe_load`` (data only) and at most `MAX_YAML_BYTES` each is read. The exit status is 1
when any row is out of tolerance.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path

from .table import EXACT, Check, compare, format_table

MAX_YAML_BYTES = 64 << 10
# the values every OPENML config shares, with the field of ours they stand for
CONSTANTS = {
    "embedder_dataset": "text",
    "weight": "roberta",
    "objective": "otdd-exact",
    "finetune_method": "all",
}


def _same(item: str, orca, ours) -> Check:
    ok = orca == ours
    return Check(
        item,
        1.0,
        1.0 if ok else 0.0,
        0.0 if ok else math.inf,
        EXACT,
        "" if ok else f"{ours!r} != ORCA's {orca!r}",
    )


def _value(item: str, orca, ours) -> Check:
    if orca is None or ours is None:
        return _same(item, orca, ours)
    return compare(item, orca, ours, EXACT)


def check_config(did: int, hp: dict) -> list[Check]:
    """The rows of one dataset: ORCA's yaml ``hyperparameters`` against our recipe.

    Args:
        did: the OpenML dataset id.
        hp: the yaml's ``hyperparameters`` mapping.
    """
    from ..recipes import recipe_for
    from ..tabular_recipes import align_batch_per_class

    r = recipe_for(f"openml:{did}")
    h = r.refine
    opt, sched = hp.get("optimizer", {}), hp.get("scheduler", {}).get("params", {})
    params = opt.get("params", {})
    clip = hp.get("clip")
    name = f"openml:{did}"
    rows = [
        _same(f"{name} optimizer", str(opt.get("name", "")).lower(), h.optimizer),
        _value(f"{name} lr", params.get("lr"), h.lr),
        _value(f"{name} weight_decay", params.get("weight_decay"), h.weight_decay),
        _value(f"{name} epochs", hp.get("epochs"), h.epochs),
        _value(f"{name} batch_size", hp.get("batch_size"), h.batch_size),
        _value(f"{name} accum", hp.get("accum"), h.accum),
        # ORCA clips when clip > 0 (src/main.py); -1 means no clipping, None here
        _value(f"{name} clip", clip if clip is not None and clip > 0 else None, h.clip),
        _value(f"{name} warmup_epochs", sched.get("warmup_epochs"), h.warmup_epochs),
        _value(f"{name} decay_epochs", sched.get("decay_epochs"), h.decay_epochs),
        _value(f"{name} target_seq_len", hp.get("target_seq_len"), r.target_seq_len),
        _value(f"{name} embedder_epochs", hp.get("embedder_epochs"), r.align_epochs),
        _value(f"{name} drop_out", hp.get("drop_out"), r.dropout),
        _value(
            f"{name} align batch/class (maxsamples)",
            align_batch_per_class(int(hp.get("maxsamples", 0)), int(hp.get("batch_size", 1))),
            r.align_batch_per_class,
        ),
    ]
    if h.optimizer == "sgd":
        rows.append(_value(f"{name} momentum", params.get("momentum"), h.momentum))
    else:
        rows.append(_value(f"{name} betas", params.get("betas"), list(h.betas)))
    rows += [_same(f"{name} {k}", hp.get(k), v) for k, v in CONSTANTS.items()]
    return rows


def check_folder(config_dir: str | Path) -> list[Check]:
    """Every ``OPENML<ID>.yaml`` in ORCA's config folder against our recipes, plus the id-set row.

    Args:
        config_dir: ORCA's ``src/configs``.
    """
    import yaml

    from ..tabular_recipes import ORCA_OPENML

    found: dict[int, dict] = {}
    for p in sorted(Path(config_dir).glob("OPENML*.yaml")):
        m = re.fullmatch(r"OPENML(\d+)\.yaml", p.name)
        if not m or p.stat().st_size > MAX_YAML_BYTES:
            continue
        doc = yaml.safe_load(p.read_text())
        found[int(m.group(1))] = (doc or {}).get("hyperparameters", {}) if isinstance(doc, dict) else {}
    rows = [_same("OpenML ids (ORCA's configs vs ours)", sorted(found), sorted(ORCA_OPENML))]
    for did in sorted(set(found) & set(ORCA_OPENML)):
        rows += check_config(did, found[did])
    return rows


def main(argv: list[str] | None = None) -> int:
    """The command: print the table, exit 1 when a row is off.

    Args:
        argv: the arguments (default: sys.argv[1:]).
    """
    ap = argparse.ArgumentParser(
        prog="python -m orca_ray.parity.openml_recipes", description=__doc__.split("\n")[0]
    )
    ap.add_argument("config_dir", help="ORCA's src/configs folder (a checkout of sjunhongshen/ORCA)")
    args = ap.parse_args(argv)
    if not Path(args.config_dir).is_dir():
        print(f"error: {args.config_dir}: no such folder", file=sys.stderr)
        return 2
    rows = check_folder(args.config_dir)
    print(format_table(rows))
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
