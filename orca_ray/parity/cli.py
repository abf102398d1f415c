"""`python -m orca_ray.parity`: every golden case run (`run_case`, `run_all`) and printed as one table."""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

from .checks import CHECKS
from .golden import DEFAULT_GOLDEN, Golden
from .table import Check, Missing, format_table

DESCRIPTION = (
    "Parity with ORCA's own code: recompute every golden trace with this project's code and compare."
)


def run_case(golden: Golden, name: str, case: dict) -> list[Check]:
    """All rows of one golden case; a case our code cannot compute becomes one failing row saying why.

    Args:
        golden: the golden folder.
        name: the case's name in the manifest.
        case: the case's manifest entry.
    """
    rows: list[Check] = []
    try:
        for row in CHECKS[case["kind"]](golden, name, case):
            rows.append(row)
    except Missing as e:
        rows.append(Check(f"{name}: (rest of case)" if rows else name, math.nan, None, math.inf, 0.0, str(e)))
    except Exception as e:  # a crash in our code is a failed comparison, reported, not a crashed table
        rows.append(
            Check(
                f"{name}: (rest of case)" if rows else name,
                math.nan,
                None,
                math.inf,
                0.0,
                f"{type(e).__name__}: {e}",
            )
        )
    return rows


def run_all(golden_dir: str | Path = DEFAULT_GOLDEN, only: list[str] | None = None) -> list[Check]:
    """Every row for every golden case present (optionally only some case kinds).

    Args:
        golden_dir: the golden folder.
        only: case kinds to run (keys of `CHECKS`); None: all.
    """
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    torch.manual_seed(0)
    golden = Golden(golden_dir)
    try:
        rows: list[Check] = []
        for name, case in golden.cases():
            if only and case["kind"] not in only:
                continue
            rows.extend(run_case(golden, name, case))
        return rows
    finally:
        golden.close()


def main(argv: list[str] | None = None) -> int:
    """The `python -m orca_ray.parity` command: the table printed; exit 0 only when every row is within tolerance
    (1: some row is not, 2: no usable golden folder).

    Args:
        argv: the arguments (default: sys.argv[1:]).
    """
    p = argparse.ArgumentParser(prog="python -m orca_ray.parity", description=DESCRIPTION)
    p.add_argument(
        "--golden", default=str(DEFAULT_GOLDEN), help="golden folder (default: the shipped traces)"
    )
    p.add_argument("--only", nargs="*", help="case kinds: " + ", ".join(CHECKS))
    args = p.parse_args(argv)
    try:
        rows = run_all(args.golden, args.only)
    except (FileNotFoundError, ValueError) as e:  # no golden folder, or one of another format
        print(f"orca_ray.parity: {e}", file=sys.stderr)
        return 2
    print(format_table(rows))
    return 0 if rows and all(r.ok for r in rows) else 1
