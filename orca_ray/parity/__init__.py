"""Parity with ORCA's own code: recompute every golden trace with this project's code and compare.

    python -m orca_ray.parity [--golden DIR] [--only KIND ...]

The golden traces (`tests/data/orca_parity/`, made by `benchmarks/orca_parity/make_golden.py` from ORCA's code
at commit 19b8c1c) hold fixed inputs and what ORCA computed from them. Each is recomputed here with the
functions the trainer itself uses, on the same inputs and the same (seeded) weights, and printed as one table:
item, ORCA's value, ours, relative error, tolerance, ok. The exit status is non-zero if any item is out of
tolerance or could not be computed (a missing function is a failing row, never a skipped one). Nothing of
ORCA is imported here.

The package: `golden` (the golden folder and a case built as our objects), `checks` (one comparison per case
kind), `table` (a row, `compare`, `format_table`), `cli` (`run_case`, `run_all`, the command). The golden
format itself, shared with the maker, is `orca_ray.parity_spec` (numpy only).
"""

from .checks import CHECKS
from .cli import main, run_all, run_case
from .golden import DEFAULT_GOLDEN, Golden
from .table import Check, Missing, compare, format_table

__all__ = [
    "CHECKS",
    "DEFAULT_GOLDEN",
    "Check",
    "Golden",
    "Missing",
    "compare",
    "format_table",
    "main",
    "run_all",
    "run_case",
]
